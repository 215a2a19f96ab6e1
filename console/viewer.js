// The viewer page: watch a session's room, chat, like, claim coupons, buy,
// bid in auctions (with a maximum), enter giveaways and check a draw, join group buys.
import {
  fatal, viewerSignIn,
  $, h, fill, morphChildren, countdown, api, apiAll, money, clock, shortId, uuid, toast, timeOfDay,
  initials, askForSession, devInfo, Room, RoomState, discountText, startCountdowns,
  viewerHref, decodeClaims, bidderPseudonym, verifyGiveaway, verifyDrawCommand, groupBuyLadder,
} from './common.js';

const params = new URLSearchParams(location.search);
const state = new RoomState();
const lineup = new Map(); // link_number -> lineup item
const claims = new Map(); // coupon_claim_id -> claim
const dropInfo = new Map(); // coupon_drop_id -> drop (for claimed coupons no longer in the room)
const quantities = new Map(); // deal_id -> chosen quantity
const useCoupon = new Map(); // deal_id -> false when the buyer unticked the coupon
const busy = new Set(); // deal or drop ids with a request in flight
const results = new Map(); // deal or drop id -> {kind, text}
const endedAt = new Map(); // deal_id -> when it ended here
const stats = { welcome: 0, resumed: 0, reset: 0, events: 0 };
let orders = [];
let room;
let token;
let sessionId;
let me;
let dev;
let session;
let mutedUntil = 0;

const ERRORS = {
  sold_out: 'Sold out — better luck with the next drop!',
  cap_exceeded: 'You have reached the limit per buyer for this deal.',
  deal_not_started: 'The deal has not started yet.',
  deal_ended: 'This deal has ended.',
  coupon_invalid: 'That coupon cannot be used on this purchase.',
  bad_quantity: 'That quantity is not allowed.',
  coupon_exhausted: 'Every coupon has been claimed.',
  coupon_already_claimed: 'You already claimed this coupon.',
  coupon_window_closed: 'The claim window has closed.',
  coupon_not_dropped: 'The coupons have not dropped yet.',
};

async function main() {
  dev = await devInfo();
  sessionId = params.get('session') || dev?.session_id;
  if (!sessionId) {
    askForSession($('#app'), 'do you want to watch');
    $('#conn').textContent = 'not connected';
    return;
  }
  const signedIn = await viewerSignIn();
  if (!signedIn) return;
  ({ token, me } = signedIn);
  $('#me').textContent = `You are ${me}`;
  $('#nav-live').href = viewerHref('live.html');
  $('#nav-orders').href = viewerHref('orders.html');
  $('#all-orders').href = viewerHref('orders.html', { session: sessionId });
  try {
    session = await api(`/v1/sessions/${sessionId}`, { token });
  } catch (e) {
    fatal(e.status === 404 ? 'No such session.' : `The session could not be loaded: ${e.message}`);
    return;
  }
  renderSession();
  await Promise.all([loadLineup(), loadClaims(), loadOrders(), loadFormats()]);
  renderAll();
  if (session.status === 'ended' || session.status === 'cancelled') {
    fatal(`This session has ${session.status}.`);
    setConnection('ended');
    return;
  }
  room = new Room(sessionId, token, {
    onSnapshot,
    onResumed: () => {
      stats.resumed += 1;
    },
    onEvent,
    onNotice,
    onStatus: setConnection,
    onFatal: (text) => {
      fatal(text);
      refreshSession();
    },
  }).start();
  startCountdowns(() => room.now());
  loadWaitlists();
  setInterval(refreshPendingOrders, 5000);
  setInterval(refreshSession, 20_000);
  setInterval(renderDeals, 1000); // scheduled deals turn live on the clock, ended ones fade
  // Test and debugging hooks (the e2e test drops the socket with these).
  window.hawker = {
    room,
    state,
    stats,
    me,
    notices: noticesShown,
    drop: () => room.abandon(4000, 'dropped by test'),
    forgetEpoch: () => {
      if (room.position) room.position = { epoch: '000000000000', offset: room.position.offset };
      room.abandon(4000, 'dropped by test');
    },
  };
}

// ---------- data ----------

async function loadLineup() {
  try {
    const items = await apiAll(`/v1/sessions/${sessionId}/lineup`, { token });
    lineup.clear();
    for (const item of items) lineup.set(item.link_number, item);
  } catch {
    /* the deal cards show less detail */
  }
}

async function loadClaims() {
  try {
    const list = await apiAll(`/v1/sessions/${sessionId}/coupon-claims`, { token });
    for (const claim of list) claims.set(claim.coupon_claim_id, claim);
    await Promise.all(
      [...new Set(list.map((c) => c.coupon_drop_id))]
        .filter((id) => !dropInfo.has(id))
        .map(async (id) => dropInfo.set(id, await api(`/v1/coupon-drops/${id}`, { token }))),
    );
  } catch {
    /* claims are shown once known */
  }
}

/** The buyer's orders in this session, from the server (newest first). */
async function loadOrders() {
  const mine = await api(`/v1/me/sessions/${sessionId}`, { token }).catch(() => null);
  if (mine) orders = mine.orders;
}

function upsertOrder(order) {
  const i = orders.findIndex((o) => o.order_id === order.order_id);
  if (i >= 0) orders[i] = order;
  else orders.unshift(order);
  renderOrders();
  renderAuctions();
}

async function refreshPendingOrders() {
  for (const order of orders.filter((o) => o.status === 'pending_payment')) {
    try {
      upsertOrder(await api(`/v1/orders/${order.order_id}`, { token }));
    } catch {
      /* next time */
    }
  }
}

async function refreshSession() {
  try {
    session = await api(`/v1/sessions/${sessionId}`, { token });
    renderSession();
    if (session.status === 'ended' || session.status === 'cancelled') {
      room?.stop();
      setConnection('ended');
      fatal(`This session has ${session.status}. Thanks for watching!`);
    }
  } catch {
    /* offline: next time */
  }
}

// ---------- the room ----------

function onSnapshot(snapshot, kind) {
  stats[kind] += 1;
  state.reset(snapshot);
  if (kind === 'reset') addSystem('Reconnected: caught up from a fresh snapshot.');
  ensureLineup();
  renderAll();
  if (stats.welcome + stats.reset > 1) loadFormats();
}

function onEvent(event) {
  stats.events += 1;
  const changed = state.apply(event);
  const d = event.data || {};
  switch (event.type) {
    case 'chat':
      addChat(event.from, d.text, event.from === me ? 'mine' : '');
      break;
    case 'host.message':
      addChat(event.from, d.text, 'host');
      break;
    case 'host.announcement':
      addChat('⚑ host', d.text, 'host');
      break;
    case 'moderation.muted':
      if (d.user === me) {
        mutedUntil = d.until;
        toast(`You are muted until ${timeOfDay(d.until)}.`, 'warn');
      }
      addSystem(`${d.user} was muted.`);
      renderChatForm();
      break;
    case 'moderation.unmuted':
      if (d.user === me) mutedUntil = 0;
      renderChatForm();
      break;
    case 'moderation.banned':
      addSystem(`${d.user} was removed from the room.`);
      break;
    case 'moderation.slow_mode':
      addSystem(d.seconds ? `Slow mode is on: one message every ${d.seconds} s.` : 'Slow mode is off.');
      break;
    case 'deal.started':
      toast('⚡ A flash deal just started!', 'info', 2500);
      break;
    case 'deal.ended':
      endedAt.set(d.deal_id, Date.now());
      break;
    case 'coupon.dropped':
      toast('✂ Coupons dropped — claim yours!', 'ok', 2500);
      break;
    case 'auction.started':
      toast('⚒ An auction just started — place your bid!', 'info', 2500);
      break;
    case 'giveaway.started':
      toast('✦ A giveaway just started — enter now!', 'ok', 2500);
      break;
    case 'group_buy.started':
      toast('👥 A group buy just started — the more join, the lower the price!', 'info', 2500);
      break;
    default:
      break;
  }
  if (changed === 'group_buy') {
    ensureItems();
    renderGroupBuys();
  }
  if (changed === 'auction') onAuctionEvent(event);
  if (changed === 'giveaway') renderGiveaways();
  if (changed === 'deal' || changed === 'pinned') ensureLineup();
  if (changed === 'deal') renderDeals();
  if (changed === 'coupon') renderCoupons();
  if (changed === 'pinned') renderPinned();
  if (changed === 'announcement') renderStage();
  if (changed === 'likes' || changed === 'viewers') renderCounters();
  if (changed === 'slow_mode') renderChatForm();
  onWaitlistEvent(event);
}

