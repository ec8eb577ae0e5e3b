// The "try a model" page: lists the server's models and plugins, posts one image to the
// model's task route with `visualize_predictions`, and shows the drawn image and the JSON.
// Plain script, no build step; every URL is relative so the page works behind a path prefix.
"use strict";

// Roboflow's task names (`task_type` in /model/registry) and the routes that serve them.
const TASK_ROUTES = {
  "object-detection": "infer/object_detection",
  "instance-segmentation": "infer/instance_segmentation",
  "classification": "infer/classification",
  "keypoint-detection": "infer/keypoints_detection",
};

const $ = (id) => document.getElementById(id);

// Model id -> relative route, from the registry and /models.
const knownRoutes = new Map();

/** A failed request, with the server's own message. */
class ServerError extends Error {}

/** GET or POST JSON; a non-2xx answer throws the server's `message`. */
async function api(path, body) {
  // The key goes as a bearer token: a server with tenants takes it for every route, and any
  // server uses it to download a model from Roboflow.
  const key = $("api-key").value.trim();
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const init = body === undefined ? { headers } : {
    method: "POST",
    headers: { ...headers, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON: reported below as text when the status is an error.
  }
  if (!response.ok) {
    const message = json && typeof json.message === "string" ? json.message : text.trim() || response.statusText;
    throw new ServerError(`${message} (HTTP ${response.status})`);
  }
  if (json === null) {
    throw new ServerError(`${path} answered something other than JSON`);
  }
  return { json, response };
}

function humanBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit + 1 < units.length) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function messageRow(body, columns, text) {
  body.replaceChildren();
  const row = body.insertRow();
  const td = cell(row, text);
  td.colSpan = columns;
}

function routeOf(task) {
  return TASK_ROUTES[task] || null;
}

/** Fills the model picker and the models table from /model/registry and /models. */
async function loadModels() {
  const body = $("models-body");
  const pick = $("model-pick");
  let loaded, onDisk;
  try {
    [loaded, onDisk] = await Promise.all([api("model/registry"), api("models")]);
  } catch (e) {
    messageRow(body, 5, `Could not list the models: ${e.message}`);
    pick.replaceChildren(new Option("(could not list the models)", ""));
    return;
  }
  const models = new Map();
  for (const m of onDisk.json.models) {
    models.set(m.model_id, {
      id: m.model_id,
      task: m.task_type,
      where: m.location === "cache" ? "cache" : "models directory",
      bytes: m.bytes,
      loaded: m.loaded,
      route: m.route ? m.route.replace(/^\//, "") : routeOf(m.task_type),
    });
  }
  // The registry knows the task of every loaded model, downloaded ones included.
  for (const m of loaded.json.models) {
    const known = models.get(m.model_id);
    models.set(m.model_id, {
      ...(known || { id: m.model_id, where: "", bytes: null }),
      task: m.task_type,
      loaded: true,
      route: routeOf(m.task_type),
    });
  }
  const sorted = [...models.values()].sort((a, b) => a.id.localeCompare(b.id));
  knownRoutes.clear();
  for (const m of sorted) {
    if (m.route) knownRoutes.set(m.id, m.route);
  }

  body.replaceChildren();
  for (const m of sorted) {
    const row = body.insertRow();
    cell(row, m.id);
    cell(row, m.task || "unknown");
    cell(row, m.where);
    cell(row, m.bytes === null ? "" : humanBytes(m.bytes));
    cell(row, m.loaded ? "yes" : "no");
  }
  if (sorted.length === 0) messageRow(body, 5, "No models yet: type a model id to download one.");

  const current = $("model-id").value.trim();
  const groups = [
    ["Loaded", sorted.filter((m) => m.loaded)],
    ["On disk", sorted.filter((m) => !m.loaded)],
  ];
  pick.replaceChildren(new Option(sorted.length ? "Choose a model…" : "(none yet)", ""));
  for (const [label, list] of groups) {
    if (list.length === 0) continue;
    const group = document.createElement("optgroup");
    group.label = label;
    for (const m of list) {
      group.appendChild(new Option(m.task ? `${m.id} (${m.task})` : m.id, m.id, false, m.id === current));
    }
    pick.appendChild(group);
  }
}

async function loadPlugins() {
  const body = $("plugins-body");
  try {
    const { json } = await api("plugins");
    body.replaceChildren();
    for (const p of json.plugins) {
      const row = body.insertRow();
      cell(row, p.name);
      cell(row, p.version);
      cell(row, p.route);
      cell(row, p.description || "");
    }
    if (json.plugins.length === 0) messageRow(body, 4, "No plugins installed.");
  } catch (e) {
    messageRow(body, 4, `Could not list the plugins: ${e.message}`);
  }
}

function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(new Error(`cannot read ${file.name}: ${reader.error}`));
    reader.readAsDataURL(file);
  });
}

/** The route for a model: known already, else loaded now (`/model/add`) to learn its task. */
async function routeFor(modelId) {
  if (knownRoutes.has(modelId)) return knownRoutes.get(modelId);
  showStatus(`Loading ${modelId}…`);
  const { json } = await api("model/add", { model_id: modelId });
  const entry = json.models.find((m) => m.model_id === modelId);
  const route = entry && routeOf(entry.task_type);
  if (!route) {
    throw new ServerError(`${modelId} has task ${entry ? entry.task_type : "unknown"}, which this page cannot run`);
  }
  knownRoutes.set(modelId, route);
  return route;
}

function showStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  const error = $("error");
  error.textContent = text;
  error.hidden = !text;
}

/** A short summary of the predictions. */
function summarize(result) {
  if (typeof result.top === "string") {
    return result.top ? `Top class: ${result.top} (${(result.confidence * 100).toFixed(1)}%)` : "No class above the confidence";
  }
  if (Array.isArray(result.predicted_classes)) {
    return result.predicted_classes.length ? `Classes: ${result.predicted_classes.join(", ")}` : "No class above the confidence";
  }
  const n = Array.isArray(result.predictions) ? result.predictions.length : 0;
  if (n === 0) return "No predictions";
  const counts = new Map();
  for (const p of result.predictions) counts.set(p.class, (counts.get(p.class) || 0) + 1);
  const parts = [...counts].map(([name, count]) => `${count} ${name}`);
  return `${n} prediction${n === 1 ? "" : "s"}: ${parts.join(", ")}`;
}

function showResult(result, roundTripMs, requestId) {
  const image = $("result-image");
  const figure = image.closest("figure");
  if (typeof result.visualization === "string" && result.visualization) {
    image.src = `data:image/jpeg;base64,${result.visualization}`;
    figure.hidden = false;
  } else {
    image.removeAttribute("src");
    figure.hidden = true;
  }
  $("result-summary").textContent = summarize(result);
  // The picture is shown above; its base64 would bury the predictions.
  const shown = { ...result };
  if (typeof shown.visualization === "string") {
    shown.visualization = `<base64 JPEG, ${shown.visualization.length} characters: shown above>`;
  }
  $("result-json").textContent = JSON.stringify(shown, null, 2);
  const parts = [];
  if (typeof result.time === "number") parts.push(`model call ${(result.time * 1000).toFixed(1)} ms`);
  parts.push(`round trip ${roundTripMs.toFixed(0)} ms`);
  if (requestId) parts.push(`request ${requestId}`);
  $("timing").textContent = parts.join(" · ");
  $("result").hidden = false;
}

async function run(event) {
  event.preventDefault();
  showError("");
  const modelId = $("model-id").value.trim();
  const file = $("image-file").files[0];
  const url = $("image-url").value.trim();
  if (!modelId) {
    showError("Choose or type a model id.");
    $("model-id").focus();
    return;
  }
  if (!file && !url) {
    showError("Choose an image file, drop one, or give an image URL.");
    $("image-file").focus();
    return;
  }
  const button = $("run");
  button.disabled = true;
  $("try-form").setAttribute("aria-busy", "true");
  try {
    const route = await routeFor(modelId);
    const image = file ? { type: "base64", value: await readAsBase64(file) } : { type: "url", value: url };
    const body = {
      model_id: modelId,
      image,
      confidence: Number($("confidence").value),
      visualize_predictions: true,
      visualization_labels: $("labels").checked,
      // The server's default (1 px) is hard to see on a photo shown scaled down.
      visualization_stroke_width: 2,
    };
    showStatus(`Running ${modelId}…`);
    const started = performance.now();
    const { json, response } = await api(route, body);
    const elapsed = performance.now() - started;
    showResult(Array.isArray(json) ? json[0] : json, elapsed, response.headers.get("x-request-id"));
    showStatus(`Done: ${modelId} on ${route.replace("infer/", "")}.`);
    loadModels();
  } catch (e) {
    showStatus("");
    showError(e instanceof ServerError ? e.message : `The request failed: ${e.message}`);
  } finally {
    button.disabled = false;
    $("try-form").removeAttribute("aria-busy");
  }
}

function setPreview(file) {
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  if (file) {
    preview.src = URL.createObjectURL(file);
    preview.alt = `Chosen image: ${file.name}`;
    preview.hidden = false;
  } else {
    preview.removeAttribute("src");
    preview.hidden = true;
  }
}

function wireImageInputs() {
  const fileInput = $("image-file");
  const urlInput = $("image-url");
  const zone = $("drop-zone");
  // One image source at a time: the latest one chosen.
  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    if (file) urlInput.value = "";
    setPreview(file);
  });
  urlInput.addEventListener("input", () => {
    if (urlInput.value.trim() && fileInput.files.length) {
      fileInput.value = "";
      setPreview(null);
    }
  });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    const files = e.dataTransfer.files;
    if (files.length === 0) return;
    if (!files[0].type.startsWith("image/")) {
      showError(`${files[0].name} is not an image.`);
      return;
    }
    fileInput.files = files;
    fileInput.dispatchEvent(new Event("change"));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("model-pick").addEventListener("change", (e) => {
    if (e.target.value) $("model-id").value = e.target.value;
  });
  const confidence = $("confidence");
  confidence.addEventListener("input", () => {
    $("confidence-value").textContent = Number(confidence.value).toFixed(2);
  });
  // Another key may see other models and plugins.
  $("api-key").addEventListener("change", () => {
    loadModels();
    loadPlugins();
  });
  wireImageInputs();
  $("try-form").addEventListener("submit", run);
  loadModels();
  loadPlugins();
});
