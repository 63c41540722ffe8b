// The creator's calendar: a client of the Autopost API like any other. It signs in with a bearer
// token (kept in sessionStorage), reads /v1/... and follows /v1/events with fetch() (EventSource
// cannot send the Authorization header, and tokens never travel in URLs).

const TOKEN_KEY = 'autopost.token';
const STATUSES = {
  scheduled: { icon: '\u25F7', words: 'scheduled' },
  publishing: { icon: '\u27F3', words: 'publishing' },
  published: { icon: '\u2713', words: 'published' },
  failed: { icon: '\u21BB', words: 'failed, will retry' },
  needs_attention: { icon: '!', words: 'needs attention' },
  cancelled: { icon: '\u2298', words: 'cancelled' },
};
// What a creator may ask of a job in each status; the server has the last word and its refusal
// is shown.
const ACTIONS = {
  scheduled: ['edit', 'reschedule', 'cancel', 'publish-now'],
  failed: ['retry', 'edit', 'reschedule', 'cancel', 'publish-now'],
  needs_attention: ['retry', 'edit', 'reschedule', 'cancel', 'publish-now'],
  publishing: [],
  published: [],
  cancelled: [],
};
const CHANNELS = { instagram: 'Instagram', tiktok: 'TikTok' };
const NARROW = window.matchMedia('(max-width: 640px)');
const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

const state = {
  token: null,
  features: null,
  accounts: new Map(),
  jobs: new Map(),
  // The highest mirror version seen per job: an event below it is stale.
  versions: new Map(),
  weekStart: startOfWeek(new Date()),
  openJobId: null,
  attempts: [],
  lastEventId: null,
  stream: null,
  connected: false,
  everConnected: false,
  // Resolves the first placement of the event stream (see `start`).
  onConnected: null,
};

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === 'class') node.className = value;
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---- time ---------------------------------------------------------------------------------

function startOfWeek(date) {
  const day = new Date(date);
  day.setHours(0, 0, 0, 0);
  day.setDate(day.getDate() - ((day.getDay() + 6) % 7)); // weeks start on Monday
  return day;
}

function addDays(date, days) {
  const next = new Date(date);
  next.setDate(next.getDate() + days);
  return next;
}

// The local calendar day as YYYY-MM-DD (the tiles' and columns' `data-day`).
function dayKey(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

// A <input type="datetime-local"> value for a Date, in local time.
function localInputValue(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${dayKey(date)}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

function formatWhen(iso) {
  return iso ? dateTimeFormat.format(new Date(iso)) : '\u2014';
}

function countdown(iso) {
  let seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (seconds <= 0) return 'due now';
  const parts = [];
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
    if (seconds >= size || unit === 's') {
      parts.push(`${Math.floor(seconds / size)} ${unit}`);
      seconds %= size;
    }
  }
  return `in ${parts.slice(0, 2).join(' ')}`;
}

// ---- the API ------------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, body) {
    const error = body && body.error ? body.error : {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.field = error.field || null;
  }

  // The refusal in words, with its code and field, as the page shows it.
  get words() {
    const field = this.field ? ` (${this.field})` : '';
    return `${this.message}${field} [${this.code}]`;
  }
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function api(path, { method = 'GET', body, key } = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  // Every write carries an Idempotency-Key: a double click or a retried request applies once.
  if (method !== 'GET') headers['Idempotency-Key'] = key || newKey();
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  } catch (error) {
    throw new ApiFailure(0, { error: { code: 'network', message: `the server could not be reached (${error.message})` } });
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (response.status === 401) {
    signOut('The server refused the token (expired or invalid): sign in again.');
  }
  if (!response.ok) throw new ApiFailure(response.status, json);
  return { status: response.status, body: json };
}

// ---- sign-in ------------------------------------------------------------------------------

function tokenSubject(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).sub || 'unknown creator';
  } catch {
    return 'unknown creator';
  }
}

function signIn(token) {
  state.token = token.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $('#creator').textContent = tokenSubject(state.token);
  $('#who').hidden = false;
  $('#sign-in').hidden = true;
  $('#app').hidden = false;
  start();
}

function signOut(reason = '') {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.jobs.clear();
  state.versions.clear();
  state.accounts.clear();
  state.lastEventId = null;
  state.everConnected = false;
  if (state.stream) state.stream.abort();
  closeDetail();
  $('#app').hidden = true;
  $('#who').hidden = true;
  $('#banner').hidden = true;
  $('#sign-in').hidden = false;
  $('#sign-in-error').textContent = reason;
  $('#calendar').replaceChildren();
}