/** A private notice: for this viewer only (docs/protocol.md, "Private notices"). */
function onNotice(notice) {
  const d = notice.data || {};
  let text;
  switch (notice.kind) {
    case 'order.paid':
      text = `Payment confirmed: ${d.quantity} × for ${money(d.amount_minor, d.currency)}`;
      toast(`✓ ${text}`, 'ok');
      refreshOrder(d.order_id);
      break;
    case 'order.expired':
      text = d.status === 'refund_due'
        ? 'Your order expired after payment: the money will be refunded.'
        : `Your order expired unpaid (${d.quantity} × returned to stock).`;
      toast(text, 'warn');
      refreshOrder(d.order_id);
      break;
    case 'auction.outbid':
      outbid.set(d.auction_id, d);
      text = `You have been outbid: the price is now ${money(d.price_minor, currencyOf(d.auction_id))}.`;
      toast(`⚒ ${text}`, 'warn');
      renderAuctions();
      break;
    case 'auction.won':
    case 'auction.second_chance': {
      const second = notice.kind === 'auction.second_chance';
      const price = second ? d.amount_minor : d.hammer_minor;
      wins.set(d.auction_id, { order_id: d.order_id, price_minor: price, currency: d.currency, second });
      text = second
        ? `Second chance: the item is yours at your last bid, ${money(price, d.currency)}. Pay to get it.`
        : `You won the auction for ${money(price, d.currency)}! Pay to get it.`;
      toast(`★ ${text}`, 'ok', 7000);
      refreshOrder(d.order_id);
      renderAuctions();
      break;
    }
    case 'group_buy.succeeded':
      myJoins.set(d.group_buy_id, { ...myJoins.get(d.group_buy_id), units: d.quantity, order_id: d.order_id });
      text = `The group buy succeeded: ${d.quantity} × at ${money(d.unit_price_minor, d.currency)} (${money(d.amount_minor, d.currency)}). Pay to get it.`;
      toast(`👥 ${text}`, 'ok', 7000);
      refreshOrder(d.order_id);
      renderGroupBuys();
      break;
    case 'group_buy.failed':
      text = d.reason === 'cancelled'
        ? 'The host cancelled the group buy: nothing is charged.'
        : `The group buy did not reach ${d.min_participants} participants: nothing is charged.`;
      toast(text, 'warn', 6000);
      renderGroupBuys();
      break;
    case 'giveaway.won':
      giveawayWins.set(d.giveaway_id, d);
      if (d.entry_id) rememberEntry(d.giveaway_id, d.entry_id);
      text = d.coupon_claim_id ? 'You won the giveaway: a coupon is yours!' : 'You won the giveaway: the prize is on its way (free order).';
      toast(`★ ${text}`, 'ok', 7000);
      if (d.order_id) refreshOrder(d.order_id);
      if (d.coupon_claim_id) loadClaims().then(renderCoupons);
      renderGiveaways();
      break;
    case 'waitlist.offer':
    case 'waitlist.offer_expired':
    case 'waitlist.closed':
      text = onWaitlistNotice(notice);
      break;
    default:
      text = notice.kind;
  }
  noticesShown.unshift({ id: notice.id, kind: notice.kind, text, order_id: d.order_id });
  renderNotices();
}

const noticesShown = [];

function renderNotices() {
  const list = $('#notices');
  list.replaceChildren(...noticesShown.slice(0, 10).map((n) =>
    h('li', { class: 'row', 'data-kind': n.kind, 'data-order': n.order_id ?? '', text: n.text })));
}

async function refreshOrder(id) {
  try {
    upsertOrder(await api(`/v1/orders/${id}`, { token }));
  } catch {
    /* polled later */
  }
}

let lineupLoading = null;
function ensureLineup() {
  const links = [...state.deals.values()].map((d) => d.link_number);
  if (state.pinned?.link_number) links.push(state.pinned.link_number);
  if (links.every((n) => n === null || n === undefined || lineup.has(n)) || lineupLoading) return;
  lineupLoading = loadLineup().then(() => {
    lineupLoading = null;
    renderDeals();
    renderPinned();
  });
}

function setConnection(status) {
  const el = $('#conn');
  const labels = {
    connecting: 'connecting…', reconnecting: 'reconnecting…', live: 'connected', offline: 'offline',
    banned: 'removed', ended: 'ended', down: 'disconnected', idle: '…',
  };
  el.textContent = labels[status] || status;
  el.dataset.status = status;
  el.className = `conn ${status === 'live' ? 'live' : status === 'connecting' || status === 'reconnecting' ? 'connecting' : 'down'}`;
}

// ---------- rendering ----------

function renderAll() {
  renderSession();
  renderStage();
  renderCounters();
  renderPinned();
  renderAuctions();
  renderGiveaways();
  renderDeals();
  renderCoupons();
  renderOrders();
  renderChatForm();
}

function renderSession() {
  if (!session) return;
  $('#title').textContent = session.title;
  document.title = `${session.title} · hawker`;
  $('#stage-host').textContent = session.title;
  const badge = $('#session-status');
  badge.textContent = session.status === 'live' ? '● live' : session.status;
  badge.className = `badge ${session.status === 'live' ? 'live' : session.status === 'ended' ? 'bad' : 'warn'}`;
  $('#stage-live').textContent = session.status === 'live' ? '● live' : session.status === 'scheduled' ? 'starting soon' : session.status;
}

function renderStage() {
  const box = $('#announcement');
  if (state.announcement?.text) {
    box.textContent = `⚑ ${state.announcement.text}`;
    box.classList.remove('hidden');
  } else {
    box.classList.add('hidden');
  }
}

function renderCounters() {
  $('#viewers').textContent = `${state.viewers} watching`;
  $('#likes').textContent = `♥ ${state.likes}`;
  $('#stage-viewers').textContent = `${state.viewers} watching`;
}

function productOf(link) {
  return lineup.get(link) || null;
}

function renderPinned() {
  const box = $('#pinned');
  const item = state.pinned;
  if (!item) {
    fill(box, h('h2', { text: 'Now showing' }), h('p', { class: 'empty', text: 'The host has not pinned a product yet.' }));
    return;
  }
  const link = item.link_number ?? item.link;
  const name = item.product_name || item.title || productOf(link)?.product_name || 'Product';
  const variant = item.sku_name || productOf(link)?.sku_name || '';
  fill(
    box,
    h('h2', { text: 'Now showing' }),
    h('div', { class: 'product' },
      h('div', { class: 'swatch', text: link ? `#${link}` : initials(name) }),
      h('div', { class: 'grow' },
        h('h3', { text: name, dataset: { testid: 'pinned-name' } }),
        h('small', { text: variant })),
      item.price_minor !== undefined ? h('div', { class: 'price', text: money(item.price_minor, item.currency) }) : null),
  );
}

/** The claim this buyer would use on `deal` for `quantity` units, with its discount. */
function applicableClaim(deal, quantity) {
  const subtotal = deal.price_minor * quantity;
  let best = null;
  for (const claim of claims.values()) {
    if (claim.used_at) continue;
    const drop = state.coupons.get(claim.coupon_drop_id) || dropInfo.get(claim.coupon_drop_id);
    if (!drop) continue;
    if (drop.deal_id && drop.deal_id !== deal.deal_id) continue;
    if (drop.lineup_item_id && drop.lineup_item_id !== deal.lineup_item_id) continue;
    if (drop.currency && drop.currency !== deal.currency) continue;
    if (subtotal < (drop.min_spend_minor || 0)) continue;
    const discount = Math.min(
      subtotal,
      drop.discount_kind === 'percent' ? Math.floor((subtotal * drop.discount_value) / 100) : drop.discount_value,
    );
    if (!best || discount > best.discount) best = { claim, drop, discount };
  }
  return best;
}

function renderDeals() {
  const box = $('#deals');
  const now = room ? room.now() : Date.now();
  const deals = state.dealList().filter((d) => d.status !== 'ended' || Date.now() - (endedAt.get(d.deal_id) || 0) < 20_000);
  morphChildren(box, deals.map((deal) => dealCard(deal, now)));
}

