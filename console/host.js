// The host console: go live, pin, launch deals, drop coupons, run auctions
// giveaways and group buys, moderate, end; live figures from the room and from
// GET /v1/sessions/{id}/figures.
import {
  fatal, attempt,
  $, h, fill, morphChildren, countdown, api, apiAll, money, shortId, toast, timeOfDay,
  obtainToken, askForToken, askForSession, devInfo, Room, RoomState, discountText, startCountdowns,
  verifyGiveaway, verifyDrawCommand, groupBuyLadder,
} from './common.js';

const params = new URLSearchParams(location.search);
const state = new RoomState();
let room;
let token;
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
  await Promise.all([loadLineup(), loadCatalog(), loadDeals(), loadShifts(), loadFigures(), loadFormats(), loadCommentToBuy()]);
  if (session.status === 'ended' || session.status === 'cancelled') {
    $('#conn').textContent = 'ended';
    return;
  }
  room = new Room(sessionId, token, {
    onSnapshot: (snapshot, kind, you) => {
      stats[kind] += 1;
      state.reset(snapshot);
      if (!you?.can_host) fatal('This identity may not host this session: pins and moderation will be refused.');
      renderRoom();
      loadFormats();
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
  setInterval(refreshWinnerOrders, 2000);
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
    case 'comment_to_buy':
      renderCommentToBuy(d);
      feed(d.enabled ? `🛒 comment-to-buy on (${d.keywords.join(', ')})` : '🛒 comment-to-buy off');
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
  if (changed === 'auction') onAuctionEvent(event);
  if (changed === 'giveaway') onGiveawayEvent(event);
  if (changed === 'group_buy') onGroupBuyEvent(event);
  if (changed === 'deal') renderDeals();
  if (changed === 'coupon') {
    renderDrops();
    renderPrizes();
  }
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
  renderAuctions();
  renderGiveaways();
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
  renderAuctionItems(pinnedLink);
  renderPrizes();
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
    event.data?.order ? '🛒 ' : '', event.data?.text || ''));
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

// ---------- comment-to-buy (PUT /v1/sessions/{id}/comment-to-buy) ----------

async function loadCommentToBuy() {
  const setting = await api(`/v1/sessions/${sessionId}/comment-to-buy`, { token }).catch(() => null);
  if (setting) renderCommentToBuy(setting);
}

function renderCommentToBuy(setting) {
  $('#c2b-enabled').checked = !!setting.enabled;
  $('#c2b-keywords').value = (setting.keywords || []).join(' ');
  $('#c2b-mark').checked = setting.mark_orders !== false;
}

async function saveCommentToBuy() {
  const body = {
    enabled: $('#c2b-enabled').checked,
    keywords: $('#c2b-keywords').value.split(/[\s,]+/).filter(Boolean),
    mark_orders: $('#c2b-mark').checked,
  };
  const saved = await attempt('Comment-to-buy was refused', () => api(`/v1/sessions/${sessionId}/comment-to-buy`, { method: 'PUT', token, body }));
  if (saved) {
    renderCommentToBuy(saved);
    toast(saved.enabled ? `Comment-to-buy on: viewers type ${saved.keywords[0]} <link number>` : 'Comment-to-buy off', 'good');
  } else {
    loadCommentToBuy();
  }
}

$('#comment-to-buy').addEventListener('submit', (e) => {
  e.preventDefault();
  saveCommentToBuy();
});
$('#c2b-enabled').addEventListener('change', saveCommentToBuy);

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

// ---------- auctions and giveaways ----------

const bidLogs = new Map(); // auction_id -> { bids: [...], seq, loading }
const winnerOrders = new Map(); // order_id -> order (the winners' orders, host side)
const secondChances = new Map(); // auction_id -> the offer made from this page
const verifications = new Map(); // giveaway_id -> { ok, checks } | 'running'
const OUTCOME = { sold: 'sold', no_bids: 'no sale · no bids', reserve_not_met: 'no sale · reserve not met' };

/** The session's auctions and giveaways over HTTP (finished ones are not in the room's snapshot). */
async function loadFormats() {
  const [auctions, giveaways, groupBuys] = await Promise.all([
    apiAll(`/v1/sessions/${sessionId}/auctions`, { token }).catch(() => null),
    apiAll(`/v1/sessions/${sessionId}/giveaways`, { token }).catch(() => null),
    apiAll(`/v1/sessions/${sessionId}/group-buys`, { token }).catch(() => null),
  ]);
  if (auctions) state.mergeAuctions(auctions);
  if (giveaways) state.mergeGiveaways(giveaways);
  if (groupBuys) state.mergeGroupBuys(groupBuys);
  renderGroupBuys();
  for (const a of state.auctions.values()) if (!bidLogs.has(a.auction_id) && (a.bids || a.bid_seq)) loadBidLog(a.auction_id);
  refreshWinnerOrders();
  renderAuctions();
  renderGiveaways();
}

function onAuctionEvent(event) {
  const d = event.data || {};
  const a = state.auctions.get(d.auction_id);
  const item = lineup.find((i) => i.lineup_item_id === a?.lineup_item_id);
  const what = item ? `#${item.link_number}` : 'the auction';
  switch (event.type) {
    case 'auction.started':
      feed(`⚒ auction on ${what} opens at ${money(d.start_price_minor, d.currency)}`);
      break;
    case 'auction.bid':
      loadBidLog(d.auction_id);
      break;
    case 'auction.extended':
      feed(`⚒ ${what} extended to ${timeOfDay(d.ends_at)}`, true);
      break;
    case 'auction.ended':
      feed(d.outcome === 'sold'
        ? `⚒ ${what} sold to ${d.winner_name} for ${money(d.hammer_minor, d.currency)}`
        : `⚒ ${what} ended without a sale (${OUTCOME[d.outcome] || d.outcome})`, true);
      loadBidLog(d.auction_id);
      // The winner and their order are for the host side: read them over HTTP.
      api(`/v1/auctions/${d.auction_id}`, { token }).then((full) => {
        state.mergeAuctions([full]);
        refreshWinnerOrders();
        renderAuctions();
      }).catch(() => {});
      break;
    case 'auction.voided':
      feed(`⚒ ${what} voided: ${d.reason}`);
      break;
    default:
      break;
  }
  renderAuctions();
}

function onGiveawayEvent(event) {
  const d = event.data || {};
  switch (event.type) {
    case 'giveaway.started':
      feed(`✦ giveaway open until ${timeOfDay(d.closes_at)} (${d.winners} winner${d.winners === 1 ? '' : 's'})`);
      break;
    case 'giveaway.closed':
      feed(`✦ entries closed: ${d.entry_count}`);
      break;
    case 'giveaway.drawn':
      feed(`✦ drawn: ${(d.winners || []).length} winner(s) from ${d.entry_count} entries${(d.absent || []).length ? `, ${d.absent.length} absent redrawn` : ''}`, true);
      break;
    case 'giveaway.voided':
      feed(`✦ giveaway voided: ${d.reason}`);
      break;
    default:
      break;
  }
  renderGiveaways();
}

function onGroupBuyEvent(event) {
  const d = event.data || {};
  const what = itemLabel(d.lineup_item_id);
  if (event.type === 'group_buy.started') feed(`👥 group buy on ${what} until ${timeOfDay(d.ends_at)}`);
  if (event.type === 'group_buy.ended') {
    feed(d.outcome === 'succeeded'
      ? `👥 group buy on ${what} succeeded: ${d.participants} buyers, ${d.units} units at ${money(d.final_price_minor, d.currency)}`
      : `👥 group buy on ${what} ${d.outcome === 'cancelled' ? 'cancelled' : `failed (${d.participants} of ${d.min_participants} buyers)`}`, true);
    loadFigures();
  }
  renderGroupBuys();
}

function renderGroupBuys() {
  const box = $('#group-buys');
  if (!box) return;
  const list = state.groupBuyList().slice(0, 10);
  const now = room ? room.now() : Date.now();
  if (!list.length) {
    morphChildren(box, [h('li', { class: 'empty', text: 'No group buys yet.' })]);
    return;
  }
  morphChildren(box, list.map((g) => {
    const running = g.status === 'running';
    const ladder = groupBuyLadder(g);
    return h('li', { class: `card tight group-buy ${g.status}`, dataset: { key: g.group_buy_id, testid: 'host-group-buy', status: g.status, groupBuyId: g.group_buy_id } },
      h('div', { class: 'row between' }, h('b', { text: `👥 ${itemLabel(g.lineup_item_id)}` }),
        running ? countdown('span', 'countdown', g.ends_at, 'ends in ', 'settling…', now)
          : h('span', { class: `badge ${g.status === 'succeeded' ? 'ok' : 'bad'}`, text: g.status })),
      h('ol', { class: 'plain tiers' }, ladder.rows.map((t, i) =>
        h('li', { class: `tier${t.unlocked ? ' unlocked' : ''}${t.current ? ' current' : ''}`, dataset: { tier: String(i), unlocked: String(t.unlocked) } },
          h('span', { text: `${t.min_participants}+` }), h('b', { class: 'num', text: money(t.price_minor, g.currency) })))),
      h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(Math.round(ladder.progress * 100)) },
        h('span', { style: { width: `${Math.round(ladder.progress * 100)}%` } })),
      h('small', { class: 'muted num', dataset: { testid: 'host-group-buy-figures', participants: String(g.participants || 0) } },
        `${g.participants || 0} buyers (${g.min_reached ? 'minimum reached' : `${g.min_participants} needed`}) · ${g.units || 0} of ${g.stock} units`
        + (g.final_price_minor ? ` · final ${money(g.final_price_minor, g.currency)}` : '')),
      g.status === 'cancelled' ? h('div', { class: 'notice bad', text: `Cancelled: ${g.cancel_reason || ''}` }) : null,
      running ? h('form', { class: 'row nowrap', dataset: { action: 'cancel-group-buy', id: g.group_buy_id, key: 'cancel' } },
        h('input', { name: 'reason', class: 'grow', maxlength: '500', required: true, placeholder: 'Reason to cancel (shown to the room)', 'aria-label': 'reason to cancel the group buy' }),
        h('button', { class: 'small danger', type: 'submit', text: 'Cancel' })) : null);
  }));
}

