// Finding a job in the browser: `%jobber_jobs --label` lists that label's jobs only, with a
// label column, and the command's first line on one line (all of it on hover) in the widest
// column (JupyterLab lays tables out with fixed, equal columns unless told otherwise). Run by e2e/run.py (.ci/e2e.sh), on e2e/notebooks/find-jobs.ipynb.
const path = require('node:path');
const { test, expect } = require('@playwright/test');
const { ARTIFACTS, openNotebook, runThrough, outputsOf } = require('./jupyterlab');

test('find: %jobber_jobs --label lists that label, its command on one line, the result column narrow', async ({ page }) => {
  const notebook = await openNotebook(page, 'notebooks/find-jobs.ipynb', 'e2e-find');
  const cell = await runThrough(notebook, '%jobber_jobs --label e2e-find-py');
  const table = cell.locator('.jp-OutputArea-output table.jobber-jobs');
  await expect(table).toBeVisible({ timeout: 60_000 });
  await expect(outputsOf(cell)).toHaveCount(1);
  // Isolation and backend are the same for every job here: said once, under the table.
  await expect(table.locator('th')).toHaveText(['id', 'label', 'started', 'duration', 'result', 'limits', 'command']);
  await expect(cell.locator('.jp-OutputArea-output p')).toHaveText(/^every job: isolation \S+ · backend local$/);
  const rows = table.locator('tbody tr');
  await expect(rows).toHaveCount(2); // not the job labelled e2e-find-other
  await expect(rows.locator('td:nth-child(2)')).toHaveText(['e2e-find-py', 'e2e-find-py']);
  await expect(rows.locator('.jobber-result')).toHaveText(['exited (code 0)', 'exited (code 0)']);

  const commands = rows.locator('.jobber-command');
  await expect(commands.nth(0)).toHaveAttribute('title', "python3 - <<'PY'\nimport sys\nprint('a Python job:', sys.version_info[:2])\nPY");
  await expect(commands.nth(0)).toContainText("python3 - <<'PY' … (+3 lines)");
  await expect(commands.nth(1)).toHaveAttribute('title', /^echo 'a first line long enough[^]*\necho 'a second line'$/);

  // Each command shows as one line of text, however long its first line; the result
  // column takes less than a third of the table, the command column more than it.
  const layout = await table.evaluate((node) => {
    const width = (element) => element.getBoundingClientRect().width;
    // Lines of text: boxes side by side overlap vertically; a box wholly below the others starts a line.
    const lineCount = (element) => {
      const range = document.createRange();
      range.selectNodeContents(element);
      let lines = 0;
      let bottom = -Infinity;
      for (const rect of [...range.getClientRects()].sort((a, b) => a.top - b.top)) {
        if (rect.height && rect.top >= bottom - 1) lines += 1;
        bottom = Math.max(bottom, rect.bottom);
      }
      return lines;
    };
    const first = node.querySelector('tbody tr');
    return {
      table: width(node),
      result: width(first.querySelector('td:nth-child(5)')),
      command: width(first.querySelector('td:last-child')),
      widest: Math.max(...[...first.querySelectorAll('td:not(:last-child)')].map(width)),
      output: width(node.closest('.jp-OutputArea-output')),
      lines: [...node.querySelectorAll('.jobber-command')].map(lineCount),
    };
  });
  expect(layout.lines, JSON.stringify(layout)).toEqual([1, 1]);
  expect(layout.result, JSON.stringify(layout)).toBeLessThan(layout.table / 3);
  expect(layout.command, JSON.stringify(layout)).toBeGreaterThan(layout.widest); // the widest column
  expect(layout.command, JSON.stringify(layout)).toBeGreaterThan(layout.table * 0.3);
  expect(layout.table, JSON.stringify(layout)).toBeLessThanOrEqual(layout.output); // no sideways scrolling
  await cell.screenshot({ path: path.join(ARTIFACTS, 'find-jobs.png') });
});
