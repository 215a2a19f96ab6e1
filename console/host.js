// The host console: go live, pin, launch deals, drop coupons, moderate, end;
// live figures from the room and from GET /v1/sessions/{id}/figures.
import {
  fatal, attempt,
  $, h, fill, morphChildren, countdown, api, apiAll, money, shortId, toast, timeOfDay,
  obtainToken, askForToken, askForSession, devInfo, Room, RoomState, discountText, startCountdowns,
} from './common.js';
import { Giveaways, wireStartForm } from './giveaways.js';

const params = new URLSearchParams(location.search);
const state = new RoomState();
let room;
let token;
let giveaways;
let sessionId;
let session;
let dev;
let lineup = [];
let catalog = [];
let deals = []; // from HTTP, merged with the room's stock figures
let figures = null;
const muted = new Map(); // user -> until (ms)
const stats = { welcome: 0, resumed: 0, reset: 0 };

/** An API call whose failure is shown rather than thrown. */

async function main() {
  dev = await devInfo();
  sessionId = params.get('session') || dev?.session_id;
  if (!sessionId) {
    askForSession($('#app'), 'do you host');
    $('#conn').textContent = 'not connected';
    return;
  }
  const as = params.get('as') || 'agency';
  // An agency token names its agency: the session's, read with a viewer's token.
  let agencyId = params.get('agency');
  if (!agencyId && dev && !params.get('token')) {
    const peek = await obtainToken({ user: 'console-peek', role: 'viewer' }, 'peek');
    agencyId = (await api(`/v1/sessions/${sessionId}`, { token: peek }).catch(() => null))?.agency_id;
  }
  const identity = as === 'agency'
    ? { user: 'ops-console', role: 'agency', agency_id: agencyId }
    : { user: as, role: 'host' };
  token = await obtainToken(identity, 'host');
  if (!token) {
    askForToken($('#app'), 'host', 'This server does not mint demo tokens (production). Paste a host or agency token, or open the page with ?token=….');
    return;
  }
  renderIdentity(as);
  try {
    session = await api(`/v1/sessions/${sessionId}`, { token });
  } catch (e) {
    fatal(e.status === 404 ? 'No such session.' : `The session could not be loaded: ${e.message}`);
    return;
  }
  renderSession();
  giveaways = new Giveaways({ box: $('#giveaways-list'), role: 'host', token });
  $('#giveaways-list').addEventListener('click', (e) => giveaways.onClick(e));
  wireStartForm($('#giveaway-form'), { sessionId, token });
  await Promise.all([loadLineup(), loadCatalog(), loadDeals(), loadShifts(), loadFigures(), giveaways.load(sessionId)]);
  if (session.status === 'ended' || session.status === 'cancelled') {
    $('#conn').textContent = 'ended';
    return;
  }
  room = new Room(sessionId, token, {
    onSnapshot: (snapshot, kind, you) => {
      stats[kind] += 1;
      state.reset(snapshot);
      giveaways?.fromSnapshot(snapshot.state);
      if (!you?.can_host) fatal('This identity may not host this session: pins and moderation will be refused.');
      renderRoom();
    },
    onResumed: () => {
      stats.resumed += 1;
    },
    onEvent,
    onStatus: (status) => {
      const el = $('#conn');
      el.textContent = status === 'live' ? 'connected' : status;
      el.dataset.status = status;
      el.className = `conn ${status === 'live' ? 'live' : status.endsWith('ing') ? 'connecting' : 'down'}`;
    },
    onFatal: fatal,
  }).start();
  startCountdowns(() => room.now());
  setInterval(loadFigures, 2000);
  setInterval(renderDeals, 1000);
  window.hawker = { room, state, stats };
}

// ---------- data ----------

async function loadLineup() {
  lineup = (await apiAll(`/v1/sessions/${sessionId}/lineup`, { token }).catch(() => null)) || lineup;
  renderLineup();
}

async function loadCatalog() {
  // Only SKUs of the agency's active campaigns may enter the lineup.
  catalog = (await api(`/v1/sessions/${sessionId}/sellable-skus`, { token }).catch(() => null)) || [];
  renderCatalog();
}

async function loadDeals() {
  deals = (await apiAll(`/v1/sessions/${sessionId}/deals`, { token }).catch(() => null)) || deals;
  renderDeals();
}

let dealsTimer = null;
function reloadDealsSoon() {
  clearTimeout(dealsTimer);
  dealsTimer = setTimeout(loadDeals, 150);
}

