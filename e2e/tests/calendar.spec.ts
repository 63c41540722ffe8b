// The creator's calendar in a real browser against real autopost processes; the sandbox's posts
// are the ground truth of what was published.
import { expect, test } from '@playwright/test';
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import {
  IMAGE, SANDBOX, call, linkInstagram, localDay, localInput, newCreator, newInstagramUser, openCalendar,
  postsWithCaption, sandbox, schedule, showWeekOf, snap, tile,
} from './helpers';

const unique = () => Math.random().toString(36).slice(2, 8);

test('a post scheduled through the form shows scheduled, then published with its platform post id, without a reload', async ({ page }, testInfo) => {
  const creator = newCreator('form');
  const account = await linkInstagram(creator.token);
  await openCalendar(page, creator.token);
  let loads = 0;
  page.on('load', () => { loads += 1; });

  await page.getByRole('button', { name: 'New post' }).click();
  const form = page.getByRole('dialog', { name: 'New post' });
  await form.getByLabel('Account').selectOption(account.id);
  await expect(form.locator('#capabilities')).toContainText('posts used');
  await form.getByLabel(/^Date and time/).fill(localInput(new Date(Date.now() + 25_000)));
  const caption = `Hello from the form ${unique()}`;
  await form.getByLabel('Caption', { exact: true }).fill(caption);
  await expect(form.getByText(`${caption.length} / 2200 characters`)).toBeVisible();
  await form.getByLabel('Media 1 URL').fill(IMAGE());
  await form.getByRole('button', { name: 'Schedule' }).click();
  await expect(form).toBeHidden();

  const scheduled = page.locator('.tile', { hasText: caption });
  await expect(scheduled).toHaveAttribute('data-status', 'scheduled');
  await expect(scheduled).toContainText('scheduled');
  await expect(scheduled).toContainText('Instagram · feed');
  await snap(page, testInfo, 'scheduled');
  await scheduled.click();
  const panel = page.getByRole('dialog', { name: /^Instagram post/ });
  await expect(panel).toBeVisible();

  await expect(scheduled).toHaveAttribute('data-status', 'published', { timeout: 60_000 });
  await expect(scheduled).toContainText('published');
  const postId = panel.getByTestId('platform-post-id');
  await expect(postId).toHaveText(/^\S+$/);
  const posts = await postsWithCaption(caption);
  expect(posts).toHaveLength(1);
  await expect(postId).toHaveText(posts[0].platform_post_id);
  expect(loads, 'the page never reloaded').toBe(0);
  await snap(page, testInfo, 'published');
});

test('a revoked token needs attention with the error in words; re-linked in the accounts panel, retry now publishes', async ({ page }, testInfo) => {
  const creator = newCreator('revoked');
  const account = await linkInstagram(creator.token);
  await sandbox('POST', '/_sandbox/tokens/revoke', { access_token: account.accessToken });
  await openCalendar(page, creator.token);
  const caption = `Revoked token ${unique()}`;
  const job = await schedule(creator.token, account.id, new Date(Date.now() + 10_000), caption);

  const jobTile = tile(page, job.id);
  await expect(jobTile).toHaveAttribute('data-status', 'needs_attention');
  await expect(jobTile).toContainText('needs attention');
  await jobTile.click();
  const panel = page.getByRole('dialog', { name: /^Instagram post/ });
  const lastError = panel.locator('.error-words').first();
  await expect(lastError).toContainText('preflight.token_rejected');
  await expect(lastError).toContainText(/token/i);
  await snap(page, testInfo, 'needs-attention');

  await page.getByRole('button', { name: 'Accounts' }).click();
  const accounts = page.getByRole('dialog', { name: 'Accounts' });
  await accounts.getByRole('button', { name: `Re-link Instagram ${account.user}` }).click();
  await accounts.getByRole('button', { name: 'Get a sandbox token' }).click();
  await expect(accounts.getByLabel('Access token')).not.toHaveValue('');
  await accounts.getByRole('button', { name: 'Link', exact: true }).click();
  await expect(page.locator('#flash')).toHaveText('Account re-linked with the new token.');
  await snap(page, testInfo, 'accounts');
  await accounts.getByRole('button', { name: 'Close the accounts panel' }).click();

  await panel.getByRole('button', { name: 'Retry now' }).click();
  await expect(jobTile).toHaveAttribute('data-status', 'published', { timeout: 60_000 });
  await expect(panel.getByTestId('platform-post-id')).toBeVisible();
  expect(await postsWithCaption(caption)).toHaveLength(1);
  await snap(page, testInfo, 'published-after-retry');
});