function dealCard(deal, now) {
  const product = productOf(deal.link_number);
  const name = product?.product_name || `Item #${deal.link_number}`;
  const remaining = Math.max(0, deal.remaining ?? deal.quantity);
  const started = deal.status === 'live' || (deal.status === 'scheduled' && Date.parse(deal.starts_at) <= now);
  const ended = deal.status === 'ended';
  const quantity = Math.min(quantities.get(deal.deal_id) || 1, deal.per_buyer_cap, Math.max(1, remaining));
  const coupon = useCoupon.get(deal.deal_id) === false ? null : applicableClaim(deal, quantity);
  const offer = applicableClaim(deal, quantity);
  const total = deal.price_minor * quantity - (coupon?.discount || 0);
  const off = product && product.price_minor > deal.price_minor
    ? Math.round((1 - deal.price_minor / product.price_minor) * 100) : 0;
  const result = results.get(deal.deal_id);
  const bar = h('span');
  bar.style.width = `${deal.quantity ? (remaining / deal.quantity) * 100 : 0}%`;

  let timer;
  if (ended) {
    const why = { sold_out: 'sold out', time_up: 'time is up', ended_by_host: 'ended by the host' }[deal.end_reason] || 'ended';
    timer = h('span', { class: 'badge bad', text: `Ended — ${why}` });
  } else if (started && deal.status === 'live') {
    timer = countdown('span', 'countdown', deal.ends_at, 'ends in ', 'ending…', now);
  } else if (started) {
    timer = h('span', { class: 'countdown', text: 'starting…' });
  } else {
    timer = countdown('span', 'countdown', deal.starts_at, 'starts in ', 'starting…', now);
  }
  const canBuy = deal.status === 'live' && remaining > 0 && !busy.has(deal.deal_id);

  return h('article', {
    class: `card deal ${ended ? 'ended' : deal.status === 'live' ? 'live' : 'scheduled'}`,
    dataset: { key: deal.deal_id, testid: 'deal', dealId: deal.deal_id, status: deal.status },
  },
  h('div', { class: 'row between' },
    h('span', { class: `badge ${ended ? '' : 'live'}`, text: deal.status === 'live' ? '⚡ Flash deal' : ended ? 'Flash deal' : '⚡ Flash deal soon' }),
    timer),
  h('div', { class: 'product' },
    h('div', { class: 'swatch', text: `#${deal.link_number ?? '?'}` }),
    h('div', { class: 'grow' },
      h('h3', { text: name, dataset: { testid: 'deal-name' } }),
      h('small', { text: `${product?.sku_name ? product.sku_name + ' · ' : ''}limit ${deal.per_buyer_cap} per buyer` })),
    h('div', {},
      h('div', { class: 'price', text: money(deal.price_minor, deal.currency) }),
      product && product.price_minor !== deal.price_minor ? h('div', { class: 'was', text: money(product.price_minor, product.currency) }) : null)),
  h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': String(deal.quantity), 'aria-valuenow': String(remaining) }, bar),
  h('div', { class: 'row between' },
    h('span', { class: 'num', dataset: { testid: 'deal-stock', remaining: String(remaining) } },
      h('b', { text: String(remaining) }), ` of ${deal.quantity} left`),
    off ? h('span', { class: 'badge live', text: `−${off}%` }) : null),
  ended ? null : h('div', { class: 'row between' },
    h('div', { class: 'qty' },
      h('button', { class: 'small', type: 'button', text: '−', 'aria-label': 'fewer', disabled: quantity <= 1,
        dataset: { action: 'fewer', id: deal.deal_id } }),
      h('output', { text: String(quantity), dataset: { testid: 'quantity' } }),
      h('button', { class: 'small', type: 'button', text: '+', 'aria-label': 'more', disabled: quantity >= Math.min(deal.per_buyer_cap, remaining),
        dataset: { action: 'more', id: deal.deal_id } })),
    offer ? h('label', { class: 'row nowrap' },
      h('input', { type: 'checkbox', checked: !!coupon, dataset: { action: 'use-coupon', id: deal.deal_id, testid: 'use-coupon' } }),
      h('small', { text: `${discountText(offer.drop)} coupon (−${money(offer.discount, deal.currency)})` })) : null),
  ended ? null : h('button', {
    class: 'primary big', type: 'button', disabled: !canBuy, dataset: { testid: 'buy', action: 'buy', id: deal.deal_id },
    text: busy.has(deal.deal_id) ? 'Buying…' : remaining === 0 ? 'Sold out' : deal.status === 'live'
      ? `Buy now · ${money(total, deal.currency)}` : 'Starts soon',
  }),
  result ? h('div', { class: `notice ${result.kind}`, text: result.text, dataset: { testid: 'deal-result' } }) : null);
}

function renderCoupons() {
  const box = $('#coupons');
  morphChildren(box, state.couponList().map(couponCard));
}

function couponCard(drop) {
  const mine = [...claims.values()].filter((c) => c.coupon_drop_id === drop.coupon_drop_id);
  const remaining = Math.max(0, drop.remaining ?? drop.total);
  const scheduled = drop.status === 'scheduled';
  const item = drop.lineup_item_id ? [...lineup.values()].find((i) => i.lineup_item_id === drop.lineup_item_id) : null;
  const scope = drop.deal_id ? 'on one flash deal' : item ? `on #${item.link_number} ${item.product_name}` : 'on any deal in this stream';
  const result = results.get(drop.coupon_drop_id);
  let action;
  if (mine.length) {
    const unused = mine.some((c) => !c.used_at);
    action = h('span', { class: `badge ${unused ? 'ok' : ''}`, dataset: { testid: 'claimed' }, text: unused ? 'Claimed ✓ — applied at checkout' : 'Used ✓' });
  } else if (scheduled) {
    action = h('span', { class: 'badge warn', text: 'not yet' });
  } else if (remaining === 0) {
    action = h('span', { class: 'badge bad', text: 'All claimed' });
  } else {
    action = h('button', {
      class: 'primary', type: 'button', disabled: busy.has(drop.coupon_drop_id),
      text: busy.has(drop.coupon_drop_id) ? 'Claiming…' : 'Claim', dataset: { testid: 'claim', action: 'claim', id: drop.coupon_drop_id },
    });
  }
  const now = room ? room.now() : Date.now();
  return h('article', { class: 'card coupon', dataset: { key: drop.coupon_drop_id, testid: 'coupon', dropId: drop.coupon_drop_id, status: drop.status } },
    h('div', { class: 'row between' },
      h('span', { class: 'badge ok', text: scheduled ? '✂ Coupon drop coming' : '✂ Coupon drop' }),
      scheduled
        ? countdown('span', 'countdown', drop.drop_at, 'drops in ', 'dropping…', now)
        : drop.claim_until ? countdown('small', 'num', drop.claim_until, 'claim within ', 'closed', now) : null),
    h('div', { class: 'big', text: discountText(drop) }),
    h('small', { text: scope }),
    h('div', { class: 'row between' },
      h('span', { class: 'num', dataset: { testid: 'coupon-remaining', remaining: String(remaining) } },
        h('b', { text: String(remaining) }), ` of ${drop.total} left`),
      action),
    result ? h('div', { class: `notice ${result.kind}`, text: result.text }) : null);
}

function statusBadge(order) {
  const map = {
    pending_payment: ['warn', 'awaiting payment'], paid: ['ok', 'paid'], cancelled: ['bad', 'expired'],
    refund_due: ['bad', 'refund due'], refunded: ['blue', 'refunded'], partially_refunded: ['blue', 'part refunded'],
  };
  const [kind, text] = map[order.status] || ['', order.status];
  return h('span', { class: `badge ${kind}`, text, dataset: { testid: 'order-status' } });
}

function renderOrders() {
  const box = $('#orders');
  if (!orders.length) {
    morphChildren(box, [h('li', { class: 'empty', text: 'Nothing yet. Deals appear above when the host launches one.' })]);
    return;
  }
  morphChildren(box, orders.map((order) => {
    const product = [...lineup.values()].find((i) => i.lineup_item_id === order.lineup_item_id);
    const pending = order.status === 'pending_payment';
    return h('li', { class: 'card tight', dataset: { key: order.order_id, testid: 'order', orderId: order.order_id, status: order.status } },
      h('div', { class: 'row between' },
        h('b', {}, `${order.quantity} × ${product?.product_name || 'item'}`,
          order.source === 'auction' ? h('small', { class: 'muted', text: ' · won at auction' }) : null,
          order.source === 'giveaway' ? h('small', { class: 'muted', text: ' · giveaway prize' }) : null,
          order.source === 'group_buy' ? h('small', { class: 'muted', text: ' · group buy' }) : null),
        statusBadge(order)),
      h('div', { class: 'row between' },
        h('small', { class: 'num' },
          `#${shortId(order.order_id)} · `,
          order.discount_minor ? `${money(order.unit_price_minor * order.quantity, order.currency)} − ${money(order.discount_minor, order.currency)} coupon = ` : '',
          h('b', { text: money(order.amount_minor, order.currency), dataset: { testid: 'order-amount' } })),
        pending && dev ? h('button', { class: 'small dark', type: 'button', text: 'Pay now (demo)', dataset: { testid: 'pay', action: 'pay', id: order.order_id } }) : null),
      pending ? countdown('small', 'muted num', order.expires_at, 'pay within ', 'expiring…', Date.now()) : null);
  }));
}

