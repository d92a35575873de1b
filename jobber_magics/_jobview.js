// jobber's live view of a job, in the browser (an anywidget ESM module; the kernel half is
// jobber_magics/_widget.py). What it keeps right:
//
// * The log is appended to, never rebuilt while the reader reads: the kernel sends only the
//   lines that are new since its last frame ({kind: "log", frame, lines, partial, reset}).
//   The view sticks to the newest line only while the reader is at the bottom; scrolled up,
//   nothing under the reader moves, and a "newest" button says how much came meanwhile.
// * One buffer per model (the last max_lines lines), shared by every view of it, so a view
//   made again (a re-rendered output) starts from the current log; a page that loads the
//   model anew gets the kernel's snapshot in the state (log_snapshot at log_frame).
// * Liveness: a model whose kernel restarted gets comm_live_update; a running job's model
//   hears from its kernel several times a second. Without that, the view says it is no
//   longer live, how to re-attach, and shows no Stop button that would do nothing. A kernel
//   that stopped sending on purpose says so (following = false): the job ended, was removed
//   ("job 25 was removed", over the view's last state), or could not be followed (problem).

const buffers = new Map(); // view_key -> the model's log buffer, shared by its views
const STALE_MS = 5000;

function bufferOf(model) {
  const key = model.get("view_key");
  let buffer = buffers.get(key);
  if (buffer) return buffer;
  buffer = { lines: [], partial: "", total: 0, frame: -1, dead: false, lastWord: Date.now(), views: new Set() };
  buffers.set(key, buffer);
  loadSnapshot(model, buffer);
  return buffer;
}

function loadSnapshot(model, buffer) {
  const frame = model.get("log_frame");
  if (frame <= buffer.frame) return false;
  const text = model.get("log_snapshot");
  buffer.lines = text === "" ? [] : text.split("\n");
  buffer.partial = model.get("log_partial");
  buffer.total = model.get("log_total");
  buffer.frame = frame;
  return true;
}

function tell(buffer, event) {
  for (const view of buffer.views) view(event);
}

function onMessage(model, buffer, msg) {
  buffer.lastWord = Date.now();
  if (!msg || msg.kind !== "log" || msg.frame <= buffer.frame) return;
  if (msg.reset) buffer.lines = msg.lines.slice();
  else for (const line of msg.lines) buffer.lines.push(line);
  const max = model.get("max_lines");
  if (buffer.lines.length > max) buffer.lines.splice(0, buffer.lines.length - max);
  buffer.partial = msg.partial;
  buffer.total = msg.total;
  buffer.frame = msg.frame;
  tell(buffer, { log: true, reset: msg.reset, added: msg.lines.length });
  keepForSaving(model, buffer);
}

// A notebook saved with its widget state keeps the model's attributes: keep the log there
// too (locally, not sent to the kernel), at most once a second.
function keepForSaving(model, buffer) {
  if (buffer.saveTimer) return;
  buffer.saveTimer = setTimeout(() => {
    buffer.saveTimer = null;
    model.set({
      log_snapshot: buffer.lines.join("\n"), log_partial: buffer.partial,
      log_total: buffer.total, log_frame: buffer.frame,
    }, { silent: true });
  }, 1000);
}

