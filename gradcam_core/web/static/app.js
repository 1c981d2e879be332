// The Grad-CAM demo page. On load it reads GET /api/config (the tasks, their layers, class names, VQA
// answers and the sample images) and fills the form; a task the server has no model for is greyed out
// with the option that enables it. The image comes from a dropped or chosen file, or from a sample
// (sent by name). "Explain" posts the form to POST /api/explain (a spinner runs meanwhile) and shows the
// explained and predicted targets, the top-5 table (a row clicked explains that class or answer), the
// five images with download links and the timings, labelled with the CAM method (the method selector and
// the modifier checkboxes are filled from the config's methods); a failed request shows the server's one-line
// {"error"} message in #error. Changing the task or the image clears the result (and abandons a request
// still running). The API's images are squares at the net's input size; the page shows them at the
// uploaded image's aspect ratio, and blends the heatmap over the input itself, with the opacity of the
// slider (the downloads stay the server's files). A result image clicked opens large in #lightbox.
// Segmentation also shows the class's region (the server's mask) over the input. Detection shows the
// detected boxes (the server's detect_boxes.png) with a button over each box and a table of them: a box
// clicked (on the picture or in the table) shows its maps in the pictures and opens its overlay large.
"use strict";

const TASKS = ["classification", "vqa", "captioning", "segmentation", "detection"];
// the tasks whose target is a label: their label field and class-name completions
const LABEL_FIELDS = { classification: ["label", "classes"], segmentation: ["seg-label", "seg-classes"] };
const IMAGE_KEYS = ["input", "overlay", "gcam", "gb", "gb_gcam"];
const MODIFIERS = ["counterfactual", "aug_smooth", "eigen_smooth"];

const state = {
  config: null,
  file: null,      // a File chosen or dropped, or null
  sample: null,    // a sample's name, or null
  previewUrl: null,
  size: null,      // a promise of the chosen image's {width, height} (null when it cannot be decoded)
  request: null,   // the AbortController of the request running, or null
  box: "",         // detection: the title of the box whose maps the pictures show, or ""
};

const $ = (id) => document.getElementById(id);

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  if (text !== undefined) o.textContent = text;
  return o;
}

// ---- errors ------------------------------------------------------------------------------------

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").textContent = "";
  $("error").hidden = true;
}

// ---- config ------------------------------------------------------------------------------------

async function loadConfig() {
  let response;
  try {
    response = await fetch("/api/config");
  } catch (err) {
    showError("Could not reach the server: " + err.message);
    return;
  }
  if (!response.ok) {
    showError(await errorMessage(response));
    return;
  }
  state.config = await response.json();
  setupTasks(state.config.tasks);
  setupMethods(state.config.methods || [], state.config.default_method || "gradcam");
  setupSamples(state.config.samples || []);
}

function setupTasks(tasks) {
  let first = null;
  for (const name of TASKS) {
    const task = tasks[name] || { enabled: false, enable: "not offered by this server" };
    const radio = $("task-" + name);
    const note = $("task-" + name + "-note");
    radio.disabled = !task.enabled;
    $("task-" + name + "-label").classList.toggle("disabled", !task.enabled);
    if (task.enabled) note.textContent = task.model || "";
    else showOptions(note, task.enable || "disabled");
    if (task.enabled && first === null) first = name;
  }
  for (const [name, [, list]] of Object.entries(LABEL_FIELDS)) {
    const classes = tasks[name] && tasks[name].classes;
    if (classes) {
      // "243 boxer": completion by number or by name; labelValue() sends the number.
      $(list).replaceChildren(...classes.map((c, i) => option(i + 1 + " " + c)));
    }
  }
  const detection = tasks.detection;
  if (detection && detection.enabled) {
    $("detect-note").textContent = "Explains every detected box scoring at least " + detection.score_threshold +
      " (at most " + detection.max_boxes + ", best first).";
  }
  const vqa = tasks.vqa;
  if (vqa && vqa.enabled) {
    $("question").value = vqa.question || "";
    $("answers").replaceChildren(...(vqa.answers || []).map((a) => option(a)));
  }
  for (const radio of document.querySelectorAll('input[name="task"]')) {
    radio.addEventListener("change", () => {
      clearResult();
      selectTask(radio.value);
    });
  }
  if (first === null) {
    $("explain").disabled = true;
    showError("The server has no task enabled.");
    return;
  }
  $("task-" + first).checked = true;
  selectTask(first);
}