function renderChatForm() {
  const input = $('#chat-input');
  const muted = mutedUntil > Date.now();
  input.placeholder = muted ? `You are muted until ${timeOfDay(mutedUntil)}` : 'Say something…';
  const slow = $('#slow-mode');
  slow.textContent = state.slowMode ? `slow mode · ${state.slowMode} s` : '';
  slow.classList.toggle('hidden', !state.slowMode);
}

function addChat(from, text, kind = '') {
  const log = $('#chat');
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(h('div', { class: `msg ${kind}` }, h('b', { text: from === me ? 'you' : from }), text));
  while (log.children.length > 200) log.firstChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function addSystem(text) {
  addChat('', text, 'system');
}

// ---------- actions ----------

const RETRYABLE = new Set(['disconnected', 'timeout', 'not_connected', 'unavailable', 'network', 'internal']);

/** One click, one idempotency key: a retry after a lost answer reuses it, so it cannot buy twice. */
async function buy(deal, quantity, claim) {
  const key = uuid();
  const id = deal.deal_id;
  busy.add(id);
  results.delete(id);
  renderDeals();
  const body = { quantity, coupon_claim_id: claim?.coupon_claim_id ?? null };
  let outcome = null;
  for (let attempt = 0; attempt < 4 && !outcome; attempt += 1) {
    try {
      let order;
      if (room.status === 'live') {
        order = (await room.send('deal.buy', { deal_id: id, idempotency_key: key, ...body }, 15_000)).order;
      } else {
        order = await api(`/v1/deals/${id}/orders`, { method: 'POST', token, headers: { 'Idempotency-Key': key }, body });
      }
      upsertOrder(order);
      if (order.coupon_claim_id && claims.has(order.coupon_claim_id)) {
        claims.get(order.coupon_claim_id).used_at = order.created_at;
        renderCoupons();
      }
      outcome = { kind: 'ok', text: `Ordered ${order.quantity} for ${money(order.amount_minor, order.currency)} — pay within ${clock(Date.parse(order.expires_at) - Date.now())}.` };
    } catch (e) {
      if (RETRYABLE.has(e.code) || e.status >= 500) {
        await room.whenLive(8000);
        continue;
      }
      outcome = { kind: 'bad', text: ERRORS[e.code] || e.message };
    }
  }
  busy.delete(id);
  results.set(id, outcome || { kind: 'bad', text: 'No answer from the server; your order may still arrive — check back in a moment.' });
  renderDeals();
}

async function claim(drop) {
  const id = drop.coupon_drop_id;
  busy.add(id);
  results.delete(id);
  renderCoupons();
  try {
    let result;
    if (room.status === 'live') {
      result = (await room.send('coupon.claim', { coupon_drop_id: id })).claim;
    } else {
      result = await api(`/v1/coupon-drops/${id}/claims`, { method: 'POST', token });
    }
    claims.set(result.coupon_claim_id, result);
    dropInfo.set(id, drop);
  } catch (e) {
    if (e.code === 'coupon_already_claimed' || RETRYABLE.has(e.code)) await loadClaims();
    else results.set(id, { kind: 'bad', text: ERRORS[e.code] || e.message });
  }
  busy.delete(id);
  renderCoupons();
  renderDeals();
}

async function pay(order) {
  try {
    const paid = await api(`/v1/dev/orders/${order.order_id}/pay`, { method: 'POST', token });
    upsertOrder(paid.order);
    if (paid.outcome.outcome === 'refund_due') toast('The payment came too late: it will be refunded.', 'warn');
  } catch (e) {
    toast(`Payment failed: ${e.message}`, 'bad');
  }
}

// ---------- auctions and giveaways ----------

const myNames = new Map(); // auction_id -> how the room names this viewer as a bidder
const myMax = new Map(); // auction_id -> this viewer's maximum bid (from the answers)
const outbid = new Map(); // auction_id -> the last outbid notice
const wins = new Map(); // auction_id -> { order_id, price_minor, currency, second }
const bidBusy = new Set();
const bidResults = new Map(); // auction_id -> { kind, text }
const entries = new Map(); // giveaway_id -> this viewer's entry id
const giveawayWins = new Map(); // giveaway_id -> the giveaway.won notice
const enterResults = new Map(); // giveaway_id -> { kind, text }
const verifications = new Map(); // giveaway_id -> { ok, checks } | 'running'

const BID_ERRORS = {
  auction_ended: 'The auction has ended.',
  already_leading: 'You already lead: raise your maximum instead.',
  forbidden: 'You cannot bid in this auction.',
  not_found: 'This auction no longer exists.',
};
const ENTER_ERRORS = {
  giveaway_closed: 'Entries are closed.',
  not_eligible: 'Only viewers who bought in this session may enter.',
  forbidden: 'You cannot enter this giveaway.',
};

const entryKey = (giveawayId) => `hawker.entry.${me}.${giveawayId}`;
function rememberEntry(giveawayId, entryId) {
  entries.set(giveawayId, entryId);
  try {
    localStorage.setItem(entryKey(giveawayId), entryId);
  } catch {
    /* private mode: kept for this page */
  }
}
function entryOf(giveawayId) {
  if (!entries.has(giveawayId)) {
    const saved = localStorage.getItem(entryKey(giveawayId));
    if (saved) entries.set(giveawayId, saved);
  }
  return entries.get(giveawayId) || null;
}

function currencyOf(auctionId) {
  return state.auctions.get(auctionId)?.currency || 'USD';
}

function itemById(lineupItemId) {
  return [...lineup.values()].find((i) => i.lineup_item_id === lineupItemId) || null;
}

/** Auctions and giveaways over HTTP: the finished ones are not in the room's snapshot. */
async function loadFormats() {
  const [auctions, giveaways, groupBuys] = await Promise.all([
    apiAll(`/v1/sessions/${sessionId}/auctions`, { token }).catch(() => null),
    apiAll(`/v1/sessions/${sessionId}/giveaways`, { token }).catch(() => null),
    apiAll(`/v1/sessions/${sessionId}/group-buys`, { token }).catch(() => null),
  ]);
  if (auctions) state.mergeAuctions(auctions);
  if (giveaways) state.mergeGiveaways(giveaways);
  if (groupBuys) {
    state.mergeGroupBuys(groupBuys);
    // This viewer's part in the recent ones (units, invite code, order).
    await Promise.all(groupBuys.slice(-5).map((g) => api(`/v1/group-buys/${g.group_buy_id}`, { token })
      .then((one) => { if (one.you) myJoins.set(g.group_buy_id, one.you); })
      .catch(() => {})));
  }
  for (const a of state.auctions.values()) {
    // The winner sees their order on the auction.
    if (a.winner_id === me && a.order_id && !wins.has(a.auction_id)) {
      wins.set(a.auction_id, { order_id: a.order_id, price_minor: a.hammer_minor, currency: a.currency });
    }
  }
  ensureItems();
  renderAuctions();
  renderGiveaways();
  renderGroupBuys();
}

let itemsLoading = null;
const itemsAsked = new Set();
/** Loads the lineup again when an auction or giveaway names an item this page has not seen. */
function ensureItems() {
  const missing = [...state.auctions.values(), ...state.giveaways.values(), ...state.groupBuys.values()]
    .map((x) => x.lineup_item_id)
    .filter((id) => id && !itemById(id) && !itemsAsked.has(id));
  if (!missing.length || itemsLoading) return;
  for (const id of missing) itemsAsked.add(id);
  itemsLoading = loadLineup().then(() => {
    itemsLoading = null;
    renderAuctions();
    renderGiveaways();
    renderGroupBuys();
  });
}

function onAuctionEvent(event) {
  const d = event.data || {};
  if (event.type === 'auction.ended' && d.outcome === 'sold' && !wins.has(d.auction_id)) {
    // The winner also gets `auction.won` privately; the room's event comes first sometimes.
    const name = myNames.get(d.auction_id);
    if (name && d.winner_name === name) toast(`★ You won the auction for ${money(d.hammer_minor, d.currency)}!`, 'ok', 5000);
  }
  ensureItems();
  renderAuctions();
}

/** The last `keep` finished ones, after every running one. */
function visible(list, running, keep = 2) {
  const live = list.filter(running);
  const done = list.filter((x) => !running(x)).slice(0, keep);
  return [...live, ...done];
}

function renderAuctions() {
  const box = $('#auctions');
  if (!box) return;
  const list = visible(state.auctionList(), (a) => a.status === 'running');
  const now = room ? room.now() : Date.now();
  for (const a of list) {
    if (!myNames.has(a.auction_id)) {
      const name = decodeClaims(token)?.name;
      myNames.set(a.auction_id, name || null);
      if (!name) bidderPseudonym(a.auction_id, me).then((p) => {
        myNames.set(a.auction_id, p);
        renderAuctions();
      });
    }
  }
  morphChildren(box, list.map((a) => auctionCard(a, now)));
}

function auctionCard(a, now) {
  const id = a.auction_id;
  const running = a.status === 'running';
  const product = itemById(a.lineup_item_id);
  const name = product?.product_name || 'Auction item';
  const mine = myNames.get(id);
  const leading = !!(a.leader_name && mine && a.leader_name === mine);
  const won = wins.get(id);
  const order = won ? orders.find((o) => o.order_id === won.order_id) : null;
  const result = bidResults.get(id);
  const busyNow = bidBusy.has(id);
  const max = myMax.get(id);
  const rules = a.mode === 'sudden_death'
    ? 'Sudden death: the clock ends it.'
    : `A bid in the last ${a.snipe_window_secs} s extends the end.`;

  let timer;
  if (running) {
    timer = h('span', { class: 'row nowrap' },
      a.extended ? h('span', { class: 'badge warn', dataset: { testid: 'auction-extended' }, text: 'extended' }) : null,
      countdown('span', 'countdown', a.ends_at, 'ends in ', 'ending…', now));
  }
  else if (a.status === 'voided') timer = h('span', { class: 'badge bad', text: 'Voided' });
  else timer = h('span', { class: `badge ${a.outcome === 'sold' ? 'ok' : ''}`, text: a.outcome === 'sold' ? 'Sold' : 'No sale' });

  let status = null;
  if (running && leading) {
    status = h('div', { class: 'notice ok', dataset: { testid: 'auction-leading' },
      text: `You lead${max ? ` · your maximum ${money(max, a.currency)}` : ''}` });
  } else if (running && outbid.has(id)) {
    status = h('div', { class: 'notice warn', dataset: { testid: 'auction-outbid' },
      text: `You have been outbid — bid ${money(a.min_bid_minor, a.currency)} or more to lead.` });
  }

  let end = null;
  if (a.status === 'voided') {
    end = h('div', { class: 'notice bad', dataset: { testid: 'auction-outcome' }, text: `The host voided this auction: ${a.void_reason || ''}` });
  } else if (won) {
    const pending = order?.status === 'pending_payment';
    end = h('div', { class: 'notice ok stack tight-stack', dataset: { testid: 'auction-won', orderId: won.order_id, orderStatus: order?.status || '' } },
      h('b', { text: won.second
        ? `Second chance: it is yours for ${money(won.price_minor, won.currency || a.currency)}`
        : `★ You won for ${money(won.price_minor ?? a.hammer_minor, won.currency || a.currency)}!` }),
      order ? h('div', { class: 'row between' },
        statusBadge(order),
        pending ? countdown('small', 'num', order.expires_at, 'pay within ', 'expiring…', Date.now()) : null,
        pending && dev ? h('button', { class: 'small dark', type: 'button', text: 'Pay now (demo)', dataset: { testid: 'auction-pay', action: 'pay', id: order.order_id } }) : null)
        : h('small', { text: 'Your order is on its way to the list below…' }));
  } else if (a.status === 'ended') {
    end = h('div', { class: `notice ${a.outcome === 'sold' ? 'info' : 'warn'}`, dataset: { testid: 'auction-outcome' },
      text: a.outcome === 'sold'
        ? `Sold to ${a.winner_name || a.leader_name} for ${money(a.hammer_minor ?? a.price_minor, a.currency)}.`
        : a.outcome === 'reserve_not_met' ? 'No sale: the reserve price was not met.' : 'No sale: nobody bid.' });
  }

  return h('article', {
    class: `card auction ${running ? 'live' : 'ended'}`,
    dataset: { key: id, testid: 'auction', auctionId: id, status: a.status, leading: String(leading) },
  },
  h('div', { class: 'row between' },
    h('span', { class: `badge ${running ? 'live' : ''}`, text: '⚒ Live auction' }),
    timer),
  h('div', { class: 'product' },
    h('div', { class: 'swatch', text: product ? `#${product.link_number}` : '⚒' }),
    h('div', { class: 'grow' },
      h('h3', { text: name, dataset: { testid: 'auction-name' } }),
      h('small', { text: `${product?.sku_name ? product.sku_name + ' · ' : ''}${rules}` })),
    h('div', {},
      h('div', { class: 'price', dataset: { testid: 'auction-price', price: String(a.price_minor ?? '') },
        text: money(a.price_minor ?? a.start_price_minor, a.currency) }),
      h('small', { class: 'muted', text: a.price_minor ? `${a.bids ?? a.bid_seq ?? 0} bids` : 'opening price' }))),
  h('div', { class: 'row between' },
    h('span', { dataset: { testid: 'auction-leader' } },
      a.leader_name ? ['Leader: ', h('b', { text: leading ? 'you' : a.leader_name })] : 'No bids yet'),
    running && a.reserve_met === false ? h('span', { class: 'badge warn', text: 'reserve not met' }) : null),
  status,
  running ? h('div', { class: 'stack tight-stack', dataset: { key: 'bid' } },
    h('button', {
      class: 'primary big', type: 'button', disabled: busyNow || leading || !a.min_bid_minor,
      dataset: { testid: 'bid', action: 'bid', id },
      text: busyNow ? 'Bidding…' : leading ? 'You lead' : `Bid ${money(a.min_bid_minor, a.currency)}`,
    }),
    h('form', { class: 'row nowrap', dataset: { action: 'max-bid', id, key: 'max' } },
      h('label', { class: 'grow row nowrap' },
        h('small', { text: 'Max bid $' }),
        h('input', {
          name: 'max', type: 'number', step: '0.01', min: '0.01', required: true, class: 'grow',
          placeholder: a.min_bid_minor ? (a.min_bid_minor / 100).toFixed(2) : '',
          'aria-label': 'your maximum bid', dataset: { testid: 'max-bid-input' },
        })),
      h('button', { class: 'dark', type: 'submit', disabled: busyNow, text: max ? 'Raise max' : 'Set max bid', dataset: { testid: 'set-max-bid' } })),
    h('small', { class: 'muted', text: 'With a maximum, the server bids for you by the increment as others bid, up to it.' })) : null,
  result && running ? h('div', { class: `notice ${result.kind}`, role: 'status', text: result.text, dataset: { testid: 'auction-result' } }) : null,
  end);
}

/** Sends a bid: the socket when it is up, else HTTP. A bid is not retried blindly (it is not idempotent). */
async function placeBid(auctionId, body) {
  bidBusy.add(auctionId);
  bidResults.delete(auctionId);
  renderAuctions();
  try {
    let bid;
    if (room?.status === 'live') bid = (await room.send('auction.bid', { auction_id: auctionId, ...body })).bid;
    else bid = await api(`/v1/auctions/${auctionId}/bids`, { method: 'POST', token, body });
    myMax.set(auctionId, Math.max(myMax.get(auctionId) || 0, bid.max_minor));
    if (bid.leading) {
      myNames.set(auctionId, bid.leader_name);
      outbid.delete(auctionId);
    }
    const a = state.auctions.get(auctionId);
    if (a && a.status === 'running' && (a.version ?? -1) < bid.seq) {
      // The answer is newer than the room's last (coalesced) view.
      Object.assign(a, { price_minor: bid.price_minor, leader_name: bid.leader_name, min_bid_minor: bid.min_bid_minor, ends_at: bid.ends_at, bids: bid.seq, version: bid.seq });
    }
    bidResults.set(auctionId, bid.leading
      ? { kind: 'ok', text: `Bid accepted: you lead at ${money(bid.price_minor, currencyOf(auctionId))}.` }
      : { kind: 'warn', text: `Bid accepted, but another maximum is higher: ${bid.leader_name} leads at ${money(bid.price_minor, currencyOf(auctionId))}.` });
  } catch (e) {
    // `bid_too_low` names the minimum in minor units: say it as money.
    const minimum = e.code === 'bid_too_low' ? Number((String(e.message).match(/(\d+) minor units/) || [])[1]) : NaN;
    const text = e.code === 'bid_too_low'
      ? (minimum ? `Too low: the minimum acceptable bid is ${money(minimum, currencyOf(auctionId))}.` : e.message)
      : ['timeout', 'disconnected'].includes(e.code) ? 'No answer: your bid may have gone through — watch the price.'
      : BID_ERRORS[e.code] || e.message;
    bidResults.set(auctionId, { kind: 'bad', text });
  }
  bidBusy.delete(auctionId);
  renderAuctions();
}

function renderGiveaways() {
  const box = $('#giveaways');
  if (!box) return;
  const list = visible(state.giveawayList(), (g) => g.status === 'open' || g.status === 'closed');
  const now = room ? room.now() : Date.now();
  morphChildren(box, list.map((g) => giveawayCard(g, now)));
}

function giveawayCard(g, now) {
  const id = g.giveaway_id;
  const entry = entryOf(id);
  const open = g.status === 'open' && Date.parse(g.closes_at) > now;
  const item = g.prize_kind === 'item' ? itemById(g.lineup_item_id) : null;
  const drop = g.prize_kind === 'coupon' ? state.coupons.get(g.coupon_drop_id) || dropInfo.get(g.coupon_drop_id) : null;
  const prize = item ? item.product_name : drop ? `a coupon: ${discountText(drop)}` : g.prize_kind === 'coupon' ? 'a coupon' : 'a prize';
  const count = g.count ?? g.entry_count ?? 0;
  const iWon = giveawayWins.has(id) || (entry && (g.winner_entries || []).includes(entry));
  const result = enterResults.get(id);
  const verified = verifications.get(id);
  const rules = [
    `${g.winners} winner${g.winners === 1 ? '' : 's'}`,
    g.eligibility === 'buyers' ? 'for buyers in this session' : 'anyone watching may enter',
    g.must_be_present ? 'must be present to win' : null,
  ].filter(Boolean).join(' · ');

  let action;
  if (entry) {
    action = h('span', { class: 'badge ok', dataset: { testid: 'giveaway-entered' }, text: 'Entered ✓' });
  } else if (open) {
    action = h('button', { class: 'primary', type: 'button', disabled: busy.has(id), text: busy.has(id) ? 'Entering…' : 'Enter',
      dataset: { testid: 'enter-giveaway', action: 'enter', id } });
  } else {
    action = h('span', { class: 'badge', text: 'entries closed' });
  }
  let timer;
  if (g.status === 'open') timer = countdown('span', 'countdown', g.closes_at, 'closes in ', 'closing…', now);
  else if (g.status === 'closed') timer = h('span', { class: 'badge warn', text: 'drawing…' });
  else if (g.status === 'drawn') timer = h('span', { class: 'badge ok', text: 'drawn' });
  else timer = h('span', { class: 'badge bad', text: 'voided' });

  return h('article', { class: `card giveaway ${g.status}`, dataset: { key: id, testid: 'giveaway', giveawayId: id, status: g.status } },
    h('div', { class: 'row between' }, h('span', { class: `badge ${g.status === 'open' ? 'live' : ''}`, text: '✦ Giveaway' }), timer),
    h('div', { class: 'product' },
      h('div', { class: 'swatch', text: item ? `#${item.link_number}` : '✦' }),
      h('div', { class: 'grow' }, h('h3', { text: `Win ${prize}` }), h('small', { text: rules }))),
    h('div', { class: 'row between' },
      h('span', { class: 'num', dataset: { testid: 'giveaway-count', count: String(count) } }, h('b', { text: String(count) }), count === 1 ? ' entry' : ' entries'),
      action),
    entry ? h('small', { class: 'muted', dataset: { testid: 'giveaway-entry', entryId: entry } }, 'Your entry id: ', h('code', { text: entry })) : null,
    result ? h('div', { class: `notice ${result.kind}`, role: 'status', text: result.text }) : null,
    iWon ? h('div', { class: 'notice ok', dataset: { testid: 'giveaway-won' },
      text: giveawayWins.get(id)?.coupon_claim_id ? '★ You won! Your coupon is in your claims.' : '★ You won! Your free order is below.' }) : null,
    g.status === 'voided' ? h('div', { class: 'notice bad', text: `The host voided this giveaway: ${g.void_reason || ''}` }) : null,
    h('dl', { class: 'proof' },
      h('dt', { text: 'Commitment (hash of the secret seed)' }), h('dd', {}, h('code', { text: g.seed_hash || '—' })),
      g.entries_hash ? [h('dt', { text: `Frozen entry list: ${g.entry_count} entries, hash` }),
        h('dd', {}, h('code', { text: g.entries_hash, dataset: { testid: 'giveaway-entries-hash' } }))] : null,
      g.winner_entries ? [h('dt', { text: 'Winning entries' }), h('dd', { dataset: { testid: 'giveaway-winners' } },
        g.winner_entries.length
          ? g.winner_entries.map((w) => h('code', { class: `entry${w === entry ? ' mine' : ''}`, text: w === entry ? `${w} (you)` : w }))
          : 'none')] : null,
      g.absent_entries?.length ? [h('dt', { text: 'Drawn while absent, redrawn' }), h('dd', {}, g.absent_entries.map((w) => h('code', { class: 'entry', text: w })))] : null,
      g.seed ? [h('dt', { text: 'Seed (revealed)' }), h('dd', {}, h('code', { text: g.seed, dataset: { testid: 'giveaway-seed' } }))] : null,
      g.status === 'drawn' ? [h('dt', { text: `Offline: save GET /v1/giveaways/${id}/entries as entries.json, then` }),
        h('dd', {}, h('code', { text: verifyDrawCommand(g) }))] : null),
    g.status === 'drawn' ? h('div', { class: 'row' },
      h('button', { class: 'small', type: 'button', disabled: verified === 'running', text: verified === 'running' ? 'Verifying…' : 'Verify the draw',
        dataset: { testid: 'verify-draw', action: 'verify', id } }),
      verified && verified !== 'running' ? h('span', { class: `badge ${verified.ok ? 'ok' : 'bad'}`, role: 'status', dataset: { testid: 'verify-result', verified: verified.ok ? 'match' : 'mismatch' },
        text: verified.ok ? '✓ matches: recomputed here' : '✗ does not match' }) : null) : null,
    verified && verified !== 'running' ? h('ul', { class: 'plain checks', dataset: { testid: 'verify-checks' } }, verified.checks.map((c) =>
      h('li', { class: c.ok ? 'ok' : 'bad' }, `${c.ok ? '✓' : '✗'} ${c.label}`, c.detail ? h('small', { class: 'muted', text: ` ${c.detail}` }) : null))) : null);
}

async function enter(giveawayId) {
  busy.add(giveawayId);
  enterResults.delete(giveawayId);
  renderGiveaways();
  try {
    let entry;
    if (room?.status === 'live') entry = (await room.send('giveaway.enter', { giveaway_id: giveawayId })).entry;
    else entry = await api(`/v1/giveaways/${giveawayId}/entries`, { method: 'POST', token });
    rememberEntry(giveawayId, entry.entry_id);
  } catch (e) {
    if (RETRYABLE.has(e.code)) {
      // Entering is idempotent: ask again over HTTP, which answers the same entry.
      try {
        const entry = await api(`/v1/giveaways/${giveawayId}/entries`, { method: 'POST', token });
        rememberEntry(giveawayId, entry.entry_id);
      } catch (again) {
        enterResults.set(giveawayId, { kind: 'bad', text: ENTER_ERRORS[again.code] || again.message });
      }
    } else {
      enterResults.set(giveawayId, { kind: 'bad', text: ENTER_ERRORS[e.code] || e.message });
    }
  }
  busy.delete(giveawayId);
  renderGiveaways();
}

// ---------- group buys ----------

const myJoins = new Map(); // group_buy_id -> { units, invite_code, invited, order_id }
const joinResults = new Map(); // group_buy_id -> { kind, text }
const JOIN_ERRORS = {
  group_buy_ended: 'The group buy is over.',
  cap_exceeded: 'You have reached the limit per buyer for this group buy.',
  sold_out: 'Not enough units left for that quantity.',
  forbidden: 'You cannot join this group buy.',
  not_found: 'This group buy no longer exists.',
  bad_quantity: 'That quantity is not allowed.',
};

function renderGroupBuys() {
  const box = $('#group-buys');
  if (!box) return;
  const list = visible(state.groupBuyList(), (g) => g.status === 'running');
  const now = room ? room.now() : Date.now();
  morphChildren(box, list.map((g) => groupBuyCard(g, now)));
}

function groupBuyCard(g, now) {
  const id = g.group_buy_id;
  const item = itemById(g.lineup_item_id);
  const mine = myJoins.get(id);
  const running = g.status === 'running' && Date.parse(g.ends_at) > now;
  const ladder = groupBuyLadder(g);
  const result = joinResults.get(id);
  const left = Math.max(0, (g.stock ?? 0) - (g.units ?? 0));
  const room_for = Math.max(0, Math.min(g.per_buyer_cap - (mine?.units || 0), left));
  const quantity = Math.max(1, Math.min(quantities.get(id) || 1, room_for || 1));
  let timer;
  if (g.status === 'running') timer = countdown('span', 'countdown', g.ends_at, 'ends in ', 'settling…', now);
  else if (g.status === 'succeeded') timer = h('span', { class: 'badge ok', text: 'succeeded' });
  else timer = h('span', { class: 'badge bad', text: g.status });
  let action = null;
  if (running && room_for > 0) {
    action = h('div', { class: 'row' },
      h('button', { class: 'small', type: 'button', text: '−', disabled: quantity <= 1, dataset: { action: 'gb-fewer', id } }),
      h('span', { class: 'num', dataset: { testid: 'group-buy-quantity' }, text: String(quantity) }),
      h('button', { class: 'small', type: 'button', text: '+', disabled: quantity >= room_for, dataset: { action: 'gb-more', id } }),
      h('button', { class: 'primary', type: 'button', disabled: busy.has(id), text: busy.has(id) ? 'Joining…' : mine ? 'Join with more' : 'Join',
        dataset: { testid: 'join-group-buy', action: 'join-group-buy', id } }));
  } else if (running && left === 0) {
    action = h('span', { class: 'badge', text: 'all units taken' });
  }
  const nextText = ladder.next
    ? `${ladder.next.min_participants - (g.participants || 0)} more to unlock ${money(ladder.next.price_minor, g.currency)}`
    : 'best price unlocked';
  const share = mine?.invite_code ? viewerHref('viewer.html', { session: sessionId, invite: mine.invite_code }) : null;
  return h('article', { class: `card group-buy ${g.status}`, dataset: { key: id, testid: 'group-buy', groupBuyId: id, status: g.status } },
    h('div', { class: 'row between' }, h('span', { class: `badge ${g.status === 'running' ? 'live' : ''}`, text: '👥 Group buy' }), timer),
    h('div', { class: 'product' },
      h('div', { class: 'swatch', text: item ? `#${item.link_number}` : '👥' }),
      h('div', { class: 'grow' },
        h('h3', { text: item ? item.product_name : 'Group buy' }),
        h('small', { text: `Everyone pays the final tier's price · ${g.per_buyer_cap} per buyer · ${left} of ${g.stock} left` }))),
    h('ol', { class: 'plain tiers', dataset: { testid: 'group-buy-tiers' } }, ladder.rows.map((t, i) =>
      h('li', { class: `tier${t.unlocked ? ' unlocked' : ''}${t.current ? ' current' : ''}`,
        dataset: { testid: 'group-buy-tier', tier: String(i), unlocked: String(t.unlocked), current: String(t.current) } },
        h('span', { text: `${t.min_participants}+ ${t.min_participants === 1 ? 'buyer' : 'buyers'}` }),
        h('b', { class: 'num', text: money(t.price_minor, g.currency) }),
        t.current ? h('small', { class: 'badge ok', text: g.status === 'succeeded' ? 'final' : 'now' }) : null))),
    h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(Math.round(ladder.progress * 100)) },
      h('span', { style: { width: `${Math.round(ladder.progress * 100)}%` } })),
    h('div', { class: 'row between' },
      h('span', { class: 'num', dataset: { testid: 'group-buy-participants', count: String(g.participants || 0) } },
        h('b', { text: String(g.participants || 0) }), ` joined · ${g.min_reached ? 'minimum reached ✓' : `${g.min_participants} needed`}`),
      h('small', { class: 'muted', text: g.status === 'running' ? nextText : '' })),
    action,
    mine ? h('div', { class: 'notice ok', dataset: { testid: 'group-buy-joined', units: String(mine.units) } },
      `You joined with ${mine.units} unit${mine.units === 1 ? '' : 's'}`,
      mine.invited ? ` · ${mine.invited} joined through your invite` : '',
      mine.order_id ? ' · your order is below' : '') : null,
    share && running ? h('small', { class: 'muted' }, 'Invite friends: ', h('a', { href: share, dataset: { testid: 'group-buy-invite' }, text: 'share this link' })) : null,
    result ? h('div', { class: `notice ${result.kind}`, role: 'status', text: result.text }) : null,
    g.status === 'failed' ? h('div', { class: 'notice warn', text: 'Not enough people joined: nobody was charged.' }) : null,
    g.status === 'cancelled' ? h('div', { class: 'notice bad', text: `The host cancelled it${g.cancel_reason ? `: ${g.cancel_reason}` : ''}. Nobody was charged.` }) : null);
}

