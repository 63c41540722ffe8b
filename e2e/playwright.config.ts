// The page shows times in the browser's zone (below); the tests' own clock math uses the same one.
process.env.TZ = 'Europe/Berlin';

import { defineConfig } from '@playwright/test';

// Browsers cannot be downloaded on these machines: Debian's chromium (temporal-dev/test installs
// it with apt-get when missing).
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export default defineConfig({
  testDir: './tests',
  globalSetup: './global-setup.ts',
  outputDir: './test-results/artifacts',
  timeout: 120_000,
  expect: { timeout: 45_000 },
  fullyParallel: true,
  workers: 3,
  retries: 0,
  reporter: [['list'], ['html', { open: 'never', outputFolder: './test-results/report' }]],
  use: {
    baseURL: process.env.E2E_API,
    browserName: 'chromium',
    launchOptions: { executablePath, args: ['--no-sandbox'] },
    // A fixed zone and locale: the page shows times in the browser's zone, and the tests read them.
    timezoneId: 'Europe/Berlin',
    locale: 'en-GB',
    viewport: { width: 1400, height: 900 },
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
  },
  projects: [
    { name: 'calendar', testIgnore: /exclusive\.spec\.ts/ },
    // Scenarios that disturb every other test (the API restarted, the platform failing every
    // call): alone, after the rest.
    { name: 'exclusive', testMatch: /exclusive\.spec\.ts/, dependencies: ['calendar'], fullyParallel: false },
  ],
});
