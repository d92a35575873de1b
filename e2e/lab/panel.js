// The Jobs panel as a person meets it in JupyterLab 4, and the jobs behind it.
//
// The panel's DOM (jobber-lab, labextension/src/panel.ts, status.ts, jobview.ts):
//   #jobber-lab-jobs                          the left sidebar panel (its tab: data-id="jobber-lab-jobs")
//     .jobber-lab-filters select              filter by state: "all states", "running", "ended", ...
//     .jobber-lab-filters input               filter by label (a substring)
//     li.jobber-lab-job[data-job-id][data-state]
//                                             one job, shown only if it passes the filters: id,
//                                             label, state, time, command, usage, reason; buttons
//                                             Stop / Re-run / Remove; a click opens its tab
//   #jobber-job-N                             job N's main-area tab: the live view of a cell
//                                             (.jobber-view, as in e2e/tests/jupyterlab.js)
//   .jobber-lab-status                        the status bar item "jobber: 3 running, 1 pending"
//   .Toastify__toast                          a JupyterLab notification (button "Open")
const fs = require('node:fs');
const { execFileSync } = require('node:child_process');
const base = require('@playwright/test');

const { expect } = base;

const TOKEN = process.env.JUPYTER_TOKEN;
const B_URL = process.env.LAB_B_URL;
const B_TOKEN = process.env.LAB_B_TOKEN;
const B_ENV = { ...process.env, JOBBER_CERT: process.env.LAB_B_CERT };
// Jobs started here run in the server root of tenant A (a temporary directory), never in the checkout.
const ROOT = process.env.LAB_ROOT;

/** Run the `jobber` command of the venv under test; its stdout, trimmed. */
function jobber(args, env = process.env) {
  return execFileSync('jobber', args, { encoding: 'utf8', cwd: ROOT, env }).trim();
}

/** Start `script` as a job with `jobber run` (as in a terminal); its id. */
function startJob(script, options = [], env = process.env) {
  const out = jobber(['run', ...options, '--', script], env);
  const id = Number(out.split('\n').pop());
  if (!Number.isInteger(id)) throw new Error(`jobber run printed no job id: ${JSON.stringify(out)}`);
  return id;
}

/** `jobber status ID --json`, read from disk. */
function jobStatus(id, env = process.env) {
  return JSON.parse(jobber(['status', String(id), '--json'], env));
}

/** The identity's jobs (`jobber ls --json`), optionally of one label or in some states. */
function listJobs({ label, states, env = process.env } = {}) {
  const args = ['ls', '--json', '--all'];
  if (label) args.push('--label', label);
  if (states) args.push('--state', states);
  return JSON.parse(jobber(args, env));
}

/** The counts the status bar should read, from `jobber ls` ("nothing running" when none). */
function countsText(env = process.env) {
  const jobs = listJobs({ states: 'pending,running', env });
  const parts = ['running', 'pending'].map((state) => [state, jobs.filter((job) => job.state === state).length])
    .filter(([, n]) => n > 0).map(([state, n]) => `${n} ${state}`);
  return `jobber: ${parts.join(', ') || 'nothing running'}`;
}

/** Whether a process lives (a zombie waiting for its parent's wait() counts as gone). */
function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * `lab`: one JupyterLab A page for the whole worker (a JupyterLab load is the slowest step
 * of a test), not loaded until a test loads it; `panel`: that page, loaded if it was not,
 * with the Jobs panel shown (filters cleared). A failed test leaves a screenshot of the page
 * in its output directory.
 */
const test = base.test.extend({
  lab: [async ({ browser }, use) => {
    const context = await browser.newContext({ baseURL: process.env.JUPYTER_BASE_URL, viewport: { width: 1280, height: 900 } });
    await use(await context.newPage());
    await context.close();
  }, { scope: 'worker' }],
  panel: async ({ lab }, use) => {
    if (!lab.url().startsWith('http')) await openLab(lab, 'lab-shared');
    const panel = await openJobsPanel(lab);
    await filters(panel);
    await use(panel);
  },
});
test.afterEach(async ({ lab }, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus && lab.url().startsWith('http')) await lab.screenshot({ path: testInfo.outputPath('lab-page.png') });
});

/** Open JupyterLab (A's, or the one at `base`) in a workspace of its own, reset, with no notebook. */
async function openLab(page, workspace, { base = '', token = TOKEN } = {}) {
  await page.goto(`${base}/lab/workspaces/${workspace}?reset&token=${token}`);
  await expect(page.locator('#jupyterlab-splash')).toHaveCount(0, { timeout: 60_000 });
  await expect(page.locator('.jp-LabShell')).toBeVisible();
}

/**
 * Show the Jobs panel in the left sidebar: a click on its tab if it is not shown (a click on
 * the tab of the panel shown would fold the sidebar away: check, click, check again).
 */
async function openJobsPanel(page) {
  const panel = page.locator('#jobber-lab-jobs');
  await expect(async () => {
    if (!(await panel.isVisible())) await page.locator('.jp-SideBar .lm-TabBar-tab[data-id="jobber-lab-jobs"]').click();
    await expect(panel).toBeVisible({ timeout: 2_000 });
  }).toPass({ timeout: 30_000 });
  return panel;
}

/** The panel's filters (the state select and the label search box), both cleared. */
async function filters(panel) {
  const state = panel.locator('.jobber-lab-filters select');
  const label = panel.locator('.jobber-lab-filters input');
  await state.selectOption('all states');
  await label.fill('');
  return { state, label };
}

function row(panel, id) {
  return panel.locator(`.jobber-lab-job[data-job-id="${id}"]`);
}

/** The job ids of the panel's visible rows, top to bottom. */
async function shownIds(panel) {
  return panel.locator('.jobber-lab-job:visible').evaluateAll(
    (rows) => rows.map((r) => Number(r.dataset.jobId)));
}

/** Click a row's button (by its text); with `confirm`, accept the dialog that asks first. */
async function clickRowButton(page, rowLocator, name, { confirm = false } = {}) {
  await rowLocator.locator('button', { hasText: name }).click();
  if (confirm) await page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-accept').click();
}

/** The parts of job N's live view in its main-area tab. */
function jobTab(page, id) {
  const tab = page.locator(`#jobber-job-${id}`);
  const widget = tab.locator('.jobber-view');
  return {
    tab,
    widget,
    status: widget.locator('.jobber-status'),
    stop: widget.locator('button.jobber-stop'),
    log: widget.locator('pre.jobber-log'),
    logBox: widget.locator('.jobber-logbox'),
    charts: widget.locator('svg.jobber-chart'),
    chartLines: widget.locator('svg.jobber-chart polyline'),
  };
}

/** A JupyterLab notification (toast) whose text holds `text`. */
function toast(page, text) {
  return page.locator('.Toastify__toast').filter({ hasText: text });
}

module.exports = {
  test, expect, countsText, TOKEN, B_URL, B_TOKEN, B_ENV, ROOT, jobber, startJob, jobStatus, listJobs, alive, openLab, openJobsPanel,
  filters, row, shownIds, clickRowButton, jobTab, toast,
};
