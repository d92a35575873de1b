// A job's lifecycle in the live view: attempts, the time left, the log cap. Run by
// e2e/run.py (.ci/e2e.sh), on e2e/notebooks/lifecycle-job.ipynb.
const path = require('node:path');
const { test, expect } = require('@playwright/test');
const { ARTIFACTS, openNotebook, runThrough, liveView, outputsOf, jobberStatus, jobIdOf } = require('./jupyterlab');

/**
 * Every distinct status line the view shows (read every 50 ms) until one matches `until`,
 * or, without it, until the job has ended.
 */
async function statusLines(view, timeout, until = null) {
  const seen = [];
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const text = await view.status.innerText();
    if (seen[seen.length - 1] !== text) seen.push(text);
    if (until ? until.test(text)
      : await view.widget.evaluate((w) => !['created', 'pending', 'running'].includes(w.dataset.state))) break;
    await view.widget.page().waitForTimeout(50);
  }
  return seen;
}

test('lifecycle: a retried job with a timeout shows attempt 1/2, then 2/2, the time left, and how it ended', async ({ page }) => {
  const notebook = await openNotebook(page, 'notebooks/lifecycle-job.ipynb', 'e2e-lifecycle');
  const cell = await runThrough(notebook, '%%jobber_run --timeout 20s');
  const view = liveView(cell);
  await expect(view.widget).toBeVisible({ timeout: 60_000 });
  // Up to the second attempt running (a picture of it), then on to the end.
  const secondRunning = /\brunning\b.*attempt 2\/2.*\b\d+ s left of 20 s\b/;
  const seen = await statusLines(view, 30_000, secondRunning);
  if (secondRunning.test(seen[seen.length - 1])) {
    await cell.screenshot({ path: path.join(ARTIFACTS, 'lifecycle-retry-running.png') });
  }
  seen.push(...await statusLines(view, 30_000));
  const where = (pattern) => seen.findIndex((line) => pattern.test(line));
  const history = `status lines seen: ${JSON.stringify(seen, null, 1)}`;
  const first = where(/\brunning\b.*attempt 1\/2/);
  const second = where(/\brunning\b.*attempt 2\/2/);
  expect(first, history).toBeGreaterThanOrEqual(0);
  expect(second, history).toBeGreaterThan(first);
  expect(seen.some((line) => /\brunning\b.*\b\d+ s left of 20 s\b/.test(line)), history).toBe(true);

  await expect(view.status).toHaveText(/exited \(code 0\).*2 of 2 attempts/);  // ended: how many it took
  await expect(view.status).not.toContainText('left of');
  await expect(view.log).toContainText('first attempt: failing in 2 s');
  await expect(view.log).toContainText('[jobber: attempt 1 of 2 failed; attempt 2 starts in 1 s]');
  await expect(view.log).toHaveText(/second attempt: done$/);
  await expect(view.stop).toBeHidden();
  await expect(outputsOf(cell)).toHaveCount(1);
  const status = jobberStatus(await jobIdOf(view));
  expect([status.state, status.attempt]).toEqual(['exited', 2]);
  await cell.screenshot({ path: path.join(ARTIFACTS, 'lifecycle-retried.png') });
});

test('lifecycle: a job past its --log-max says its log was truncated', async ({ page }) => {
  const notebook = await openNotebook(page, 'notebooks/lifecycle-job.ipynb', 'e2e-lifecycle-cap');
  const cell = await runThrough(notebook, '%%jobber_run --log-max 64K');
  const view = liveView(cell);
  await expect(view.status).toHaveText(/exited \(code 0\)/, { timeout: 60_000 });
  await expect(view.log).toHaveText(/\n200000$/);
  await expect(view.status).toContainText(/log truncated: [\d.]+ [KM]iB cut from its middle by its cap \(log_max\)/);
  const status = jobberStatus(await jobIdOf(view));
  expect(status.log_dropped_bytes).toBeGreaterThan(0);
  await expect(outputsOf(cell)).toHaveCount(1);
  await cell.screenshot({ path: path.join(ARTIFACTS, 'lifecycle-log-truncated.png') });
});
