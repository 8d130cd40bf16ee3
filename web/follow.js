// Following a spot over time, on the result page: start with consent and a duration, or add the photo with the
// spot's key; then the history (photos side by side, bands, feedback), the reminder file and the one-action delete.
// The spot's key (its id and capability token) lives only in this module's memory and on the person's screen.

const $ = (id) => document.getElementById(id);
const LESION_HEADER = "X-DeepSkin-Lesion-Token";
const BANDS = { low: "Low risk", medium: "Medium risk", high: "High risk" };
// The questions about the spot (deepskin.core.patient.QUESTIONS), as a history line says them.
const SAID = { changed: "changed", grew: "grown", bled: "bled", itches: "itches", hurts: "hurts", raised: "raised" };
const ERRORS = { // the predict function's refusals -> plain words
  consent_required: "Please tick the box to agree first.",
  invalid_duration: "Choose how long to keep the history.",
  already_followed: "This photo is already in a spot's history.",
  in_another_history: "This photo is already in the history of another spot.",
  not_found: "No followed spot has this key. Check it: it was shown when you started following.",
  invalid_date: "Choose a day after today and before the history is deleted.",
};
const follow = { config: null, result: null, token: null, lesion: null, photoUrls: [] };

const endpoint = (path) => follow.config.predict_url.replace(/\/+$/, "") + path;

function setError(id, text) {
  $(id).textContent = text || "";
  $(id).hidden = !text;
}

function day(iso) {
  return iso ? new Date(iso).toLocaleDateString(undefined, { year: "numeric", month: "long", day: "numeric" }) : "";
}

async function call(method, path, { body, lesionToken, resultToken } = {}) {
  const headers = {};
  if (body) headers["Content-Type"] = "application/json";
  if (lesionToken) headers[LESION_HEADER] = lesionToken;
  if (resultToken) headers["X-DeepSkin-Token"] = resultToken;
  const response = await fetch(endpoint(path), { method, headers, body: body && JSON.stringify(body) });
  if (response.ok) return response;
  const answer = await response.json().catch(() => ({}));
  throw new Error(ERRORS[answer.error] || answer.detail || `error ${response.status}`);
}

// The result page shows "Follow this spot" for an assessed photo; everything else of a spot stays closed.
export function offerFollow(result, token, config) {
  Object.assign(follow, { config, result, token });
  $("follow-open").hidden = result.status !== "done";
  $("follow-open").setAttribute("aria-expanded", "false");
  for (const id of ["follow-panel", "history", "history-deleted"]) $(id).hidden = true;
  setError("follow-error", "");
  setError("follow-add-error", "");
  $("follow-consent").checked = false;
  $("follow-key").value = follow.lesion ? `${follow.lesion.id}.${follow.lesion.token}` : "";
}

// The result was deleted: nothing of it may be offered any more.
export function forgetFollow() {
  $("follow-open").hidden = true;
  for (const id of ["follow-panel", "history"]) $(id).hidden = true;
}

$("follow-open").addEventListener("click", () => {
  const panel = $("follow-panel");
  panel.hidden = !panel.hidden;
  $("follow-open").setAttribute("aria-expanded", String(!panel.hidden));
  if (!panel.hidden) panel.querySelector("input[name=follow-months]:checked").focus();
});

$("follow-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!$("follow-consent").checked) {
    setError("follow-error", ERRORS.consent_required);
    $("follow-consent").focus();
    return;
  }
  setError("follow-error", "");
  $("follow-start").disabled = true;
  try {
    const months = Number($("follow-form").querySelector("input[name=follow-months]:checked").value);
    const response = await call("POST", "/lesions", {
      body: { result_id: follow.result.id, consent: true, months }, resultToken: follow.token,
    });
    const history = await response.json();
    follow.lesion = { id: history.id, token: history.token };
    await showHistory(history);
  } catch (error) {
    setError("follow-error", `Following did not start: ${error.message}`);
  } finally {
    $("follow-start").disabled = false;
  }
});

$("follow-add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const [id, token] = $("follow-key").value.trim().split(/\.(.*)/s);
  if (!/^[0-9a-f]{32}$/.test(id || "") || !token) {
    setError("follow-add-error", "That is not a spot's key: it looks like a long line of letters and digits with a dot.");
    $("follow-key").focus();
    return;
  }
  setError("follow-add-error", "");
  $("follow-add").disabled = true;
  try {
    const response = await call("POST", `/lesions/${id}/results`, {
      body: { result_id: follow.result.id }, lesionToken: token, resultToken: follow.token,
    });
    follow.lesion = { id, token };
    await showHistory(await response.json());
  } catch (error) {
    setError("follow-add-error", `The photo was not added: ${error.message}`);
  } finally {
    $("follow-add").disabled = false;
  }
});

async function photoUrl(resultId) {
  try {
    const response = await call("GET", `/lesions/${follow.lesion.id}/photos/${resultId}`, { lesionToken: follow.lesion.token });
    const url = URL.createObjectURL(await response.blob());
    follow.photoUrls.push(url);
    return url;
  } catch {
    return null; // the photo is gone (deleted); the entry still shows its date and band
  }
}