test('a caption edited in the detail panel is the one published', async ({ page }, testInfo) => {
  const creator = newCreator('edit');
  const account = await linkInstagram(creator.token);
  const before = `Before the edit ${unique()}`;
  const after = `After the edit ${unique()}`;
  const job = await schedule(creator.token, account.id, new Date(Date.now() + 30_000), before);
  await openCalendar(page, creator.token, new Date(job.publish_at));

  await tile(page, job.id).click();
  const panel = page.getByRole('dialog', { name: /^Instagram post/ });
  await panel.getByLabel('Caption', { exact: true }).fill(after);
  await panel.getByRole('button', { name: 'Save caption' }).click();
  await expect(panel.getByTestId('detail-caption')).toHaveText(after);
  await expect(tile(page, job.id)).toContainText(after);
  await snap(page, testInfo, 'edited');

  await expect(tile(page, job.id)).toHaveAttribute('data-status', 'published', { timeout: 60_000 });
  expect(await postsWithCaption(after)).toHaveLength(1);
  expect(await postsWithCaption(before)).toHaveLength(0);
});

test('a post rescheduled by the picker moves to its new day; a cancelled one stays unpublished past its time', async ({ page }, testInfo) => {
  const creator = newCreator('reschedule');
  const account = await linkInstagram(creator.token);
  // Next week's Monday and Wednesday: both ahead, both in one week view.
  const monday = new Date();
  monday.setHours(10, 0, 0, 0);
  monday.setDate(monday.getDate() + 7 - ((monday.getDay() + 6) % 7));
  const wednesday = new Date(monday);
  wednesday.setDate(monday.getDate() + 2);
  wednesday.setHours(11, 30);
  const moving = await schedule(creator.token, account.id, monday, `Moving ${unique()}`);
  const cancelledCaption = `Cancelled ${unique()}`;
  const cancelled = await schedule(creator.token, account.id, new Date(Date.now() + 15_000), cancelledCaption);

  await openCalendar(page, creator.token, monday);
  await expect(tile(page, moving.id)).toHaveAttribute('data-day', localDay(monday));
  await tile(page, moving.id).click();
  const panel = page.getByRole('dialog', { name: /^Instagram post/ });
  // A time in the past: the server refuses, and the panel says why in words.
  await panel.getByLabel(/^New time/).fill(localInput(new Date(Date.now() - 3600_000)));
  await panel.getByRole('button', { name: 'Reschedule' }).click();
  await expect(panel.getByRole('alert')).toContainText('publish_at_in_past');
  await expect(tile(page, moving.id)).toHaveAttribute('data-day', localDay(monday));
  await panel.getByLabel(/^New time/).fill(localInput(wednesday));
  await panel.getByRole('button', { name: 'Reschedule' }).click();
  await expect(tile(page, moving.id)).toHaveAttribute('data-day', localDay(wednesday));
  await expect(page.locator(`.cell[data-day="${localDay(wednesday)}"][data-hour="11"] .tile[data-job-id="${moving.id}"]`)).toBeVisible();
  await expect(page.locator(`.cell[data-day="${localDay(monday)}"] .tile[data-job-id="${moving.id}"]`)).toHaveCount(0);
  await snap(page, testInfo, 'rescheduled');
  await panel.getByRole('button', { name: 'Close the post\'s details' }).click();

  await showWeekOf(page, new Date());
  await tile(page, cancelled.id).click();
  page.once('dialog', (dialog) => dialog.accept());
  await panel.getByRole('button', { name: 'Cancel post' }).click();
  await expect(tile(page, cancelled.id)).toHaveAttribute('data-status', 'cancelled');
  // Past its time, and then some: still cancelled, nothing posted.
  await page.waitForTimeout(Math.max(0, Date.parse(cancelled.publish_at) - Date.now()) + 5_000);
  await expect(tile(page, cancelled.id)).toHaveAttribute('data-status', 'cancelled');
  expect(await postsWithCaption(cancelledCaption)).toHaveLength(0);
  await snap(page, testInfo, 'cancelled');
});

