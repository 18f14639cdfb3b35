// hashkit serve: the runs page. The ticked runs' curves come from GET /runs/curves.png (hashkit plot's figure).
"use strict";
(function () {
  const list = document.getElementById("run-list");
  const figure = document.getElementById("curves-figure");
  const img = document.getElementById("curves");
  const errorLine = document.getElementById("curves-error");
  function ticked() { return [...list.querySelectorAll("input[name=run]:checked")].map((box) => box.value); }
  async function update() {
    const runs = ticked();
    errorLine.hidden = true;
    if (!runs.length) { figure.hidden = true; img.removeAttribute("src"); document.body.dataset.state = "idle"; return; }
    const url = "/runs/curves.png?" + runs.map((r) => "run=" + encodeURIComponent(r)).join("&");
    document.body.dataset.state = "busy";
    const response = await fetch(url);
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      errorLine.textContent = body.error || `error ${response.status}`; errorLine.hidden = false;
      figure.hidden = true; document.body.dataset.state = "error"; return;
    }
    const blob = await response.blob();
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.onload = () => { document.body.dataset.state = "done"; };
    img.src = URL.createObjectURL(blob);
    figure.hidden = false;
  }
  list.addEventListener("change", update);
  const first = list.querySelector("input[name=run]:not([disabled])");
  if (first) { first.checked = true; update(); }
})();