function changeInWords(history) {
  const entries = Object.fromEntries(history.entries.map((e) => [e.result_id, e]));
  const last = history.changes.at(-1);
  if (!last) return "One photo so far. Add a photo of the same spot later to compare.";
  const from = `${BANDS[last.from_band]} on ${day(entries[last.from].created_at)}`;
  const to = `${BANDS[last.to_band]} on ${day(entries[last.to].created_at)}`;
  if (last.moved_up) {
    return `The assessment moved up: from ${from} to ${to}. A change is a reason to have the spot checked by a ` +
      "doctor soon.";
  }
  return `The assessment did not move up (${from}; ${to}). If the spot changes, bleeds or itches, see a doctor ` +
    "whatever the result says.";
}

function sameSpotInWords(history) {
  const entries = Object.fromEntries(history.entries.map((e) => [e.result_id, e]));
  const doubtful = history.changes.filter((c) => c.looks_alike === false);
  if (!history.changes.length) return "";
  const words = doubtful.length
    ? doubtful.map((c) => `DeepSkin cannot confirm that the photo of ${day(entries[c.to].created_at)} shows the same ` +
      "spot as the one before it: check that it does.").join(" ")
    : "The photos look alike.";
  return `${words} (${history.same_spot_note})`;
}

async function showHistory(history) {
  for (const url of follow.photoUrls.splice(0)) URL.revokeObjectURL(url);
  const items = await Promise.all(history.entries.map(async (entry) => {
    const li = document.createElement("li");
    const figure = document.createElement("figure");
    const url = entry.has_photo ? await photoUrl(entry.result_id) : null;
    if (url) {
      const img = Object.assign(document.createElement("img"), { src: url, alt: `The spot on ${day(entry.created_at)}` });
      figure.append(img);
    }
    const caption = document.createElement("figcaption");
    const band = Object.assign(document.createElement("span"), {
      className: `history-band band-${entry.risk}`, textContent: BANDS[entry.risk] || "Not assessed",
    });
    caption.append(Object.assign(document.createElement("time"), { dateTime: entry.created_at, textContent: day(entry.created_at) }),
      document.createElement("br"), band);
    const answered = Object.entries(entry.answers || {});
    if (answered.length) {
      const said = Object.assign(document.createElement("span"), { className: "history-reported" });
      said.textContent = `You said: ${answered.map(([question, answer]) => `${SAID[question] || question}: ${answer}`).join("; ")}`;
      caption.append(document.createElement("br"), said);
    }
    for (const report of entry.reported) {
      const said = Object.assign(document.createElement("span"), { className: "history-reported" });
      said.textContent = `You reported: ${report.label}${report.comment ? ` (“${report.comment}”)` : ""}`;
      caption.append(document.createElement("br"), said);
    }
    figure.append(caption);
    li.append(figure);
    return li;
  }));
  $("history-list").replaceChildren(...items);
  $("history-change").textContent = changeInWords(history);
  $("history-change").className = history.moved_up ? "history-change moved-up" : "history-change";
  $("history-same").textContent = sameSpotInWords(history);
  $("history-expires").textContent = day(history.expire_at);
  $("history-key").textContent = `${follow.lesion.id}.${follow.lesion.token}`;
  $("reminder-date").value = history.suggested_reminder || "";
  $("reminder-date").min = new Date(Date.now() + 86400000).toISOString().slice(0, 10);
  $("reminder-date").max = history.expire_at.slice(0, 10);
  setError("history-error", "");
  $("follow-panel").hidden = true;
  $("follow-open").hidden = true;
  $("history").hidden = false;
  $("history").focus();
}

$("reminder-download").addEventListener("click", async () => {
  setError("history-error", "");
  try {
    const chosen = $("reminder-date").value;
    const response = await call("GET", `/lesions/${follow.lesion.id}/reminder.ics${chosen ? `?date=${chosen}` : ""}`,
      { lesionToken: follow.lesion.token });
    const url = URL.createObjectURL(new Blob([await response.text()], { type: "text/calendar" }));
    const link = Object.assign(document.createElement("a"), { href: url, download: "deepskin-reminder.ics" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (error) {
    setError("history-error", `No reminder: ${error.message}`);
  }
});

$("history-delete").addEventListener("click", async () => {
  if (!window.confirm("Delete every photo, result and feedback of this spot now? This cannot be undone.")) return;
  setError("history-error", "");
  try {
    const response = await call("DELETE", `/lesions/${follow.lesion.id}`, { lesionToken: follow.lesion.token });
    const { deleted } = await response.json();
    for (const url of follow.photoUrls.splice(0)) URL.revokeObjectURL(url);
    follow.lesion = null;
    $("history").hidden = true;
    $("history-list").replaceChildren();
    $("history-key").textContent = "";
    const done = $("history-deleted");
    done.textContent = `This spot's history is deleted: ${deleted.documents.length} records and ` +
      `${deleted.objects.length} stored files (every photo, result and feedback in it).`;
    done.hidden = false;
    done.focus();
  } catch (error) {
    setError("history-error", `Deleting failed (${error.message}). Please try again.`);
  }
});