// The "enable" text with its command-line options (-caption_model_path) in <code>, kept on one line.
function showOptions(element, text) {
  element.replaceChildren();
  for (const part of text.split(/(\S+)/)) {
    if (part.startsWith("-")) element.append(Object.assign(document.createElement("code"), { textContent: part }));
    else element.append(part);
  }
}

function currentTask() {
  const checked = document.querySelector('input[name="task"]:checked');
  return checked ? checked.value : null;
}

function selectTask(name) {
  const task = state.config.tasks[name];
  for (const other of TASKS) $("fields-" + other).hidden = other !== name;
  const layers = task.layers || [];
  $("layer").replaceChildren(...layers.map((l) => option(l, l)));
  if (task.default_layer) $("layer").value = task.default_layer;
}

// ---- methods -----------------------------------------------------------------------------------

// How the page names a method: the part of its summary before ":" ("Grad-CAM: ..."), else its name.
function methodLabel(name) {
  const method = ((state.config && state.config.methods) || []).find((m) => m.name === name);
  const head = method && method.summary ? method.summary.split(":")[0].trim() : "";
  return head && head.length <= 30 ? head : name;
}

function setupMethods(methods, chosen) {
  const select = $("method");
  select.replaceChildren(...methods.map((m) => {
    const o = option(m.name, methodLabel(m.name));
    o.title = m.summary;
    return o;
  }));
  if (methods.some((m) => m.name === chosen)) select.value = chosen;
  const showSummary = () => {
    const method = methods.find((m) => m.name === select.value);
    $("method-summary").textContent = method ? method.summary : "";
  };
  select.addEventListener("change", showSummary);
  showSummary();
}

// ---- image input -------------------------------------------------------------------------------

function setupSamples(samples) {
  const box = $("samples");
  for (const sample of samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sample";
    button.dataset.name = sample.name;
    button.setAttribute("aria-pressed", "false");
    button.title = sample.name;
    const img = document.createElement("img");
    img.src = sample.url;
    img.alt = "Sample " + sample.name;
    img.loading = "lazy";
    button.append(img);
    button.addEventListener("click", () => chooseSample(sample));
    box.append(button);
  }
  $("samples-heading").hidden = samples.length === 0;
}

function markSample(name) {
  for (const button of $("samples").querySelectorAll(".sample")) {
    button.setAttribute("aria-pressed", String(button.dataset.name === name));
  }
}

// The EXIF orientation of a JPEG (1 without one). The server ignores it, as libjpeg does, and so does
// the page (the preview has image-orientation: none); but the browser reports an image's size turned
// by it, so orientations 5 to 8 (a quarter turn) swap the sides back.
async function exifOrientation(blob) {
  const view = new DataView(await blob.slice(0, 1 << 17).arrayBuffer());
  if (view.byteLength < 4 || view.getUint16(0) !== 0xffd8) return 1;
  let at = 2;
  while (at + 4 <= view.byteLength) {
    const marker = view.getUint16(at);
    if ((marker & 0xff00) !== 0xff00 || marker === 0xffda) return 1; // the image data: no EXIF before it
    const length = view.getUint16(at + 2);
    if (marker === 0xffe1 && at + 10 <= view.byteLength && view.getUint32(at + 4) === 0x45786966 &&
        view.getUint16(at + 8) === 0) {
      return tiffOrientation(view, at + 10, Math.min(view.byteLength, at + 2 + length));
    }
    at += 2 + length;
  }
  return 1;
}

// The Orientation tag (0x0112) of the TIFF block at view[start, end): its first IFD's entry.
function tiffOrientation(view, start, end) {
  if (start + 8 > end) return 1;
  const little = view.getUint16(start) === 0x4949;
  const ifd = start + view.getUint32(start + 4, little);
  if (ifd + 2 > end) return 1;
  const count = view.getUint16(ifd, little);
  for (let i = 0; i < count; i++) {
    const entry = ifd + 2 + 12 * i;
    if (entry + 12 > end) return 1;
    if (view.getUint16(entry, little) === 0x0112) return view.getUint16(entry + 8, little);
  }
  return 1;
}