async function start() {
  try {
    const [features] = await Promise.all([api('/v1/features'), loadAccounts()]);
    state.features = features.body;
  } catch (error) {
    if (state.token) flash(`Could not load the account: ${error.words || error.message}`);
    return;
  }
  // The stream is placed before the week loads: nothing that happens in between is missed.
  const placed = new Promise((resolve) => { state.onConnected = resolve; });
  followEvents();
  await Promise.race([placed, new Promise((resolve) => setTimeout(resolve, 5000))]);
  await loadWeek();
}

// ---- data ---------------------------------------------------------------------------------

async function loadAccounts() {
  const { body } = await api('/v1/accounts');
  state.accounts = new Map(body.accounts.map((account) => [account.id, account]));
  renderAccounts();
}

async function loadWeek() {
  const from = state.weekStart;
  const to = addDays(from, 7);
  const loaded = [];
  let cursor = null;
  try {
    do {
      const query = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), limit: '200' });
      if (cursor) query.set('cursor', cursor);
      const { body } = await api(`/v1/publish-jobs?${query}`);
      loaded.push(...body.jobs);
      cursor = body.next_cursor;
    } while (cursor);
  } catch (error) {
    flash(`Could not load the week: ${error.words || error.message}`);
    return;
  }
  for (const job of loaded) applyJob(job, null, false);
  render();
}

// Keeps the newest state of a job: by the event's version when there is one, and never older
// than what is held (by `updated_at`), whatever the order answers and events arrive in.
function applyJob(job, version, rerender = true) {
  const held = state.jobs.get(job.id);
  if (version !== null && version !== undefined) {
    // Below the version held is stale; equal is a repeat or a warning added after the transition.
    if (version < (state.versions.get(job.id) ?? -1)) return false;
    state.versions.set(job.id, version);
  }
  if (held && Date.parse(job.updated_at) < Date.parse(held.updated_at)) return false;
  state.jobs.set(job.id, job);
  if (rerender) {
    render();
    if (state.openJobId === job.id) renderDetail(true);
  }
  return true;
}

// ---- the event stream ---------------------------------------------------------------------

async function followEvents() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  let delay = 1000;
  while (state.token && state.stream === controller) {
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' };
      // Resumes after the last event received: the server sends what was missed meanwhile.
      if (state.lastEventId !== null) headers['Last-Event-ID'] = state.lastEventId;
      const response = await fetch('/v1/events', { headers, signal: controller.signal, cache: 'no-store' });
      if (response.status === 401) {
        signOut('The server refused the token (expired or invalid): sign in again.');
        return;
      }
      if (!response.ok) throw new Error(`the event stream answered ${response.status}`);
      const resumed = state.lastEventId !== null;
      setConnected(true);
      if (state.onConnected) state.onConnected();
      state.onConnected = null;
      delay = 1000;
      // Without an event to resume from, what changed while disconnected is read afresh.
      if (!resumed && state.everConnected) loadWeek();
      state.everConnected = true;
      await readEvents(response.body, controller);
      throw new Error('the event stream ended');
    } catch (error) {
      if (controller.signal.aborted || !state.token) return;
      setConnected(false, error.message);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 8000);
    }
  }
}

async function readEvents(body, controller) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = { type: 'message', data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done || controller.signal.aborted) return;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
      if (line === '') {
        if (event.data.length) dispatch(event);
        event = { type: 'message', data: [], id: null };
        continue;
      }
      if (line.startsWith(':')) continue; // the heartbeat
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') event.type = value;
      else if (field === 'data') event.data.push(value);
      else if (field === 'id') event.id = value;
    }
  }
}

function dispatch(event) {
  if (event.id !== null) state.lastEventId = event.id;
  if (event.type !== 'job.updated') return;
  try {
    const { job, version } = JSON.parse(event.data.join('\n'));
    applyJob(job, version);
  } catch (error) {
    console.warn('an unreadable event', error);
  }
}

function setConnected(connected, why = '') {
  state.connected = connected;
  const banner = $('#banner');
  banner.hidden = connected;
  banner.textContent = connected ? '' : `Live updates lost (${why}). Reconnecting\u2026`;
  document.body.dataset.live = connected ? 'connected' : 'disconnected';
}

// ---- the calendar -------------------------------------------------------------------------

function postType(job) {
  const options = job.options || {};
  const kinds = job.media.map((m) => m.kind);
  if (job.channel === 'instagram') {
    if (options.post_type) return options.post_type;
    if (kinds.length > 1) return 'carousel';
    return kinds[0] === 'video' ? 'reel' : 'feed';
  }
  return kinds.includes('video') ? 'video' : 'photo';
}

