// Scenarios that disturb every other test, run alone after them: a platform failing every call
// (sandbox faults are global), and the API restarted under the page.
import { expect, test } from '@playwright/test';
import { CONTROL, linkInstagram, newCreator, openCalendar, postsWithCaption, sandbox, schedule, snap, tile } from './helpers';

const unique = () => Math.random().toString(36).slice(2, 8);

test('a platform failing every attempt: failed with a countdown, then needs attention; once it recovers, retry now publishes', async ({ page }, testInfo) => {
  const creator = newCreator('failing');
  const account = await linkInstagram(creator.token);
  await sandbox('POST', '/_sandbox/faults', { endpoint: 'instagram.media', times: 1000, status: 500 });
  try {
    await openCalendar(page, creator.token);
    const caption = `Platform down ${unique()}`;
    const job = await schedule(creator.token, account.id, new Date(Date.now() + 5_000), caption);
    const jobTile = tile(page, job.id);
    await jobTile.click();
    const panel = page.getByRole('dialog', { name: /^Instagram post/ });
    await expect(jobTile).toHaveAttribute('data-status', 'failed');
    await expect(panel.locator('[data-countdown]')).toBeVisible();
    await expect(jobTile).toHaveAttribute('data-status', 'needs_attention', { timeout: 60_000 });
    await expect(panel.locator('.error-words').first()).toContainText('instagram.');
    await expect(panel.locator('.attempts li')).toHaveCount(4);
    await snap(page, testInfo, 'needs-attention');

    await sandbox('DELETE', '/_sandbox/faults');
    await panel.getByRole('button', { name: 'Retry now' }).click();
    await expect(jobTile).toHaveAttribute('data-status', 'published', { timeout: 60_000 });
    expect(await postsWithCaption(caption)).toHaveLength(1);
  } finally {
    await fetch(`${process.env.E2E_SANDBOX}/_sandbox/faults`, { method: 'DELETE' });
  }
});

test('the page reconnects after the API restarts and shows the transitions it missed', async ({ page }, testInfo) => {
  const creator = newCreator('reconnect');
  const account = await linkInstagram(creator.token);
  await openCalendar(page, creator.token);
  const caption = `Published while the API was down ${unique()}`;
  const job = await schedule(creator.token, account.id, new Date(Date.now() + 8_000), caption);
  const jobTile = tile(page, job.id);
  await expect(jobTile).toHaveAttribute('data-status', 'scheduled');

  expect((await fetch(`${CONTROL}/api/stop`, { method: 'POST' })).ok).toBeTruthy();
  await expect(page.locator('#banner')).toBeVisible();
  await expect(page.locator('#banner')).toContainText('Reconnecting');
  // The worker publishes while no API runs.
  await expect.poll(async () => (await postsWithCaption(caption)).length, { timeout: 60_000 }).toBe(1);
  await expect(jobTile).toHaveAttribute('data-status', 'scheduled');
  await snap(page, testInfo, 'disconnected');

  expect((await fetch(`${CONTROL}/api/start`, { method: 'POST' })).ok).toBeTruthy();
  await expect(page.locator('#banner')).toBeHidden();
  await expect(jobTile).toHaveAttribute('data-status', 'published');
  await snap(page, testInfo, 'reconnected');
});
