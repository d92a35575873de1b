// The Jobs panel (issue 24) against JupyterLab from the built wheel in a fresh venv: run by
// e2e/lab/run_lab.py (.ci/lab_e2e.sh), which starts JupyterLab A (tenant A, JOBBER_CERT)
// and JupyterLab B (tenant B) on the same jobs directory. `jobber` here is the venv's.
const fs = require('node:fs');
const path = require('node:path');
const {
  ARTIFACTS, openNotebook, currentNotebook, kernelIdle, runThrough, liveView, jobIdOf, restartKernel, newestLineInView,
} = require('../tests/jupyterlab');
const {
  test, expect, countsText, TOKEN, B_URL, B_TOKEN, B_ENV, ROOT, jobber, startJob, jobStatus, listJobs, alive, openLab, openJobsPanel,
  filters, row, shownIds, clickRowButton, jobTab, toast,
} = require('./panel');

const LOOP = (name) => `for i in $(seq 1 600); do echo "${name}: line $i"; sleep 1; done`;

test('lists jobs from a notebook, `jobber run` and a second notebook, and keeps updating after the first kernel restarts and shuts down', async ({ lab: page, request }) => {
  test.setTimeout(240_000);  // two kernels to start, one to restart and shut down: slow on a busy host
  const notebook = await openNotebook(page, 'lab/first.ipynb', 'lab-panel');
  const view = liveView(await runThrough(notebook, '%%jobber_run'));
  await expect(view.status).toContainText('running', { timeout: 60_000 });
  const fromNotebook = await jobIdOf(view);
  const fromTerminal = startJob(LOOP('terminal'), ['--label', 'e2e-lab-term']);

  // The second notebook, opened from the file browser beside the first.
  await page.locator('.jp-DirListing-item', { hasText: 'second.ipynb' }).dblclick();
  const tabs = page.locator('.lm-DockPanel-tabBar .lm-TabBar-tab');
  await expect(tabs.filter({ hasText: 'second.ipynb' })).toHaveClass(/lm-mod-current/);
  await expect(kernelIdle(page)).toBeVisible({ timeout: 60_000 });
  await runThrough(currentNotebook(page), '%%jobber_run');
  let fromSecond;
  await expect(async () => {
    [fromSecond] = listJobs({ label: 'e2e-lab-nb2', states: 'running' }).map((job) => job.id);
    expect(fromSecond).toBeGreaterThan(fromTerminal);
  }).toPass({ timeout: 60_000 });
  await tabs.filter({ hasText: 'first.ipynb' }).click();
  await expect(tabs.filter({ hasText: 'first.ipynb' })).toHaveClass(/lm-mod-current/);

  const panel = await openJobsPanel(page);
  for (const [id, label] of [[fromNotebook, 'e2e-lab-nb1'], [fromTerminal, 'e2e-lab-term'], [fromSecond, 'e2e-lab-nb2']]) {
    await expect(row(panel, id)).toHaveAttribute('data-state', 'running');
    await expect(row(panel, id)).toContainText(label);
    await expect(row(panel, id)).toContainText('running');
  }
  // Newest first.
  expect((await shownIds(panel)).filter((id) => [fromNotebook, fromTerminal, fromSecond].includes(id)))
    .toEqual([fromSecond, fromTerminal, fromNotebook]);
  await expect(page.locator('.jobber-lab-status')).toHaveText(countsText());

  await test.step('the first notebook\'s kernel restarted: the panel still follows', async () => {
    await restartKernel(page);
    const after = startJob(LOOP('after restart'), ['--label', 'e2e-lab-after-restart']);
    await expect(row(panel, after)).toHaveAttribute('data-state', 'running');
    await expect(row(panel, fromNotebook)).toHaveAttribute('data-state', 'running');  // jobs outlive their kernel
    jobber(['stop', '--grace', '1', String(after)]);
    await expect(row(panel, after)).toHaveAttribute('data-state', 'stopped');
  });

  await test.step('the first notebook\'s kernel shut down: the panel still follows', async () => {
    await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
    await page.locator('.lm-Menu-itemLabel', { hasText: /^Shut Down Kernel$/ }).click();
    const dialog = page.locator('.jp-Dialog');
    if (await dialog.isVisible()) await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
    // No kernel left for the notebook (by the server's word, not the page's).
    await expect(async () => {
      const sessions = await (await request.get(`/api/sessions?token=${TOKEN}`)).json();
      expect(sessions.filter((s) => s.path === 'lab/first.ipynb' && s.kernel)).toEqual([]);
    }).toPass({ timeout: 30_000 });
    const after = startJob(LOOP('after shutdown'), ['--label', 'e2e-lab-after-shutdown']);
    await expect(row(panel, after)).toHaveAttribute('data-state', 'running');
    jobber(['stop', '--grace', '1', String(fromTerminal)]);
    await expect(row(panel, fromTerminal)).toHaveAttribute('data-state', 'stopped');
    await expect(row(panel, fromTerminal)).toContainText('stopped');
    await expect(row(panel, fromNotebook)).toHaveAttribute('data-state', 'running');
    await expect(page.locator('.jobber-lab-status')).toHaveText(countsText());
  });
  await panel.screenshot({ path: path.join(ARTIFACTS, 'lab-jobs-panel.png') });
  await page.screenshot({ path: path.join(ARTIFACTS, 'lab-jobs-panel-page.png') });
});

