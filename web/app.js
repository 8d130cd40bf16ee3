// DeepSkin page: consent -> photo -> result (feedback, delete). No framework, no network beyond our functions.
// The capability token lives only in this module's memory: closing or reloading the tab forgets it.

import { forgetFollow, offerFollow } from "./follow.js";

const ACCEPTED = ["image/jpeg", "image/png", "image/webp"];
const MAX_BYTES = 20 * 1024 * 1024; // deepskin/core/checks.py MAX_BYTES
const CLASSES = [
  ["akiec", "actinic keratosis / intraepithelial carcinoma", true],
  ["bcc", "basal cell carcinoma", true],
  ["bkl", "benign keratosis", false],
  ["df", "dermatofibroma", false],
  ["mel", "melanoma", true],
  ["nv", "mole (melanocytic nevus)", false],
  ["vasc", "vascular lesion", false],
];
const SITES = [ // deepskin/core/patient.py SITES
  "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand", "lower extremity", "neck",
  "scalp", "trunk", "upper extremity",
];
const COARSE = [
  ["benign", "not cancer, type unknown"],
  ["malignant", "skin cancer, type unknown"],
];
const BANDS = {
  low: { text: "Low risk", next: "No visit is needed now: look at it again and photograph it in 3 months, sooner if it changes." },
  medium: { text: "Medium risk", next: "Have it checked by a doctor or dermatologist; this is not urgent." },
  high: { text: "High risk", next: "See a dermatologist soon, ideally within 2 weeks; bring this photo with you." },
};
const ERRORS = { // HTTP error codes of the predict function -> plain words
  too_large: "The file is too large. The limit is 20 MB.",
  unsupported_media_type: "That file is not a photo. Choose a JPEG, PNG or WebP image.",
  empty: "The file is empty. Choose another photo.",
  missing_image_field: "No photo was sent. Choose a photo and try again.",
};

const $ = (id) => document.getElementById(id);
const state = { config: null, file: null, photoUrl: null, result: null, token: null, busy: false };

for (const site of SITES) $("site").add(new Option(site[0].toUpperCase() + site.slice(1), site));

// The questions about the spot's history: deepskin/core/patient.py ASKED. The names are the predict
// function's fields; "Not sure" sends nothing (unknown, which changes nothing).
const QUESTIONS = [
  ["changed", "Has it changed lately (size, shape or colour)?"],
  ["grew", "Has it grown?"],
  ["bled", "Has it bled (without being scratched or cut)?"],
  ["itches", "Does it itch?"],
  ["hurts", "Does it hurt?"],
  ["raised", "Is it raised above the skin?"],
];
const ANSWERS = [["yes", "Yes"], ["no", "No"], ["", "Not sure"]];

function buildQuestions() {
  for (const [name, asked] of QUESTIONS) {
    const group = document.createElement("fieldset");
    group.className = "question";
    const legend = document.createElement("legend");
    legend.textContent = asked;
    group.append(legend);
    for (const [value, text] of ANSWERS) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      Object.assign(input, { type: "radio", name, value, id: `${name}-${value || "unsure"}`, checked: !value });
      label.htmlFor = input.id;
      label.append(input, ` ${text}`);
      group.append(label);
    }
    $("symptoms-questions").append(group);
  }
}

function answersInto(params) {
  for (const [name] of QUESTIONS) {
    const value = document.querySelector(`input[name="${name}"]:checked`)?.value;
    if (value) params.set(name, value);
  }
}

buildQuestions();

// The optional facts, as the predict function reads them: query parameters beside the image.
function aboutQuery() {
  const params = new URLSearchParams();
  for (const field of ["age", "sex", "site"]) {
    const value = $(field).value.trim();
    if (value) params.set(field, value);
  }
  answersInto(params);
  const query = params.toString();
  return query ? `?${query}` : "";
}

// --- configuration: /config.json from the local stack, else the same host's standard ports ---------------

async function loadConfig() {
  const fallback = {
    predict_url: `${location.protocol}//${location.hostname}:8081`,
    feedback_url: `${location.protocol}//${location.hostname}:8082`,
  };
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (!response.ok) return fallback;
    return { ...fallback, ...(await response.json()) };
  } catch {
    return fallback;
  }
}

const endpoint = (base, path = "") => base.replace(/\/+$/, "") + path;

// --- small helpers -----------------------------------------------------------------------------------------

function announce(text) {
  // Clear first so that the same words twice are announced twice.
  const status = $("status");
  status.textContent = "";
  setTimeout(() => { status.textContent = text; }, 50);
}

