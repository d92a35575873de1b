// A %%jobber_py cell in the browser: its prints appear live in the job's view, the view says
// which names it set when the job ends, and a next cell reads them from the notebook. Run by
// e2e/run.py (.ci/e2e.sh), on e2e/notebooks/python-job.ipynb.
const path = require('node:path');
const { test, expect } = require('@playwright/test');
const { ARTIFACTS, openNotebook, runThrough, liveView, outputsOf, runNewCell, watchWhileRunning, jobIdOf, jobberStatus } = require('./jupyterlab');

test('jobber_py: prints appear live, the view says what was set, a next cell reads it', async ({ page }) => {
  const notebook = await openNotebook(page, 'notebooks/python-job.ipynb', 'e2e-pyjob');
  const cell = await runThrough(notebook, '%%jobber_py');
  const view = liveView(cell);
  const result = view.widget.locator('.jobber-result');
  await expect(view.status).toContainText('running', { timeout: 60_000 });
  const { sawRunning, states } = await watchWhileRunning(view, { timeout: 60_000 });
  expect(sawRunning).toBe(true);
  // Printed while the job ran, not all at once at its end.
  expect(states.some((log) => log.includes('step 0: 1') && !log.includes('step 3: 4')), JSON.stringify(states)).toBe(true);
  await expect(view.status).toContainText('exited (code 0)', { timeout: 60_000 });
  await expect(result).toContainText('set: squares (list), total (int)', { timeout: 30_000 });
  await expect(view.log).toContainText('step 3: 4');
  await expect(outputsOf(cell)).toHaveCount(1);
  const jobId = await jobIdOf(view);
  expect(jobberStatus(jobId).state).toBe('exited');
  await result.scrollIntoViewIfNeeded();
  await cell.screenshot({ path: path.join(ARTIFACTS, 'python-job-set.png') });

  // The names are in the notebook's namespace: a next cell prints them.
  const next = await runNewCell(notebook, 'print("in the notebook:", squares, total)');
  await expect(next.locator('.jp-OutputArea-output')).toHaveText(/in the notebook: \[1, 4, 9, 16\] 30/, { timeout: 30_000 });
});