test('Stop in the panel stops the job\'s whole process tree', async ({ lab: page, panel }) => {
  const dir = fs.mkdtempSync(path.join(ROOT, 'tree-'));
  const pids = path.join(dir, 'pids');
  // The shell, a child, a grandchild and a child in a session of its own (out of reach of
  // a process-group kill): each writes its pid.
  const id = startJob([
    `echo $$ >> ${pids}`,
    `sleep 600 & echo $! >> ${pids}`,
    `sh -c 'echo $$ >> ${pids}; sleep 600 & echo $! >> ${pids}; wait' &`,
    `setsid sleep 600 & echo $! >> ${pids}`,
    'wait',
  ].join('\n'), ['--label', 'e2e-lab-tree']);
  let tree = [];
  await expect(async () => {
    tree = fs.existsSync(pids) ? fs.readFileSync(pids, 'utf8').trim().split('\n').map(Number) : [];
    expect(tree).toHaveLength(5);
    expect(tree.filter(alive)).toEqual(tree);
  }).toPass({ timeout: 30_000 });

  await expect(row(panel, id)).toHaveAttribute('data-state', 'running');
  await clickRowButton(page, row(panel, id), 'Stop');
  await expect(row(panel, id)).toHaveAttribute('data-state', 'stopped');
  await expect(row(panel, id)).toContainText('stopped');
  await expect.poll(() => tree.filter(alive), { message: `processes of job ${id}'s tree still alive`, timeout: 15_000 })
    .toEqual([]);
  expect(jobStatus(id).state).toBe('stopped');
});

