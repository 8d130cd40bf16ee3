// The operator page: one GET of the ops function (deepskin.loop.ops), shown as it is. The key stays in this tab's
// memory only; plots are fetched with it too (an <img> cannot send a header) and shown from blob URLs.
const $ = (selector) => document.querySelector(selector);
let opsUrl = "";
let key = "";

function announce(text) {
  $("#status").textContent = text;
}

async function get(path) {
  const response = await fetch(opsUrl + path, { headers: { "X-DeepSkin-Clinician": key } });
  if (response.status === 403) throw new Error("This key does not open the operator page.");
  if (!response.ok) throw new Error(`The operator service answered ${response.status}.`);
  return response;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text ?? "-";
  row.append(td);
}

function facts(list, pairs) {
  list.replaceChildren();
  for (const [name, value] of pairs) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value ?? "-";
    list.append(dt, dd);
  }
}

function shown(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  if (Array.isArray(value)) return value.map(shown).join(" to ");
  if (value && typeof value === "object") return `(${numbers(value)})`;  // e.g. the numbers per image type
  return value ?? "-";
}

function numbers(side) {
  return Object.entries(side || {}).filter(([name]) => name !== "version")
    .map(([name, value]) => `${name} ${shown(value)}`).join(", ");
}

function showModel(view) {
  const model = view.model || { numbers: {} };
  const approval = view.promotion_approval === "gate" ? "the gate promotes alone"
    : "a person approves each candidate the gate passes (python -m training.promote --approve ID)";
  facts($("#model"), [["Version", view.current || "none registered yet"], ["Promotion", approval],
    ["Promoted", model.promoted_at],
    ["Rolled back from", model.rolled_back_from], ["Started from", model.init],
    ...Object.entries(model.numbers).map(([name, value]) => [name, shown(value)])]);
}

async function showPlots(names) {
  const plots = $("#plots");
  plots.replaceChildren();
  for (const name of names) {
    const blob = await (await get(`/plots/${encodeURIComponent(name)}`)).blob();
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    const caption = document.createElement("figcaption");
    img.src = URL.createObjectURL(blob);
    img.alt = `Evaluation plot ${name}`;
    caption.textContent = name;
    figure.append(img, caption);
    plots.append(figure);
  }
}

function showDecisions(decisions) {
  const body = $("#decisions tbody");
  body.replaceChildren();
  for (const decision of decisions) {
    const row = document.createElement("tr");
    const verdict = decision.kind === "rollback" ? "rollback" : decision.promoted ? "promoted"
      : decision.status === "approved_pending" ? "awaiting approval" : "refused";
    cell(row, decision.decided_at);
    cell(row, `${verdict}: ${decision.reasons.join("; ")}`);
    cell(row, decision.candidate);
    cell(row, decision.current);
    cell(row, decision.job_id);
    const [against, compared] = decision.numbers.baseline?.version
      ? ["baseline", decision.numbers.baseline] : ["current", decision.numbers.current];
    cell(row, `candidate: ${numbers(decision.numbers.candidate)} | ${against}: ${numbers(compared)}`);
    cell(row, Object.keys(decision.feedback || {}).length ? numbers(decision.feedback) : "none recorded");
    row.dataset.decision = verdict;
    body.append(row);
  }
  if (!decisions.length) {
    const row = document.createElement("tr");
    cell(row, "No decision yet.");
    row.firstChild.colSpan = 7;
    body.append(row);
  }
}

function showFeedback(feedback) {
  const body = $("#feedback tbody");
  body.replaceChildren();
  for (const [role, labels] of Object.entries(feedback)) {
    for (const [label, count] of Object.entries(labels)) {
      const row = document.createElement("tr");
      cell(row, role);
      cell(row, label);
      cell(row, String(count));
      body.append(row);
    }
  }
}

function showLedger(ledger) {
  const job = ledger.running_job;
  facts($("#ledger"), [["Training labels", String(ledger.training_labels)],
    ["Training labels at the last job", String(ledger.labels_at_last_job)], ["Signals", String(ledger.signals)],
    ["Last job", ledger.last_job], ["Running job", job ? `${job.id} (${job.status})` : "none"]]);
}

async function open(event) {
  event.preventDefault();
  key = $("#key").value;
  const error = $("#sign-in-error");
  error.hidden = true;
  try {
    const view = await (await get("/")).json();
    showModel(view);
    showDecisions(view.decisions);
    showFeedback(view.feedback);
    showLedger(view.ledger);
    $("#sign-in").hidden = true;
    $("#overview").hidden = false;
    $("#model-title").focus();
    announce(`Serving ${view.current}; ${view.decisions.length} decisions.`);
    await showPlots(view.plots);
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
    $("#key").focus();
    announce(failure.message);
  }
}

async function start() {
  const config = await (await fetch("config.json", { cache: "no-store" })).json();
  opsUrl = config.ops_url.replace(/\/$/, "");
  $("#sign-in-form").addEventListener("submit", open);
  document.body.dataset.ready = "true";
}

start();