// What stands in the way of a scheduled post, before its time: a short label for the tile and
// the whole story for the detail panel.
function readinessProblems(job) {
  const problems = [];
  if (job.status !== 'scheduled') return problems;
  const account = state.accounts.get(job.account_id);
  if (!account || account.unlinked_at) problems.push({ label: 'account unlinked', detail: 'The account was unlinked: link it again or cancel the post.' });
  else {
    if (Date.parse(account.token_expires_at) < Date.parse(job.publish_at)) {
      problems.push({ label: 'token expires before this post', detail: `The account's token expires ${formatWhen(account.token_expires_at)}, before this post: re-link the account.` });
    }
    if (account.health.status !== 'ok') {
      problems.push({ label: `account ${account.health.status.replace(/_/g, ' ')}`, detail: account.health.detail || account.health.status });
    }
  }
  const readiness = job.readiness;
  if (readiness && !readiness.ok) {
    for (const check of readiness.checks || []) {
      if (check.ok) continue;
      const label = { media: 'media missing', token: 'token problem', account: 'account problem' }[check.name] || `${check.name} problem`;
      // The token's expiry is already told above, from the account.
      if (check.name === 'token' && problems.some((p) => p.label.startsWith('token'))) continue;
      problems.push({ label, detail: check.detail });
    }
  }
  return problems;
}

function badge(status) {
  const { icon, words } = STATUSES[status] || { icon: '?', words: status };
  return el('span', { class: `badge status-${status}` }, el('span', { 'aria-hidden': 'true' }, icon), ` ${words}`);
}

function thumbnail(job) {
  const first = job.media[0];
  const cover = job.options && job.options.cover_url;
  const source = first && first.kind === 'image' ? first.url : cover;
  if (!source) return el('span', { class: 'thumb video', 'aria-hidden': 'true' }, '\u25B6');
  const image = el('img', { class: 'thumb', src: source, alt: '', loading: 'lazy' });
  // Media that cannot be loaded show as such, not as a broken image.
  image.addEventListener('error', () => image.replaceWith(el('span', { class: 'thumb missing', title: 'media not found' }, '?')), { once: true });
  return image;
}

function excerpt(text, length = 60) {
  const chars = [...text];
  return chars.length > length ? `${chars.slice(0, length).join('')}\u2026` : text;
}

function tile(job) {
  const when = new Date(job.publish_at);
  const problems = readinessProblems(job);
  const type = postType(job);
  const label = `${CHANNELS[job.channel]} ${type} at ${timeFormat.format(when)}, ${STATUSES[job.status]?.words || job.status}: ${excerpt(job.caption, 40) || 'no caption'}`;
  return el(
    'button',
    {
      type: 'button',
      class: `tile status-${job.status}${problems.length ? ' has-problems' : ''}`,
      dataset: { jobId: job.id, status: job.status, day: dayKey(when) },
      'aria-label': label,
      onclick: () => openDetail(job.id),
    },
    el('span', { class: 'tile-head' }, el('time', { datetime: job.publish_at }, timeFormat.format(when)), ` ${CHANNELS[job.channel]} \u00B7 ${type}`),
    el('span', { class: 'tile-body' }, thumbnail(job), el('span', { class: 'tile-caption' }, excerpt(job.caption) || '(no caption)')),
    badge(job.status),
    problems.map((problem) => el('span', { class: 'tile-problem' }, el('span', { 'aria-hidden': 'true' }, '\u26A0 '), problem.label)),
    job.last_error && (job.status === 'needs_attention' || job.status === 'failed')
      ? el('span', { class: 'tile-problem' }, el('span', { 'aria-hidden': 'true' }, '\u26A0 '), excerpt(job.last_error.message, 70))
      : null,
  );
}

function weekJobs() {
  const from = state.weekStart.getTime();
  const to = addDays(state.weekStart, 7).getTime();
  return [...state.jobs.values()]
    .filter((job) => {
      const at = Date.parse(job.publish_at);
      return at >= from && at < to;
    })
    .sort((a, b) => Date.parse(a.publish_at) - Date.parse(b.publish_at) || a.id.localeCompare(b.id));
}

