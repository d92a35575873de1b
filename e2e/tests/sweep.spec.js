// A sweep's grid in the browser: a row per job, live, through a queue of two; Stop all; a
// row opens its job's live view. Run by e2e/run.py (.ci/e2e.sh), on
// e2e/notebooks/sweep-job.ipynb.
const path = require('node:path');
const { test, expect } = require('@playwright/test');
const { ARTIFACTS, openNotebook, runThrough, liveView, outputsOf, jobberStatus } = require('./jupyterlab');

/** The parts of a sweep's grid inside a cell's output. */
function sweepGrid(cell) {
  const widget = cell.locator('.jp-OutputArea-output .jobber-sweep');
  return {
    widget,
    summary: widget.locator('.jobber-sweep-summary'),
    stopAll: widget.locator('button.jobber-sweep-stop'),
    rows: widget.locator('tr.jobber-sweep-row'),
    dead: widget.locator('.jobber-sweep-dead'),
  };
}

/** Each row's job id, state and note (why it waits), in the grid's order. */
async function rowStates(grid) {
  return grid.rows.evaluateAll((rows) => rows.map((row) => [
    Number(row.dataset.job), row.dataset.state, row.querySelector('.jobber-sweep-note').textContent]));
}

test('sweep: six rows go pending, running, exited through a queue of two; a row opens its live view', async ({ page }) => {
  const notebook = await openNotebook(page, 'notebooks/sweep-job.ipynb', 'e2e-sweep');
  const cell = await runThrough(notebook, '%%jobber_sweep --queue e2e-pair');
  const grid = sweepGrid(cell);
  await expect(grid.rows).toHaveCount(6, { timeout: 60_000 });
  await expect(grid.widget.locator('th')).toHaveText(['job', 'n', 'm', 'state', 'elapsed', 'peak memory', 'last line', '']);
  await expect(grid.rows.nth(0).locator('.jobber-sweep-param')).toHaveText(['1', 'a']);
  await expect(grid.rows.nth(5).locator('.jobber-sweep-param')).toHaveText(['3', 'b']);

  // Every job's states as the grid showed them (read every 100 ms), until all have ended.
  const seen = new Map();
  let mostRunning = 0;
  let pictured = false;
  const notes = new Set();
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const states = await rowStates(grid);
    for (const [job, state] of states) {
      const history = seen.get(job) || [];
      if (history[history.length - 1] !== state) history.push(state);
      seen.set(job, history);
    }
    const running = states.filter(([, state]) => state === 'running').length;
    mostRunning = Math.max(mostRunning, running);
    const waiting = states.filter(([, state]) => state === 'pending');
    if (waiting.length) notes.add(waiting[0][2]);
    if (!pictured && running === 2 && waiting.length) {
      await cell.screenshot({ path: path.join(ARTIFACTS, 'sweep-running.png') });
      pictured = true;
    }
    if (states.length === 6 && states.every(([, state]) => state === 'exited')) break;
    await page.waitForTimeout(100);
  }
  const history = `states seen: ${JSON.stringify([...seen])}`;
  expect(seen.size, history).toBe(6);
  for (const [, states] of seen) expect(states[states.length - 1], history).toBe('exited');
  // The last four waited for the queue: the grid showed them pending, then running.
  for (const [, states] of [...seen].slice(2)) expect(states, history).toEqual(['pending', 'running', 'exited']);
  expect(mostRunning, history).toBe(2);
  expect(pictured, history).toBe(true);
  expect([...notes], history).toContain(' · queue `e2e-pair`: 2 of 2 running');
  await expect(grid.summary).toHaveText('sweep of 6 jobs: 6 exited');
  await expect(grid.rows.nth(3).locator('.jobber-sweep-last')).toHaveText('job 2b step 6');
  await expect(grid.stopAll).toBeHidden();
  await expect(outputsOf(cell)).toHaveCount(1);

  // A row's "view" opens that job's full live view below the grid, in the same output.
  const [fourth] = (await rowStates(grid))[3];
  await grid.rows.nth(3).locator('button.jobber-sweep-open').click();
  const view = liveView(cell);
  await expect(view.status).toContainText(`job ${fourth}`, { timeout: 15_000 });
  await expect(view.status).toContainText('exited (code 0)');
  await expect(view.log).toHaveText(/job 2b step 1\n[^]*job 2b step 6$/);
  await expect(grid.rows.nth(3)).toHaveClass(/jobber-sweep-opened/);
  await expect(outputsOf(cell)).toHaveCount(1);
  await cell.screenshot({ path: path.join(ARTIFACTS, 'sweep-row-opened.png') });
  await grid.rows.nth(3).locator('button.jobber-sweep-open').click();
  await expect(view.widget).toHaveCount(0);
});

test('sweep: Stop all stops the running job and the waiting ones', async ({ page }) => {
  const notebook = await openNotebook(page, 'notebooks/sweep-job.ipynb', 'e2e-sweep-stop');
  const cell = await runThrough(notebook, '%%jobber_sweep --queue e2e-one');
  const grid = sweepGrid(cell);
  await expect(grid.rows).toHaveCount(4, { timeout: 60_000 });
  await expect(grid.rows.nth(0)).toHaveAttribute('data-state', 'running', { timeout: 30_000 });
  await expect(grid.rows.nth(0).locator('.jobber-sweep-last')).toHaveText('sleeping 1', { timeout: 15_000 });
  for (const i of [1, 2, 3]) await expect(grid.rows.nth(i)).toHaveAttribute('data-state', 'pending');
  await expect(grid.stopAll).toBeVisible();
  await grid.stopAll.click();
  for (const i of [0, 1, 2, 3]) await expect(grid.rows.nth(i)).toHaveAttribute('data-state', 'stopped', { timeout: 30_000 });
  await expect(grid.summary).toHaveText('sweep of 4 jobs: 4 stopped');
  await expect(grid.stopAll).toBeHidden();
  const states = await rowStates(grid);
  expect(states.map(([job]) => jobberStatus(job).state)).toEqual(['stopped', 'stopped', 'stopped', 'stopped']);
  expect(states.slice(1).map(([job]) => jobberStatus(job).started_at ?? null)).toEqual([null, null, null]);
  await cell.screenshot({ path: path.join(ARTIFACTS, 'sweep-stopped.png') });
});