/** New bids of an auction's public log, after the last one we have (one request at a time). */
async function loadBidLog(auctionId) {
  const log = bidLogs.get(auctionId) || { bids: [], seq: 0, loading: false, again: false };
  bidLogs.set(auctionId, log);
  if (log.loading) {
    log.again = true;
    return;
  }
  log.loading = true;
  try {
    const page = await api(`/v1/auctions/${auctionId}/bids?after=${log.seq}&limit=200`, { token });
    for (const bid of page.bids) if (bid.seq > log.seq) log.bids.push(bid);
    log.seq = log.bids.length ? log.bids[log.bids.length - 1].seq : log.seq;
    if (log.bids.length > 200) log.bids.splice(0, log.bids.length - 200);
    // Once over, the log shows each bid's maximum: reread it whole.
    if (page.status !== 'running' && !log.final) {
      log.final = true;
      const whole = await api(`/v1/auctions/${auctionId}/bids?limit=1000`, { token });
      log.bids = whole.bids.slice(-200);
    }
  } catch {
    /* the next bid event tries again */
  } finally {
    log.loading = false;
  }
  renderAuctions();
  if (log.again) {
    log.again = false;
    loadBidLog(auctionId);
  }
}

/** The winners' orders: whether each is paid, waiting, or lapsed (a second chance may follow). */
async function refreshWinnerOrders() {
  const ids = [...state.auctions.values()].map((a) => a.order_id).filter(Boolean);
  let changed = false;
  for (const id of ids) {
    const known = winnerOrders.get(id);
    if (known && known.status !== 'pending_payment') continue;
    const order = await api(`/v1/orders/${id}`, { token }).catch(() => null);
    if (order && order.status !== known?.status) {
      winnerOrders.set(id, order);
      changed = true;
    }
  }
  if (changed) renderAuctions();
}