function render() {
  if (!state.token) return;
  const days = Array.from({ length: 7 }, (_, i) => addDays(state.weekStart, i));
  const last = days[6];
  $('#week-label').textContent = `Week of ${dayFormat.format(days[0])} \u2013 ${dayFormat.format(last)} ${last.getFullYear()}`;
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.jobId : null;
  const jobs = weekJobs();
  const today = dayKey(new Date());
  const calendar = $('#calendar');
  calendar.dataset.view = NARROW.matches ? 'list' : 'week';
  calendar.dataset.weekStart = dayKey(state.weekStart);
  if (NARROW.matches) {
    calendar.replaceChildren(
      ...days.map((day) => {
        const key = dayKey(day);
        const tiles = jobs.filter((job) => dayKey(new Date(job.publish_at)) === key).map(tile);
        return el(
          'section',
          { class: `list-day${key === today ? ' today' : ''}`, dataset: { day: key }, 'aria-label': dayFormat.format(day) },
          el('h3', {}, dayFormat.format(day)),
          tiles.length ? el('ul', {}, tiles.map((t) => el('li', {}, t))) : el('p', { class: 'empty' }, 'Nothing scheduled'),
        );
      }),
    );
  } else {
    const grid = el('div', { class: 'week', role: 'grid', 'aria-label': $('#week-label').textContent });
    grid.append(el('div', { class: 'corner', role: 'columnheader' }, ''));
    for (const day of days) {
      const key = dayKey(day);
      grid.append(el('div', { class: `day-head${key === today ? ' today' : ''}`, role: 'columnheader', dataset: { day: key } }, dayFormat.format(day)));
    }
    // Working hours, widened to every hour that holds a post.
    const hours = jobs.map((job) => new Date(job.publish_at).getHours());
    const firstHour = Math.min(7, ...hours);
    const lastHour = Math.max(21, ...hours);
    for (let hour = firstHour; hour <= lastHour; hour += 1) {
      const hourStart = new Date(days[0]);
      hourStart.setHours(hour);
      grid.append(el('div', { class: 'hour', role: 'rowheader' }, timeFormat.format(hourStart)));
      for (const day of days) {
        const key = dayKey(day);
        const cell = el('div', { class: `cell${key === today ? ' today' : ''}`, role: 'gridcell', dataset: { day: key, hour: String(hour) } });
        for (const job of jobs) {
          const at = new Date(job.publish_at);
          if (dayKey(at) === key && at.getHours() === hour) cell.append(tile(job));
        }
        grid.append(cell);
      }
    }
    calendar.replaceChildren(grid);
  }
  if (focused) {
    const again = calendar.querySelector(`[data-job-id="${focused}"]`);
    if (again) again.focus();
  }
}

function showWeekOf(date) {
  const week = startOfWeek(date);
  if (week.getTime() !== state.weekStart.getTime()) {
    state.weekStart = week;
    render();
    loadWeek();
  }
}

// ---- the detail panel ---------------------------------------------------------------------

function openDetail(id) {
  state.openJobId = id;
  state.attempts = [];
  $('#detail').hidden = false;
  document.body.classList.add('detail-open');
  renderDetail(true);
  $('#close-detail').focus();
}

function closeDetail() {
  const id = state.openJobId;
  state.openJobId = null;
  $('#detail').hidden = true;
  document.body.classList.remove('detail-open');
  if (id) {
    const tileButton = document.querySelector(`.tile[data-job-id="${id}"]`);
    if (tileButton) tileButton.focus();
  }
}

async function loadAttempts(id) {
  try {
    const { body } = await api(`/v1/publish-jobs/${id}/attempts`);
    if (state.openJobId === id) {
      state.attempts = body.attempts;
      renderDetail(false);
    }
  } catch {
    // The panel shows the job without its attempts; the next transition tries again.
  }
}

function field(name, ...value) {
  return [el('dt', {}, name), el('dd', {}, ...value)];
}

function renderDetail(refreshAttempts) {
  const job = state.jobs.get(state.openJobId);
  if (!job) return;
  const body = $('#detail-body');
  // Inputs being typed into survive a re-render, focus and selection included.
  const typed = {};
  for (const input of body.querySelectorAll('[data-keep]')) typed[input.id] = input.value;
  const active = body.contains(document.activeElement) ? document.activeElement : null;
  const focus = active && active.id ? { id: active.id, start: active.selectionStart, end: active.selectionEnd } : null;
  const account = state.accounts.get(job.account_id);
  const problems = readinessProblems(job);
  const list = el(
    'dl',
    { class: 'fields' },
    field('Status', badge(job.status)),
    field('Publish at', formatWhen(job.publish_at)),
    field('Account', account ? `${CHANNELS[account.channel]} ${account.platform_user_id}` : job.account_id),
    field('Post type', `${CHANNELS[job.channel]} ${postType(job)}`),
    field('Caption', el('span', { class: 'caption', 'data-testid': 'detail-caption' }, job.caption || '(no caption)')),
    field('Media', el('ol', {}, job.media.map((m) => el('li', {}, `${m.kind}: `, el('a', { href: m.url, target: '_blank', rel: 'noreferrer' }, m.url))))),
    job.options ? field('Options', el('code', {}, JSON.stringify(job.options))) : null,
    field('Attempts made', String(job.attempt_count)),
    job.next_attempt_at
      ? field('Next attempt', el('span', { 'data-countdown': job.next_attempt_at }, countdown(job.next_attempt_at)), ` (${formatWhen(job.next_attempt_at)})`)
      : null,
    job.last_error ? field('Last error', el('span', { class: 'error-words', role: 'note' }, job.last_error.message, ' ', el('code', {}, job.last_error.code))) : null,
    job.platform_post_id ? field('Platform post id', el('code', { 'data-testid': 'platform-post-id' }, job.platform_post_id)) : null,
    job.published_at ? field('Published at', formatWhen(job.published_at)) : null,
    job.first_comment_id ? field('First comment id', el('code', {}, job.first_comment_id)) : null,
    job.warnings.length ? field('Warnings', el('ul', {}, job.warnings.map((w) => el('li', {}, `${w.message} `, el('code', {}, w.code))))) : null,
    problems.length ? field('Before its time', el('ul', {}, problems.map((p) => el('li', {}, p.detail)))) : null,
    field('Workflow', el('code', {}, job.workflow_id)),
  );
  const attempts = el(
    'section',
    { 'aria-label': 'Attempts' },
    el('h3', {}, 'Attempts'),
    state.attempts.length
      ? el(
          'ol',
          { class: 'attempts' },
          state.attempts.map((a) =>
            el(
              'li',
              {},
              `#${a.attempt_number} ${a.outcome.replace('_', ' ')} \u00B7 ${formatWhen(a.started_at)}`,
              a.error_message ? el('div', { class: 'error-words' }, a.error_message, ' ', el('code', {}, a.error_code)) : null,
            ),
          ),
        )
      : el('p', { class: 'empty' }, 'None yet'),
  );
  body.replaceChildren(list, actions(job), attempts);
  for (const [id, value] of Object.entries(typed)) {
    const input = body.querySelector(`#${id}`);
    if (input) input.value = value;
  }
  if (focus) {
    const again = body.querySelector(`#${focus.id}`);
    if (again) {
      again.focus();
      if (typeof focus.start === 'number' && again.setSelectionRange) {
        try {
          again.setSelectionRange(focus.start, focus.end);
        } catch {
          // inputs such as datetime-local have no selection
        }
      }
    }
  }
  $('#detail-title').textContent = `${CHANNELS[job.channel]} post, ${STATUSES[job.status]?.words || job.status}`;
  if (refreshAttempts) loadAttempts(job.id);
}

