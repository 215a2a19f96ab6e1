// The agency planner: roster, a day's sessions and shifts on a timeline,
// booking with conflicts shown before the server is asked, commission terms
// and statements.
import {
  fatal, attempt,
  $, h, fill, api, apiAll, money, toast, timeOfDay, obtainToken, askForToken, decodeClaims, devInfo, localOffset, shortId, when,
} from './common.js';

const params = new URLSearchParams(location.search);
const COLORS = ['#e11d48', '#7c3aed', '#0891b2', '#ea580c', '#16a34a', '#2563eb', '#db2777', '#65a30d'];
const DAY = 86_400_000;
let token;
let agencyId;
let dev;
let roster = [];
let sessions = [];
let hostShifts = new Map(); // host_id -> shifts around the booking period (every session the agency sees)
let selectedShift = null;

const pad = (n) => String(n).padStart(2, '0');
const dateInput = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
const dateTimeInput = (d) => `${dateInput(d)}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
const day = () => $('#day').value;
const dayStart = () => new Date(`${day()}T00:00`).getTime();
const overlaps = (a1, a2, b1, b2) => a1 < b2 && b1 < a2;
const t = (iso) => Date.parse(iso);
const range = (from, to) => `${timeOfDay(from)}–${timeOfDay(to)}`;

async function main() {
  dev = await devInfo();
  agencyId = params.get('agency') || dev?.agency_id;
  token = await obtainToken({ user: 'ops-planner', role: 'agency', agency_id: agencyId }, 'planner');
  if (!token) {
    askForToken($('#app'), 'planner', 'This server does not mint demo tokens (production). Paste an agency token, or open the page with ?token=….');
    return;
  }
  agencyId = agencyId || decodeClaims(token)?.agency_id;
  if (!agencyId) {
    fatal('No agency: open planner.html?agency=<agency id>, or use an agency token.');
    return;
  }
  $('#day').value = params.get('date') || dateInput(new Date());
  const agency = await api(`/v1/agencies/${agencyId}`, { token }).catch((e) => {
    fatal(`The agency could not be loaded: ${e.message}`);
    return null;
  });
  if (!agency) return;
  $('#agency-name').textContent = agency.name;
  document.title = `${agency.name} · planner · hawker`;
  const now = new Date();
  const period = $('#period');
  period.from.value = dateInput(new Date(now.getFullYear(), now.getMonth(), 1));
  period.to.value = dateInput(new Date(now.getFullYear(), now.getMonth() + 1, 1));
  fill($('#new-session').brand,
    h('option', { value: '', text: 'no brand' }),
    dev?.brand_id ? h('option', { value: dev.brand_id, text: 'Aurora Beauty (demo)' }) : null);
  if (dev?.brand_id) $('#new-session').brand.value = dev.brand_id;
  await loadDay();
  await loadStatement();
  await loadCampaigns();
  setInterval(renderTimeline, 60_000);
}

// ---------- data ----------

async function loadDay() {
  $('#offset').textContent = `UTC${localOffset(new Date(dayStart()))}`;
  const offset = encodeURIComponent(localOffset(new Date(dayStart())));
  const [r, s] = await Promise.all([
    apiAll(`/v1/agencies/${agencyId}/roster`, { token }).catch(() => null),
    apiAll(`/v1/agencies/${agencyId}/sessions?date=${day()}&utc_offset=${offset}`, { token }).catch((e) => {
      toast(`The schedule could not be loaded: ${e.message}`, 'bad');
      return null;
    }),
  ]);
  roster = r || roster;
  sessions = s || [];
  renderRoster();
  renderForms();
  await loadHostShifts();
  renderTimeline();
  renderConflicts();
  loadTerms();
}

/** Every shift of the roster's hosts that the agency can see around the chosen day. */
async function loadHostShifts() {
  const from = new Date(dayStart() - DAY).toISOString();
  const to = new Date(dayStart() + 2 * DAY).toISOString();
  const lists = await Promise.all(roster.map((m) =>
    apiAll(`/v1/hosts/${m.host_id}/shifts?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`, { token }).catch(() => [])));
  hostShifts = new Map(roster.map((m, i) => [m.host_id, lists[i]]));
}

function colorOf(hostId) {
  const i = roster.findIndex((m) => m.host_id === hostId);
  return COLORS[(i < 0 ? roster.length : i) % COLORS.length];
}

// ---------- booking and conflicts ----------

function booking() {
  const f = $('#book');
  const session = sessions.find((s) => s.session_id === f.session.value);
  const host = roster.find((m) => m.host_id === f.host.value);
  const start = f.start.value ? new Date(f.start.value).getTime() : NaN;
  const end = f.end.value ? new Date(f.end.value).getTime() : NaN;
  return { session, host, start, end, valid: !!session && !!host && start < end };
}

/** What stands in the way of the booking in the form, as the server would see it. */
function conflicts() {
  const b = booking();
  const found = [];
  if (!b.session || !b.host || Number.isNaN(b.start) || Number.isNaN(b.end)) return found;
  if (b.end <= b.start) {
    found.push('The shift ends before it starts.');
    return found;
  }
  if (b.session.status === 'ended' || b.session.status === 'cancelled') found.push(`${b.session.title} has ${b.session.status}.`);
  if (b.start < t(b.session.planned_start) || b.end > t(b.session.planned_end)) {
    found.push(`Outside the session’s plan (${range(b.session.planned_start, b.session.planned_end)}).`);
  }
  for (const s of b.session.shifts) {
    if (s.status === 'cancelled' || s.host_id === b.host.host_id) continue;
    if (overlaps(b.start, b.end, t(s.planned_start), t(s.planned_end))) {
      found.push(`${b.session.title} already has ${s.host_handle} on shift ${range(s.planned_start, s.planned_end)}: one host at a time.`);
    }
  }
  const theirs = new Map();
  for (const s of hostShifts.get(b.host.host_id) || []) theirs.set(s.shift_id, s);
  for (const session of sessions) for (const s of session.shifts) if (s.host_id === b.host.host_id) theirs.set(s.shift_id, s);
  for (const s of theirs.values()) {
    if (s.status === 'cancelled') continue;
    if (overlaps(b.start, b.end, t(s.planned_start), t(s.planned_end))) {
      found.push(`${b.host.display_name} is already booked in ${s.session_title} ${range(s.planned_start, s.planned_end)}.`);
    }
  }
  return found;
}

function renderConflicts() {
  const list = conflicts();
  const box = $('#conflicts');
  const b = booking();
  if (list.length) {
    fill(box, h('li', { class: 'notice bad' }, h('b', { text: 'Conflicts: ' }), 'this shift cannot be booked.'),
      list.map((text) => h('li', { class: 'notice warn', text, dataset: { testid: 'conflict' } })));
  } else if (b.valid) {
    fill(box, h('li', { class: 'notice ok', text: `${b.host.display_name} is free ${range(b.start, b.end)}.` }));
  } else {
    fill(box);
  }
  $('#book [type=submit]').disabled = list.length > 0 || !b.valid;
  renderTimeline();
}

function suggestTimes() {
  const f = $('#book');
  const session = sessions.find((s) => s.session_id === f.session.value);
  if (!session) return;
  const taken = session.shifts.filter((s) => s.status !== 'cancelled').map((s) => t(s.planned_end));
  const start = Math.max(t(session.planned_start), ...taken);
  const end = Math.min(t(session.planned_end), start + 2 * 3_600_000);
  f.start.value = dateTimeInput(new Date(start >= t(session.planned_end) ? t(session.planned_start) : start));
  f.end.value = dateTimeInput(new Date(end <= start ? t(session.planned_end) : end));
}

// ---------- rendering ----------

function renderForms() {
  const book = $('#book');
  const terms = $('#terms');
  const chosen = book.session.value;
  const options = () => sessions.map((s) => h('option', { value: s.session_id, text: `${s.title} · ${range(s.planned_start, s.planned_end)} · ${s.status}` }));
  fill(book.session, options());
  fill(terms.session, options());
  if (sessions.some((s) => s.session_id === chosen)) book.session.value = chosen;
  const host = book.host.value;
  fill(book.host, roster.map((m) => h('option', { value: m.host_id, text: `${m.display_name} (@${m.handle})` })));
  if (roster.some((m) => m.host_id === host)) book.host.value = host;
  if (!book.start.value) suggestTimes();
  const ns = $('#new-session');
  if (!ns.start.value) {
    const base = new Date(dayStart() + 20 * 3_600_000);
    ns.start.value = dateTimeInput(base);
    ns.end.value = dateTimeInput(new Date(base.getTime() + 3 * 3_600_000));
  }
}

function renderRoster() {
  const body = $('#roster');
  if (!roster.length) {
    fill(body, h('tr', {}, h('td', { colspan: '4', class: 'empty', text: 'No host on the roster yet.' })));
    return;
  }
  fill(body, roster.map((m) => {
    const today = sessions.flatMap((s) => s.shifts).filter((s) => s.host_id === m.host_id && s.status !== 'cancelled');
    const swatch = h('i');
    swatch.style.background = colorOf(m.host_id);
    return h('tr', { dataset: { testid: 'roster-host', hostId: m.host_id } },
      h('td', {}, h('span', { class: 'legend' }, swatch, h('b', { text: m.display_name }))),
      h('td', { text: `@${m.handle}` }),
      h('td', { class: 'num', text: new Date(m.joined_at).toLocaleDateString() }),
      h('td', { text: today.length ? today.map((s) => range(s.planned_start, s.planned_end)).join(', ') : '—' }));
  }));
}

/**
 * The timeline's span: the day, stretched to whole hours to show sessions
 * that begin the evening before or run past midnight (at most 12 h each way).
 */
function axis() {
  const day0 = dayStart();
  const HOUR = 3_600_000;
  let from = day0;
  let to = day0 + DAY;
  for (const s of sessions) {
    from = Math.min(from, Math.max(day0 - 12 * HOUR, Math.floor(t(s.planned_start) / HOUR) * HOUR));
    to = Math.max(to, Math.min(day0 + DAY + 12 * HOUR, Math.ceil(t(s.planned_end) / HOUR) * HOUR));
  }
  return { day0, from, to, span: to - from };
}

function renderTimeline() {
  const box = $('#timeline');
  const { day0, from: start, to: end, span } = axis();
  const pos = (ms) => Math.min(100, Math.max(0, ((ms - start) / span) * 100));
  const place = (el, from, to) => {
    el.style.left = `${pos(from)}%`;
    el.style.width = `${Math.max(0.6, pos(to) - pos(from))}%`;
    return el;
  };
  const hours = h('div', { class: 'tl-hours' });
  const HOUR = 3_600_000;
  const every = span > 26 * HOUR ? 3 : 2;
  for (let at = start; at <= end; at += HOUR) {
    const local = new Date(at);
    if (local.getHours() % every) continue;
    const dayMark = at < day0 ? ' −1d' : at >= day0 + DAY && at !== day0 + DAY ? ' +1d' : '';
    const label = h('span', { text: `${pad(local.getHours())}:00${dayMark}` });
    label.style.left = `${pos(at)}%`;
    hours.append(label);
  }
  box.style.setProperty('--hour', `${(HOUR / span) * 100}%`);
  const nowLine = () => {
    const now = Date.now();
    if (now < start || now >= end) return null;
    const line = h('div', { class: 'tl-now', title: 'now' });
    line.style.left = `${pos(now)}%`;
    return line;
  };
  const shiftBlock = (s, label) => {
    const block = h('button', {
      type: 'button',
      class: `tl-shift ${s.status}`,
      title: `${s.host_handle} · ${s.session_title} · ${range(s.planned_start, s.planned_end)} · ${s.status.replace('_', ' ')}`,
      text: label,
      dataset: { action: 'shift', id: s.shift_id, testid: 'shift-block', status: s.status },
    });
    block.style.background = colorOf(s.host_id);
    return place(block, t(s.planned_start), t(s.planned_end));
  };
  const b = booking();
  const problems = b.valid ? conflicts() : [];
  const ghost = () => {
    const el = h('div', { class: `tl-shift ghost ${problems.length ? 'conflict' : ''}`, text: problems.length ? 'conflict' : 'new shift', dataset: { testid: 'ghost' } });
    return place(el, b.start, b.end);
  };

  const rows = [h('div', { class: 'tl-row head' }, h('div', { class: 'tl-label' }), hours)];
  rows.push(h('div', { class: 'tl-row head' }, h('div', { class: 'tl-label' }, h('small', { class: 'muted', text: 'SESSIONS' })), h('div')));
  if (!sessions.length) {
    rows.push(h('div', { class: 'tl-row' }, h('div', { class: 'tl-label empty', text: 'Nothing scheduled this day.' }), h('div', { class: 'tl-track' })));
  }
  for (const s of sessions) {
    const plan = place(h('div', { class: 'tl-plan', title: `planned ${range(s.planned_start, s.planned_end)}` }), t(s.planned_start), t(s.planned_end));
    const today = s.shifts.filter((x) => overlaps(t(x.planned_start), t(x.planned_end), start, end));
    const track = h('div', { class: 'tl-track' }, plan, today.map((x) => shiftBlock(x, x.host_handle)),
      b.valid && b.session === s ? ghost() : null, nowLine());
    rows.push(h('div', { class: 'tl-row', dataset: { testid: 'session-row', sessionId: s.session_id } },
      h('div', { class: 'tl-label' },
        h('b', { text: s.title, title: s.title }),
        h('div', {},
          h('span', { class: `badge ${s.status === 'live' ? 'live' : s.status === 'ended' ? '' : 'warn'}`, text: s.status }), ' ',
          h('a', { href: `host.html?session=${s.session_id}`, text: 'host' }), ' · ',
          h('a', { href: `viewer.html?session=${s.session_id}`, text: 'watch' }))),
      track));
  }
  rows.push(h('div', { class: 'tl-row head' }, h('div', { class: 'tl-label' }, h('small', { class: 'muted', text: 'HOSTS' })), h('div')));
  for (const m of roster) {
    const mine = new Map();
    for (const x of hostShifts.get(m.host_id) || []) mine.set(x.shift_id, x);
    for (const session of sessions) for (const x of session.shifts) if (x.host_id === m.host_id) mine.set(x.shift_id, x);
    const visible = [...mine.values()].filter((x) => overlaps(t(x.planned_start), t(x.planned_end), start, end));
    const track = h('div', { class: 'tl-track' }, visible.map((x) => shiftBlock(x, x.session_title)),
      b.valid && b.host === m ? ghost() : null, nowLine());
    rows.push(h('div', { class: 'tl-row', dataset: { testid: 'host-row', hostId: m.host_id } },
      h('div', { class: 'tl-label' }, h('b', { text: m.display_name }), h('small', { text: `@${m.handle}` })), track));
  }
  fill(box, rows);
  if ($('#timeline').parentElement.dataset.day !== day()) scrollToFirstSession();
  const legend = $('#legend');
  fill(legend, roster.map((m) => {
    const i = h('i');
    i.style.background = colorOf(m.host_id);
    return h('span', {}, i, m.display_name);
  }), h('span', {}, h('i', { class: 'plan' }), 'planned'), h('span', {}, h('i', { class: 'conflict' }), 'conflict'));
  renderShiftDetail();
}

/** On a narrow screen the timeline scrolls: start it an hour before the day's first session. */
function scrollToFirstSession() {
  const scroller = $('#timeline').parentElement;
  scroller.dataset.day = day();
  if (!sessions.length || scroller.scrollWidth <= scroller.clientWidth) return;
  const { from, span } = axis();
  const first = Math.min(...sessions.map((s) => t(s.planned_start))) - 3_600_000;
  const labelWidth = $('#timeline .tl-label')?.offsetWidth || 190;
  scroller.scrollLeft = Math.max(0, ((first - from) / span) * (scroller.scrollWidth - labelWidth));
}

let timelineTouched = false;
for (const kind of ['pointerdown', 'wheel', 'touchstart']) {
  $('#timeline').parentElement.addEventListener(kind, () => {
    timelineTouched = true;
  }, { passive: true });
}
window.addEventListener('resize', () => {
  if (!timelineTouched) scrollToFirstSession();
});

function renderShiftDetail() {
  const box = $('#shift-detail');
  const s = selectedShift && sessions.flatMap((x) => x.shifts).find((x) => x.shift_id === selectedShift);
  if (!s) {
    box.classList.add('hidden');
    return;
  }
  box.classList.remove('hidden');
  fill(box,
    h('b', { text: `${s.host_handle} in ${s.session_title}` }),
    h('span', { text: `${range(s.planned_start, s.planned_end)} · ${s.status.replace('_', ' ')}` }),
    s.status === 'scheduled' ? h('button', { class: 'small danger', type: 'button', text: 'Cancel shift', dataset: { action: 'cancel-shift', id: s.shift_id } }) : null,
    h('button', { class: 'small ghost', type: 'button', text: 'Close', dataset: { action: 'close-shift' } }));
}

async function loadTerms() {
  const id = $('#terms').session.value;
  const out = $('#terms-current');
  if (!id) {
    out.textContent = '';
    return;
  }
  const list = await apiAll(`/v1/sessions/${id}/terms`, { token }).catch(() => null);
  const current = list?.filter((x) => t(x.effective_from) <= Date.now()).at(-1) || list?.at(-1);
  out.textContent = current
    ? `In force (v${current.version}): ${current.percent_bps / 100}% of net sales, hosts get ${current.host_share_bps / 100}% of it` +
      `${current.slot_fee_minor ? `, slot fee ${money(current.slot_fee_minor, current.currency)}` : ''}` +
      `${current.hourly_rate_minor ? `, ${money(current.hourly_rate_minor, current.currency)}/h` : ''}.`
    : 'No terms of its own (a campaign’s terms apply, if any).';
}

async function loadStatement() {
  const f = $('#period');
  const from = new Date(`${f.from.value}T00:00`).toISOString();
  const to = new Date(`${f.to.value}T00:00`).toISOString();
  const s = await api(`/v1/agencies/${agencyId}/statement?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`, { token }).catch((e) => {
    toast(`The statement could not be loaded: ${e.message}`, 'bad');
    return null;
  });
  if (!s) return;
  const currency = s.total[0]?.currency || 'USD';
  const sum = (list, key) => list.filter((x) => x.currency === currency).reduce((n, x) => n + x[key], 0);
  const hostsOwed = s.hosts.reduce((n, x) => n + sum(x.totals, 'net_payable_minor'), 0);
  const tile = (label, value, hot) => h('div', { class: `tile ${hot ? 'hot' : ''}` }, h('div', { class: 'label', text: label }), h('div', { class: 'value', text: value }));
  fill($('#statement-totals'),
    tile('Earned', money(sum(s.total, 'net_payable_minor'), currency), true),
    tile('Agency keeps', money(sum(s.agency, 'net_payable_minor'), currency)),
    tile('Hosts owed', money(hostsOwed, currency)),
    tile('Clawbacks', money(sum(s.total, 'clawbacks_minor'), currency)),
    tile('Entries', `${s.entries.length}${s.next_cursor ? '+' : ''}`));
  fill($('#statement-hosts'), s.hosts.length
    ? s.hosts.map((x) => h('tr', { dataset: { testid: 'statement-host' } },
      h('td', { text: `@${x.handle}` }),
      h('td', { class: 'right num', text: money(sum(x.totals, 'sales_minor') + sum(x.totals, 'clawbacks_minor'), currency) }),
      h('td', { class: 'right num', text: money(sum(x.totals, 'hourly_minor'), currency) }),
      h('td', { class: 'right num', text: money(sum(x.totals, 'slot_fees_minor'), currency) }),
      h('td', { class: 'right num' }, h('b', { text: money(sum(x.totals, 'net_payable_minor'), currency) }))))
    : h('tr', {}, h('td', { colspan: '5', class: 'empty', text: 'No commissions in this period yet: set terms, then sell.' })));
  const handles = new Map(roster.map((m) => [m.host_id, m.handle]));
  const entries = [...s.entries].sort((a, b) => t(b.occurred_at) - t(a.occurred_at)).slice(0, 25);
  fill($('#statement-entries'), entries.length
    ? entries.map((e) => h('tr', { dataset: { testid: 'statement-entry' } },
      h('td', { class: 'num', text: new Date(e.occurred_at).toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }) }),
      h('td', { text: e.kind.replace('_', ' ') }),
      h('td', { text: e.party === 'host' ? `@${handles.get(e.host_id) || 'host'}` : 'agency' }),
      h('td', { class: 'right num', text: money(e.amount_minor, e.currency) })))
    : h('tr', {}, h('td', { colspan: '4', class: 'empty', text: 'No ledger entries.' })));
}

// ---------- actions ----------

function shiftDay(days) {
  const d = new Date(`${day()}T12:00`);
  d.setDate(d.getDate() + days);
  $('#day').value = dateInput(d);
  $('#book').start.value = '';
  loadDay();
}

$('#prev-day').addEventListener('click', () => shiftDay(-1));
$('#next-day').addEventListener('click', () => shiftDay(1));
$('#today').addEventListener('click', () => {
  $('#day').value = dateInput(new Date());
  $('#book').start.value = '';
  loadDay();
});
$('#day').addEventListener('change', () => {
  $('#book').start.value = '';
  loadDay();
});

$('#book').addEventListener('change', async (e) => {
  if (e.target.name === 'session') suggestTimes();
  renderConflicts();
  if (e.target.name === 'host' || e.target.name === 'start' || e.target.name === 'end') {
    await loadHostShifts();
    renderConflicts();
  }
});
$('#book').addEventListener('input', () => renderConflicts());

$('#book').addEventListener('submit', async (e) => {
  e.preventDefault();
  const b = booking();
  if (!b.valid || conflicts().length) return;
  const shift = await attempt('The booking was refused', () => api(`/v1/sessions/${b.session.session_id}/shifts`, {
    method: 'POST',
    token,
    body: { host_id: b.host.host_id, planned_start: new Date(b.start).toISOString(), planned_end: new Date(b.end).toISOString() },
  }));
  if (shift) {
    toast(`Booked ${shift.host_handle} ${range(shift.planned_start, shift.planned_end)}`, 'ok', 2500);
    $('#book').start.value = '';
    await loadDay();
  }
});

$('#new-session').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const body = {
    title: f.title.value.trim(),
    planned_start: new Date(f.start.value).toISOString(),
    planned_end: new Date(f.end.value).toISOString(),
  };
  if (f.brand.value) body.brand_id = f.brand.value;
  const created = await attempt('Scheduling failed', () => api(`/v1/agencies/${agencyId}/sessions`, { method: 'POST', token, body }));
  if (created) {
    toast(`Scheduled ${created.title}`, 'ok', 2500);
    f.title.value = '';
    await loadDay();
    $('#book').session.value = created.session_id;
    suggestTimes();
    renderConflicts();
  }
});

$('#add-host').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const host = await attempt('Signing failed', () => api('/v1/hosts', {
    method: 'POST', token, body: { handle: f.handle.value.trim(), display_name: f.name.value.trim() },
  }));
  if (!host) return;
  // Joining needs the host's consent: this sends an invite, and the host is
  // on the roster once they accept it (POST /v1/hosts/{id}/invites/{invite}/accept).
  if (await attempt('The invite failed', () => api(`/v1/agencies/${agencyId}/roster`, { method: 'POST', token, body: { host_id: host.host_id } }))) {
    toast(`Invited @${host.handle}: on the roster once they accept`, 'ok', 4000);
    f.reset();
    await loadDay();
  }
});

$('#terms').addEventListener('change', (e) => {
  if (e.target.name === 'session') loadTerms();
});

$('#terms').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  if (!f.session.value) return;
  const body = {
    percent_bps: Math.round(Number(f.percent.value) * 100),
    host_share_bps: Math.round(Number(f.share.value) * 100),
    slot_fee_minor: Math.round(Number(f.slot.value || 0) * 100),
    hourly_rate_minor: Math.round(Number(f.hourly.value || 0) * 100),
    currency: 'USD',
  };
  if (await attempt('The terms were refused', () => api(`/v1/sessions/${f.session.value}/terms`, { method: 'POST', token, body }))) {
    toast('Terms recorded', 'ok', 2500);
    loadTerms();
  }
});

// ---------- campaigns ----------

async function loadCampaigns() {
  const items = await apiAll(`/v1/agencies/${agencyId}/campaigns`, { token, maxPages: 5 }).catch(() => null);
  const box = $('#campaigns');
  if (!items) {
    fill(box, h('tr', {}, h('td', { colspan: 5, class: 'empty', text: 'The campaigns could not be loaded.' })));
    return;
  }
  const kinds = { accepted: 'ok', proposed: 'warn', declined: 'bad' };
  fill(box, items.length ? items.map((c) => {
    const theirs = c.status === 'proposed' && c.proposed_by === 'brand';
    return h('tr', { 'data-testid': 'planner-campaign', dataset: { campaignId: c.campaign_id, status: c.status } },
      h('td', { text: c.name }),
      h('td', { text: c.brand_id === dev?.brand_id ? 'Aurora Beauty (demo)' : `brand ${shortId(c.brand_id)}` }),
      h('td', {}, h('span', { class: `badge ${kinds[c.status] || ''}`, text: c.status }), h('br'),
        h('small', { class: 'muted', text: c.status === 'proposed' ? `proposed by the ${c.proposed_by === 'brand' ? 'brand' : 'agency'}` : `by ${c.decided_by ?? '—'}` })),
      h('td', { class: 'num', text: `${when(c.starts_at)} → ${c.ends_at ? when(c.ends_at) : 'open'}` }),
      h('td', {}, theirs ? h('div', { class: 'row nowrap' },
        h('button', { class: 'small primary', type: 'button', dataset: { action: 'campaign', verb: 'accept', id: c.campaign_id }, 'data-testid': 'accept-campaign', text: 'Accept' }),
        h('button', { class: 'small danger', type: 'button', dataset: { action: 'campaign', verb: 'decline', id: c.campaign_id }, text: 'Decline' })) : null));
  }) : h('tr', {}, h('td', { colspan: 5, class: 'empty', text: 'No campaigns yet: a brand proposes one from its page.' })));
}

$('#period').addEventListener('submit', (e) => {
  e.preventDefault();
  loadStatement();
});

document.addEventListener('click', async (e) => {
  const target = e.target.closest('[data-action]');
  if (!target) return;
  switch (target.dataset.action) {
    case 'shift':
      selectedShift = target.dataset.id;
      renderShiftDetail();
      break;
    case 'close-shift':
      selectedShift = null;
      renderShiftDetail();
      break;
    case 'campaign': {
      const { verb, id } = target.dataset;
      target.disabled = true;
      const done = await attempt(`The campaign could not be ${verb === 'accept' ? 'accepted' : 'declined'}`, () => api(`/v1/campaigns/${id}/${verb}`, { method: 'POST', token }));
      if (done) toast(`Campaign ${done.status}`, 'ok', 2500);
      await loadCampaigns();
      break;
    }
    case 'reload-campaigns':
      await loadCampaigns();
      break;
    case 'cancel-shift':
      if (await attempt('Cancelling failed', () => api(`/v1/shifts/${target.dataset.id}`, { method: 'DELETE', token }))) {
        toast('Shift cancelled', 'ok', 2500);
        await loadDay();
      }
      break;
    default:
      break;
  }
});

main().catch((e) => fatal(`Something went wrong: ${e.message}`));