// The image's {width, height} as the server decodes it, or null when the browser cannot decode it.
async function imageSize(preview, blob) {
  try {
    await preview.decode();
  } catch (err) {
    return null;
  }
  const [width, height] = [preview.naturalWidth, preview.naturalHeight];
  const orientation = await blob.then(exifOrientation).catch(() => 1);
  return orientation >= 5 && orientation <= 8 ? { width: height, height: width } : { width, height };
}

// blob: a promise of the image's bytes (for its EXIF orientation).
function showPreview(src, text, blob) {
  clearResult();
  const preview = $("preview");
  preview.hidden = false;
  preview.src = src;
  state.size = imageSize(preview, blob);
  $("chosen").textContent = text;
  $("dropzone").classList.add("has-image");
}

function chooseSample(sample) {
  state.file = null;
  state.sample = sample.name;
  $("file").value = "";
  markSample(sample.name);
  showPreview(sample.url, "Sample: " + sample.name, fetch(sample.url).then((r) => r.blob()));
}

function chooseFile(file) {
  if (!file) return;
  state.file = file;
  state.sample = null;
  markSample(null);
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  showPreview(state.previewUrl, file.name, Promise.resolve(file));
}

function setupDropzone() {
  const zone = $("dropzone");
  const input = $("file");
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  input.addEventListener("change", () => chooseFile(input.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    chooseFile(event.dataTransfer.files[0]);
  });
  // A file that is not an image (or is broken) cannot be previewed; the server says why on Explain.
  $("preview").addEventListener("error", () => {
    $("preview").hidden = true;
  });
}

// ---- the request -------------------------------------------------------------------------------

// The label field as the server takes it: "243 boxer" (a completion) -> "243"; anything else as typed.
function labelValue(task) {
  const text = $(LABEL_FIELDS[task][0]).value.trim();
  const classes = state.config.tasks[task].classes || [];
  const match = /^(\d+)\s+(.+)$/.exec(text);
  if (match && classes[Number(match[1]) - 1] === match[2]) return match[1];
  return text;
}

function buildForm(task) {
  const form = new FormData();
  if (state.file) form.append("image", state.file, state.file.name);
  else form.append("sample", state.sample);
  form.append("task", task);
  form.append("layer", $("layer").value);
  if ($("method").value) form.append("method", $("method").value);
  for (const key of MODIFIERS) form.append(key, $(key).checked ? "1" : "0");
  if (task in LABEL_FIELDS) form.append("label", labelValue(task));
  if (task === "vqa") {
    form.append("question", $("question").value);
    form.append("answer", $("answer").value.trim());
  }
  if (task === "captioning") form.append("caption", $("caption").value.trim());
  return form;
}

async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return body.error;
  } catch (err) {
    // not JSON: fall through to the status line
  }
  return "The server answered " + response.status + " " + response.statusText;
}

function setBusy(busy) {
  $("explain").disabled = busy;
  $("explain").classList.toggle("running", busy);
  $("explain-text").textContent = busy ? "Explaining..." : "Explain";
  $("busy").hidden = !busy;
}

async function explain(event) {
  event.preventDefault();
  clearResult();
  const task = currentTask();
  if (!state.config || !task) return;
  if (!state.file && !state.sample) {
    showError("Choose an image first: drop one on the box, click it, or pick a sample.");
    return;
  }
  const request = new AbortController();
  state.request = request;
  const size = state.size;
  setBusy(true);
  const started = performance.now();
  try {
    const response = await fetch("/api/explain", { method: "POST", body: buildForm(task), signal: request.signal });
    if (!response.ok) {
      const message = await errorMessage(response);
      if (state.request === request) showError(message);
      return;
    }
    const result = await response.json();
    const shape = await size;
    if (state.request === request) showResult(result, shape, (performance.now() - started) / 1000);
  } catch (err) {
    if (state.request === request) showError("Could not reach the server: " + err.message);
  } finally {
    // a request abandoned (the task or the image changed) leaves the page to what replaced it
    if (state.request === request) {
      state.request = null;
      setBusy(false);
    }
  }
}

