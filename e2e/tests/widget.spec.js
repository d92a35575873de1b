// jobber's live view as a person sees it in JupyterLab: run by e2e/run.py (.ci/e2e.sh).
const path = require('node:path');
const { test, expect } = require('@playwright/test');
const {
  ARTIFACTS, RUNNING, openNotebook, runThrough, liveView, watchWhileRunning, closeAndReopen,
  cellWith, jobberStatus, jobIdOf,
} = require('./jupyterlab');

const ERROR = 'Error displaying widget';

test('quickstart: the live view streams the log, then shows how the job ended', async ({ page }) => {
  const notebook = await openNotebook(page, 'notebooks/01-quickstart.ipynb');
  const cell = await runThrough(notebook, '%%jobber_run --name first');
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

  // Closed and opened again, the view shows the job's final state, not an error.
  const reopened = liveView(cellWith(await closeAndReopen(page, '01-quickstart.ipynb'), '%%jobber_run --name first'));
  await expect(reopened.widget).toBeVisible();
  await expect(reopened.status).toHaveText(/exited \(code 0\)/);
  await expect(reopened.log).toHaveText(/done$/);
  await expect(page.getByText(ERROR)).toHaveCount(0);
});

test('long job: the Stop button stops it, also after closing and reopening the notebook', async ({ page }) => {
  const notebook = await openNotebook(page, 'notebooks/long-job.ipynb');
  const cell = await runThrough(notebook, '%%jobber_run --name long');
  const view = liveView(cell);
  await expect(view.widget).toBeVisible({ timeout: 60_000 });
  await expect(view.status).toHaveText(RUNNING);
  const jobId = await jobIdOf(view);

  const live = await watchWhileRunning(view, { enough: 4 });
  expect(live.states.length, `distinct log texts while running: ${JSON.stringify(live.states)}`).toBeGreaterThanOrEqual(4);
  await expect(view.log).toContainText('step 12:');
  await expectCharts(view);
  await expect(view.stop).toBeEnabled();
  await cell.screenshot({ path: path.join(ARTIFACTS, 'widget-running.png') });

  // Closed and opened again while the job runs: the view is live again, Stop included.
  const reopened = liveView(cellWith(await closeAndReopen(page, 'long-job.ipynb'), '%%jobber_run --name long'));
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
  await reopened.widget.locator('xpath=ancestor::div[contains(@class,"jp-Cell")][1]')
    .screenshot({ path: path.join(ARTIFACTS, 'widget-stopped.png') });
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
