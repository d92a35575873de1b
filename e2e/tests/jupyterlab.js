// What a person does in JupyterLab 4, and what they see of jobber's live view.
//
// The live view's DOM (jobber_magics/_jobview.js, an anywidget view):
//   .jobber-view[data-state]                 the whole view (data-state: running, exited, ...)
//     .jobber-head .jobber-status            the status line ("job 3 · running · 1.2 s · ...")
//     .jobber-head button.jobber-stop        "Stop" (hidden once the job has ended, or not live)
//     .jobber-notice                         e.g. "job 2 is still running from this cell", and
//       button.jobber-stop-previous          "Stop job 2"
//     .jobber-dead                           "This view is no longer live (...)": the re-attach hint
//     .jobber-charts svg.jobber-chart-memory memory, CPU (and processes) charts: a <polyline>,
//                                            the limit as line.limit
//     .jobber-logbox pre.jobber-log          the last lines (scrolls; sticks to the bottom only
//     button.jobber-newest                   while the reader is there; "newest" otherwise)
const { expect } = require('@playwright/test');
const { execFileSync } = require('node:child_process');
const path = require('node:path');

const TOKEN = process.env.JUPYTER_TOKEN;
const ARTIFACTS = process.env.E2E_ARTIFACTS || path.join(__dirname, '..', '..', 'artifacts', 'e2e');
const RUNNING = /\brunning\b/;

/**
 * Open a notebook of the server root by its URL (the token logs the browser in), in a
 * workspace of its own (a fresh layout: no tabs restored from an earlier test), and wait
 * until JupyterLab takes keys and the notebook's kernel is idle.
 */
async function openNotebook(page, notebookPath, workspace) {
  await page.goto(`/lab/workspaces/${workspace}/tree/${notebookPath}?token=${TOKEN}`);
  const notebook = currentNotebook(page);
  await expect(notebook.locator('.jp-Cell').first()).toBeVisible({ timeout: 60_000 });
  await expect(page.locator('#jupyterlab-splash')).toHaveCount(0, { timeout: 60_000 });
  await expect(kernelIdle(page)).toBeVisible({ timeout: 60_000 });
  return notebook;
}

function kernelIdle(page) {
  return page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status="idle"]');
}

function currentNotebook(page) {
  return page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
}

/** The code cell whose source contains `text`. */
function cellWith(notebook, text) {
  return notebook.locator('.jp-Cell.jp-CodeCell').filter({
    has: notebook.page().locator('.jp-CodeMirrorEditor', { hasText: text }),
  });
}

/**
 * Run the notebook from the top with Shift+Enter, cell after cell, until the cell holding
 * `text` is the active one; then run that one with Ctrl+Enter (it stays active). A key
 * that JupyterLab did not take (the active cell did not move) is pressed again.
 */
async function runThrough(notebook, text) {
  const page = notebook.page();
  const active = notebook.locator('.jp-Cell.jp-mod-active');
  await notebook.locator('.jp-Cell').first().click();
  await expect(notebook.locator('.jp-Cell').first()).toHaveClass(/jp-mod-active/);
  for (let i = 0; !(await active.innerText()).includes(text); i++) {
    if (i > 100) throw new Error(`no cell with ${JSON.stringify(text)} in the notebook`);
    const index = await activeIndex(notebook);
    await expect(async () => {
      if ((await activeIndex(notebook)) === index) await page.keyboard.press('Shift+Enter');
      expect(await activeIndex(notebook)).toBeGreaterThan(index);
    }).toPass({ intervals: [500, 1_000, 2_000], timeout: 10_000 });
  }
  await page.keyboard.press('Control+Enter');
  return cellWith(notebook, text);
}

/** Run every cell from the menu, as a person would: Run > Run All Cells. */
async function runAll(notebook) {
  const page = notebook.page();
  await notebook.locator('.jp-Cell').first().click();
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Run$/ }).click();
  await page.locator('.lm-Menu-itemLabel', { hasText: /^Run All Cells$/ }).click();
}

async function activeIndex(notebook) {
  return notebook.locator('.jp-Cell').evaluateAll(
    (cells) => cells.findIndex((cell) => cell.classList.contains('jp-mod-active')));
}

/** The parts of the live view inside a cell's output. */
function liveView(cell) {
  const widget = cell.locator('.jp-OutputArea-output .jobber-view');
  return {
    widget,
    status: widget.locator('.jobber-status'),
    stop: widget.locator('button.jobber-stop'),
    stopPrevious: widget.locator('button.jobber-stop-previous'),
    notice: widget.locator('.jobber-notice'),
    dead: widget.locator('.jobber-dead'),
    newest: widget.locator('button.jobber-newest'),
    charts: widget.locator('svg.jobber-chart'),
    chartLines: widget.locator('svg.jobber-chart polyline'),
    logBox: widget.locator('.jobber-logbox'),
    log: widget.locator('pre.jobber-log'),
  };
}

/** The outputs of a cell (what a person counts under it). */
function outputsOf(cell) {
  return cell.locator('.jp-OutputArea-child');
}

/**
 * Read the status line and the log every 50 ms for as long as the status says "running"
 * (at most `timeout` ms, or until `enough` distinct log texts were seen while running).
 * Returns {running, ended, states}: the distinct log texts seen while the job ran.
 */