function itemLabel(lineupItemId) {
  const item = lineup.find((i) => i.lineup_item_id === lineupItemId);
  return item ? `#${item.link_number} ${item.product_name}` : 'item';
}

// The increment table: one line per step, the last one open-ended.
const DEFAULT_INCREMENTS = [[1, 20], [2, 50], [5, null]];
function renderIncrementLines(lines) {
  const box = $('#increment-lines');
  fill(box, lines.map(([step, below], i) => {
    const last = i === lines.length - 1;
    return h('div', { class: 'row nowrap increment', dataset: { testid: 'increment-line' } },
      h('label', { class: 'row nowrap' }, h('small', { text: '+' }),
        h('input', { name: 'step', type: 'number', step: '0.01', min: '0.01', required: true, value: step.toFixed(2), class: 'money-input', 'aria-label': `step ${i + 1}` })),
      last
        ? h('small', { class: 'muted', text: i ? 'above that' : 'at any price' })
        : h('label', { class: 'row nowrap' }, h('small', { text: 'below $' }),
          h('input', { name: 'below', type: 'number', step: '0.01', min: '0.01', required: true, value: below.toFixed(2), class: 'money-input', 'aria-label': `below, line ${i + 1}` })));
  }));
}

function readIncrementLines() {
  const rows = [...document.querySelectorAll('#increment-lines .increment')];
  return rows.map((row, i) => {
    const step = Number(row.querySelector('[name=step]').value);
    const below = row.querySelector('[name=below]');
    return [step, i === rows.length - 1 || !below ? null : Number(below.value)];
  });
}

