// faceanon's page: sends each photo to this machine's server, one at a time, and shows the
// answers. Keys and results live in this page's memory only.
"use strict";

const $ = (id) => document.getElementById(id);
let generatedKey = null; // {blob, name}: a key made by "Generate a new key", never sent elsewhere

function showTab(name) {
  for (const tab of ["anonymize", "restore"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`panel-${tab}`).hidden = tab !== name;
  }
}
$("tab-anonymize").onclick = () => showTab("anonymize");
$("tab-restore").onclick = () => showTab("restore");

async function loadOptions() {
  const options = await (await fetch("/api/options")).json();
  const select = $("backbone");
  for (const b of options.backbones) {
    const option = new Option(b.name, b.name, false, b.name === options.default_backbone);
    option.title = `${b.description} (licence: ${b.licence})`;
    select.add(option);
  }
  const hint = () => {
    const b = options.backbones.find((x) => x.name === select.value);
    $("backbone-hint").textContent = b ? `${b.description}. Licence: ${b.licence}.` : "";
  };
  select.onchange = hint;
  hint();
}

function updateMethod() {
  const reversible = ["keyflip", "hide"].includes($("method").value);
  $("key-fieldset").disabled = !reversible;
  $("backbone").disabled = !reversible && $("method").value !== "hydro";
}
$("method").onchange = updateMethod;

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
}

$("keygen").onclick = async () => {
  const answer = await (await fetch("/api/keygen", { method: "POST" })).json();
  generatedKey = { blob: new Blob([answer.file], { type: "text/plain" }), name: "faceanon.key" };
  $("key-text").textContent = answer.key;
  $("key-download").href = URL.createObjectURL(generatedKey.blob);
  $("key-once").hidden = false;
  $("anonymize-key").value = "";
  download(generatedKey.blob, generatedKey.name);
};
$("anonymize-key").onchange = () => {
  if ($("anonymize-key").files.length) {
    generatedKey = null; // the chosen file replaces a generated key
    $("key-once").hidden = true;
    $("key-text").textContent = "";
  }
};

for (const tab of ["anonymize", "restore"]) {
  const drop = $(`${tab}-drop`);
  drop.ondragover = (event) => { event.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    $(`${tab}-files`).files = event.dataTransfer.files;
  };
}

function framed(src, boxes, width, height, alt) {
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = new Image();
  img.src = src;
  img.alt = alt;
  frame.append(img);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("preserveAspectRatio", "none");
  const draw = (w, h) => {
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    for (const [x0, y0, x1, y1] of boxes) {
      const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      rect.setAttribute("x", x0);
      rect.setAttribute("y", y0);
      rect.setAttribute("width", x1 - x0);
      rect.setAttribute("height", y1 - y0);
      svg.append(rect);
    }
  };
  if (width) draw(width, height);
  else img.addEventListener("load", () => draw(img.naturalWidth, img.naturalHeight), { once: true });
  frame.append(svg);
  return frame;
}

function showResult(tab, file, answer, blob) {
  const block = document.createElement("div");
  block.className = "result";
  block.dataset.name = answer.name;
  const pair = document.createElement("div");
  pair.className = "pair";
  const before = document.createElement("figure");
  before.innerHTML = "<figcaption></figcaption>";
  before.firstChild.textContent = `${file.name} (faces outlined)`;
  before.append(framed(URL.createObjectURL(file), answer.boxes, 0, 0, "original"));
  const after = document.createElement("figure");
  after.innerHTML = "<figcaption></figcaption>";
  const faces = answer.boxes.length === 1 ? "1 face" : `${answer.boxes.length} faces`;
  after.firstChild.textContent = `${answer.name} (${faces})`;
  const url = URL.createObjectURL(blob);
  after.append(framed(url, answer.boxes, 0, 0, tab === "anonymize" ? "anonymized" : "restored"));
  pair.append(before, after);
  const link = document.createElement("a");
  link.href = url;
  link.download = answer.name;
  link.className = "download";
  link.textContent = `Download ${answer.name}`;
  block.append(pair, link);
  if (answer.model) {
    const model = document.createElement("div");
    model.className = "hint";
    model.textContent = `model: ${answer.model}`;
    block.append(model);
  }
  $(`${tab}-results`).append(block);
}