test('publish now publishes a post due tomorrow', async ({ page }, testInfo) => {
  const creator = newCreator('publish-now');
  const account = await linkInstagram(creator.token);
  await openCalendar(page, creator.token);
  const tomorrow = new Date();
  tomorrow.setDate(tomorrow.getDate() + 1);
  tomorrow.setHours(12, 0, 0, 0);

  await page.getByRole('button', { name: 'New post' }).click();
  const form = page.getByRole('dialog', { name: 'New post' });
  await form.getByLabel('Account').selectOption(account.id);
  await form.getByLabel(/^Date and time/).fill(localInput(tomorrow));
  const caption = `Due tomorrow ${unique()}`;
  await form.getByLabel('Caption', { exact: true }).fill(caption);
  await form.getByLabel('Media 1 URL').fill(IMAGE());
  await form.getByRole('button', { name: 'Schedule' }).click();

  const jobTile = page.locator('.tile', { hasText: caption });
  await expect(jobTile).toHaveAttribute('data-day', localDay(tomorrow));
  await expect(jobTile).toHaveAttribute('data-status', 'scheduled');
  await jobTile.click();
  const panel = page.getByRole('dialog', { name: /^Instagram post/ });
  await panel.getByRole('button', { name: 'Publish now' }).click();
  await expect(jobTile).toHaveAttribute('data-status', 'published', { timeout: 60_000 });
  await expect(panel.getByTestId('platform-post-id')).toBeVisible();
  expect(await postsWithCaption(caption)).toHaveLength(1);
  await snap(page, testInfo, 'published-now');
});

test('a TikTok post through the form: who can see it comes from the account, with no default, and is what TikTok gets', async ({ page }, testInfo) => {
  const creator = newCreator('tiktok');
  const openId = `e2e-tt-${unique()}`;
  // This creator may post only to followers or to themselves; comments are off in the app.
  await sandbox('POST', '/_sandbox/tiktok/creators', {
    open_id: openId, privacy_level_options: ['FOLLOWER_OF_CREATOR', 'SELF_ONLY'], comment_disabled: true,
  });
  const issued = await sandbox('POST', '/_sandbox/accounts', { channel: 'tiktok', platform_user_id: openId });
  const linked = await call(creator.token, 'POST', '/v1/accounts', {
    channel: 'tiktok', platform_user_id: openId, access_token: issued.access_token,
    refresh_token: issued.refresh_token, token_expires_at: issued.token_expires_at,
  });
  expect(linked.status, JSON.stringify(linked.body)).toBe(201);
  await openCalendar(page, creator.token);

  await page.getByRole('button', { name: 'New post' }).click();
  const form = page.getByRole('dialog', { name: 'New post' });
  await form.getByLabel('Account').selectOption(linked.body.id);
  const privacy = form.getByLabel('Who can see it');
  await expect(privacy.locator('option')).toHaveText(['Choose who can see it', 'follower of creator', 'self only']);
  await expect(privacy).toHaveValue('');
  await expect(form.getByLabel('Turn comments off')).toBeChecked();
  await expect(form.getByLabel('Turn comments off')).toBeDisabled();
  await form.getByLabel(/^Date and time/).fill(localInput(new Date(Date.now() + 20_000)));
  const caption = `TikTok from the form ${unique()}`;
  await form.getByLabel('Caption', { exact: true }).fill(caption);
  await form.getByLabel('Media 1 URL').fill(`${SANDBOX}/media/sample.mp4`);
  await form.getByLabel('Kind').selectOption('video');
  await expect(form.getByText(`${caption.length} / 2200 characters`)).toBeVisible();
  // Without a choice the server refuses, and the form says why.
  await form.getByRole('button', { name: 'Schedule' }).click();
  await expect(form.getByRole('alert')).toContainText('privacy_level_required');
  await privacy.selectOption('FOLLOWER_OF_CREATOR');
  await snap(page, testInfo, 'tiktok-form');
  await form.getByRole('button', { name: 'Schedule' }).click();
  await expect(form).toBeHidden();

  const jobTile = page.locator('.tile', { hasText: caption });
  await expect(jobTile).toContainText('TikTok · video');
  await expect(jobTile).toHaveAttribute('data-status', 'published', { timeout: 60_000 });
  const posts = await postsWithCaption(caption);
  expect(posts).toHaveLength(1);
  expect(posts[0].options.privacy_level).toBe('FOLLOWER_OF_CREATOR');
  expect(posts[0].options.disable_comment).toBe(true);
});