async function joinGroupBuy(id, quantity) {
  busy.add(id);
  joinResults.delete(id);
  renderGroupBuys();
  const key = uuid();
  const invite = params.get('invite') || undefined;
  const body = { quantity, ...(invite ? { invite } : {}) };
  const http = () => api(`/v1/group-buys/${id}/joins`, { method: 'POST', token, body, headers: { 'idempotency-key': key } });
  try {
    let joined;
    try {
      if (room?.status === 'live') joined = (await room.send('group_buy.join', { group_buy_id: id, idempotency_key: key, ...body })).joined;
      else joined = await http();
    } catch (e) {
      // The same key over HTTP answers the same join, never a second one.
      if (!RETRYABLE.has(e.code)) throw e;
      joined = await http();
    }
    myJoins.set(id, { ...myJoins.get(id), units: joined.units, invite_code: joined.invite_code });
    quantities.delete(id);
    joinResults.set(id, { kind: 'ok', text: `Joined! ${joined.participants} in the group now.` });
  } catch (e) {
    joinResults.set(id, { kind: 'bad', text: JOIN_ERRORS[e.code] || e.message });
  }
  busy.delete(id);
  renderGroupBuys();
}

/** Recomputes the draw here (WebCrypto SHA-256) from the published seed and entry list. */
async function verify(giveawayId) {
  verifications.set(giveawayId, 'running');
  renderGiveaways();
  try {
    const [published, list] = await Promise.all([
      api(`/v1/giveaways/${giveawayId}`, { token }),
      api(`/v1/giveaways/${giveawayId}/entries`, { token }),
    ]);
    // Hold the server to what the room announced before the reveal, when this page saw it.
    const seen = state.giveaways.get(giveawayId) || {};
    const giveaway = {
      ...published,
      seed_hash: seen.seed_hash || published.seed_hash,
      entries_hash: seen.entries_hash || published.entries_hash,
    };
    verifications.set(giveawayId, await verifyGiveaway(giveaway, list, entryOf(giveawayId), me));
  } catch (e) {
    verifications.set(giveawayId, { ok: false, checks: [{ label: 'the published draw could be read', ok: false, detail: e.message }] });
  }
  renderGiveaways();
}