function actions(job) {
  const allowed = ACTIONS[job.status] || [];
  const box = el('section', { class: 'actions', 'aria-label': 'Actions' });
  if (!allowed.length) return box;
  const error = el('p', { class: 'error', role: 'alert', id: 'action-error' });
  const run = async (button, command, request) => {
    error.textContent = '';
    button.disabled = true;
    try {
      const { status, body } = await request();
      if (status === 202) flash(`Sent: ${command}. The job will show the outcome when the workflow confirms it.`);
      else if (body && body.id) {
        applyJob(body, null);
        flash(`Done: ${command}.`);
      }
    } catch (failure) {
      error.textContent = `The server refused to ${command}: ${failure.words || failure.message}`;
    } finally {
      button.disabled = false;
    }
  };
  const command = (name, path, body) => (event) => run(event.currentTarget, name, () => api(`/v1/publish-jobs/${job.id}/${path}`, { method: 'POST', body }));
  const row = el('div', { class: 'buttons' });
  if (allowed.includes('retry')) row.append(el('button', { type: 'button', class: 'primary', onclick: command('retry now', 'retry') }, 'Retry now'));
  if (allowed.includes('publish-now') && state.features && state.features.publish_now) {
    row.append(el('button', { type: 'button', onclick: command('publish now', 'publish-now') }, 'Publish now'));
  }
  if (allowed.includes('cancel')) {
    row.append(
      el('button', {
        type: 'button',
        class: 'danger',
        onclick: (event) => {
          if (window.confirm('Cancel this post? It will not be published.')) command('cancel', 'cancel')(event);
        },
      }, 'Cancel post'),
    );
  }
  box.append(row);
  if (allowed.includes('reschedule')) {
    const input = el('input', { id: 'reschedule-at', type: 'datetime-local', step: '1', 'data-keep': true, value: localInputValue(new Date(job.publish_at)) });
    box.append(
      el('div', { class: 'inline' },
        el('label', { for: 'reschedule-at' }, `New time (${ZONE})`),
        input,
        el('button', {
          type: 'button',
          onclick: (event) => {
            if (!input.value) {
              error.textContent = 'Choose a date and time first.';
              return;
            }
            command('reschedule', 'reschedule', { publish_at: new Date(input.value).toISOString() })(event);
          },
        }, 'Reschedule')),
    );
  }
  if (allowed.includes('edit')) {
    const caption = el('textarea', { id: 'edit-caption', rows: '3', 'data-keep': true });
    caption.value = job.caption;
    box.append(
      el('div', { class: 'inline' },
        el('label', { for: 'edit-caption' }, 'Caption'),
        caption,
        el('button', {
          type: 'button',
          onclick: (event) => run(event.currentTarget, 'edit', () => api(`/v1/publish-jobs/${job.id}`, { method: 'PATCH', body: { caption: caption.value } })),
        }, 'Save caption')),
    );
  }
  box.append(error);
  return box;
}