// The result and any error away, and a request still running abandoned: they were for another task
// or image.
function clearResult() {
  clearError();
  if (state.request) {
    state.request.abort();
    state.request = null;
    setBusy(false);
  }
  $("result").hidden = true;
  for (const id of ["target", "predicted", "result-layer", "result-method", "time"]) $(id).textContent = "";
  $("predictions").hidden = true;
  $("predictions").tBodies[0].replaceChildren();
  $("boxes-table").hidden = true;
  $("boxes-table").tBodies[0].replaceChildren();
  $("boxes-figure").hidden = true;
  state.box = "";
  for (const hotspot of $("boxes-view").querySelectorAll(".box-hotspot")) hotspot.remove();
  for (const figure of mapFigures()) figure.hidden = false;
  for (const img of $("images").querySelectorAll("img")) img.removeAttribute("src");
  for (const link of $("images").querySelectorAll("a")) link.removeAttribute("href");
}

// ---- the result --------------------------------------------------------------------------------

function describe(target, predicted) {
  if ("caption" in target) return ["Caption: " + target.caption, "Generated caption: " + predicted.caption];
  if ("answer" in target) return ["Answer: " + target.answer, "Predicted answer: " + predicted.answer];
  const name = (t, sep) => (t.name ? sep + t.name : "");
  const pixels = (t) => ("pixels" in t ? " (" + t.pixels + " pixels)" : "");
  return ["Label " + target.label + name(target, ": ") + pixels(target),
    "Predicted: " + predicted.label + name(predicted, " ") + pixels(predicted)];
}

function percent(score) {
  return (100 * score).toFixed(score >= 0.1 ? 1 : 2) + " %";
}

// Explain a row of the top 5: its label (or answer) into the form, and the form sent.
function explainRow(prediction) {
  if ("answer" in prediction) $("answer").value = prediction.answer;
  else $(LABEL_FIELDS[currentTask()][0]).value = String(prediction.label);
  $("form").requestSubmit();
}

function showPredictions(predictions, target) {
  const table = $("predictions");
  table.hidden = !predictions || predictions.length === 0;
  if (table.hidden) return;
  const isVqa = "answer" in predictions[0];
  const headings = isVqa ? ["Answer", "Score"] : ["Label", "Name", "Score"];
  $("predictions-head").replaceChildren(
    ...headings.map((h) => Object.assign(document.createElement("th"), { scope: "col", textContent: h })),
  );
  const rows = predictions.map((p) => {
    const row = document.createElement("tr");
    const cells = isVqa ? [p.answer, percent(p.score)] : [p.label, p.name ?? "", percent(p.score)];
    for (const value of cells) row.append(Object.assign(document.createElement("td"), { textContent: value }));
    const explained = isVqa ? p.answer === target.answer : String(p.label) === String(target.label);
    if (explained) row.setAttribute("aria-current", "true");
    row.tabIndex = 0;
    row.title = "Explain " + (isVqa ? "the answer " + p.answer : p.label + (p.name ? " " + p.name : ""));
    row.addEventListener("click", () => explainRow(p));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        explainRow(p);
      }
    });
    return row;
  });
  table.tBodies[0].replaceChildren(...rows);
}

// The uploaded image's aspect ratio on every result picture and the lightbox (CSS custom properties,
// set through the CSSOM: the page's CSP allows no inline style); a square without a decodable image.
function setAspect(shape) {
  const [w, h] = shape && shape.width > 0 && shape.height > 0 ? [shape.width, shape.height] : [1, 1];
  document.body.style.setProperty("--aspect", w + " / " + h);
  document.body.style.setProperty("--aspect-number", String(w / h));
}

function setOpacity() {
  const value = Number($("opacity").value);
  document.body.style.setProperty("--heat-opacity", String(value / 100));
  $("opacity-value").textContent = value + " %";
}