document.addEventListener('submit', (e) => {
  const form = e.target.closest('form[data-action="max-bid"]');
  if (!form) return;
  e.preventDefault();
  const value = Math.round(Number(form.max.value) * 100);
  if (!(value > 0)) return;
  placeBid(form.dataset.id, { max_minor: value });
  form.max.value = '';
});

// Clicks are handled here, by `data-action`, so re-rendered cards never carry stale handlers.
document.addEventListener('click', (e) => {
  const target = e.target.closest('[data-action]');
  if (!target || target.disabled) return;
  const id = target.dataset.id;
  switch (target.dataset.action) {
    case 'fewer':
    case 'more':
      quantities.set(id, Math.max(1, (quantities.get(id) || 1) + (target.dataset.action === 'more' ? 1 : -1)));
      renderDeals();
      break;
    case 'buy': {
      const deal = state.deals.get(id);
      if (!deal) return;
      const remaining = Math.max(1, deal.remaining ?? deal.quantity);
      const quantity = Math.min(quantities.get(id) || 1, deal.per_buyer_cap, remaining);
      const offer = useCoupon.get(id) === false ? null : applicableClaim(deal, quantity);
      buy(deal, quantity, offer?.claim);
      break;
    }
    case 'claim': {
      const drop = state.coupons.get(id);
      if (drop) claim(drop);
      break;
    }
    case 'pay': {
      const order = orders.find((o) => o.order_id === id);
      if (order) pay(order);
      break;
    }
    case 'bid': {
      const a = state.auctions.get(id);
      if (a?.min_bid_minor) placeBid(id, { amount_minor: a.min_bid_minor });
      break;
    }
    case 'enter':
      enter(id);
      break;
    case 'gb-fewer':
    case 'gb-more':
      quantities.set(id, Math.max(1, (quantities.get(id) || 1) + (target.dataset.action === 'gb-more' ? 1 : -1)));
      renderGroupBuys();
      break;
    case 'join-group-buy': {
      const g = state.groupBuys.get(id);
      if (g) joinGroupBuy(id, Math.max(1, quantities.get(id) || 1));
      break;
    }
    case 'verify':
      verify(id);
      break;
    default:
      break;
  }
});