// ---- the new post form --------------------------------------------------------------------

function openComposer() {
  const select = $('#post-account');
  const linked = [...state.accounts.values()].filter((a) => !a.unlinked_at);
  select.replaceChildren(
    el('option', { value: '' }, linked.length ? 'Choose an account' : 'No linked account: link one in Accounts'),
    ...linked.map((a) => el('option', { value: a.id }, `${CHANNELS[a.channel]} ${a.platform_user_id}`)),
  );
  if (linked.length === 1) select.value = linked[0].id;
  const at = new Date(Date.now() + 60 * 60 * 1000);
  at.setMinutes(0, 0, 0);
  $('#post-at').value = localInputValue(at);
  $('#post-caption').value = '';
  $('#media-rows').replaceChildren();
  addMediaRow();
  $('#composer-error').textContent = '';
  // One key per form: a double submit creates one job.
  $('#composer-form').dataset.key = newKey();
  $('#composer').showModal();
  accountChosen();
}

function addMediaRow(url = '', kind = 'image') {
  const rows = $('#media-rows');
  const n = rows.children.length + 1;
  const row = el(
    'div',
    { class: 'media-row' },
    el('label', { for: `media-url-${n}` }, `Media ${n} URL`),
    el('input', { id: `media-url-${n}`, class: 'media-url', type: 'url', value: url, required: true }),
    el('label', { for: `media-kind-${n}` }, 'Kind'),
    el(
      'select',
      { id: `media-kind-${n}`, class: 'media-kind', onchange: updateCount },
      el('option', { value: 'image', selected: kind === 'image' }, 'image'),
      el('option', { value: 'video', selected: kind === 'video' }, 'video'),
    ),
    el('button', { type: 'button', 'aria-label': `Remove media ${n}`, onclick: () => { row.remove(); updateCount(); } }, 'Remove'),
  );
  rows.append(row);
}

function chosenAccount() {
  return state.accounts.get($('#post-account').value) || null;
}

function mediaItems() {
  return [...document.querySelectorAll('#media-rows .media-row')]
    .map((row) => ({ url: $('.media-url', row).value.trim(), kind: $('.media-kind', row).value }))
    .filter((item) => item.url);
}

function captionLimit(account) {
  const limits = (state.features && state.features.caption_limits) || { instagram: 2200, tiktok_video: 2200, tiktok_photo: 4000 };
  if (!account) return limits.instagram;
  if (account.channel === 'instagram') return limits.instagram;
  return mediaItems().some((m) => m.kind === 'video') ? limits.tiktok_video : limits.tiktok_photo;
}

function updateCount() {
  const used = [...$('#post-caption').value].length;
  const limit = captionLimit(chosenAccount());
  const counter = $('#caption-count');
  counter.textContent = `${used} / ${limit} characters`;
  counter.classList.toggle('over', used > limit);
  $('#post-caption').setAttribute('aria-invalid', used > limit ? 'true' : 'false');
}

async function accountChosen() {
  const account = chosenAccount();
  $('#instagram-options').hidden = !account || account.channel !== 'instagram';
  $('#tiktok-options').hidden = !account || account.channel !== 'tiktok';
  updateCount();
  const info = $('#capabilities');
  info.textContent = '';
  if (!account) return;
  info.textContent = 'Asking the platform what this account can post\u2026';
  try {
    const { body } = await api(`/v1/accounts/${account.id}/capabilities`);
    if (chosenAccount() !== account) return;
    const caps = body.capabilities;
    if (caps.channel === 'tiktok') {
      const privacy = $('#tt-privacy');
      // No default: the creator chooses who sees the post (TikTok's rule for Direct Post).
      privacy.replaceChildren(
        el('option', { value: '' }, 'Choose who can see it'),
        ...caps.privacy_level_options.map((level) => el('option', { value: level }, level.toLowerCase().replace(/_/g, ' '))),
      );
      for (const [id, off] of [['#tt-disable-comment', caps.comment_disabled], ['#tt-disable-duet', caps.duet_disabled], ['#tt-disable-stitch', caps.stitch_disabled]]) {
        $(id).checked = off;
        $(id).disabled = off;
      }
      const longest = caps.max_video_post_duration_sec ? `, videos up to ${caps.max_video_post_duration_sec} s` : '';
      info.textContent = `TikTok ${caps.creator_username ? `@${caps.creator_username}` : ''}: ${caps.post_types.join(' and ')} posts${longest}.`;
    } else {
      const type = $('#ig-post-type');
      type.replaceChildren(type.options[0], ...caps.post_types.map((t) => el('option', { value: t }, t)));
      const quota = caps.content_publishing_limit;
      info.textContent = `Instagram: ${caps.post_types.join(', ')}; ${quota.used} of ${quota.allowed} posts used in the last ${Math.round(quota.window_seconds / 3600)} h.`;
    }
  } catch (failure) {
    if (chosenAccount() === account) info.textContent = `The platform could not tell: ${failure.words || failure.message}`;
  }
}