function renderAuctionItems(pinnedLink) {
  for (const form of ['#auction-form', '#group-buy-form']) {
    const select = $(`${form} [name=link]`);
    const chosen = select.value;
    fill(select, lineup.map((i) => h('option', { value: String(i.link_number), text: `#${i.link_number} ${i.product_name} — ${money(i.price_minor, i.currency)}` })));
    if (chosen && lineup.some((i) => String(i.link_number) === chosen)) select.value = chosen;
    else if (pinnedLink) select.value = String(pinnedLink);
  }
  suggestAuction();
}

let auctionSuggestedFor = null;
function suggestAuction() {
  const form = $('#auction-form');
  const item = lineup.find((i) => String(i.link_number) === form.link.value);
  if (!item || auctionSuggestedFor === item.lineup_item_id) return;
  auctionSuggestedFor = item.lineup_item_id;
  // Half the list price to open; the reserve defaults to the campaign's floor.
  form.start.value = (Math.max(1, Math.round(item.price_minor * 0.5)) / 100).toFixed(2);
}

function renderPrizes() {
  const select = $('#giveaway-form [name=prize]');
  const chosen = select.value;
  fill(select,
    lineup.map((i) => h('option', { value: `item:${i.lineup_item_id}`, text: `#${i.link_number} ${i.product_name} (free, one per winner)` })),
    state.couponList().filter((c) => c.status !== 'scheduled').map((c) => h('option', { value: `coupon:${c.coupon_drop_id}`, text: `coupon: ${discountText(c)} (${c.remaining ?? c.total} left)` })));
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

function auctionHeadline(a) {
  if (a.status === 'voided') return h('span', { class: 'badge bad', text: 'voided' });
  if (a.status === 'ended') return h('span', { class: `badge ${a.outcome === 'sold' ? 'ok' : ''}`, text: OUTCOME[a.outcome] || 'ended' });
  return h('span', { class: 'badge live', text: 'running' });
}

function renderAuctions() {
  const box = $('#auctions');
  const list = state.auctionList().slice(0, 10);
  const now = room ? room.now() : Date.now();
  if (!list.length) {
    morphChildren(box, [h('li', { class: 'empty', text: 'No auctions yet.' })]);
    return;
  }
  morphChildren(box, list.map((a) => {
    const running = a.status === 'running';
    const log = bidLogs.get(a.auction_id);
    const order = a.order_id ? winnerOrders.get(a.order_id) : null;
    const lapsed = order && ['cancelled', 'expired'].includes(order.status);
    const offer = secondChances.get(a.auction_id);
    const rules = a.mode === 'sudden_death' ? 'sudden death' : `anti-snipe ${a.snipe_window_secs} s${a.extended ? ` · extended ×${a.extended}` : ''}`;
    let outcome = null;
    if (a.status === 'ended' && a.outcome === 'sold') {
      outcome = h('div', { class: 'notice ok', dataset: { testid: 'host-auction-outcome' } },
        `Sold to ${a.winner_name || a.leader_name}${a.winner_id ? ` (${a.winner_id})` : ''} for `,
        h('b', { text: money(a.hammer_minor ?? a.price_minor, a.currency) }),
        order ? ` · their order is ${order.status.replace(/_/g, ' ')}` : '');
    } else if (a.status === 'ended') {
      outcome = h('div', { class: 'notice warn', dataset: { testid: 'host-auction-outcome' },
        text: a.outcome === 'reserve_not_met'
          ? `No sale: the price ${money(a.price_minor, a.currency)} stayed under the reserve${a.reserve_minor ? ` of ${money(a.reserve_minor, a.currency)}` : ''}.`
          : 'No sale: nobody bid.' });
    } else if (a.status === 'voided') {
      outcome = h('div', { class: 'notice bad', dataset: { testid: 'host-auction-outcome' }, text: `Voided: ${a.void_reason || ''}` });
    }
    const reserve = a.reserve_minor
      ? `reserve ${money(a.reserve_minor, a.currency)}${a.reserve_is_floor ? ' (floor)' : ''}${running ? (a.reserve_met ? ' · met' : ' · not met') : ''}`
      : running && a.reserve_met === false ? 'reserve not met' : '';
    return h('li', { class: `card tight auction ${running ? 'live' : 'ended'}`, dataset: { key: a.auction_id, testid: 'host-auction', status: a.status, auctionId: a.auction_id, outcome: a.outcome || '' } },
      h('div', { class: 'row between' }, h('b', { text: `⚒ ${itemLabel(a.lineup_item_id)}` }), auctionHeadline(a)),
      h('div', { class: 'row between' },
        h('span', { class: 'price num', dataset: { testid: 'host-auction-price', price: String(a.price_minor ?? '') },
          text: a.price_minor ? money(a.price_minor, a.currency) : `opens at ${money(a.start_price_minor, a.currency)}` }),
        running
          ? countdown('span', 'countdown', a.ends_at, 'ends in ', 'ending…', now)
          : h('small', { class: 'muted', text: a.ended_at ? `ended ${timeOfDay(a.ended_at)}` : '' })),
      h('small', { class: 'muted', dataset: { testid: 'host-auction-leader' } },
        a.leader_name ? `leader ${a.leader_name} · ` : 'no bids yet · ',
        `${a.bids ?? a.bid_seq ?? 0} bids · ${rules}${reserve ? ` · ${reserve}` : ''}${running && a.min_bid_minor ? ` · next bid ${money(a.min_bid_minor, a.currency)}` : ''}`),
      log?.bids.length ? h('ol', { class: 'plain bids', 'aria-label': 'bids', dataset: { testid: 'host-bid-feed' } },
        log.bids.slice(-8).reverse().map((b) => h('li', { dataset: { key: String(b.seq) } },
          h('small', { class: 'muted num', text: `#${b.seq} ${timeOfDay(b.accepted_at)} ` }),
          h('b', { text: b.bidder }), ` ${money(b.amount_minor, a.currency)}`,
          b.max_minor ? h('small', { class: 'muted', text: ` (max ${money(b.max_minor, a.currency)})` }) : null,
          b.leader_after !== b.bidder || b.price_after !== b.amount_minor
            ? h('small', { class: 'muted', text: ` → ${b.leader_after === b.bidder ? 'leads' : `${b.leader_after} leads`} at ${money(b.price_after, a.currency)}` }) : null,
          b.extended_to ? h('span', { class: 'badge warn', text: `+ to ${timeOfDay(b.extended_to)}` }) : null))) : null,
      outcome,
      lapsed && !offer ? h('div', { class: 'row' },
        h('small', { class: 'muted', text: 'The winner did not pay.' }),
        h('button', { class: 'small dark', type: 'button', text: 'Second-chance offer to the runner-up', dataset: { action: 'second-chance', id: a.auction_id, testid: 'second-chance' } })) : null,
      offer ? h('div', { class: 'notice info', dataset: { testid: 'second-chance-made' },
        text: `Second chance offered to ${offer.bidder_id} at ${money(offer.amount_minor, a.currency)} (order #${shortId(offer.order_id)}).` }) : null,
      running ? h('form', { class: 'row nowrap', dataset: { action: 'void-auction', id: a.auction_id, key: 'void' } },
        h('input', { name: 'reason', class: 'grow', maxlength: '500', required: true, placeholder: 'Reason to void (shown to the room)', 'aria-label': 'reason to void the auction', dataset: { testid: 'void-reason' } }),
        h('button', { class: 'small danger', type: 'submit', text: 'Void', dataset: { testid: 'void-auction' } })) : null);
  }));
}

function prizeText(g) {
  if (g.prize_kind === 'coupon') {
    const drop = state.coupons.get(g.coupon_drop_id);
    return drop ? `coupon: ${discountText(drop)}` : 'a coupon';
  }
  return itemLabel(g.lineup_item_id);
}

const GIVEAWAY_BADGE = { open: ['live', 'open'], closed: ['warn', 'drawing…'], drawn: ['ok', 'drawn'], voided: ['bad', 'voided'] };

function renderGiveaways() {
  const box = $('#giveaways');
  const list = state.giveawayList().slice(0, 10);
  const now = room ? room.now() : Date.now();
  if (!list.length) {
    morphChildren(box, [h('li', { class: 'empty', text: 'No giveaways yet.' })]);
    return;
  }
  morphChildren(box, list.map((g) => {
    const [kind, label] = GIVEAWAY_BADGE[g.status] || ['', g.status];
    const verified = verifications.get(g.giveaway_id);
    const rules = [`${g.winners} winner${g.winners === 1 ? '' : 's'}`, g.eligibility === 'buyers' ? 'buyers only' : 'anyone in the room', g.must_be_present ? 'must be present' : null].filter(Boolean).join(' · ');
    return h('li', { class: `card tight giveaway ${g.status}`, dataset: { key: g.giveaway_id, testid: 'host-giveaway', status: g.status, giveawayId: g.giveaway_id } },
      h('div', { class: 'row between' }, h('b', { text: `✦ ${prizeText(g)}` }), h('span', { class: `badge ${kind}`, text: label })),
      h('div', { class: 'row between' },
        h('span', { class: 'num', dataset: { testid: 'host-giveaway-count', count: String(g.count ?? g.entry_count ?? 0) } },
          h('b', { text: String(g.count ?? g.entry_count ?? 0) }), ' entries'),
        g.status === 'open' ? countdown('span', 'countdown', g.closes_at, 'closes in ', 'closing…', now) : null),
      h('small', { class: 'muted' }, rules),
      h('dl', { class: 'proof' },
        h('dt', { text: 'Seed hash (commitment)' }), h('dd', {}, h('code', { text: g.seed_hash || '—' })),
        g.entries_hash ? [h('dt', { text: `Entry list hash (${g.entry_count} entries)` }), h('dd', {}, h('code', { text: g.entries_hash }))] : null,
        g.seed ? [h('dt', { text: 'Seed (revealed)' }), h('dd', {}, h('code', { text: g.seed }))] : null,
        g.winner_entries ? [h('dt', { text: 'Winning entries' }), h('dd', { dataset: { testid: 'host-giveaway-winners' } },
          g.winner_entries.length ? g.winner_entries.map((id) => h('code', { class: 'entry', text: id })) : 'none (no entries)')] : null,
        g.absent_entries?.length ? [h('dt', { text: 'Drawn but absent (redrawn)' }), h('dd', {}, g.absent_entries.map((id) => h('code', { class: 'entry', text: id })))] : null,
        g.algorithm ? [h('dt', { text: 'Algorithm' }), h('dd', {}, h('small', { text: g.algorithm }))] : null,
        g.status === 'drawn' ? [h('dt', { text: `Offline: save GET /v1/giveaways/${g.giveaway_id}/entries as entries.json, then` }),
          h('dd', {}, h('code', { text: verifyDrawCommand(g) }))] : null),
      g.status === 'voided' ? h('div', { class: 'notice bad', text: `Voided: ${g.void_reason || ''}` }) : null,
      g.status === 'drawn' ? h('div', { class: 'row' },
        h('button', { class: 'small', type: 'button', text: verified === 'running' ? 'Verifying…' : 'Verify the draw', disabled: verified === 'running', dataset: { action: 'verify-giveaway', id: g.giveaway_id } }),
        verified && verified !== 'running' ? verifyBadge(verified) : null) : null,
      verified && verified !== 'running' ? verifyList(verified) : null,
      g.status === 'open' || g.status === 'closed' ? h('form', { class: 'row nowrap', dataset: { action: 'void-giveaway', id: g.giveaway_id, key: 'void' } },
        h('input', { name: 'reason', class: 'grow', maxlength: '500', required: true, placeholder: 'Reason to void (shown to the room)', 'aria-label': 'reason to void the giveaway' }),
        h('button', { class: 'small danger', type: 'submit', text: 'Void' })) : null);
  }));
}

function verifyBadge(v) {
  return h('span', { class: `badge ${v.ok ? 'ok' : 'bad'}`, role: 'status', dataset: { testid: 'verify-result', verified: v.ok ? 'match' : 'mismatch' },
    text: v.ok ? '✓ the draw matches' : '✗ the draw does not match' });
}

function verifyList(v) {
  return h('ul', { class: 'plain checks' }, v.checks.map((c) => h('li', { class: c.ok ? 'ok' : 'bad' },
    `${c.ok ? '✓' : '✗'} ${c.label}`, c.detail ? h('small', { class: 'muted', text: ` ${c.detail}` }) : null)));
}

async function verify(giveawayId) {
  verifications.set(giveawayId, 'running');
  renderGiveaways();
  try {
    const [giveaway, list] = await Promise.all([
      api(`/v1/giveaways/${giveawayId}`, { token }),
      api(`/v1/giveaways/${giveawayId}/entries`, { token }),
    ]);
    // The commitment as the room announced it at the start, when this page saw it.
    const known = state.giveaways.get(giveawayId);
    const merged = { ...giveaway, seed_hash: known?.seed_hash || giveaway.seed_hash };
    verifications.set(giveawayId, await verifyGiveaway(merged, list, null));
  } catch (e) {
    verifications.set(giveawayId, { ok: false, checks: [{ label: 'the published draw could be read', ok: false, detail: e.message }] });
  }
  renderGiveaways();
}

renderIncrementLines(DEFAULT_INCREMENTS);

$('#auction-form').addEventListener('change', (e) => {
  if (e.target.name === 'link') suggestAuction();
  if (e.target.name === 'mode') $('#snipe-field').classList.toggle('hidden', e.target.value !== 'anti_snipe');
});

$('#auction-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const cents = (v) => Math.round(Number(v) * 100);
  const lines = readIncrementLines();
  const body = {
    link_number: Number(f.link.value),
    start_price_minor: cents(f.start.value),
    increments: lines.map(([step, below]) => (below === null ? { step_minor: cents(step) } : { below_minor: cents(below), step_minor: cents(step) })),
    duration_secs: Number(f.duration.value),
    mode: f.mode.value,
  };
  if (body.mode === 'anti_snipe') body.snipe_window_secs = Number(f.window.value);
  if (f.reserve.value) body.reserve_minor = cents(f.reserve.value);
  const auction = await attempt('The auction was refused', () => api(`/v1/sessions/${sessionId}/auctions`, { method: 'POST', token, body }));
  if (auction) {
    toast(`Auction on #${body.link_number} started`, 'ok', 2500);
    state.mergeAuctions([auction]);
    renderAuctions();
    loadLineup();
  }
});