function message(tab, text) {
  const item = document.createElement("li");
  item.className = "error";
  item.textContent = text;
  $(`${tab}-messages`).append(item);
}

async function readLines(response, onLine) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n")) >= 0) {
      onLine(JSON.parse(buffered.slice(0, end)));
      buffered = buffered.slice(end + 1);
    }
  }
}

function keyFile(tab) {
  const chosen = $(`${tab}-key`).files[0];
  if (chosen) return { blob: chosen, name: chosen.name };
  return tab === "anonymize" ? generatedKey : null;
}

const results = { anonymize: [], restore: [] };

async function run(tab) {
  const files = Array.from($(`${tab}-files`).files);
  $(`${tab}-messages`).replaceChildren();
  $(`${tab}-results`).replaceChildren();
  $(`${tab}-zip`).hidden = true;
  results[tab] = [];
  if (!files.length) {
    message(tab, "no photo: choose one or more photos first");
    return;
  }
  const button = $(`${tab}-run`);
  button.disabled = true;
  $(`${tab}-status`).hidden = false;
  const bar = $(`${tab}-progress`);
  const text = $(`${tab}-status-text`);
  const verb = tab === "anonymize" ? "Anonymizing" : "Restoring";
  try {
    for (const [index, file] of files.entries()) {
      const where = `${verb} ${index + 1} of ${files.length}: ${file.name}`;
      text.textContent = where;
      bar.value = index / files.length;
      const form = new FormData();
      form.append("image", file, file.name);
      const key = keyFile(tab);
      if (tab === "anonymize") {
        form.append("method", $("method").value);
        form.append("backbone", $("backbone").value);
      }
      if (key && (tab === "restore" || ["keyflip", "hide"].includes($("method").value))) {
        form.append("key", key.blob, key.name);
        form.append("passphrase", $(`${tab}-passphrase`).value);
      }
      let response;
      try {
        response = await fetch(`/api/${tab === "anonymize" ? "anonymize" : "deanonymize"}`, { method: "POST", body: form });
      } catch (error) {
        message(tab, `${file.name}: the server did not answer (is faceanon serve still running?)`);
        continue;
      }
      if (!response.ok) {
        const answer = await response.json().catch(() => ({ error: `${file.name}: error ${response.status}` }));
        message(tab, answer.error);
        continue;
      }
      await readLines(response, (line) => {
        if (line.status) text.textContent = `${where} (${line.status})`;
        if (line.step) {
          const [done, total] = line.step;
          text.textContent = `${where}: step ${done} of ${total}`;
          bar.value = (index + done / total) / files.length;
        }
        if (line.error) message(tab, line.error);
        if (line.result) {
          const bytes = Uint8Array.from(atob(line.result.image), (c) => c.charCodeAt(0));
          const blob = new Blob([bytes], { type: "image/png" });
          results[tab].push({ name: line.result.name, blob });
          showResult(tab, file, line.result, blob);
        }
      });
    }
    bar.value = 1;
    const done = results[tab].length;
    text.textContent = `${tab === "anonymize" ? "Anonymized" : "Restored"} ${done} of ${files.length} photo${files.length === 1 ? "" : "s"}.`;
    $(`${tab}-zip`).hidden = done < 1;
  } finally {
    button.disabled = false;
  }
}
$("anonymize-run").onclick = () => run("anonymize");
$("restore-run").onclick = () => run("restore");

async function zip(tab) {
  const form = new FormData();
  for (const r of results[tab]) form.append("file", r.blob, r.name);
  const response = await fetch("/api/zip", { method: "POST", body: form });
  if (!response.ok) {
    message(tab, (await response.json()).error);
    return;
  }
  download(await response.blob(), tab === "anonymize" ? "faceanon-anonymized.zip" : "faceanon-restored.zip");
}
$("anonymize-zip").onclick = () => zip("anonymize");
$("restore-zip").onclick = () => zip("restore");

updateMethod();
loadOptions();

// The key fields sit in forms (browsers expect a password field in one); Enter submits nothing.
for (const form of document.querySelectorAll("form")) {
  form.addEventListener("submit", (event) => event.preventDefault());
}