function postOptions(account, media) {
  const hasVideo = media.some((m) => m.kind === 'video');
  if (account.channel === 'tiktok') {
    // Left to the server, which names what is missing (`privacy_level_required`).
    if (!$('#tt-privacy').value) return undefined;
    const options = {
      channel: 'tiktok',
      privacy_level: $('#tt-privacy').value,
      disable_comment: $('#tt-disable-comment').checked,
      brand_content_toggle: $('#tt-brand-content').checked,
      brand_organic_toggle: $('#tt-brand-organic').checked,
    };
    if (hasVideo) {
      options.disable_duet = $('#tt-disable-duet').checked;
      options.disable_stitch = $('#tt-disable-stitch').checked;
      options.is_aigc = $('#tt-aigc').checked;
    } else if ($('#tt-title').value.trim()) {
      options.title = $('#tt-title').value.trim();
    }
    return options;
  }
  const options = { channel: 'instagram' };
  const type = $('#ig-post-type').value;
  if (type) options.post_type = type;
  const reel = type === 'reel' || (!type && media.length === 1 && hasVideo);
  if (reel && !$('#ig-share-to-feed').checked) options.share_to_feed = false;
  const comment = $('#ig-first-comment').value.trim();
  if (comment) options.first_comment = comment;
  const collaborators = $('#ig-collaborators').value.split(',').map((s) => s.trim().replace(/^@/, '')).filter(Boolean);
  if (collaborators.length) options.collaborators = collaborators;
  const location = $('#ig-location').value.trim();
  if (location) options.location_id = location;
  return Object.keys(options).length > 1 ? options : undefined;
}

async function submitPost(event) {
  event.preventDefault();
  const error = $('#composer-error');
  error.textContent = '';
  const account = chosenAccount();
  if (!account) {
    error.textContent = 'Choose an account.';
    $('#post-account').focus();
    return;
  }
  if (!$('#post-at').value) {
    error.textContent = 'Choose a date and time.';
    $('#post-at').focus();
    return;
  }
  const media = mediaItems();
  const body = {
    account_id: account.id,
    publish_at: new Date($('#post-at').value).toISOString(),
    caption: $('#post-caption').value,
    media,
  };
  const options = postOptions(account, media);
  if (options) body.options = options;
  const submit = event.submitter || $('#composer-form button[type=submit]');
  submit.disabled = true;
  try {
    const { body: job } = await api('/v1/publish-jobs', { method: 'POST', body, key: $('#composer-form').dataset.key });
    $('#composer').close();
    applyJob(job, null);
    showWeekOf(new Date(job.publish_at));
    flash(`Scheduled for ${formatWhen(job.publish_at)}.`);
  } catch (failure) {
    error.textContent = `Not scheduled: ${failure.words || failure.message}`;
  } finally {
    submit.disabled = false;
  }
}

// ---- accounts -----------------------------------------------------------------------------

function renderAccounts() {
  const list = $('#account-list');
  const accounts = [...state.accounts.values()].filter((a) => !a.unlinked_at);
  if (!accounts.length) {
    list.replaceChildren(el('li', { class: 'empty' }, 'No linked account yet.'));
    return;
  }
  list.replaceChildren(
    ...accounts.map((account) => {
      const healthy = account.health.status === 'ok';
      return el(
        'li',
        { dataset: { accountId: account.id, health: account.health.status } },
        el('strong', {}, `${CHANNELS[account.channel]} ${account.platform_user_id}`),
        el('span', { class: `health ${healthy ? 'ok' : 'bad'}` }, el('span', { 'aria-hidden': 'true' }, healthy ? '\u2713 ' : '\u26A0 '),
          healthy ? 'token ok' : `${account.health.status.replace(/_/g, ' ')}${account.health.detail ? `: ${account.health.detail}` : ''}`),
        el('span', {}, `expires ${formatWhen(account.token_expires_at)}`),
        el('span', { class: 'buttons' },
          el('button', { type: 'button', onclick: () => relink(account) , 'aria-label': `Re-link ${CHANNELS[account.channel]} ${account.platform_user_id}` }, 'Re-link'),
          el('button', { type: 'button', class: 'danger', onclick: () => unlink(account), 'aria-label': `Unlink ${CHANNELS[account.channel]} ${account.platform_user_id}` }, 'Unlink')),
      );
    }),
  );
}

function openAccounts() {
  $('#link-error').textContent = '';
  $('#sandbox-help').hidden = !(state.features && state.features.sandbox_url);
  $('#link-title').textContent = 'Link an account';
  $('#accounts').showModal();
}

