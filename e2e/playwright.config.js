// Playwright settings for jobber's browser tests. Start them with `.ci/e2e.sh` (or
// `.venv/bin/python e2e/run.py`), which starts JupyterLab and sets the variables below.
const path = require('node:path');
const { defineConfig } = require('@playwright/test');

const artifacts = process.env.E2E_ARTIFACTS || path.join(__dirname, '..', 'artifacts', 'e2e');

module.exports = defineConfig({
  testDir: './tests',
  outputDir: path.join(artifacts, 'test-results'),
  // One JupyterLab, one kernel per notebook, real jobs: one test at a time.
  workers: 1,
  fullyParallel: false,
  retries: 0,
  forbidOnly: true,
  timeout: 120_000,
  globalTimeout: 900_000,
  expect: { timeout: 30_000 },
  reporter: [['list'], ['junit', { outputFile: path.join(artifacts, 'junit.xml') }]],
  use: {
    baseURL: process.env.JUPYTER_BASE_URL,
    browserName: 'chromium',
    headless: true,
    viewport: { width: 1280, height: 900 },
    actionTimeout: 30_000,
    navigationTimeout: 60_000,
    screenshot: 'only-on-failure',
    trace: 'retain-on-failure',
    launchOptions: {
      // Debian's chromium: Playwright downloads no browser (that fails on this network).
      executablePath: process.env.E2E_CHROMIUM || '/usr/bin/chromium',
      // Playwright gives every browser a fresh temporary --user-data-dir. Without the
      // background-networking flags Chromium keeps dialling out, which is refused here.
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    },
  },
});
