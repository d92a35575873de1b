// jobber's live view as a person sees it in JupyterLab: run by e2e/run.py (.ci/e2e.sh).
const path = require('node:path');
const { test, expect } = require('@playwright/test');
const {
  ARTIFACTS, RUNNING, openNotebook, currentNotebook, runAll, runThrough, liveView, watchWhileRunning, closeAndReopen,
  cellWith, jobberStatus, jobIdOf, newestLineInView, screenshotLiveView,
} = require('./jupyterlab');

const ERROR = 'Error displaying widget';

test('quickstart: the live view streams the log, then shows how the job ended', async ({ page }) => {
  const notebook = await openNotebook(page, 'notebooks/01-quickstart.ipynb', 'e2e-quickstart');
  // Run > Run All Cells: the cell after the job's waits for it, so the kernel is busy
  // while the job runs, and the live view must follow the log all the same.
  await runAll(notebook);
  const cell = cellWith(notebook, '%%jobber_run --name first');
  const view = liveView(cell);
  await expect(view.widget).toBeVisible({ timeout: 60_000 });

  // The job prints for about 3.5 s: lines must show up while it still runs.
  const { sawRunning, states } = await watchWhileRunning(view);
  expect(sawRunning, 'the status line said "running" while the job ran').toBe(true);
  expect(states.length, `distinct log texts while running: ${JSON.stringify(states)}`).toBeGreaterThanOrEqual(3);

  await expect(view.status).toHaveText(/exited \(code 0\)/);
  await expect(view.log).toContainText('training starts');
  await expect(view.log).toContainText('validating 100%');
  await expect(view.log).toHaveText(/done$/);
  await expect(view.stop).toBeHidden();
  await expectCharts(view);
  await cell.screenshot({ path: path.join(ARTIFACTS, 'quickstart-ended.png') });

  // The rest of the notebook ran too: the stopped sleeper and the table of jobs.
  const jobs = cellWith(notebook, '%jobber_jobs').locator('.jp-OutputArea');
  await expect(jobs).toContainText('exited (code 0)');
  await expect(jobs).toContainText('stopped');

  // Closed and opened again, the view shows the job's final state, not an error.
  const reopened = liveView(cellWith(await closeAndReopen(page, '01-quickstart.ipynb'), '%%jobber_run --name first'));
  await expect(reopened.widget).toBeVisible();
  await expect(reopened.status).toHaveText(/exited \(code 0\)/);
  await expect(reopened.log).toHaveText(/done$/);
  await expect(page.getByText(ERROR)).toHaveCount(0);
});

test('long job: the Stop button stops it, also after closing and reopening the notebook', async ({ page }) => {
  const notebook = await openNotebook(page, 'notebooks/long-job.ipynb', 'e2e-long-job');
  const cell = await runThrough(notebook, '%%jobber_run --name train');
  const view = liveView(cell);
  await expect(view.widget).toBeVisible({ timeout: 60_000 });
  await expect(view.status).toHaveText(RUNNING);
  const jobId = await jobIdOf(view);

  const live = await watchWhileRunning(view, { enough: 4 });
  expect(live.states.length, `distinct log texts while running: ${JSON.stringify(live.states)}`).toBeGreaterThanOrEqual(4);
  await expect(view.log).toContainText(/step +10 /);
  await expectCharts(view);
  await expect(view.stop).toBeEnabled();
  await screenshotLiveView(cell, view, path.join(ARTIFACTS, 'widget-running.png'));

  // Closed and opened again while the job runs: the view is live again, Stop included.
  const reopened = liveView(cellWith(await closeAndReopen(page, 'long-job.ipynb'), '%%jobber_run --name train'));
  await expect(reopened.widget).toBeVisible();
  await expect(page.getByText(ERROR)).toHaveCount(0);
  await expect(reopened.status).toHaveText(RUNNING);
  const again = await watchWhileRunning(reopened, { enough: 2 });
  expect(again.states.length, 'the reopened view follows the log').toBeGreaterThanOrEqual(2);

  await reopened.stop.click();
  await expect(reopened.status).toHaveText(/\bstopped\b/);
  await expect(reopened.stop).toBeHidden();
  expect(jobberStatus(jobId).state).toBe('stopped');
  const stoppedLog = await reopened.log.innerText();
  await page.waitForTimeout(1_000); // nothing is printed any more
  expect(await reopened.log.innerText()).toBe(stoppedLog);
  const reopenedCell = cellWith(currentNotebook(page), '%%jobber_run --name train');
  await screenshotLiveView(reopenedCell, reopened, path.join(ARTIFACTS, 'widget-stopped.png'));
});

test('log view: the newest line stays in view as the log grows', async ({ page }) => {
  // Known bug, see the e2e report: JupyterLab gives output <pre>s `overflow: auto`, so the
  // <pre> of _display.log_html() is shrunk to the box and scrolls itself, from the top;
  // the column-reverse box around it, meant to keep the end in view, never scrolls.
  // Fixed by `flex:none;overflow:visible` on that <pre>; then remove this line.
  const notebook = await openNotebook(page, 'notebooks/log-view.ipynb', 'e2e-log-view');
  const view = liveView(await runThrough(notebook, '%%jobber_run --name train'));
  await expect(view.status).toHaveText(RUNNING, { timeout: 60_000 });
  await expect(view.log).toContainText(/step +20 /); // more lines than the box holds
  const inView = await newestLineInView(view);
  await view.stop.click();
  await expect(view.status).toHaveText(/\bstopped\b/);
  expect(inView, 'the newest line of a running job is in view').toBe(true);
  expect(await newestLineInView(view), 'the last line of a stopped job is in view').toBe(true);
});

async function expectCharts(view) {
  // Charts need readings from the job's cgroup: a job that is not isolated has none.
  if (/not isolated/.test(await view.status.innerText())) {
    test.info().annotations.push({ type: 'skip-charts', description: 'jobs run without a cgroup on this host' });
    return;
  }
  await expect(view.charts.filter({ hasText: 'memory' })).toHaveCount(1);
  await expect(view.charts.filter({ hasText: 'CPU' })).toHaveCount(1);
  await expect(view.chartLines).toHaveCount(2);
  for (const line of await view.chartLines.all()) {
    expect((await line.getAttribute('points')).trim().split(/\s+/).length).toBeGreaterThanOrEqual(2);
  }
}