async function watchWhileRunning(view, { timeout = 30_000, enough = Infinity } = {}) {
  const seen = [];
  let sawRunning = false;
  let status = '';
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const snapshot = await view.widget.evaluate((w) => ({
      status: w.querySelector('.jobber-status')?.innerText ?? '',
      log: w.querySelector('pre.jobber-log')?.innerText ?? '',
    }));
    status = snapshot.status;
    if (!RUNNING.test(status)) {
      if (sawRunning) break; // ended: what was seen while it ran is what counts
    } else {
      sawRunning = true;
      if (seen[seen.length - 1] !== snapshot.log) seen.push(snapshot.log);
      if (new Set(seen).size >= enough) break;
    }
    await view.widget.page().waitForTimeout(50);
  }
  return { sawRunning, states: [...new Set(seen)], lastStatus: status };
}

/** Save the notebook, close its tab, and open it again from the file browser. */
async function closeAndReopen(page, fileName) {
  await page.keyboard.press('Control+s');
  const tab = page.locator('.lm-DockPanel-tabBar .lm-TabBar-tab', { hasText: fileName });
  await expect(tab).not.toHaveClass(/jp-mod-dirty/);
  await tab.locator('.lm-TabBar-tabCloseIcon').click();
  // A notebook changed after saving asks before closing: keep the saved outputs.
  const dialog = page.locator('.jp-Dialog');
  await Promise.race([
    tab.waitFor({ state: 'detached' }),
    dialog.waitFor().then(() => dialog.getByRole('button', { name: /^Save/ }).click()),
  ]);
  await expect(tab).toHaveCount(0);
  await page.locator('.jp-DirListing-item', { hasText: fileName }).dblclick();
  await expect(tab).toHaveCount(1);
  const notebook = currentNotebook(page);
  await expect(notebook.locator('.jp-Cell').first()).toBeVisible();
  await expect(kernelIdle(page)).toBeVisible();
  return notebook;
}

/** Whether the last line of the log is inside every box that clips it (what a person sees). */
async function newestLineInView(view) {
  return view.log.evaluate((pre) => {
    const nodes = [...pre.childNodes].filter((node) => node.textContent.trim() !== '');
    const text = nodes[nodes.length - 1];
    const range = document.createRange();
    range.setStart(text, Math.max(0, text.textContent.trimEnd().length - 1));
    range.setEnd(text, text.textContent.trimEnd().length);
    const line = range.getBoundingClientRect();
    for (let box = pre; box && box !== document.body; box = box.parentElement) {
      const style = getComputedStyle(box);
      if (style.overflowY === 'visible' && style.overflowX === 'visible') continue;
      const clip = box.getBoundingClientRect();
      if (line.bottom > clip.bottom + 1 || line.top < clip.top - 1) return false;
    }
    return true;
  });
}

/** A picture of a cell's source and its live view (not of the outputs after it). */
async function screenshotLiveView(cell, view, file) {
  const input = cell.locator('.jp-Cell-inputWrapper');
  await input.evaluate((node) => node.scrollIntoView({ block: 'start' }));
  const a = await input.boundingBox();
  const b = await view.widget.boundingBox();
  const x = Math.max(0, Math.min(a.x, b.x) - 12);
  const y = Math.max(0, a.y - 8);
  const right = Math.max(a.x + a.width, b.x + b.width) + 8;
  const bottom = b.y + b.height;
  await cell.page().screenshot({ path: file, clip: { x, y, width: right - x, height: bottom - y } });
}

/** Restart the notebook's kernel from the menu, as a person would, and wait until it is idle. */
async function restartKernel(page) {
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
  await page.locator('.lm-Menu-itemLabel', { hasText: /^Restart Kernel…$/ }).click();
  await page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-accept', { hasText: /Restart/ }).click();
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  await expect(kernelIdle(page)).toBeVisible({ timeout: 60_000 });
}

/** Add a code cell at the end of the notebook, paste `source` into it (as one input: no
 * auto-indent after a newline, and long lines typed key by key take half a minute) and run it. */
async function runNewCell(notebook, source) {
  const page = notebook.page();
  await notebook.locator('.jp-Cell').last().click();
  await page.keyboard.press('Escape');
  await page.keyboard.press('b'); // a new cell below, in command mode
  await page.keyboard.press('Enter');
  await page.keyboard.insertText(source);
  await page.keyboard.press('Control+Enter');
  return notebook.locator('.jp-Cell.jp-CodeCell').last();
}

/** Where a chart's line ends, and where its limit line is (SVG y: 0 is the top). */
async function chartEnd(view, kind) {
  return view.widget.locator(`svg.jobber-chart-${kind}`).evaluate((svg) => {
    const points = svg.querySelector('polyline').getAttribute('points').trim().split(/\s+/);
    const limit = svg.querySelector('line.limit');
    return { lastY: Number(points[points.length - 1].split(',')[1]), limitY: limit ? Number(limit.getAttribute('y1')) : null,
      points: points.length };
  });
}

/** The job's status as the `jobber` command reads it from disk (not from the widget). */
function jobberStatus(jobId) {
  return JSON.parse(execFileSync('jobber', ['status', String(jobId), '--json'], { encoding: 'utf8' }));
}

async function jobIdOf(view) {
  const match = /job (\d+)/.exec(await view.status.innerText());
  if (!match) throw new Error('the status line names no job');
  return Number(match[1]);
}

module.exports = {
  ARTIFACTS, RUNNING, openNotebook, currentNotebook, cellWith, runAll, runThrough, liveView, outputsOf, watchWhileRunning,
  closeAndReopen, jobberStatus, jobIdOf, newestLineInView, screenshotLiveView, restartKernel, runNewCell, chartEnd,
  kernelIdle,
};