function initialize({ model }) {
  const buffer = bufferOf(model);
  model.on("msg:custom", (msg) => onMessage(model, buffer, msg));
  model.on("change:log_frame", () => { if (loadSnapshot(model, buffer)) tell(buffer, { log: true, reset: true }); });
  model.on("destroy", () => buffers.delete(model.get("view_key")));
  model.on("change", () => { buffer.lastWord = Date.now(); tell(buffer, { state: true }); });
  // The widget manager sets comm_live = false on every model when the kernel restarts.
  model.on("comm_live_update", () => { buffer.dead = true; tell(buffer, { state: true }); });
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function clock(iso) {
  const date = iso ? new Date(iso) : null;
  return date && !isNaN(date) ? date.toLocaleTimeString([], { hour12: false }) : "?";
}

function render({ model, el }) {
  const buffer = bufferOf(model);
  const jobId = model.get("job_id");
  const root = element("div", "jobber-view");
  const head = element("div", "jobber-head");
  const status = element("div", "jobber-status");
  const stop = element("button", "jobber-button jobber-stop", "Stop");
  stop.title = `Stop job ${jobId}: SIGTERM, then SIGKILL`;
  head.append(status, stop);
  const notice = element("div", "jobber-notice");
  const noticeText = element("span");
  const stopPrevious = element("button", "jobber-button jobber-stop-previous");
  notice.append(noticeText, stopPrevious);
  const problem = element("div", "jobber-problem");
  const dead = element("div", "jobber-dead");
  const removed = element("div", "jobber-removed");
  const charts = element("div", "jobber-charts");
  const box = element("div", "jobber-logbox");
  const pre = element("pre", "jobber-log");
  box.append(pre);
  const newest = element("button", "jobber-button jobber-newest");
  const logArea = element("div", "jobber-logarea");
  logArea.append(box, newest);
  const result = element("div", "jobber-result"); // a function job's result, once it ended
  root.append(head, removed, notice, problem, dead, charts, logArea, result);
  el.append(root);

  // ---- the log ----
  let following = true;   // stuck to the newest line
  let shownTotal = 0;     // buffer.total when the DOM was last brought up to date
  let domLines = 0;       // complete lines in the DOM
  let partialNode = null; // the unfinished last line (a progress bar redraws it)
  let programmatic = false;

  function lineText(line) {
    return (domLines === 0 ? "" : "\n") + line;
  }
  function setPartial() {
    const text = buffer.partial ? (domLines === 0 ? "" : "\n") + buffer.partial : "";
    if (!partialNode) { partialNode = document.createTextNode(text); pre.append(partialNode); }
    else partialNode.data = text;
  }
  function emptyText() {
    return model.get("ended") ? "(no output)" : "(no output yet)";
  }
  function rebuild() {
    const fragment = document.createDocumentFragment();
    domLines = 0;
    for (const line of buffer.lines) { fragment.append(document.createTextNode(lineText(line))); domLines++; }
    partialNode = null;
    pre.textContent = "";
    pre.append(fragment);
    setPartial();
    shownTotal = buffer.total;
    pre.dataset.empty = domLines === 0 && !buffer.partial ? emptyText() : "";
    toBottom();
  }
  function append(count) {
    const lines = buffer.lines.slice(Math.max(0, buffer.lines.length - count));
    if (partialNode) { partialNode.remove(); partialNode = null; }
    for (const line of lines) { pre.append(document.createTextNode(lineText(line))); domLines++; }
    const max = model.get("max_lines");
    while (domLines > max && pre.firstChild) {
      pre.firstChild.remove();
      domLines--;
      if (pre.firstChild && pre.firstChild.data.startsWith("\n")) pre.firstChild.data = pre.firstChild.data.slice(1);
    }
    setPartial();
    shownTotal = buffer.total;
    pre.dataset.empty = domLines === 0 && !buffer.partial ? emptyText() : "";
    toBottom();
  }
  function toBottom() {
    programmatic = true;
    box.scrollTop = box.scrollHeight;
    requestAnimationFrame(() => { programmatic = false; });
    showNewest();
  }
  function atBottom() {
    return box.scrollHeight - box.scrollTop - box.clientHeight <= 4;
  }
  function showNewest() {
    const waiting = buffer.total - shownTotal;
    newest.hidden = following;
    newest.textContent = waiting > 0 ? `↓ newest (${waiting.toLocaleString()} more line${waiting === 1 ? "" : "s"})` : "↓ newest";
  }
  box.addEventListener("scroll", () => {
    if (programmatic) return;
    if (atBottom()) {
      if (!following) { following = true; rebuild(); }
    } else if (following) {
      following = false;
      showNewest();
    }
  });
  // A reader's own move up leaves the newest line at once, before its scroll event: that
  // event can land in the same frame as a programmatic scroll to the bottom (lines arriving),
  // be coalesced with it and ignored, and the next lines would then pull the reader back down.
  function readerMovesUp() {
    if (following && box.scrollHeight > box.clientHeight) { following = false; showNewest(); }
  }
  box.addEventListener("wheel", (event) => { if (event.deltaY < 0) readerMovesUp(); }, { passive: true });
  box.addEventListener("keydown", (event) => {
    if (["ArrowUp", "PageUp", "Home"].includes(event.key)) readerMovesUp();
  });
  newest.addEventListener("click", () => { following = true; rebuild(); });

  // ---- status, notice, buttons, liveness ----
  // The HTML last given to each node: the browser's innerHTML is its own serialization
  // (SVG's <rect/> reads back as <rect></rect>), so comparing with it would rebuild the
  // charts every second, under a reader's pointer.
  const shown = new Map();
  function setHtml(node, html) {
    if (shown.get(node) === html) return;
    node.innerHTML = html;
    shown.set(node, html);
  }
  function live() {
    if (buffer.dead) return false;
    return model.get("ended") || model.get("removed") !== "" || Date.now() - buffer.lastWord < STALE_MS;
  }
  function drawState() {
    const isLive = live();
    const ended = model.get("ended");
    const gone = model.get("removed");
    let line = model.get("status_html");
    if (!ended && !gone && !isLive) line += ` <span class="jobber-asof">· as of ${clock(model.get("as_of"))}</span>`;
    setHtml(status, line);
    stop.hidden = ended || gone !== "" || !isLive;
    removed.hidden = !gone;
    removed.textContent = gone ? `${gone}: what this view shows is its last state` : "";
    stop.disabled = model.get("stopping");
    stop.textContent = model.get("stopping") ? "Stopping…" : "Stop";
    const noticeHtml = model.get("notice_html");
    notice.hidden = !noticeHtml;
    notice.classList.toggle("jobber-notice-info", model.get("notice_kind") === "info");
    setHtml(noticeText, noticeHtml);
    const previous = model.get("previous_job");
    stopPrevious.hidden = !previous || !isLive || gone !== "";
    stopPrevious.textContent = `Stop job ${previous}`;
    problem.textContent = model.get("problem");
    problem.hidden = !model.get("problem");
    const resultHtml = model.get("result_html") || "";
    result.hidden = !resultHtml;
    setHtml(result, resultHtml);
    const chartsHtml = model.get("charts_html");
    setHtml(charts, chartsHtml);
    if (isLive) {
      dead.hidden = true;
    } else {
      dead.hidden = false;
      const why = buffer.dead ? "its kernel restarted or shut down"
        : !model.get("following") ? "its kernel stopped following the job"
        : `no word from its kernel since ${clock(new Date(buffer.lastWord).toISOString())}`;
      const how = ended ? `%jobber_tail ${jobId} -n 50` : `%jobber_tail -f ${jobId}`;
      dead.innerHTML = "";
      dead.append(
        document.createTextNode(`This view is no longer live (${why}). ${ended ? "To read its log" : "To watch job " + jobId + " again"}: `),
        element("code", "", "%load_ext jobber_magics"), document.createTextNode(" then "), element("code", "", how),
        document.createTextNode(" in a cell."),
      );
    }
    root.classList.toggle("jobber-not-live", !isLive);
    root.classList.toggle("jobber-job-removed", gone !== "");
    root.dataset.state = model.get("state");
  }
  // A message can be lost on its way (a kernel that does not know the page's subshell yet
  // drops it, e.g. just after the notebook was reopened): send again until the kernel
  // shows it acted. Stopping twice is harmless.
  function sendUntil(content, done, tries = 5) {
    model.send(content);
    if (tries > 1) setTimeout(() => { if (!done()) sendUntil(content, done, tries - 1); }, 1500);
  }
  stop.addEventListener("click", () => {
    stop.disabled = true;
    stop.textContent = "Stopping…";
    sendUntil({ event: "stop" }, () => model.get("stopping") || model.get("ended"));
  });
  stopPrevious.addEventListener("click", () => {
    stopPrevious.disabled = true;
    sendUntil({ event: "stop-previous" }, () => model.get("previous_job") === 0);
  });

  const view = (event) => {
    if (event.state) drawState();
    if (event.log) {
      if (!following) showNewest();
      else if (event.reset) rebuild();
      else append(event.added);
    }
  };
  buffer.views.add(view);
  const timer = setInterval(drawState, 1000);
  drawState();
  rebuild();
  return () => { buffer.views.delete(view); clearInterval(timer); };
}

export default { initialize, render };