async function loadShifts() {
  const shifts = await apiAll(`/v1/sessions/${sessionId}/shifts`, { token }).catch(() => null);
  const box = $('#shifts');
  if (!shifts) {
    fill(box, h('li', { class: 'empty', text: 'Shifts are visible to the agency and the session’s hosts.' }));
    return;
  }
  if (!shifts.length) {
    fill(box, h('li', { class: 'empty' }, 'No shifts booked: book them in the ', h('a', { href: `planner.html`, text: 'planner' }), '.'));
    return;
  }
  fill(box, shifts.map((s) => h('li', { class: 'row between', dataset: { testid: 'shift' } },
    h('span', {}, h('b', { text: s.host_handle }), ` ${timeOfDay(s.planned_start)}–${timeOfDay(s.planned_end)}`),
    h('span', { class: 'row' },
      h('span', { class: `badge ${s.status === 'on_air' ? 'live' : s.status === 'done' ? 'ok' : s.status === 'cancelled' ? 'bad' : ''}`, text: s.status.replace('_', ' ') }),
      session?.status === 'live' && s.status === 'scheduled'
        ? h('button', { class: 'small', type: 'button', text: 'Hand off', dataset: { action: 'handoff', id: s.shift_id } })
        : null))));
}

let figuresRefused = false;
async function loadFigures() {
  if (figuresRefused) return;
  const next = await api(`/v1/sessions/${sessionId}/figures`, { token }).catch((e) => {
    // A host not scheduled in this session may not read its figures: stop asking.
    if (e.status === 403 || e.status === 401) {
      figuresRefused = true;
      toast('Sales figures are for the session’s agency and its scheduled hosts; showing the room’s own counts.', 'warn', 8000);
    }
    return null;
  });
  if (next) {
    figures = next;
    if (next.status !== session?.status && session) {
      session.status = next.status;
      renderSession();
    }
  }
  renderFigures();
}

// ---------- the room ----------

function onEvent(event) {
  if (giveaways?.onEvent(event)) return;
  const changed = state.apply(event);
  const d = event.data || {};
  switch (event.type) {
    case 'chat':
      addChat(event);
      break;
    case 'host.message':
    case 'host.announcement':
      addChat(event, 'host');
      break;
    case 'moderation.muted':
      muted.set(d.user, d.until);
      feed(`✕ ${d.user} muted until ${timeOfDay(d.until)}`);
      renderModerated();
      break;
    case 'moderation.unmuted':
      muted.delete(d.user);
      feed(`✓ ${d.user} unmuted`);
      renderModerated();
      break;
    case 'moderation.banned':
      feed(`✕ ${d.user} banned until ${timeOfDay(d.until)}`);
      break;
    case 'moderation.slow_mode':
      feed(d.seconds ? `slow mode ${d.seconds} s` : 'slow mode off');
      break;
    case 'deal.scheduled':
      feed(`★ deal on #${d.link_number} scheduled: ${d.quantity} at ${money(d.price_minor, d.currency)}`);
      reloadDealsSoon();
      break;
    case 'deal.started':
      feed(`⚡ deal on #${d.link_number} is live`);
      reloadDealsSoon();
      break;
    case 'deal.ended':
      feed(`■ deal ended (${d.reason.replace(/_/g, ' ')}): ${d.sold} of ${d.quantity} sold`);
      reloadDealsSoon();
      break;
    case 'coupon.scheduled':
      feed(`✂ coupon drop scheduled for ${timeOfDay(d.drop_at)}`);
      break;
    case 'coupon.dropped':
      feed(`✂ ${d.total} coupons dropped: ${discountText(d)}`);
      break;
    case 'coupon.exhausted':
      feed('✂ every coupon claimed');
      break;
    case 'coupon.ended':
      feed(`✂ coupon window closed: ${d.claimed} of ${d.total} claimed`);
      break;
    case 'deal.sales':
      feed(`$ #${linkOfDeal(d.deal_id) ?? '?'} paid so far: ${d.paid_units} units in ${d.paid_orders} orders`, true);
      loadFigures();
      break;
    default:
      break;
  }
  if (changed === 'deal') renderDeals();
  if (changed === 'coupon') renderDrops();
  if (changed === 'pinned') renderLineup();
  if (changed === 'viewers' || changed === 'likes' || changed === 'deal') renderFigures();
  if (changed === 'slow_mode') $('#slow-mode').value = String(state.slowMode);
}