test('a row opens the job\'s live view tab: its log sticks to the bottom, its charts, its Stop', async ({ lab: page, panel }) => {
  const id = startJob('for i in $(seq 1 100000); do echo "view line $i"; sleep 0.02; done',
    ['--label', 'e2e-lab-view', '--memory', '256M']);
  await row(panel, id).getByText('e2e-lab-view').click();
  const view = jobTab(page, id);
  await expect(view.tab).toBeVisible();
  await expect(view.status).toContainText(`job ${id}`);
  await expect(view.status).toContainText('running');
  // The log grows, and its newest line stays in view (read at two moments, two texts).
  const lastLine = async () => Number(/view line (\d+)\s*$/.exec(await view.log.innerText())?.[1] ?? 0);
  const seen = [];
  await expect(async () => {
    const line = await lastLine();
    expect(await newestLineInView(view)).toBe(true);
    if (!seen.includes(line)) seen.push(line);
    expect(seen.filter((n) => n > 100).length).toBeGreaterThanOrEqual(2);
  }).toPass({ timeout: 30_000 });
  expect(await view.log.evaluate((pre) => pre.closest('.jobber-logbox').scrollHeight
    > pre.closest('.jobber-logbox').clientHeight)).toBe(true);  // it scrolls: sticking is not trivial
  await expect(view.charts.first()).toBeVisible();
  await expect(view.widget.locator('svg.jobber-chart-memory polyline')).toHaveCount(1);
  await expect(view.widget.locator('svg.jobber-chart-memory line.limit')).toHaveCount(1);  // --memory 256M
  const shot = path.join(ARTIFACTS, 'lab-job-tab.png');
  await page.screenshot({ path: shot });
  // The README's picture (docs/images/jobs-panel.png): E2E_UPDATE_DOCS=1 .ci/lab_e2e.sh renews it.
  if (process.env.E2E_UPDATE_DOCS === '1') fs.copyFileSync(shot, path.join(__dirname, '..', '..', 'docs', 'images', 'jobs-panel.png'));

  await view.stop.click();
  await expect(view.status).toContainText('stopped');
  await expect(view.stop).toBeHidden();
  await expect(row(panel, id)).toHaveAttribute('data-state', 'stopped');
  expect(jobStatus(id).state).toBe('stopped');
});

test('an OOM-killed job\'s notification says "out of memory", and Open opens the job', async ({ lab: page, panel }) => {
  const hog = ['python3 - <<\'EOF\'', 'import time', 'held = []', 'for _ in range(60):',
    '    held.append(b"x" * (10 << 20))', '    time.sleep(0.1)', 'EOF'].join('\n');
  const id = startJob(hog, ['--label', 'e2e-lab-oom', '--memory', '100M', '--notify']);
  const note = toast(page, new RegExp(`\\bjob ${id}\\b`));
  await expect(note).toBeVisible({ timeout: 30_000 });
  await expect(note).toContainText('out of memory');
  expect(jobStatus(id).state).toBe('oom-killed');
  await note.screenshot({ path: path.join(ARTIFACTS, 'lab-oom-notification.png') });
  await note.getByRole('button', { name: 'Open' }).click();
  const view = jobTab(page, id);
  await expect(view.tab).toBeVisible();
  await expect(view.widget).toHaveAttribute('data-state', 'oom-killed');
  await expect(view.status).toContainText(`job ${id}`);
});

test('the status bar counts the running and pending jobs, and opens the panel', async ({ lab: page, panel }) => {
  const status = page.locator('.jobber-lab-status');
  const first = startJob('sleep 600', ['--label', 'e2e-lab-count']);
  const second = startJob('sleep 600', ['--label', 'e2e-lab-count']);
  const waiting = startJob('sleep 1', ['--label', 'e2e-lab-count', '--after', String(first)]);
  expect(jobStatus(waiting).state).toBe('pending');
  const before = countsText();  // with the jobs other tests left running
  expect(before).toMatch(/^jobber: ([2-9]|\d\d+) running, ([1-9]|\d\d+) pending$/);
  await expect(status).toHaveText(before);
  jobber(['stop', '--grace', '1', String(second)]);
  const after = countsText();
  expect(after).not.toEqual(before);
  await expect(status).toHaveText(after);
  // The panel hidden behind the file browser, then a click on the status bar item.
  await page.locator('.jp-SideBar .lm-TabBar-tab[data-id="filebrowser"]').click();
  await expect(panel).toBeHidden();
  await status.click();
  await expect(panel).toBeVisible();
  await expect(row(panel, waiting)).toHaveAttribute('data-state', 'pending');
  await expect(row(panel, waiting)).toContainText(`after job ${first}`);  // "pending: why"
});