function relink(account) {
  $('#link-title').textContent = `Re-link ${CHANNELS[account.channel]} ${account.platform_user_id}`;
  $('#link-channel').value = account.channel;
  $('#link-user').value = account.platform_user_id;
  $('#link-token').value = '';
  $('#link-refresh').value = '';
  $('#link-token').focus();
}

async function unlink(account) {
  if (!window.confirm(`Unlink ${CHANNELS[account.channel]} ${account.platform_user_id}? Its scheduled posts are cancelled.`)) return;
  try {
    const { body } = await api(`/v1/accounts/${account.id}`, { method: 'DELETE' });
    flash(`Unlinked; ${body.cancelled_jobs.length} scheduled post(s) cancelled.`);
    await loadAccounts();
    render();
  } catch (failure) {
    $('#link-error').textContent = `Not unlinked: ${failure.words || failure.message}`;
  }
}

// Development only: the sandbox issues tokens for a platform user, as if the creator had just
// connected the account.
async function sandboxToken() {
  const error = $('#link-error');
  error.textContent = '';
  const user = $('#link-user').value.trim();
  if (!user) {
    error.textContent = 'Enter the platform user id first.';
    $('#link-user').focus();
    return;
  }
  try {
    const response = await fetch(`${state.features.sandbox_url}/_sandbox/accounts`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ channel: $('#link-channel').value, platform_user_id: user }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `the sandbox answered ${response.status}`);
    $('#link-token').value = body.access_token;
    $('#link-refresh').value = body.refresh_token || '';
    $('#link-expires').value = localInputValue(new Date(body.token_expires_at));
    flash('The sandbox issued a fresh token: press Link.');
  } catch (failure) {
    error.textContent = `The sandbox issued no token: ${failure.message}`;
  }
}

async function submitLink(event) {
  event.preventDefault();
  const error = $('#link-error');
  error.textContent = '';
  const expires = $('#link-expires').value;
  const body = {
    channel: $('#link-channel').value,
    platform_user_id: $('#link-user').value.trim(),
    access_token: $('#link-token').value,
    token_expires_at: expires ? new Date(expires).toISOString() : '',
  };
  if ($('#link-refresh').value) body.refresh_token = $('#link-refresh').value;
  try {
    const { status } = await api('/v1/accounts', { method: 'POST', body });
    flash(status === 201 ? 'Account linked.' : 'Account re-linked with the new token.');
    $('#link-token').value = '';
    $('#link-refresh').value = '';
    await loadAccounts();
    render();
  } catch (failure) {
    error.textContent = `Not linked: ${failure.words || failure.message}`;
  }
}

// ---- page chrome --------------------------------------------------------------------------

let flashTimer = null;
function flash(message) {
  const node = $('#flash');
  node.textContent = message;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { node.textContent = ''; }, 8000);
}

function wire() {
  for (const node of document.querySelectorAll('.zone-name')) node.textContent = ZONE;
  $('#zone').textContent = `Times in ${ZONE}`;
  $('#sign-in-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('#token-input').value.trim();
    if (token) signIn(token);
  });
  $('#sign-out').addEventListener('click', () => signOut());
  $('#prev-week').addEventListener('click', () => showWeekOf(addDays(state.weekStart, -7)));
  $('#next-week').addEventListener('click', () => showWeekOf(addDays(state.weekStart, 7)));
  $('#today').addEventListener('click', () => showWeekOf(new Date()));
  $('#close-detail').addEventListener('click', closeDetail);
  $('#open-composer').addEventListener('click', openComposer);
  $('#open-accounts').addEventListener('click', openAccounts);
  $('#post-account').addEventListener('change', accountChosen);
  $('#post-caption').addEventListener('input', updateCount);
  $('#add-media').addEventListener('click', () => addMediaRow());
  $('#composer-form').addEventListener('submit', submitPost);
  $('#link-form').addEventListener('submit', submitLink);
  $('#sandbox-token').addEventListener('click', sandboxToken);
  for (const button of document.querySelectorAll('[data-close]')) {
    button.addEventListener('click', () => button.closest('dialog').close());
  }
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && state.openJobId && !document.querySelector('dialog[open]')) closeDetail();
  });
  NARROW.addEventListener('change', render);
  // Countdowns tick; tiles' readiness (token expiry) is re-judged each minute.
  setInterval(() => {
    for (const node of document.querySelectorAll('[data-countdown]')) node.textContent = countdown(node.dataset.countdown);
  }, 1000);
  setInterval(render, 60 * 1000);
}

function boot() {
  wire();
  // A link with `#token=...` signs in; the fragment is dropped from the address at once.
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const fromLink = fragment.get('token');
  if (fromLink) history.replaceState(null, '', window.location.pathname + window.location.search);
  const token = fromLink || sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else signOut();
}

boot();