function show(stepId, message) {
  for (const step of document.querySelectorAll(".step")) step.hidden = step.id !== stepId;
  const heading = $(stepId).querySelector("h1");
  heading.focus();
  announce(message || heading.textContent);
  window.scrollTo(0, 0);
}

function setError(id, text) {
  const el = $(id);
  el.textContent = text || "";
  el.hidden = !text;
}

function randomKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function percent(p) {
  if (p >= 0.995) return "over 99%";
  if (p > 0 && p < 0.01) return "under 1%";
  return `${Math.round(p * 100)}%`;
}

// "About 1 in N lesions like this were malignant", with sensible words at both ends. The probability is
// calibrated on research collections, where skin cancer is far commoner than among the spots people usually
// have checked: the words say where
// the number holds instead of calling it the person's own chance.
export function oddsInWords(p) {
  if (!(p >= 0)) return "";
  const tail = " in the photo collections DeepSkin was checked on. Those hold far more skin cancers than the " +
    "spots people usually have checked, so this is not your personal chance, and it is not a diagnosis.";
  if (p < 0.005) return "Fewer than 1 in 200 lesions like this were malignant (skin cancer)" + tail;
  if (p >= 0.95) return "More than 9 in 10 lesions like this were malignant (skin cancer)" + tail;
  if (p >= 0.5) return `About ${Math.round(p * 10)} in 10 lesions like this were malignant (skin cancer)` + tail;
  return `About 1 in ${Math.round(1 / p)} lesions like this were malignant (skin cancer)` + tail;
}

// --- step 1: consent ---------------------------------------------------------------------------------------

$("consent-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const ok = $("consent").checked;
  setError("consent-error", ok ? "" : "Please tick the box to continue.");
  $("consent").setAttribute("aria-invalid", String(!ok));
  if (!ok) {
    $("consent").focus();
    return;
  }
  show("step-photo");
});

// --- step 2: photo -----------------------------------------------------------------------------------------

function resetPhoto() {
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  Object.assign(state, { file: null, photoUrl: null, result: null, token: null });
  $("photo").value = "";
  $("preview").hidden = true;
  $("progress-box").hidden = true;
  $("upload").disabled = true;
  setError("photo-error", "");
}

$("photo").addEventListener("change", () => {
  const file = $("photo").files[0];
  resetPhotoKeepingInput();
  if (!file) return;
  if (!ACCEPTED.includes(file.type)) {
    setError("photo-error", `“${file.name}” is not a photo DeepSkin can read. Choose a JPEG, PNG or WebP image.`);
    return;
  }
  if (file.size > MAX_BYTES) {
    setError("photo-error", `“${file.name}” is ${(file.size / 1e6).toFixed(1)} MB; the limit is 20 MB.`);
    return;
  }
  state.file = file;
  state.photoUrl = URL.createObjectURL(file);
  $("preview-img").src = state.photoUrl;
  $("preview-name").textContent = file.name;
  $("preview").hidden = false;
  $("upload").disabled = false;
  announce(`Photo chosen: ${file.name}. Press “Check this photo” to send it.`);
});

function resetPhotoKeepingInput() {
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  Object.assign(state, { file: null, photoUrl: null });
  $("preview").hidden = true;
  $("progress-box").hidden = true;
  $("upload").disabled = true;
  setError("photo-error", "");
}

function upload(file) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", endpoint(state.config.predict_url, "/") + aboutQuery());
    xhr.setRequestHeader("Content-Type", file.type);
    xhr.responseType = "json";
    xhr.timeout = 120000;
    const progress = $("progress");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) progress.value = Math.round((event.loaded / event.total) * 100);
    });
    xhr.upload.addEventListener("load", () => {
      progress.value = 100;
      progress.removeAttribute("value"); // indeterminate while the model runs
      $("progress-label").textContent = "Analysing the photo…";
      announce("Upload complete. Analysing the photo.");
    });
    xhr.addEventListener("load", () => resolve({ status: xhr.status, body: xhr.response || {} }));
    xhr.addEventListener("error", () => reject(new Error("network")));
    xhr.addEventListener("timeout", () => reject(new Error("timeout")));
    xhr.send(file);
  });
}