test('the panel filters by state and by label', async ({ panel }) => {
  const running = startJob('sleep 600', ['--label', 'e2e-lab-filter-a']);
  const done = startJob('echo done', ['--label', 'e2e-lab-filter-b']);
  await expect.poll(() => jobStatus(done).state).toBe('exited');
  await expect(row(panel, done)).toHaveAttribute('data-state', 'exited');
  const { state, label } = await filters(panel);

  await state.selectOption('running');
  await expect(row(panel, done)).toBeHidden();
  await expect(row(panel, running)).toBeVisible();
  const runningIds = listJobs({ states: 'running' }).map((job) => job.id).sort((a, b) => b - a);
  await expect.poll(() => shownIds(panel)).toEqual(runningIds);

  await state.selectOption('all states');
  await label.fill('e2e-lab-filter-b');
  await expect.poll(() => shownIds(panel)).toEqual(listJobs({ label: 'e2e-lab-filter-b' }).map((job) => job.id).reverse());
  await expect(row(panel, done)).toBeVisible();

  await state.selectOption('running');  // no running job has that label
  await expect.poll(() => shownIds(panel)).toEqual([]);
  await panel.screenshot({ path: path.join(ARTIFACTS, 'lab-jobs-filtered.png') });
});

test('Re-run in a row starts the job again; Remove deletes an ended job', async ({ lab: page, panel }) => {
  const done = startJob('echo once', ['--label', 'e2e-lab-rerun', '--memory', '64M']);
  await expect(row(panel, done)).toHaveAttribute('data-state', 'exited');
  await expect(row(panel, done).locator('button', { hasText: 'Stop' })).toBeHidden();  // ended: no Stop
  await clickRowButton(page, row(panel, done), 'Re-run');
  let again;
  await expect.poll(() => {
    again = listJobs({ label: 'e2e-lab-rerun' }).map((job) => job.id).find((id) => id > done);
    return again;
  }).toBeGreaterThan(done);
  await expect(row(panel, again)).toHaveAttribute('data-state', 'exited');
  const rerun = jobStatus(again);
  expect([rerun.command, rerun.limits.memory]).toEqual(['echo once', 64 * 1024 * 1024]);

  await clickRowButton(page, row(panel, done), 'Remove', { confirm: true });
  await expect(row(panel, done)).toHaveCount(0);
  expect(listJobs({ label: 'e2e-lab-rerun' }).map((job) => job.id)).toEqual([again]);
});