function linkOfDeal(dealId) {
  return state.deals.get(dealId)?.link_number ?? lineup.find((i) => i.lineup_item_id === deals.find((x) => x.deal_id === dealId)?.lineup_item_id)?.link_number;
}

// ---------- rendering ----------

function renderIdentity(as) {
  const select = $('#identity');
  const options = [h('option', { value: 'agency', text: 'the agency' })];
  for (const host of dev?.hosts || []) options.push(h('option', { value: host.host_id, text: `${host.display_name} (host)` }));
  if (as !== 'agency' && !options.some((o) => o.value === as)) options.push(h('option', { value: as, text: `host ${shortId(as)}` }));
  fill(select, options);
  select.value = as;
  select.addEventListener('change', () => {
    const next = new URLSearchParams(location.search);
    next.set('as', select.value);
    location.search = next.toString();
  });
}

function renderSession() {
  $('#title').textContent = session.title;
  document.title = `${session.title} · host · hawker`;
  const badge = $('#session-status');
  badge.textContent = session.status === 'live' ? '● live' : session.status;
  badge.dataset.status = session.status;
  badge.className = `badge ${session.status === 'live' ? 'live' : session.status === 'ended' ? 'bad' : 'warn'}`;
  $('#go-live').classList.toggle('hidden', session.status !== 'scheduled');
  $('#end-session').classList.toggle('hidden', session.status !== 'live');
}

function renderRoom() {
  renderLineup();
  renderDeals();
  renderDrops();
  renderFigures();
  $('#slow-mode').value = String(state.slowMode);
}

function renderLineup() {
  const pinnedLink = state.pinned?.link_number;
  $('#pinned-now').textContent = pinnedLink ? `showing #${pinnedLink}` : 'nothing pinned';
  const body = $('#lineup');
  if (!lineup.length) {
    morphChildren(body, [h('tr', {}, h('td', { colspan: '5', class: 'empty', text: 'The lineup is empty: add products below.' }))]);
  } else {
    morphChildren(body, lineup.map((item) => h('tr', { dataset: { key: item.lineup_item_id, testid: 'lineup-item', link: String(item.link_number) } },
      h('td', {}, h('b', { text: `#${item.link_number}` })),
      h('td', {}, item.product_name, h('br'), h('small', { text: item.sku_name })),
      h('td', { class: 'right num', text: money(item.price_minor, item.currency) }),
      h('td', { class: 'right num', text: String(item.stock_on_hand) }),
      h('td', { class: 'right' }, pinnedLink === item.link_number
        ? h('span', { class: 'badge live', text: 'pinned' })
        : h('button', { class: 'small', type: 'button', text: 'Pin', dataset: { action: 'pin', id: String(item.link_number), testid: 'pin' } })))));
  }
  // The deal and coupon forms offer the lineup.
  const dealItem = $('#deal-form [name=link]');
  const chosen = dealItem.value;
  fill(dealItem, lineup.map((i) => h('option', { value: String(i.link_number), text: `#${i.link_number} ${i.product_name} — ${money(i.price_minor, i.currency)} (${i.stock_on_hand} on hand)` })));
  if (chosen && lineup.some((i) => String(i.link_number) === chosen)) dealItem.value = chosen;
  else if (pinnedLink) dealItem.value = String(pinnedLink);
  suggestDeal();
  const prize = $('#giveaway-form [name=item]');
  const prizeValue = prize.value;
  fill(prize, lineup.map((i) => h('option', { value: i.lineup_item_id, text: `#${i.link_number} ${i.product_name}` })));
  if (prizeValue) prize.value = prizeValue;
  const scope = $('#coupon-form [name=scope]');
  const scopeValue = scope.value;
  fill(scope,
    h('option', { value: '', text: 'any deal' }),
    lineup.map((i) => h('option', { value: `item:${i.lineup_item_id}`, text: `#${i.link_number} only` })),
    deals.filter((x) => x.status !== 'ended').map((x) => h('option', { value: `deal:${x.deal_id}`, text: `deal ${shortId(x.deal_id)} only` })));
  scope.value = [...scope.options].some((o) => o.value === scopeValue) ? scopeValue : '';
}

let suggestedFor = null;
function suggestDeal() {
  const form = $('#deal-form');
  const item = lineup.find((i) => String(i.link_number) === form.link.value);
  if (!item || suggestedFor === item.lineup_item_id) return;
  suggestedFor = item.lineup_item_id;
  form.price.value = (Math.round(item.price_minor * 0.8) / 100).toFixed(2);
  form.quantity.value = String(Math.max(1, Math.min(50, item.stock_on_hand)));
}