$("photo-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!state.file || state.busy) return;
  state.busy = true;
  $("upload").disabled = true;
  setError("photo-error", "");
  $("progress").value = 0;
  $("progress-label").textContent = "Uploading…";
  $("progress-box").hidden = false;
  announce("Uploading the photo.");
  try {
    const { status, body } = await upload(state.file);
    if (status !== 200) {
      setError("photo-error", ERRORS[body.error] || body.detail
        || `The photo could not be sent (error ${status}). Please try again.`);
      $("progress-box").hidden = true;
      $("upload").disabled = false;
      $("photo").focus();
      return;
    }
    state.result = body;
    state.token = body.token;
    renderResult(body);
    show("step-result", body.status === "done"
      ? `Result ready: ${$("band-text").textContent}. ${$("band-advice").textContent}`
      : `The photo could not be assessed. ${body.message || ""}`);
  } catch (error) {
    setError("photo-error", error.message === "timeout"
      ? "The check took too long. Please try again."
      : "Could not reach DeepSkin. Check your connection and try again.");
    $("progress-box").hidden = true;
    $("upload").disabled = false;
  } finally {
    state.busy = false;
  }
});

// --- step 3: result ----------------------------------------------------------------------------------------

function renderResult(result) {
  const done = result.status === "done";
  offerFollow(result, state.token, state.config);
  $("result-done").hidden = !done;
  $("result-retake").hidden = done;
  $("feedback-form").hidden = true;
  $("feedback-done").hidden = true;
  $("deleted").hidden = true;
  setError("result-error", "");
  $("wrong-open").hidden = !done;
  $("wrong-open").setAttribute("aria-expanded", "false");
  $("delete").hidden = false;
  $("delete").disabled = false;
  $("again-hint").hidden = false;
  $("again").textContent = done ? "Check another photo" : "Try another photo";
  if (!done) {
    $("result-title").textContent = "We could not assess this photo";
    $("retake-message").textContent = result.message || "The photo could not be assessed.";
    return;
  }
  const band = BANDS[result.risk] || { text: "Unknown risk", next: "" };
  $("result-title").textContent = `Your result: ${band.text.toLowerCase()}`;
  $("band").className = `band band-${result.risk}`;
  $("band-text").textContent = band.text;
  // The advice starts by naming the band, which the label above already says.
  $("band-advice").textContent = (result.advice || band.next).replace(/^(low|medium|high) risk\.\s*/i, "");
  $("odds").textContent = oddsInWords(result.malignant_probability);
  $("caveat").hidden = !result.caveat_text;
  $("caveat").textContent = result.caveat_text || "";
  const named = CLASSES.find(([key]) => key === result.top_class);
  // The named type is the one the photo makes likeliest compared with how common it is; the table keeps
  // the plain chances, so the page says which question each answers.
  $("top-class").textContent = named
    ? `Type that stands out most for how common it usually is: ${named[1]} (marked below). This is not a diagnosis.`
    : "";
  $("model-version").textContent = result.model_version || "unknown";

  $("result-photo").src = state.photoUrl;
  const heatmap = $("heatmap");
  heatmap.hidden = !result.heatmap_png_base64;
  $("heatmap-toggle").parentElement.hidden = !result.heatmap_png_base64;
  $("heatmap-hint").hidden = !result.heatmap_png_base64;
  if (result.heatmap_png_base64) heatmap.src = `data:image/png;base64,${result.heatmap_png_base64}`;
  setHeatmap(true);

  const body = $("classes-body");
  body.replaceChildren();
  const rows = CLASSES.map(([key, name, malignant]) => [key, name, malignant, result.probabilities?.[key] ?? 0])
    .sort((a, b) => b[3] - a[3]);
  for (const [key, name, malignant, p] of rows) {
    const tr = document.createElement("tr");
    tr.dataset.class = key;
    if (key === result.top_class) tr.className = "named";
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name[0].toUpperCase() + name.slice(1);
    if (malignant) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "skin cancer";
      th.append(" ", tag);
    }
    const td = document.createElement("td");
    td.className = "pct";
    td.textContent = percent(p);
    const bar = document.createElement("span");
    bar.className = malignant ? "bar malignant" : "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(100, p * 100)).toFixed(1)}%`;
    bar.append(fill);
    td.append(bar);
    tr.append(th, td);
    body.append(tr);
  }
}

function setHeatmap(on) {
  $("heatmap").style.visibility = on ? "visible" : "hidden";
  $("heatmap-toggle").checked = on;
  $("result-photo").alt = on
    ? "Your photo, cropped to the assessed centre square, with the heatmap laid over it."
    : "Your photo, cropped to the assessed centre square.";
}

$("heatmap-toggle").addEventListener("change", () => setHeatmap($("heatmap-toggle").checked));

$("again").addEventListener("click", () => {
  resetPhoto();
  show("step-photo");
});
// Answers are about one spot: another photo may show another.
$("again").addEventListener("click", () => {
  for (const [name] of QUESTIONS) $(`${name}-unsure`).checked = true;
});