document.addEventListener('change', (e) => {
  const target = e.target.closest('[data-action="use-coupon"]');
  if (!target) return;
  useCoupon.set(target.dataset.id, target.checked);
  renderDeals();
});

$('#chat-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('#chat-input');
  const text = input.value.trim();
  if (!text || !room) return;
  try {
    await room.send('chat.send', { text });
    input.value = '';
  } catch (err) {
    const wait = Number((err.message.match(/(\d+) ms/) || [])[1]);
    const hints = {
      not_connected: 'Reconnecting — try again in a moment.',
      disconnected: 'The connection dropped; your message may not have been sent.',
      muted: mutedUntil > Date.now() ? `You are muted until ${timeOfDay(mutedUntil)}.` : 'You are muted.',
      slow_mode: `Slow mode: wait ${Math.ceil((wait || 1000) / 1000)} s before your next message.`,
      rate_limited: `Easy! Wait ${Math.ceil((wait || 1000) / 1000)} s before your next message.`,
      blocked_word: 'That message contains a word this room does not allow.',
      too_long: 'That message is too long (200 characters at most).',
    };
    toast(hints[err.code] || err.message, 'warn');
  }
});

let pendingLikes = 0;
let likeTimer = null;
$('#like').addEventListener('click', () => {
  const heart = h('span', { class: 'heart', text: '♥' });
  heart.style.left = `${Math.random() * 20}px`;
  $('#hearts').append(heart);
  setTimeout(() => heart.remove(), 1700);
  pendingLikes += 1;
  clearTimeout(likeTimer);
  likeTimer = setTimeout(() => {
    const count = Math.min(pendingLikes, 100);
    pendingLikes = 0;
    room?.send('like', { count }).catch(() => {});
  }, 300);
});

