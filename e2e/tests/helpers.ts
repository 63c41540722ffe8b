// What the scenarios share: a creator of their own, the API and the sandbox's control API.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { expect, Page, TestInfo } from '@playwright/test';
import { autopostBinary } from '../stack';

export const API = process.env.E2E_API as string;
export const SANDBOX = process.env.E2E_SANDBOX as string;
export const CONTROL = process.env.E2E_CONTROL as string;
const STACK_ENV = JSON.parse(process.env.E2E_STACK_ENV || '{}');

export const IMAGE = () => `${SANDBOX}/media/sample.jpg`;

/** A creator of the test's own (no other test's tiles), with its bearer token. */
export function newCreator(name: string): { id: string; token: string } {
  const id = `e2e-${name}-${randomBytes(3).toString('hex')}`;
  const token = execFileSync(autopostBinary(), ['token', '--creator', id, '--ttl', '2h'], { env: STACK_ENV }).toString().trim();
  return { id, token };
}

/** A fresh Instagram user id: 17841 and 12 random digits. */
export function newInstagramUser(): string {
  return `17841${String(Math.floor(Math.random() * 1e12)).padStart(12, '0')}`;
}

export async function call(token: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const response = await fetch(`${API}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

export async function sandbox(method: string, path: string, body?: unknown): Promise<any> {
  const response = await fetch(`${SANDBOX}${path}`, {
    method,
    headers: { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  expect(response.ok, `sandbox ${method} ${path}: ${response.status}`).toBeTruthy();
  return response.json();
}

/** Tokens the sandbox issues for `user`, as if the creator had just connected the account. */
export async function sandboxAccount(user: string): Promise<{ access_token: string; token_expires_at: string }> {
  return sandbox('POST', '/_sandbox/accounts', { channel: 'instagram', platform_user_id: user });
}

/** Links an Instagram account through the API (the accounts panel has its own scenario). */
export async function linkInstagram(token: string, user = newInstagramUser()): Promise<{ id: string; user: string; accessToken: string }> {
  const issued = await sandboxAccount(user);
  const linked = await call(token, 'POST', '/v1/accounts', {
    channel: 'instagram',
    platform_user_id: user,
    access_token: issued.access_token,
    token_expires_at: issued.token_expires_at,
  });
  expect(linked.status, JSON.stringify(linked.body)).toBe(201);
  return { id: linked.body.id, user, accessToken: issued.access_token };
}

export async function schedule(token: string, accountId: string, publishAt: Date, caption: string): Promise<any> {
  const created = await call(token, 'POST', '/v1/publish-jobs', {
    account_id: accountId,
    publish_at: publishAt.toISOString(),
    caption,
    media: [{ url: IMAGE(), kind: 'image' }],
  });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  return created.body;
}

/** What the sandbox published with this caption: the ground truth of "published once". */
export async function postsWithCaption(caption: string): Promise<any[]> {
  const { posts } = await sandbox('GET', '/_sandbox/posts');
  return posts.filter((post: any) => post.caption === caption);
}

/** Opens the calendar signed in through a `#token=` link, on the week of `day`. */
export async function openCalendar(page: Page, token: string, day?: Date): Promise<void> {
  await page.goto(`/#token=${token}`);
  await expect(page.locator('#app')).toBeVisible();
  await expect(page.locator('body')).toHaveAttribute('data-live', 'connected');
  if (day) await showWeekOf(page, day);
}

/** Pages with the week buttons until the calendar shows the week holding `day`. */
export async function showWeekOf(page: Page, day: Date): Promise<void> {
  const monday = new Date(day);
  monday.setHours(0, 0, 0, 0);
  monday.setDate(monday.getDate() - ((monday.getDay() + 6) % 7));
  const key = localDay(monday);
  for (let i = 0; i < 10; i += 1) {
    const shown = await page.locator('#calendar').getAttribute('data-week-start');
    if (shown === key) return;
    await page.getByRole('button', { name: shown && shown < key ? 'Next week' : 'Previous week' }).click();
  }
  throw new Error(`the calendar never showed the week of ${key}`);
}

/** The calendar day of `date` in the browser's zone (the tests' process runs in the same one). */
export function localDay(date: Date): string {
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: 'Europe/Berlin', year: 'numeric', month: '2-digit', day: '2-digit' }).format(date);
  return parts;
}

/** A <input type=datetime-local> value for `date` in the browser's zone. */
export function localInput(date: Date): string {
  const parts = new Intl.DateTimeFormat('sv-SE', {
    timeZone: 'Europe/Berlin', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).format(date);
  return parts.replace(' ', 'T');
}

export function tile(page: Page, jobId: string) {
  return page.locator(`.tile[data-job-id="${jobId}"]`);
}

export async function snap(page: Page, testInfo: TestInfo, name: string): Promise<void> {
  await testInfo.attach(name, { body: await page.screenshot({ fullPage: false }), contentType: 'image/png' });
}