$('#giveaway-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const [kind, id] = f.prize.value.split(':');
  const body = {
    winners: Number(f.winners.value),
    entry_window_secs: Number(f.window.value),
    eligibility: f.eligibility.value,
    must_be_present: f.present.checked,
  };
  if (kind === 'item') body.lineup_item_id = id;
  else if (kind === 'coupon') body.coupon_drop_id = id;
  else {
    toast('Choose a prize: add a product to the lineup or drop coupons first.', 'warn');
    return;
  }
  const giveaway = await attempt('The giveaway was refused', () => api(`/v1/sessions/${sessionId}/giveaways`, { method: 'POST', token, body }));
  if (giveaway) {
    toast('Giveaway started', 'ok', 2500);
    state.mergeGiveaways([giveaway]);
    renderGiveaways();
    if (kind === 'item') loadLineup();
  }
});

$('#group-buy-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  let tiers;
  try {
    tiers = f.tiers.value.split(',').map((part) => {
      const [buyers, price] = part.split(':').map((x) => x.trim());
      return { min_participants: Number(buyers), price_minor: Math.round(Number(price) * 100) };
    });
  } catch {
    toast('Tiers: buyers:price, separated by commas', 'warn');
    return;
  }
  const body = {
    link_number: Number(f.link.value),
    tiers,
    min_participants: Number(f.min.value),
    duration_secs: Number(f.duration.value),
    per_buyer_cap: Number(f.cap.value),
    stock: Number(f.stock.value),
  };
  const g = await attempt('The group buy was refused', () => api(`/v1/sessions/${sessionId}/group-buys`, { method: 'POST', token, body }));
  if (g) {
    toast(`Group buy on #${body.link_number} started`, 'ok', 2500);
    state.mergeGroupBuys([g]);
    renderGroupBuys();
    loadLineup();
  }
});

