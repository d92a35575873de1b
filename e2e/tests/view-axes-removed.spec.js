// The live view's chart axes and a removed job's view, in the browser. Run by e2e/run.py
// (.ci/e2e.sh --grep axes, --grep removed), in new cells of e2e/notebooks/lifecycle-job.ipynb
// (only its first cell, `%load_ext jobber_magics`, is run from the file).
const path = require('node:path');
const { test, expect } = require('@playwright/test');
const { ARTIFACTS, openNotebook, cellWith, runThrough, liveView, jobIdOf, runNewCell } = require('./jupyterlab');

// A tick label a person would say: a number with at most two decimals, and its unit.
const ROUNDED = /^(0|\d+(\.\d{1,2})? (cores?|B|KiB|MiB|GiB|TiB)|\d+)$/;

/** Every value-axis label of the charts under `scope`, with whether it lies inside its svg. */
async function tickLabels(scope) {
  // In view first: JupyterLab does not lay out the cells scrolled out of sight.
  await scope.locator('svg.jobber-chart').last().scrollIntoViewIfNeeded();
  await scope.locator('svg.jobber-chart').first().scrollIntoViewIfNeeded();
  return scope.locator('svg.jobber-chart').evaluateAll((svgs) => svgs.map((svg) => {
    const box = svg.getBoundingClientRect();
    return {
      kind: [...svg.classList].find((name) => name.startsWith('jobber-chart-')),
      labels: [...svg.querySelectorAll('text.tick-label')].map((text) => {
        const r = text.getBoundingClientRect();
        return { text: text.textContent, inside: r.left >= box.left - 0.5 && r.right <= box.right + 0.5
          && r.top >= box.top - 0.5 && r.bottom <= box.bottom + 0.5 && r.width > 0 };
      }),
    };
  }));
}

function expectReadable(charts) {
  const all = JSON.stringify(charts, null, 1);
  expect(charts.length, all).toBeGreaterThan(0);
  for (const chart of charts) {
    expect(chart.labels.length, all).toBeGreaterThanOrEqual(2);
    for (const label of chart.labels) {
      expect(label.text, all).toMatch(ROUNDED);
      expect(label.inside, `${label.text} is clipped: ${all}`).toBe(true);
    }
  }
}

async function loadedNotebook(page, workspace) {
  const notebook = await openNotebook(page, 'notebooks/lifecycle-job.ipynb', workspace);
  const first = await runThrough(notebook, '%load_ext jobber_magics');
  await expect(first.locator('.jp-InputPrompt')).toHaveText(/\[\d+\]/, { timeout: 60_000 });
  return notebook;
}

test('chart axes: a --cpu 0.5 job and memory read as rounded labels that fit, 0.5 to 64 cores and KiB to TiB', async ({ page }) => {
  const notebook = await loadedNotebook(page, 'e2e-axes');
  // A real job held to half a core, spinning for 6 s while it holds 200 MiB of its 1.5 GiB.
  await runNewCell(notebook, '%%jobber_run --cpu 0.5 --memory 1536M --label e2e-axes\n'
    + 'python3 -c "b = bytearray(200 * 2**20); import time; time.sleep(6)" & '
    + "timeout 6 sh -c 'while :; do :; done'; wait");
  const view = liveView(cellWith(notebook, '--label e2e-axes'));
  await expect(view.status).toHaveText(/exited|failed/, { timeout: 60_000 });
  await expect(view.widget.locator('svg.jobber-chart-cpu')).toBeVisible();
  await expect(view.widget.locator('svg.jobber-chart-memory')).toBeVisible();
  const live = await tickLabels(view.widget);
  expectReadable(live);
  const labelsOf = (kind) => live.find((chart) => chart.kind === `jobber-chart-${kind}`).labels.map((l) => l.text);
  expect(labelsOf('cpu')).toEqual(['0', '0.5 cores']);
  expect(labelsOf('memory')).toEqual(['0', '0.5 GiB', '1 GiB', '1.5 GiB']);
  await view.widget.locator('.jobber-charts').screenshot({ path: path.join(ARTIFACTS, 'chart-axes-cpu-half.png') });

  // The same charts drawn for other limits (made-up readings: the labels and their fit are
  // what is checked, in this browser's fonts).
  const drawn = await runNewCell(notebook, 'from jobber_magics._charts import ResourceHistory, resource_chart_html as chart; '
    + 'from jobber import JobStatus, Limits; from IPython.display import HTML, display; h = ResourceHistory(interval=0); '
    + '[h.add(float(i), JobStatus(state="running", limits=Limits(), memory_bytes=(i + 1) << 19, cpu_seconds=i * 0.9)) for i in range(5)]; '
    + 'display(HTML("".join(f"<div class=e2e-axes>{chart(h, Limits(cpu=c, memory=m), running=True)}</div>" '
    + 'for c, m in [(1, "512K"), (2, "1536M"), (64, "2T")])))');
  const outputs = drawn.locator('.jp-OutputArea-output');
  await expect(outputs.locator('.e2e-axes svg.jobber-chart')).toHaveCount(6, { timeout: 60_000 });
  const charts = await tickLabels(outputs);
  expectReadable(charts);
  const labels = charts.map((c) => c.labels.map((l) => l.text));
  expect(labels).toEqual([
    ['0', '256 KiB', '512 KiB'], ['0', '0.5 cores', '1 core'],
    ['0', '0.5 GiB', '1 GiB', '1.5 GiB'], ['0', '1 core', '2 cores'],
    ['0', '1 TiB', '2 TiB'], ['0', '32 cores', '64 cores'],
  ]);
  await outputs.first().screenshot({ path: path.join(ARTIFACTS, 'chart-axes-limits.png') });
});

test('removed: a job removed in the next cell says so in its view, which keeps its last state and stays live', async ({ page }) => {
  const notebook = await loadedNotebook(page, 'e2e-removed');
  await runNewCell(notebook, '%%jobber_run --label e2e-removed\necho hello; sleep 1; echo bye');
  const view = liveView(cellWith(notebook, '--label e2e-removed'));  // not .last(): a cell comes after it
  await expect(view.status).toHaveText(/exited \(code 0\)/, { timeout: 60_000 });
  await expect(view.log).toHaveText(/hello\nbye$/);
  const jobId = await jobIdOf(view);
  const removing = await runNewCell(notebook, `%jobber_rm ${jobId}`);
  await expect(removing.locator('.jp-OutputArea-output')).toHaveText(`job ${jobId} removed`, { timeout: 60_000 });
  const removed = view.widget.locator('.jobber-removed');
  await expect(removed).toHaveText(new RegExp(`^job ${jobId} was removed\\b`), { timeout: 30_000 });
  // Longer than the 5 s a view waits for its kernel before it says "no word from its kernel".
  await page.waitForTimeout(10_000);
  await expect(view.widget).not.toContainText('no word from its kernel');
  await expect(view.dead).toBeHidden();
  await expect(view.widget).not.toContainText(/Traceback|Error|live view failed/);
  await expect(view.status).toHaveText(/exited \(code 0\)/);  // its last real state
  await expect(view.log).toHaveText(/hello\nbye$/);
  await expect(view.stop).toBeHidden();
  await view.widget.screenshot({ path: path.join(ARTIFACTS, 'removed-job-view.png') });
});