test("a second creator's token sees none of the first creator's tiles", async ({ page }, testInfo) => {
  const first = newCreator('first');
  const second = newCreator('second');
  const account = await linkInstagram(first.token);
  const job = await schedule(first.token, account.id, new Date(Date.now() + 3 * 3600_000), `First creator's ${unique()}`);
  await openCalendar(page, first.token, new Date(job.publish_at));
  await expect(tile(page, job.id)).toBeVisible();

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel(/^Your API token/).fill(second.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#creator')).toHaveText(second.id);
  await expect(page.locator('body')).toHaveAttribute('data-live', 'connected');
  await showWeekOf(page, new Date(job.publish_at));
  // A transition of the first creator's job while the second watches: it must not arrive.
  const moved = await call(first.token, 'POST', `/v1/publish-jobs/${job.id}/reschedule`, { publish_at: new Date(Date.now() + 4 * 3600_000).toISOString() });
  expect(moved.status).toBe(200);
  await page.waitForTimeout(3_000);
  await expect(page.locator('.tile')).toHaveCount(0);
  await page.getByRole('button', { name: 'Accounts' }).click();
  await expect(page.getByRole('dialog', { name: 'Accounts' })).toContainText('No linked account yet.');
  await snap(page, testInfo, 'second-creator');
});

test('the week view shows tiles in every state (the README screenshot)', async ({ page }, testInfo) => {
  const creator = newCreator('week');
  const account = await linkInstagram(creator.token);
  // An account whose token expires tomorrow: a post after that shows the problem early.
  const user = newInstagramUser();
  const shortLived = await sandbox('POST', '/_sandbox/accounts', { channel: 'instagram', platform_user_id: user, expires_in: 86_400 });
  const expiring = await call(creator.token, 'POST', '/v1/accounts', {
    channel: 'instagram', platform_user_id: user, access_token: shortLived.access_token, token_expires_at: shortLived.token_expires_at,
  });
  expect(expiring.status).toBe(201);
  const at = (minutes: number) => new Date(Date.now() + minutes * 60_000);
  const published = await schedule(creator.token, account.id, at(0.25), 'Launch day: the new collection is here');
  const missing = await call(creator.token, 'POST', '/v1/publish-jobs', {
    account_id: account.id, publish_at: at(0.5).toISOString(), caption: 'Behind the scenes',
    media: [{ url: `${SANDBOX}/media/missing.jpg`, kind: 'image' }],
  });
  expect(missing.status).toBe(201);
  const cancelled = await schedule(creator.token, account.id, at(90), 'Giveaway (postponed)');
  await schedule(creator.token, account.id, at(150), 'Tips: five ways to style it');
  await schedule(creator.token, expiring.body.id, at(36 * 60), 'Weekend recap');
  expect((await call(creator.token, 'POST', `/v1/publish-jobs/${cancelled.id}/cancel`)).status).toBe(200);

  await page.setViewportSize({ width: 1400, height: 1000 });
  await openCalendar(page, creator.token);
  await expect(tile(page, published.id)).toHaveAttribute('data-status', 'published', { timeout: 60_000 });
  await expect(tile(page, missing.body.id)).toHaveAttribute('data-status', 'needs_attention');
  await expect(tile(page, cancelled.id)).toHaveAttribute('data-status', 'cancelled');
  const first = page.locator('.tile').first();
  await first.scrollIntoViewIfNeeded();
  const shot = testInfo.outputPath('week.png');
  await page.screenshot({ path: shot });
  await testInfo.attach('week', { path: shot, contentType: 'image/png' });
  if (process.env.UPDATE_DOCS_SCREENSHOT) copyFileSync(shot, path.join(__dirname, '..', '..', 'docs', 'calendar-week.png'));

  // Below 640 px the week is a list, one section per day.
  await page.setViewportSize({ width: 420, height: 900 });
  await expect(page.locator('#calendar')).toHaveAttribute('data-view', 'list');
  await expect(page.locator(`.list-day .tile[data-job-id="${published.id}"]`)).toBeVisible();
  await snap(page, testInfo, 'list-view');
});
