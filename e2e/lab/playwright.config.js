// Playwright settings for the Jobs panel's browser tests (e2e/lab/). Start them with
// `.ci/lab_e2e.sh`, which builds the wheel, installs it in a fresh venv and runs
// e2e/lab/run_lab.py: two JupyterLabs (tenants A and B) and the variables below.
const path = require('node:path');
const { defineConfig } = require('@playwright/test');
const base = require('../playwright.config');

const artifacts = process.env.E2E_ARTIFACTS || path.join(__dirname, '..', '..', 'artifacts', 'e2e');

module.exports = defineConfig({
  ...base,
  testDir: '.',
  testMatch: '*.spec.js',
  outputDir: path.join(artifacts, 'lab-test-results'),
  // One JupyterLab per tenant, real jobs: one test at a time, in file order.
  workers: 1,
  fullyParallel: false,
  timeout: 120_000,
  globalTimeout: 420_000,
  expect: { timeout: 15_000 },
  reporter: [['list'], ['junit', { outputFile: path.join(artifacts, 'lab-junit.xml') }]],
});