function renderCatalog() {
  const select = $('#catalog');
  // Only campaign SKUs are offered; without any, a SKU id can still be typed (the server decides).
  select.classList.toggle('hidden', !catalog.length);
  $('#sku-id').classList.toggle('hidden', !!catalog.length);
  if (!catalog.length) return;
  const chosen = select.value;
  const inLineup = new Set(lineup.map((i) => i.sku_id));
  fill(select, catalog.map((sku) => h('option', {
    value: sku.sku_id,
    text: `${sku.product_name} · ${sku.sku_name} — ${money(sku.price_minor, sku.currency)}${inLineup.has(sku.sku_id) ? ' (in lineup)' : ''}`,
  })));
  const firstNew = catalog.find((s) => !inLineup.has(s.sku_id));
  if (chosen && catalog.some((s) => s.sku_id === chosen && !inLineup.has(s.sku_id))) select.value = chosen;
  else if (firstNew) select.value = firstNew.sku_id;
}

$('#refresh-catalog').addEventListener('click', loadCatalog);

function mergedDeals() {
  return deals.map((deal) => {
    const live = state.deals.get(deal.deal_id);
    const remaining = live && typeof live.remaining === 'number' ? live.remaining : deal.quantity - deal.sold;
    return { ...deal, remaining, status: live?.status && live.status !== deal.status && deal.status !== 'ended' ? live.status : deal.status };
  }).sort((a, b) => ({ live: 0, scheduled: 1, ended: 2 }[a.status] - { live: 0, scheduled: 1, ended: 2 }[b.status]) || b.starts_at.localeCompare(a.starts_at));
}

function renderDeals() {
  const box = $('#deals');
  const now = room ? room.now() : Date.now();
  const list = mergedDeals();
  if (!list.length) {
    morphChildren(box, [h('li', { class: 'empty', text: 'No deals yet.' })]);
    return;
  }
  morphChildren(box, list.map((deal) => {
    const item = lineup.find((i) => i.lineup_item_id === deal.lineup_item_id);
    const bar = h('span');
    bar.style.width = `${(deal.remaining / deal.quantity) * 100}%`;
    const running = deal.status === 'live';
    return h('li', { class: `card tight deal ${deal.status === 'ended' ? 'ended' : running ? 'live' : 'scheduled'}`, dataset: { key: deal.deal_id, testid: 'host-deal', status: deal.status } },
      h('div', { class: 'row between' },
        h('b', { text: `#${item?.link_number ?? '?'} ${item?.product_name ?? ''} at ${money(deal.price_minor, deal.currency)}` }),
        h('span', { class: `badge ${running ? 'live' : deal.status === 'ended' ? '' : 'warn'}`, text: deal.status === 'ended' ? `ended · ${(deal.end_reason || '').replace(/_/g, ' ')}` : deal.status })),
      h('div', { class: 'bar' }, bar),
      h('div', { class: 'row between' },
        h('span', { class: 'num', dataset: { testid: 'host-deal-stock', remaining: String(deal.remaining) } },
          h('b', { text: String(deal.remaining) }), ` of ${deal.quantity} left · ${deal.quantity - deal.remaining} taken · cap ${deal.per_buyer_cap}`),
        deal.status === 'ended' ? null : h('span', { class: 'row' },
          running ? countdown('small', 'num', deal.ends_at, 'ends in ', 'ending…', now) : countdown('small', 'num', deal.starts_at, 'starts in ', 'starting…', now),
          h('button', { class: 'small danger', type: 'button', text: 'End', dataset: { action: 'end-deal', id: deal.deal_id } }))));
  }));
  renderFigures();
}

function renderDrops() {
  const box = $('#drops');
  const list = state.couponList();
  const now = room ? room.now() : Date.now();
  if (!list.length) {
    morphChildren(box, [h('li', { class: 'empty', text: 'No coupon drop running.' })]);
    return;
  }
  morphChildren(box, list.map((drop) => h('li', { class: 'card tight coupon', dataset: { key: drop.coupon_drop_id, testid: 'host-drop', status: drop.status } },
    h('div', { class: 'row between' },
      h('b', { text: discountText(drop) }),
      drop.status === 'scheduled'
        ? countdown('span', 'badge warn', drop.drop_at, 'drops in ', 'dropping…', now)
        : h('span', { class: 'badge ok', text: 'claiming' })),
    h('div', { class: 'row between' },
      h('span', { class: 'num', dataset: { testid: 'host-drop-remaining', remaining: String(drop.remaining ?? drop.total) } },
        h('b', { text: String(drop.remaining ?? drop.total) }), ` of ${drop.total} left`),
      drop.claim_until ? countdown('small', 'num', drop.claim_until, 'window ', 'closed', now) : null))));
}

