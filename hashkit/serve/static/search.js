// hashkit serve: the search page. Talks only to POST /api/search, GET /api/items and GET /thumb/N.
"use strict";
(function () {
  const form = document.getElementById("search-form");
  const fileInput = document.getElementById("image");
  const drop = document.getElementById("drop");
  const errorLine = document.getElementById("error");
  const status = document.getElementById("status");
  const results = document.getElementById("results");
  const querySection = document.getElementById("query");
  const maxBytes = parseFloat(form.dataset.maxMb) * 1024 * 1024;
  let last = null;       // {file} or {position, id}: what "Search again" repeats
  let objectUrl = null;
  let searches = 0;

  function setState(state) { document.body.dataset.state = state; }
  function showError(message) {
    errorLine.textContent = message; errorLine.hidden = false; status.textContent = ""; setState("error");
  }
  function clearError() { errorLine.hidden = true; errorLine.textContent = ""; }
  // Long ids (absolute dataset paths) are shown by their last three parts; the full id is the tooltip.
  function shortId(id) {
    const parts = id.split("/");
    return parts.length > 3 ? "…/" + parts.slice(-3).join("/") : id;
  }
  function mode() { return form.querySelector("input[name=mode]:checked").value; }

  async function search(query) {
    last = query;
    clearError();
    if (query.file && query.file.size > maxBytes) {
      showError(`${query.file.name}: larger than the ${form.dataset.maxMb} MB upload limit`); return;
    }
    const data = new FormData();
    if (query.file) data.append("image", query.file, query.file.name);
    else data.append("position", String(query.position));
    if (mode() === "radius") data.append("radius", document.getElementById("radius").value);
    else data.append("k", document.getElementById("k").value);
    setState("busy"); status.textContent = "Searching…";
    let response, body;
    try {
      response = await fetch("/api/search", { method: "POST", body: data });
      body = await response.json();
    } catch (err) {
      showError(`the server did not answer (${err.message || err})`); return;
    }
    if (!response.ok) { showError(body.error || `error ${response.status}`); return; }
    await render(query, body);
  }

  async function render(query, doc) {
    const entry = doc.queries[0];
    const img = document.getElementById("query-img");
    if (objectUrl) { URL.revokeObjectURL(objectUrl); objectUrl = null; }
    if (query.file) { objectUrl = URL.createObjectURL(query.file); img.src = objectUrl; }
    else img.src = `/thumb/${query.position}`;
    document.getElementById("query-name").textContent = entry.query;
    document.getElementById("query-code").textContent = entry.code;
    const t = doc.timings;
    document.getElementById("timings").textContent =
      `encode ${t.encode_ms.toFixed(1)} ms + search ${t.search_ms.toFixed(1)} ms (request ${t.total_ms.toFixed(1)} ms)`;
    querySection.hidden = false;
    results.replaceChildren();
    for (const hit of entry.results) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button"; button.className = "hit";
      button.dataset.position = hit.position; button.dataset.distance = hit.distance; button.dataset.rank = hit.rank;
      button.setAttribute("aria-label", `result ${hit.rank}, distance ${hit.distance}, ${hit.id}: search by it`);
      const thumb = document.createElement("img");
      thumb.src = `/thumb/${hit.position}`; thumb.alt = hit.id; thumb.loading = "lazy";
      const line = document.createElement("span"); line.className = "line";
      const rank = document.createElement("span"); rank.className = "rank"; rank.textContent = `#${hit.rank}`;
      const dist = document.createElement("span"); dist.className = "dist"; dist.textContent = `d = ${hit.distance}`;
      line.append(rank, dist);
      const labels = document.createElement("span"); labels.className = "labels";
      const id = document.createElement("span"); id.className = "item-id"; id.textContent = shortId(hit.id);
      id.title = hit.id; button.dataset.id = hit.id;
      button.append(thumb, line, labels, id);
      button.addEventListener("click", () => search({ position: hit.position, id: hit.id }));
      li.append(button);
      results.append(li);
    }
    const shown = entry.results.length;
    status.textContent = doc.radius !== null
      ? `${doc.matched.toLocaleString()} items within distance ${doc.radius}` + (shown < doc.matched ? ` (first ${shown} shown)` : "")
      : `${shown} nearest of ${doc.count.toLocaleString()} items`;
    searches += 1;
    document.body.dataset.searches = String(searches);
    setState("done");
    if (shown) await fillLabels(entry.results.map((h) => h.position));
  }

  async function fillLabels(positions) {
    try {
      const response = await fetch(`/api/items?positions=${positions.join(",")}`);
      if (!response.ok) return;
      const body = await response.json();
      const byPosition = new Map(body.items.map((item) => [item.position, item.labels]));
      for (const button of results.querySelectorAll(".hit")) {
        const labels = byPosition.get(Number(button.dataset.position));
        if (labels && labels.length) button.querySelector(".labels").textContent = labels.join(", ");
      }
    } catch (err) { /* labels are optional */ }
  }

  fileInput.addEventListener("change", () => { if (fileInput.files.length) search({ file: fileInput.files[0] }); });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (last) search(last); else showError("choose an image first");
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) search({ file });
  });
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (event.key === "/" && !typing) { event.preventDefault(); fileInput.click(); }
  });
})();
