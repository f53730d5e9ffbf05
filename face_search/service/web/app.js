// The search page: upload or drop a photo, POST it to /api/search, show the face found,
// its code and the nearest gallery faces. Text from the server is only ever set with
// textContent (identities and file names are data, never markup).
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
// Each search gets the next number; an answer is shown only while its search is still the
// latest, so a slow answer to an earlier photo never replaces a later photo's results.
let latestSearch = 0;
let pendingSearch = null; // the AbortController of the search under way

function setStatus(text, state) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = state;
}

function formatBytes(n) {
  return n >= 1048576 ? `${(n / 1048576).toFixed(n % 1048576 ? 1 : 0)} MB`
                      : `${Math.round(n / 1024)} KB`;
}

function shortSource(source) {
  return source.split("/").pop();
}

async function loadInfo() {
  try {
    const answer = await fetch("/api/info");
    info = await answer.json();
    const model = info.model || {};
    const about = [model.method, model.checkpoint, model.epoch != null ? `epoch ${model.epoch}` : null]
      .filter(Boolean).join(", ");
    $("info").textContent =
      `${info.count.toLocaleString()} faces of ${info.identities.toLocaleString()} identities · ` +
      `${info.num_bits}-bit codes · model ${about || "?"} · detector ${info.detector}`;
    $("limits").textContent =
      `JPEG, PNG, GIF, BMP, WebP or TIFF, up to ${formatBytes(info.max_upload_bytes)}`;
  } catch (error) {
    $("info").textContent = "The search service does not answer.";
  }
}

function showFace(result) {
  const photo = $("photo");
  const box = $("face-box");
  photo.src = result.photo.preview;
  const b = result.face.box;
  if (b) {
    const w = result.photo.width;
    const h = result.photo.height;
    box.style.left = `${(100 * b[0]) / w}%`;
    box.style.top = `${(100 * b[1]) / h}%`;
    box.style.width = `${(100 * b[2]) / w}%`;
    box.style.height = `${(100 * b[3]) / h}%`;
    box.hidden = false;
  } else {
    box.hidden = true;
  }
  $("face-note").textContent =
    `${result.photo.width}×${result.photo.height} photo · ${result.face.note}`;
  $("face").src = result.face.image;
  $("code-title").textContent = `Its ${result.code.num_bits}-bit code`;
  $("code").textContent = result.code.bits.match(/.{1,8}/g).join(" ");
  $("query").hidden = false;
}

function hitCard(hit, numBits) {
  const item = document.createElement("li");
  item.className = "hit";
  item.dataset.galleryId = hit.gallery_id;
  item.dataset.distance = hit.distance;
  item.dataset.identity = hit.identity;
  let picture;
  if (hit.thumbnail) {
    picture = document.createElement("img");
    picture.src = hit.thumbnail;
    picture.alt = `Gallery face ${hit.gallery_id}`;
    picture.width = 96;
    picture.height = 96;
    picture.className = "pixelated";
  } else {
    picture = document.createElement("div");
    picture.textContent = "no image";
  }
  picture.classList.add("thumb");
  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = `#${hit.rank}`;
  const identity = document.createElement("div");
  identity.className = "identity";
  identity.textContent = hit.identity;
  identity.title = `identity ${hit.identity} (label ${hit.label})`;
  const distance = document.createElement("div");
  distance.className = "distance";
  distance.textContent = `distance ${hit.distance}`;
  const meter = document.createElement("div");
  meter.className = "meter";
  const fill = document.createElement("span");
  fill.style.width = `${100 * (1 - hit.distance / numBits)}%`;
  meter.appendChild(fill);
  const source = document.createElement("div");
  source.className = "source muted small";
  source.textContent = shortSource(hit.source);
  source.title = `gallery id ${hit.gallery_id}: ${hit.source}`;
  item.append(rank, picture, identity, distance, meter, source);
  return item;
}

function showHits(result) {
  const list = $("hits");
  list.replaceChildren(...result.hits.map((hit) => hitCard(hit, result.code.num_bits)));
  $("results-title").textContent =
    `The ${result.hits.length} nearest of ${result.gallery_size.toLocaleString()} gallery faces`;
  $("results").hidden = false;
}

async function search(file) {
  if (!file) return;
  const number = ++latestSearch;
  if (pendingSearch) pendingSearch.abort(); // its answer would be ignored anyway
  pendingSearch = null;
  if (info && file.size > info.max_upload_bytes) {
    setStatus(`${file.name} is ${formatBytes(file.size)}, more than the limit of ` +
              `${formatBytes(info.max_upload_bytes)}.`, "error");
    return;
  }
  setStatus(`Searching with ${file.name}…`, "busy");
  const form = new FormData();
  form.append("photo", file, file.name);
  const controller = new AbortController();
  pendingSearch = controller;
  let answer;
  let result;
  try {
    answer = await fetch("/api/search", { method: "POST", body: form, signal: controller.signal });
    result = await answer.json();
  } catch (error) {
    if (number !== latestSearch) return; // aborted or overtaken by a later search
    setStatus("The search service did not answer; is it still running?", "error");
    return;
  } finally {
    if (pendingSearch === controller) pendingSearch = null;
  }
  if (number !== latestSearch) return; // a later search was started meanwhile
  if (!answer.ok) {
    $("query").hidden = true;
    $("results").hidden = true;
    setStatus(`${file.name}: ${result.error || `the search failed (${answer.status})`}`, "error");
    return;
  }
  showFace(result);
  showHits(result);
  setStatus(`${file.name}: face found and searched in ${(1000 * result.seconds).toFixed(0)} ms.`,
            "done");
}

function wireUpload() {
  const zone = $("dropzone");
  const input = $("photo-input");
  input.addEventListener("change", () => {
    search(input.files[0]);
    input.value = "";
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") input.click();
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    search(event.dataTransfer.files[0]);
  });
  // A photo dropped next to the zone would make the browser leave the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

wireUpload();
loadInfo();