// The result pictures' captions, titles and alt texts name the method that made them.
function labelMethod(method, modifiers) {
  const on = MODIFIERS.filter((key) => modifiers && modifiers[key]);
  const label = methodLabel(method) + (on.includes("counterfactual") ? " (counterfactual)" : "");
  for (const span of $("images").querySelectorAll(".method-label")) span.textContent = label;
  const titles = { overlay: label + " overlay", heatmap: label + " heatmap", guided: "Guided " + label };
  for (const picture of $("images").querySelectorAll(".picture[data-kind]")) {
    picture.dataset.title = titles[picture.dataset.kind];
  }
  $("blend-heat").alt = label + " heatmap over the input image";
  $("img-gcam").alt = label + " heatmap";
  $("img-gb_gcam").alt = "Guided " + label;
  const shown = on.map((key) => key.replace("_", " "));
  $("result-method").textContent = "Method: " + methodLabel(method) + (shown.length ? " (" + shown.join(", ") + ")" : "");
}

function showResult(result, shape, browserSeconds) {
  if (result.task === "detection") {
    showDetection(result, shape, browserSeconds);
    return;
  }
  const [target, predicted] = describe(result.target, result.predicted);
  $("target").textContent = target;
  $("result-layer").textContent = "Layer: " + result.layer;
  labelMethod(result.method || "gradcam", result.modifiers);
  $("predicted").textContent = predicted;
  showPredictions(result.predictions, result.target);
  setAspect(shape);
  const files = result.files || {};
  for (const key of IMAGE_KEYS) {
    const url = result.images[key];
    if (key !== "overlay") $("img-" + key).src = url;
    const link = $("dl-" + key);
    link.href = url;
    link.download = files[key] || key + ".png";
  }
  // the overlay shown is the browser's blend of the heatmap over the input (the slider's opacity)
  $("blend-input").src = result.images.input;
  $("blend-heat").src = result.images.gcam;
  // segmentation: the class's region (white) over the input, at the same opacity
  const mask = result.images.mask;
  $("mask-figure").hidden = !mask;
  if (mask) {
    $("mask-input").src = result.images.input;
    $("mask-region").src = mask;
    $("dl-mask").href = mask;
    $("dl-mask").download = files.mask || "mask.png";
  }
  showDone(result, browserSeconds);
}

// The timings, and the result shown (scrolled to where it starts below the fold).
function showDone(result, browserSeconds) {
  const s = result.seconds;
  $("time").textContent = "explained in " + s.explain.toFixed(2) + " s (request " + s.total.toFixed(2) + " s)";
  $("time").title = browserSeconds.toFixed(2) + " s in the browser, upload and download included";
  $("result").hidden = false;
  // scrolled to only where it starts below the fold (beside the form on a wide screen it does not)
  if ($("result").getBoundingClientRect().top > window.innerHeight * 0.6) {
    $("result").scrollIntoView({ block: "start" });
  }
}

// ---- detection ---------------------------------------------------------------------------------

// The result pictures of one target (all but the detection overview and the segmentation region).
function mapFigures() {
  return [...$("images").querySelectorAll("figure")].filter((f) => f.id !== "boxes-figure" && f.id !== "mask-figure");
}

function boxTitle(box) {
  return "Box " + box.index + ": " + (box.name ?? box.label) + " " + percent(box.score);
}