function renderFigures() {
  const sales = figures?.sales;
  const amount = sales?.amounts?.[0];
  const list = mergedDeals();
  const liveDeals = list.filter((d) => d.status === 'live');
  set('#f-viewers', String(Math.max(state.viewers, 0)));
  set('#f-sales', amount ? money(amount.net_minor, amount.currency) : money(0, lineup[0]?.currency || 'USD'));
  set('#f-orders', String(sales?.orders ?? 0));
  set('#f-units', String(list.reduce((n, d) => n + (d.quantity - d.remaining), 0)));
  set('#f-stock', liveDeals.length ? String(liveDeals.reduce((n, d) => n + d.remaining, 0)) : '—');
  set('#f-peak', String(Math.max(figures?.audience?.peak_viewers ?? 0, state.viewers)));
  set('#f-likes', String(Math.max(figures?.audience?.likes ?? 0, state.likes)));
  set('#f-conversion', typeof figures?.conversion === 'number' ? `${(figures.conversion * 100).toFixed(1)}%` : '—');
}

function set(selector, text) {
  const el = $(selector);
  if (el.textContent !== text) {
    el.textContent = text;
    el.parentElement.classList.remove('flash');
    void el.parentElement.offsetWidth; // restart the highlight
    el.parentElement.classList.add('flash');
  }
}

function addChat(event, kind = '') {
  const log = $('#chat');
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const from = event.from || '';
  const mine = from === room?.you?.user;
  log.append(h('div', { class: `msg ${kind}`, dataset: { testid: 'host-chat-message', from } },
    kind || mine ? null : h('span', { class: 'mod' },
      h('button', { class: 'small', type: 'button', text: 'Mute', title: 'mute for 5 minutes', dataset: { action: 'mute', id: from } }),
      h('button', { class: 'small danger', type: 'button', text: 'Ban', title: 'ban for 1 hour', dataset: { action: 'ban', id: from } })),
    h('b', { text: event.type === 'host.announcement' ? `⚑ ${from}` : from }),
    event.data?.text || ''));
  while (log.children.length > 300) log.firstChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function renderModerated() {
  const now = Date.now();
  const active = [...muted].filter(([, until]) => until > now);
  fill($('#moderated'), active.length
    ? ['Muted: ', ...active.flatMap(([user, until]) => [
      h('button', { class: 'small', type: 'button', text: `${user} (until ${timeOfDay(until)}) ✕`, dataset: { action: 'unmute', id: user } }), ' '])]
    : []);
}

function feed(text, hot = false) {
  const list = $('#feed');
  list.prepend(h('li', { class: hot ? 'flash' : '' }, h('small', { class: 'muted', text: `${timeOfDay(Date.now())} ` }), text));
  while (list.children.length > 100) list.lastChild.remove();
}

// ---------- actions ----------

$('#go-live').addEventListener('click', async () => {
  const started = await attempt('Going live failed', () => api(`/v1/sessions/${sessionId}/live`, { method: 'POST', token }));
  if (started) {
    session.status = started.status;
    renderSession();
    feed('● the session is live');
    loadShifts();
  }
});

let confirmEnd = null;
$('#end-session').addEventListener('click', async (e) => {
  const button = e.currentTarget;
  if (!confirmEnd) {
    button.textContent = 'Click again to end';
    confirmEnd = setTimeout(() => {
      confirmEnd = null;
      button.textContent = 'End session';
    }, 4000);
    return;
  }
  clearTimeout(confirmEnd);
  confirmEnd = null;
  button.textContent = 'End session';
  await room?.send('host.announce', { text: 'The live has ended — thank you for watching!' }).catch(() => {});
  const ended = await attempt('Ending failed', () => api(`/v1/sessions/${sessionId}/end`, { method: 'POST', token }));
  if (ended) {
    session.status = ended.status;
    renderSession();
    feed('■ the session has ended');
    loadShifts();
    loadFigures();
  }
});

$('#add-item').addEventListener('submit', async (e) => {
  e.preventDefault();
  const skuId = catalog.length ? $('#catalog').value : $('#sku-id').value.trim();
  if (!skuId) return;
  const item = await attempt('Adding failed', () => api(`/v1/sessions/${sessionId}/lineup`, { method: 'POST', token, body: { sku_id: skuId } }));
  if (item) {
    await loadLineup();
    renderCatalog();
  }
});

$('#deal-form').addEventListener('change', (e) => {
  if (e.target.name === 'link') suggestDeal();
});

$('#deal-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const body = {
    link_number: Number(f.link.value),
    price_minor: Math.round(Number(f.price.value) * 100),
    quantity: Number(f.quantity.value),
    per_buyer_cap: Number(f.cap.value),
    countdown_secs: Number(f.countdown.value),
    duration_secs: Number(f.duration.value),
    show_sales: f.show_sales.checked,
  };
  const deal = await attempt('The deal was refused', () => api(`/v1/sessions/${sessionId}/deals`, { method: 'POST', token, body }));
  if (deal) {
    toast(`Deal launched on #${body.link_number}`, 'ok', 2500);
    await Promise.all([loadDeals(), loadLineup()]);
  }
});

