// jobber's grid of a sweep, in the browser (an anywidget ESM module; the kernel half is
// jobber_magics/_sweepview.py). A row per job, updated in place (a reader's selection or
// hover survives an update); a row's button (or a click on the row) asks the kernel to
// open that job's live view below the grid; "Stop all" stops every job of the sweep.
// Liveness as in the job view: the kernel sets as_of every second while a job of the sweep
// has not ended; without word for 5 s (or after a kernel restart) the grid says it is no
// longer live and hides its buttons, instead of showing a "running" frozen in time.

const STALE_MS = 5000;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function clock(date) {
  return date && !isNaN(date) ? date.toLocaleTimeString([], { hour12: false }) : "?";
}

function render({ model, el }) {
  let lastWord = Date.now();
  let dead = false;
  const root = element("div", "jobber-sweep");
  const head = element("div", "jobber-sweep-head");
  const summary = element("div", "jobber-sweep-summary");
  const stopAll = element("button", "jobber-sweep-button jobber-sweep-stop", "Stop all");
  stopAll.title = "Stop every job of this sweep: the waiting ones leave their queue, the running ones get SIGTERM, then SIGKILL";
  head.append(summary, stopAll);
  const problem = element("div", "jobber-sweep-problem");
  const notLive = element("div", "jobber-sweep-dead");
  const table = element("table", "jobber-sweep-table");
  const thead = element("thead");
  const tbody = element("tbody");
  table.append(thead, tbody);
  const box = element("div", "jobber-sweep-box");
  box.append(table);
  root.append(head, problem, notLive, box);
  el.append(root);
  const rowsById = new Map();

  function live() {
    return !dead && (model.get("ended") || Date.now() - lastWord < STALE_MS);
  }
  function drawHead() {
    const names = ["job", ...model.get("columns"), "state", "elapsed", "peak memory", "last line", ""];
    const key = names.join("\u0000");
    if (thead.dataset.key === key) return;
    thead.dataset.key = key;
    const tr = element("tr");
    for (const name of names) tr.append(element("th", "", name));
    thead.replaceChildren(tr);
  }
  function set(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }
  function rowOf(row) {
    let tr = rowsById.get(row.job);
    if (tr) return tr;
    tr = element("tr", "jobber-sweep-row");
    tr.dataset.job = row.job;
    const cells = { job: element("td", "jobber-sweep-job"), params: row.params.map(() => element("td", "jobber-sweep-param")),
      state: element("td", "jobber-sweep-state"), elapsed: element("td", "jobber-sweep-elapsed"),
      peak: element("td", "jobber-sweep-peak"), last: element("td", "jobber-sweep-last"), open: element("td") };
    const result = element("span", "jobber-sweep-result");
    const note = element("span", "jobber-sweep-note");
    cells.state.append(result, note);
    const button = element("button", "jobber-sweep-button jobber-sweep-open", "view");
    cells.open.append(button);
    tr.append(cells.job, ...cells.params, cells.state, cells.elapsed, cells.peak, cells.last, cells.open);
    tr.cells_ = { ...cells, result, note, button };
    tr.addEventListener("click", () => model.send({ event: "open", job: row.job }));
    rowsById.set(row.job, tr);
    return tr;
  }
  function drawRows() {
    const rows = model.get("rows");
    const opened = model.get("opened");
    const seen = new Set();
    rows.forEach((row, index) => {
      const tr = rowOf(row);
      seen.add(row.job);
      const c = tr.cells_;
      set(c.job, String(row.job));
      row.params.forEach((value, i) => { if (c.params[i]) set(c.params[i], value); });
      set(c.result, row.result);
      set(c.note, row.note && !row.ended ? ` · ${row.note}` : "");
      c.note.hidden = !(row.note && !row.ended);
      set(c.elapsed, row.elapsed);
      set(c.peak, row.peak);
      set(c.last, row.last);
      c.last.title = row.last;
      tr.dataset.state = row.state;
      tr.classList.toggle("jobber-sweep-opened", row.job === opened);
      set(c.button, row.job === opened ? "hide" : "view");
      c.button.title = row.job === opened ? `Hide job ${row.job}'s live view` : `Show job ${row.job}'s live view below`;
      if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
    });
    for (const [id, tr] of rowsById) if (!seen.has(id)) { tr.remove(); rowsById.delete(id); }
  }
  function drawState() {
    const rows = model.get("rows");
    const counts = new Map();
    for (const row of rows) counts.set(row.state, (counts.get(row.state) || 0) + 1);
    const parts = [...counts].map(([state, n]) => `${n} ${state}`);
    set(summary, `sweep of ${rows.length} job${rows.length === 1 ? "" : "s"}` + (parts.length ? ": " + parts.join(", ") : ""));
    const isLive = live();
    const ended = model.get("ended");
    stopAll.hidden = ended || !isLive;
    stopAll.disabled = model.get("stopping");
    set(stopAll, model.get("stopping") ? "Stopping…" : "Stop all");
    problem.textContent = model.get("problem");
    problem.hidden = !model.get("problem");
    notLive.hidden = isLive;
    if (!isLive) {
      const why = dead ? "its kernel restarted or shut down" : `no word from its kernel since ${clock(new Date(lastWord))}`;
      set(notLive, `This grid is no longer live (${why}); as of ${clock(new Date(model.get("as_of")))}. ` +
        "To watch the jobs again: %load_ext jobber_magics, then %jobber_tail -f ID in a cell.");
    }
    for (const tr of rowsById.values()) tr.cells_.button.hidden = !isLive;
    root.classList.toggle("jobber-sweep-not-live", !isLive);
    root.dataset.ended = ended ? "true" : "false";
  }
  function draw() { drawHead(); drawRows(); drawState(); }

  stopAll.addEventListener("click", () => {
    stopAll.disabled = true;
    set(stopAll, "Stopping…");
    model.send({ event: "stop-all" });
  });
  const onChange = () => { lastWord = Date.now(); draw(); };
  const onDead = () => { dead = true; drawState(); };
  model.on("change", onChange);
  model.on("comm_live_update", onDead);
  const timer = setInterval(drawState, 1000);
  draw();
  return () => { model.off("change", onChange); model.off("comm_live_update", onDead); clearInterval(timer); };
}

export default { render };