// The detected boxes over the image (the server's overview, a button over each box) and their table;
// the first box's maps in the pictures. No box: the server's message and the overview alone.
function showDetection(result, shape, browserSeconds) {
  const boxes = result.boxes;
  $("target").textContent = boxes.length ? boxes.length + (boxes.length === 1 ? " box" : " boxes") + " explained"
    : result.message;
  $("predicted").textContent = "Score threshold " + result.score_threshold + ", at most " + result.max_boxes + " boxes";
  $("result-layer").textContent = "Layer: " + result.layer;
  labelMethod(result.method || "gradcam", result.modifiers);
  setAspect({ width: result.width, height: result.height });
  $("mask-figure").hidden = true;
  $("boxes-figure").hidden = false;
  $("img-boxes").src = result.images.boxes;
  $("dl-boxes").href = result.images.boxes;
  $("dl-boxes").download = result.files.boxes || "boxes.png";
  for (const figure of mapFigures()) figure.hidden = boxes.length === 0;
  const view = $("boxes-view");
  const rows = [];
  for (const box of boxes) {
    const [x1, y1, x2, y2] = box.box;
    const hotspot = document.createElement("button");
    hotspot.type = "button";
    hotspot.className = "box-hotspot";
    hotspot.dataset.index = String(box.index);
    hotspot.title = boxTitle(box);
    hotspot.setAttribute("aria-label", "Show the maps of " + boxTitle(box));
    // set through the CSSOM (the page's CSP allows no inline style attribute)
    hotspot.style.left = (100 * x1 / result.width) + "%";
    hotspot.style.top = (100 * y1 / result.height) + "%";
    hotspot.style.width = (100 * (x2 - x1) / result.width) + "%";
    hotspot.style.height = (100 * (y2 - y1) / result.height) + "%";
    hotspot.addEventListener("click", (event) => {
      event.stopPropagation(); // the overview itself enlarges on a click elsewhere
      showBox(result, box, true);
    });
    view.append(hotspot);
    const row = document.createElement("tr");
    row.dataset.index = String(box.index);
    for (const value of [box.index, box.name ?? box.label, percent(box.score)]) {
      row.append(Object.assign(document.createElement("td"), { textContent: value }));
    }
    row.tabIndex = 0;
    row.title = "Show the maps of box " + box.index;
    row.addEventListener("click", () => showBox(result, box, true));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        showBox(result, box, true);
      }
    });
    rows.push(row);
  }
  $("boxes-table").tBodies[0].replaceChildren(...rows);
  $("boxes-table").hidden = boxes.length === 0;
  if (boxes.length) showBox(result, boxes[0], false);
  showDone(result, browserSeconds);
}

// One box's images in the result pictures (its row and button marked); with ``enlarge`` its overlay
// (the heatmap blended over the input) opens large.
function showBox(result, box, enlarged) {
  for (const key of IMAGE_KEYS) {
    const url = key === "input" ? result.images.input : box.images[key];
    if (key !== "overlay") $("img-" + key).src = url;
    const link = $("dl-" + key);
    link.href = url;
    link.download = (key === "input" ? result.files.input : box.files[key]) || key + ".png";
  }
  $("blend-input").src = result.images.input;
  $("blend-heat").src = box.images.gcam;
  for (const element of [...$("boxes-table").tBodies[0].rows, ...$("boxes-view").querySelectorAll(".box-hotspot")]) {
    const current = element.dataset.index === String(box.index);
    if (current) element.setAttribute("aria-current", "true");
    else element.removeAttribute("aria-current");
  }
  state.box = boxTitle(box);
  $("target").textContent = result.boxes.length + (result.boxes.length === 1 ? " box" : " boxes") +
    " explained; shown: " + state.box;
  if (enlarged) enlarge($("overlay-view"));
}

// ---- the lightbox ------------------------------------------------------------------------------

// The picture clicked, large: copies of its images (the blend's heat layer keeps following the slider).
function enlarge(picture) {
  const copies = [...picture.querySelectorAll("img")].map((img) => {
    const copy = document.createElement("img");
    copy.src = img.src;
    copy.alt = img.alt;
    copy.className = img.className;
    return copy;
  });
  $("lightbox-picture").replaceChildren(...copies);
  $("lightbox-picture").classList.toggle("blend", picture.classList.contains("blend"));
  $("lightbox-caption").textContent = picture.dataset.title +
    (picture.id === "overlay-view" && state.box ? " - " + state.box : "");
  $("lightbox").showModal();
}

function setupLightbox() {
  for (const picture of $("images").querySelectorAll(".picture")) {
    picture.addEventListener("click", () => enlarge(picture));
  }
  const box = $("lightbox");
  box.addEventListener("click", () => box.close()); // Escape closes it too (the dialog's own cancel)
  box.addEventListener("close", () => $("lightbox-picture").replaceChildren());
}

// ---- start -------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  setupDropzone();
  setupLightbox();
  $("opacity").addEventListener("input", setOpacity);
  setOpacity();
  $("form").addEventListener("submit", explain);
  loadConfig();
});