test('tenant B\'s JupyterLab shows none of A\'s jobs and refuses A\'s job ids', async ({ page, playwright }) => {
  const ofB = startJob('sleep 600', ['--label', 'e2e-lab-tenant-b'], B_ENV);
  const idsOfB = listJobs({ env: B_ENV }).map((job) => job.id);
  // Ids are counted per identity: an id of A's that B has no job of.
  let ofA;
  do ofA = startJob('sleep 600', ['--label', 'e2e-lab-tenant-a']); while (idsOfB.includes(ofA));
  const idsOnlyOfA = listJobs().map((job) => job.id).filter((id) => !idsOfB.includes(id));
  expect(idsOnlyOfA).toContain(ofA);

  await openLab(page, 'lab-tenant-b', { base: B_URL, token: B_TOKEN });
  const panel = await openJobsPanel(page);
  await expect(row(panel, ofB)).toHaveAttribute('data-state', 'running');
  await expect.poll(() => shownIds(panel).then((ids) => ids.sort())).toEqual([...idsOfB].sort());
  await expect(panel).not.toContainText('e2e-lab-tenant-a');
  await page.screenshot({ path: path.join(ARTIFACTS, 'lab-tenant-b.png') });

  const asB = await playwright.request.newContext({ baseURL: B_URL, extraHTTPHeaders: { Authorization: `token ${B_TOKEN}` } });
  const asA = await playwright.request.newContext({ baseURL: process.env.JUPYTER_BASE_URL, extraHTTPHeaders: { Authorization: `token ${TOKEN}` } });
  try {
    const [identityA, identityB] = await Promise.all([asA.get('/jobber/api/identity'), asB.get('/jobber/api/identity')]
      .map(async (reply) => (await reply).json()));
    expect(identityB.hash).not.toEqual(identityA.hash);
    const listed = (await (await asB.get('/jobber/api/jobs')).json()).jobs.map((job) => job.id);
    expect(listed.sort()).toEqual([...idsOfB].sort());
    for (const [method, url] of [['get', `/jobber/api/jobs/${ofA}`], ['post', `/jobber/api/jobs/${ofA}/stop`], ['post', `/jobber/api/jobs/${ofA}/rerun`],
      ['delete', `/jobber/api/jobs/${ofA}`]]) {
      const reply = await asB[method](url);
      expect(reply.status(), `${method.toUpperCase()} ${url} as tenant B`).toBe(404);
      expect((await reply.json()).message).toContain(`no job ${ofA} for this identity`);
    }
    const stopMany = await asB.post('/jobber/api/jobs:stop', { data: { ids: [ofA] } });
    expect(stopMany.status() === 404 || !(await stopMany.json()).stopped?.includes(ofA)).toBe(true);
    // A's job lives on, and A's own server still lists it.
    expect(jobStatus(ofA).state).toBe('running');
    expect((await (await asA.get('/jobber/api/jobs')).json()).jobs.map((job) => job.id)).toContain(ofA);
    // A's live view is not served to B: the socket is refused before it opens (B's own is served).
    const firstMessage = (id) => page.evaluate(([url, token]) => new Promise((resolve) => {
      const socket = new WebSocket(`${url.replace(/^http/, 'ws')}?token=${token}`);
      const timer = setTimeout(() => { socket.close(); resolve({ timeout: true }); }, 10_000);
      socket.onmessage = (event) => { clearTimeout(timer); socket.close(); resolve(JSON.parse(event.data)); };
      socket.onclose = (event) => { clearTimeout(timer); resolve({ closed: event.code }); };
    }), [`${B_URL}/jobber/api/jobs/${id}/view`, B_TOKEN]);
    const own = await firstMessage(ofB);
    expect([own.type, own.state?.job_id], JSON.stringify(own)).toEqual(['state', ofB]);
    const other = await firstMessage(ofA);
    expect(other, JSON.stringify(other)).toEqual({ closed: 1006 });
  } finally {
    await asA.dispose();
    await asB.dispose();
  }
});

test('the certPath setting comes before $JOBBER_CERT: B\'s JupyterLab set to A\'s certificate shows A\'s jobs', async ({ page, playwright }) => {
  const ofA = startJob('sleep 600', ['--label', 'e2e-lab-setting-a']);
  const asB = await playwright.request.newContext({ baseURL: B_URL, extraHTTPHeaders: { Authorization: `token ${B_TOKEN}` } });
  try {
    const before = await (await asB.get('/jobber/api/identity')).json();
    expect([before.source, before.subject]).toEqual(['JOBBER_CERT', 'CN=demo-user-2,O=jobber demo']);
    // The setting as the settings editor saves it; the page, loaded, hands it to the server.
    const saved = await asB.put('/lab/api/settings/jobber-lab:plugin',
      { data: { raw: JSON.stringify({ certPath: process.env.JOBBER_CERT }) } });
    expect(saved.status()).toBe(204);
    await openLab(page, 'lab-setting-b', { base: B_URL, token: B_TOKEN });
    const panel = await openJobsPanel(page);
    await expect(panel).toContainText('CN=demo-user,O=jobber demo');
    await expect(row(panel, ofA)).toHaveAttribute('data-state', 'running');
    await expect(row(panel, ofA)).toContainText('e2e-lab-setting-a');
    const after = await (await asB.get('/jobber/api/identity')).json();
    expect([after.source, after.subject]).toEqual(['setting', 'CN=demo-user,O=jobber demo']);
  } finally {  // B again, for whatever runs next
    await asB.put('/lab/api/settings/jobber-lab:plugin', { data: { raw: '{}' } });
    await asB.put('/jobber/api/identity', { data: { certPath: '', server: '' } });
    await asB.dispose();
  }
});