// ---------- waitlists of sold-out deals (docs/api.md, "Waitlists") ----------

const waitlists = new Map(); // deal_id -> {deal, count, place, busy, result}
const IN_LINE = new Set(['waiting', 'offered']);

/** Sold-out deals of the session whose time is not over, and the viewer's place on each. */
async function loadWaitlists() {
  try {
    const deals = await apiAll(`/v1/sessions/${sessionId}/deals`, { token });
    for (const deal of deals) {
      if (deal.end_reason === 'sold_out' && Date.parse(deal.ends_at) > Date.now()) trackWaitlist(deal);
    }
  } catch {
    /* the room's deal.ended adds them as they sell out */
  }
  renderWaitlists();
}

function trackWaitlist(deal) {
  if (!waitlists.has(deal.deal_id)) waitlists.set(deal.deal_id, { deal, count: null, place: null });
  refreshWaitlistPlace(deal.deal_id);
}

async function refreshWaitlistPlace(id) {
  const w = waitlists.get(id);
  if (!w) return;
  try {
    w.place = await api(`/v1/deals/${id}/waitlist`, { token });
    w.count = w.place.count;
  } catch {
    return; // the next notice or click tries again
  }
  renderWaitlists();
}

function onWaitlistEvent(event) {
  const d = event.data || {};
  if (event.type === 'deal.ended' && d.reason === 'sold_out') {
    const deal = state.deals.get(d.deal_id);
    if (deal) trackWaitlist(deal);
  } else if (event.type === 'deal.waitlist') {
    const w = waitlists.get(d.deal_id);
    if (w) {
      w.count = d.count;
      renderWaitlists();
    }
  }
}

/** A waitlist notice: refresh the place and say what happened. */
function onWaitlistNotice(notice) {
  const d = notice.data || {};
  refreshWaitlistPlace(d.deal_id);
  if (notice.kind === 'waitlist.offer') {
    const text = `Waitlist offer: ${d.units} × ${money(d.price_minor, d.currency)} held for you — buy before the countdown ends.`;
    toast(`★ ${text}`, 'ok', 7000);
    return text;
  }
  if (notice.kind === 'waitlist.offer_expired') {
    const text = d.reason === 'cap_reached' ? 'Your waitlist turn passed: you already hold the limit.' : 'Your waitlist offer expired and went to the next in line.';
    toast(text, 'warn');
    return text;
  }
  return 'The waitlist closed: the deal is over.';
}

function renderWaitlists() {
  const now = room ? room.now() : Date.now();
  const cards = [...waitlists.values()].filter((w) => Date.parse(w.deal.ends_at) > now || IN_LINE.has(w.place?.status));
  morphChildren($('#waitlists'), cards.map((w) => waitlistCard(w, now)));
}

function waitlistCard(w, now) {
  const { deal, place } = w;
  const item = [...lineup.values()].find((i) => i.lineup_item_id === deal.lineup_item_id);
  const name = item?.product_name || 'Sold-out deal';
  const offer = place?.status === 'offered' ? place.offer : null;
  let body;
  if (offer) {
    body = h('div', { class: 'stack', dataset: { testid: 'waitlist-offer' } },
      h('div', { text: `Your offer: ${offer.units} × ${money(offer.price_minor, offer.currency)}` }),
      countdown('span', 'countdown', offer.expires_at, 'held for you for ', 'passing on…', now),
      h('button', { class: 'primary big', type: 'button', disabled: !!w.busy, text: w.busy ? 'Buying…' : `Buy · ${money(offer.price_minor * offer.units, offer.currency)}`,
        dataset: { action: 'waitlist-buy', id: deal.deal_id, testid: 'waitlist-buy' } }));
  } else if (place && IN_LINE.has(place.status)) {
    body = h('div', { class: 'row between' },
      h('span', { text: `You are #${place.position} in line`, dataset: { testid: 'waitlist-position' } }),
      h('button', { class: 'small', type: 'button', disabled: !!w.busy, text: 'Leave', dataset: { action: 'waitlist-leave', id: deal.deal_id } }));
  } else {
    body = h('button', { class: 'primary', type: 'button', disabled: !!w.busy || Date.parse(deal.ends_at) <= now, text: 'Join waitlist',
      dataset: { action: 'waitlist-join', id: deal.deal_id, testid: 'waitlist-join' } });
  }
  return h('article', { class: 'card deal ended', dataset: { key: `waitlist-${deal.deal_id}`, testid: 'waitlist', dealId: deal.deal_id } },
    h('div', { class: 'row between' },
      h('b', { text: name }),
      h('span', { class: 'badge bad', text: 'Sold out' }),
      h('small', { text: w.count === null ? '' : `${w.count} waiting`, dataset: { testid: 'waitlist-count' } })),
    body,
    w.result ? h('div', { class: `notice ${w.result.kind}`, text: w.result.text, dataset: { testid: 'waitlist-result' } }) : null);
}

async function waitlistAction(id, action) {
  const w = waitlists.get(id);
  if (!w || w.busy) return;
  w.busy = true;
  w.result = null;
  renderWaitlists();
  try {
    if (action === 'waitlist-join' || action === 'waitlist-leave') {
      w.place = await api(`/v1/deals/${id}/waitlist`, { method: action === 'waitlist-join' ? 'POST' : 'DELETE', token });
      w.count = w.place.count;
    } else if (action === 'waitlist-buy' && w.place?.offer) {
      // One click, one key: a retry after a lost answer cannot buy twice.
      const key = uuid();
      const body = { quantity: w.place.offer.units };
      const order = room.status === 'live'
        ? (await room.send('deal.buy', { deal_id: id, idempotency_key: key, ...body }, 15_000)).order
        : await api(`/v1/deals/${id}/orders`, { method: 'POST', token, headers: { 'Idempotency-Key': key }, body });
      upsertOrder(order);
      w.result = { kind: 'ok', text: `Ordered ${order.quantity} for ${money(order.amount_minor, order.currency)} — pay within ${clock(Date.parse(order.expires_at) - Date.now())}.` };
      await refreshWaitlistPlace(id);
    }
  } catch (e) {
    w.result = { kind: 'bad', text: { not_sold_out: 'The deal is still on sale: buy it above.', deal_ended: 'This deal is over.', not_on_waitlist: 'You are not in line.' }[e.code] || ERRORS[e.code] || e.message };
  }
  w.busy = false;
  renderWaitlists();
}

document.addEventListener('click', (e) => {
  const target = e.target.closest('[data-action^="waitlist-"]');
  if (!target || target.disabled) return;
  waitlistAction(target.dataset.id, target.dataset.action);
});

main().catch((e) => fatal(`Something went wrong: ${e.message}`));