$('#coupon-form').addEventListener('change', (e) => {
  if (e.target.name === 'when') $('#drop-at-field').classList.toggle('hidden', e.target.value !== 'at');
  if (e.target.name === 'kind') e.currentTarget.value.value = e.target.value === 'percent' ? '20' : '5.00';
});

$('#coupon-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const percent = f.kind.value === 'percent';
  const currency = lineup[0]?.currency || 'USD';
  const body = {
    total: Number(f.total.value),
    discount_kind: f.kind.value,
    discount_value: percent ? Math.round(Number(f.value.value)) : Math.round(Number(f.value.value) * 100),
    min_spend_minor: Math.round(Number(f.min_spend.value || 0) * 100),
    claim_window_secs: Number(f.window.value),
  };
  if (!percent) body.currency = currency;
  const [scope, id] = f.scope.value.split(':');
  if (scope === 'item') body.lineup_item_id = id;
  if (scope === 'deal') body.deal_id = id;
  if (f.when.value === 'at') {
    if (!f.drop_at.value) {
      toast('Choose when the coupons drop.', 'warn');
      return;
    }
    body.drop_at = new Date(f.drop_at.value).toISOString();
  }
  const drop = await attempt('The drop was refused', () => api(`/v1/sessions/${sessionId}/coupon-drops`, { method: 'POST', token, body }));
  if (drop) toast(drop.status === 'scheduled' ? `Coupons drop at ${timeOfDay(drop.drop_at)}` : 'Coupons dropped', 'ok', 2500);
});

$('#slow-mode').addEventListener('change', (e) => {
  room?.send('mod.slow_mode', { seconds: Number(e.target.value) }).catch((err) => toast(err.message, 'bad'));
});

$('#host-message').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('#message-text');
  const text = input.value.trim();
  if (!text || !room) return;
  try {
    await room.send($('#message-kind').value, { text });
    input.value = '';
  } catch (err) {
    toast(err.message, 'bad');
  }
});

document.addEventListener('click', async (e) => {
  const target = e.target.closest('[data-action]');
  if (!target || target.disabled) return;
  const id = target.dataset.id;
  switch (target.dataset.action) {
    case 'pin':
      if (await attempt('Pinning failed', () => api(`/v1/sessions/${sessionId}/lineup/${id}/pin`, { method: 'POST', token }))) {
        $('#deal-form [name=link]').value = id;
        suggestDeal();
      }
      break;
    case 'end-deal':
      if (await attempt('Ending the deal failed', () => api(`/v1/deals/${id}/end`, { method: 'POST', token }))) loadDeals();
      break;
    case 'mute':
      room?.send('mod.mute', { user: id, seconds: 300 }).catch((err) => toast(err.message, 'bad'));
      break;
    case 'ban':
      room?.send('mod.ban', { user: id, seconds: 3600 }).catch((err) => toast(err.message, 'bad'));
      break;
    case 'unmute':
      room?.send('mod.unmute', { user: id }).catch((err) => toast(err.message, 'bad'));
      break;
    case 'handoff':
      if (await attempt('The handoff failed', () => api(`/v1/shifts/${id}/start`, { method: 'POST', token }))) loadShifts();
      break;
    default:
      break;
  }
});

setInterval(renderModerated, 15_000);
main().catch((e) => fatal(`Something went wrong: ${e.message}`));