// --- feedback ----------------------------------------------------------------------------------------------

function buildLabelOptions() {
  const box = $("label-options");
  const options = [...CLASSES.map(([key, name]) => [key, name]), ...COARSE];
  for (const [key, name] of options) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    Object.assign(input, { type: "radio", name: "label", value: key, id: `label-${key}` });
    label.htmlFor = input.id;
    label.append(input, ` ${name[0].toUpperCase()}${name.slice(1)}`);
    box.append(label);
  }
}

$("wrong-open").addEventListener("click", () => {
  const form = $("feedback-form");
  form.hidden = !form.hidden;
  $("wrong-open").setAttribute("aria-expanded", String(!form.hidden));
  if (!form.hidden) {
    state.feedbackKey = state.feedbackKey || randomKey();
    form.querySelector("input[type=radio]").focus();
  }
});

$("feedback-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const chosen = $("feedback-form").querySelector("input[name=label]:checked");
  if (!chosen) {
    setError("feedback-error", "Choose the correct answer first.");
    $("feedback-form").querySelector("input[type=radio]").focus();
    return;
  }
  setError("feedback-error", "");
  $("feedback-send").disabled = true;
  announce("Sending your feedback.");
  try {
    const response = await fetch(endpoint(state.config.feedback_url, "/"), {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-DeepSkin-Token": state.token },
      body: JSON.stringify({
        prediction_id: state.result.id,
        label: chosen.value,
        role: "user",
        histopathology: false,
        comment: $("comment").value.trim(),
        idempotency_key: state.feedbackKey || randomKey(),
      }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || body.error || String(response.status));
    $("feedback-form").hidden = true;
    $("wrong-open").hidden = true;
    const done = $("feedback-done");
    done.textContent = `Thank you. Your feedback (“${chosen.parentElement.textContent.trim()}”) was received` +
      (body.report_id ? `; reference ${body.report_id}.` : ".") +
      " It is deleted with your result.";
    done.hidden = false;
    done.focus();
    announce(done.textContent);
    state.feedbackKey = null;
  } catch (error) {
    setError("feedback-error", `Your feedback could not be sent (${error.message}). Please try again.`);
  } finally {
    $("feedback-send").disabled = false;
  }
});

// --- delete ------------------------------------------------------------------------------------------------

function describeErased(deleted) {
  const items = [];
  for (const path of deleted.objects || []) {
    items.push(path.includes("/heatmaps/") ? `The heatmap (${path})` : `Your photo (${path})`);
  }
  for (const path of deleted.documents || []) {
    items.push(path.startsWith("feedback/") ? `A feedback report (${path})` : `The result record (${path})`);
  }
  return items;
}

$("delete").addEventListener("click", async () => {
  if (!window.confirm("Delete your photo, its result and any feedback now? This cannot be undone.")) return;
  $("delete").disabled = true;
  setError("result-error", "");
  announce("Deleting.");
  try {
    const response = await fetch(endpoint(state.config.predict_url, `/results/${state.result.id}`), {
      method: "DELETE",
      headers: { "X-DeepSkin-Token": state.token },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok && response.status !== 404) throw new Error(body.error || String(response.status));
    const items = describeErased(body.deleted || {});
    $("deleted-summary").textContent = items.length
      ? `Everything stored for this check has been erased (${items.length} item${items.length === 1 ? "" : "s"}):`
      : "Nothing was left to erase: this result had already been deleted.";
    $("deleted-list").replaceChildren(...items.map((text) => Object.assign(document.createElement("li"), { textContent: text })));
    // Nothing of the result stays on the page either.
    $("result-done").hidden = true;
    $("result-retake").hidden = true;
    $("feedback-form").hidden = true;
    $("feedback-done").hidden = true;
    $("wrong-open").hidden = true;
    $("delete").hidden = true;
    forgetFollow();
    $("again-hint").hidden = true;
    $("heatmap").removeAttribute("src");
    $("result-photo").removeAttribute("src");
    $("result-title").textContent = "Your photo and result are deleted";
    $("again").textContent = "Check another photo";
    resetPhoto();
    $("deleted").hidden = false;
    $("deleted").focus();
    announce(`${$("deleted-summary").textContent} ${items.join(". ")}`);
  } catch (error) {
    $("delete").disabled = false;
    setError("result-error", `Deleting failed (${error.message}). Please try again.`);
  }
});

// --- start -------------------------------------------------------------------------------------------------

buildLabelOptions();
state.config = await loadConfig();
document.body.dataset.ready = "true";