// Void forms live inside re-rendered cards: handled here, by delegation.
document.addEventListener('submit', async (e) => {
  const form = e.target.closest('form[data-action]');
  if (!form) return;
  e.preventDefault();
  const reason = form.reason.value.trim();
  if (!reason) return;
  const { action, id } = form.dataset;
  if (action === 'void-auction') {
    const a = await attempt('Voiding failed', () => api(`/v1/auctions/${id}/void`, { method: 'POST', token, body: { reason } }));
    if (a) {
      state.mergeAuctions([a]);
      renderAuctions();
    }
  } else if (action === 'cancel-group-buy') {
    const g = await attempt('Cancelling failed', () => api(`/v1/group-buys/${id}/cancel`, { method: 'POST', token, body: { reason } }));
    if (g) {
      state.mergeGroupBuys([g]);
      renderGroupBuys();
    }
  } else if (action === 'void-giveaway') {
    const g = await attempt('Voiding failed', () => api(`/v1/giveaways/${id}/void`, { method: 'POST', token, body: { reason } }));
    if (g) {
      state.mergeGiveaways([g]);
      renderGiveaways();
    }
  }
});

document.addEventListener('click', async (e) => {
  const target = e.target.closest('[data-action]');
  if (!target || target.disabled) return;
  const id = target.dataset.id;
  switch (target.dataset.action) {
    case 'add-increment': {
      const lines = readIncrementLines();
      const [lastStep] = lines[lines.length - 1];
      const limit = lines.length > 1 ? lines[lines.length - 2][1] * 2 : 20;
      lines.splice(lines.length - 1, 0, [lastStep, limit]);
      lines[lines.length - 1][0] = lastStep * 2;
      if (lines.length <= 20) renderIncrementLines(lines);
      break;
    }
    case 'remove-increment': {
      const lines = readIncrementLines();
      if (lines.length > 1) {
        lines.splice(lines.length - 2, 1);
        renderIncrementLines(lines);
      }
      break;
    }
    case 'second-chance': {
      const offer = await attempt('The second-chance offer was refused', () => api(`/v1/auctions/${id}/second-chance`, { method: 'POST', token }));
      if (offer) {
        secondChances.set(id, offer);
        feed(`⚒ second chance: ${offer.bidder_id} offered the item at ${money(offer.amount_minor, state.auctions.get(id)?.currency)}`);
        renderAuctions();
      }
      break;
    }
    case 'verify-giveaway':
      verify(id);
      break;
    default:
      break;
  }
});

setInterval(renderModerated, 15_000);
main().catch((e) => fatal(`Something went wrong: ${e.message}`));
