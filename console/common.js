// hawker console: what the viewer, host and planner pages share — HTTP calls,
// tokens, the reconnecting room socket (docs/protocol.md) and the room's state.

// ---------- DOM and formatting ----------

export const $ = (selector, root = document) => root.querySelector(selector);

/** Builds an element. Text is always set as text (never parsed as HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'style') Object.assign(el.style, value);
    else if (key === 'dataset') {
      for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null) el.dataset[k] = v;
    }
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/**
 * Makes `target` look like `source` while keeping `target`'s nodes where the
 * structure matches, so a re-render never replaces a button under the
 * pointer. Children with `data-key` are matched by key. Event handlers stay
 * on the container (delegation, `data-action`), never on re-rendered nodes.
 */
export function morph(target, source) {
  if (target.nodeType !== source.nodeType || target.nodeName !== source.nodeName) {
    target.replaceWith(source);
    return source;
  }
  if (target.nodeType !== Node.ELEMENT_NODE) {
    if (target.nodeValue !== source.nodeValue) target.nodeValue = source.nodeValue;
    return target;
  }
  for (const { name } of [...target.attributes]) {
    if (name !== 'style' && !source.hasAttribute(name)) target.removeAttribute(name);
  }
  for (const { name, value } of [...source.attributes]) {
    if (name !== 'style' && target.getAttribute(name) !== value) target.setAttribute(name, value);
  }
  // Through the CSSOM: a content security policy may refuse style attributes.
  if (target.style.cssText !== source.style.cssText) target.style.cssText = source.style.cssText;
  if (target.nodeName === 'INPUT' && target.checked !== source.checked) target.checked = source.checked;
  if ('disabled' in target && target.disabled !== source.disabled) target.disabled = source.disabled;
  morphChildren(target, [...source.childNodes]);
  return target;
}

/** Replaces `parent`'s children with `children`, morphing the ones that match. */
export function morphChildren(parent, children) {
  children = children
    .flat()
    .filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
  const keyed = new Map();
  const unkeyed = [];
  for (const node of parent.childNodes) {
    if (node.dataset?.key) keyed.set(node.dataset.key, node);
    else unkeyed.push(node);
  }
  let next = 0;
  const result = children.map((child) => {
    const key = child.dataset?.key;
    const existing = key ? keyed.get(key) : unkeyed[next++];
    if (key) keyed.delete(key);
    return existing ? morph(existing, child) : child;
  });
  const keep = new Set(result);
  for (const node of [...parent.childNodes]) if (!keep.has(node)) node.remove();
  let ref = parent.firstChild;
  for (const node of result) {
    if (node === ref) ref = ref.nextSibling;
    else parent.insertBefore(node, ref);
  }
}

/** A countdown element (kept current by startCountdowns), with its text set now. */
export function countdown(tag, className, until, prefix, done, now) {
  const left = Date.parse(until) - now;
  return h(tag, {
    class: className,
    dataset: { until, prefix, done },
    text: left <= 0 && done ? done : prefix + clock(left),
  });
}

const formatters = new Map();
/** Integer minor units as money, e.g. 1999 USD → "$19.99". */
export function money(minor, currency = 'USD') {
  if (minor === null || minor === undefined) return '—';
  let f = formatters.get(currency);
  if (!f) {
    try {
      f = new Intl.NumberFormat(undefined, { style: 'currency', currency });
    } catch {
      f = { format: (v) => `${v.toFixed(2)} ${currency}` };
    }
    formatters.set(currency, f);
  }
  return f.format(minor / 100);
}

/** Milliseconds as "m:ss" or "h:mm:ss". */
export function clock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return hours ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

export const shortId = (id) => String(id || '').slice(-6);

export function timeOfDay(date) {
  return new Date(date).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
}

/** A random UUID (v4), also where `crypto.randomUUID` is missing (plain http on a LAN address). */
export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function randomHex(n) {
  return [...crypto.getRandomValues(new Uint8Array(n))].map((x) => x.toString(16).padStart(2, '0')).join('');
}

/** A short message at the bottom of the page. */
// A page that cannot work (no token, no session) says why in its #fatal box.
export function fatal(text) {
  const box = $('#fatal');
  box.textContent = text;
  box.classList.remove('hidden');
}

// Runs an action; a failure becomes a toast naming `what`, never an unhandled
// rejection. Answers undefined when it failed.
export async function attempt(what, fn) {
  try {
    return await fn();
  } catch (e) {
    toast(`${what}: ${e.message}`, 'bad', 7000);
    return undefined;
  }
}

export function toast(text, kind = 'info', ms = 4000) {
  let box = $('#toasts');
  if (!box) {
    box = h('div', { id: 'toasts', role: 'status', 'aria-live': 'polite' });
    Object.assign(box.style, {
      position: 'fixed', left: '50%', bottom: '16px', transform: 'translateX(-50%)', zIndex: 20,
      display: 'grid', gap: '6px', width: 'min(92vw, 420px)',
    });
    document.body.append(box);
  }
  const note = h('div', { class: `notice ${kind}`, text });
  note.style.boxShadow = 'var(--shadow)';
  box.append(note);
  setTimeout(() => note.remove(), ms);
}

// ---------- HTTP ----------

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the hawker API; resolves to the JSON body (the text with `asText`),
 * or throws an ApiError. `raw` sends a body as is, with `contentType`.
 */
export async function api(path, { method = 'GET', body, token, headers = {}, raw, contentType, asText = false } = {}) {
  const init = { method, headers: { ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (raw !== undefined) {
    // A body sent as is (a CSV or JSON-lines import).
    init.headers['Content-Type'] = contentType;
    init.body = raw;
  } else if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', 'the server could not be reached');
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error || 'http_' + response.status, data?.message || response.statusText);
  }
  return asText ? text : data;
}

/**
 * Every item of a paged list route (`{ items, next_cursor }`), walking the
 * cursor 100 at a time; at most `maxPages` pages.
 */
export async function apiAll(path, { token, maxPages = 50 } = {}) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const sep = path.includes('?') ? '&' : '?';
    const url = `${path}${sep}limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const data = await api(url, { token });
    items.push(...(data?.items || []));
    cursor = data?.next_cursor;
    if (!cursor) break;
  }
  return items;
}

// ---------- Tokens ----------

/** The claims of a JWT (not verified: the server does that). */
export function decodeClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

function fresh(token) {
  const claims = token && decodeClaims(token);
  return !!claims && claims.exp * 1000 > Date.now() + 60_000;
}

/** Whether this server has the development routes (HAWKER_ENV development or test). */
let devRoutes;
export async function devInfo() {
  if (devRoutes === undefined) {
    try {
      const env = await api('env.json');
      devRoutes = env.dev_routes ? await api('/v1/dev/demo') : null;
    } catch {
      devRoutes = null;
    }
  }
  return devRoutes;
}

/**
 * A token for `identity` ({user, role, agency_id?, brand_id?}): `?token=` in the URL,
 * else one pasted earlier for this page, else one minted by the development
 * route (cached in localStorage until it nearly expires). Null if none.
 */
export async function obtainToken(identity, page) {
  const fromUrl = new URLSearchParams(location.search).get('token');
  if (fromUrl) return fromUrl;
  const pasted = localStorage.getItem(`hawker.pasted.${page}`);
  if (fresh(pasted)) return pasted;
  const key = `hawker.token.${identity.role}.${identity.user}.${identity.agency_id || ''}.${identity.brand_id || ''}`;
  const cached = localStorage.getItem(key);
  if (fresh(cached)) return cached;
  if (!(await devInfo())) return null;
  const minted = await api('/v1/dev/token', { method: 'POST', body: identity });
  localStorage.setItem(key, minted.token);
  return minted.token;
}

/** Shows a box to paste a token (servers without the development routes). */
export function askForToken(container, page, hint) {
  const conn = $('#conn');
  if (conn) conn.textContent = 'not connected';
  const area = h('textarea', { class: 'token', placeholder: 'eyJ…' });
  fill(
    container,
    h(
      'div',
      { class: 'card stack' },
      h('h3', { text: 'A token is needed' }),
      h('p', { class: 'muted', text: hint }),
      area,
      h('div', { class: 'row' },
        h('button', {
          class: 'primary',
          text: 'Use this token',
          onclick: () => {
            localStorage.setItem(`hawker.pasted.${page}`, area.value.trim());
            location.reload();
          },
        })),
    ),
  );
}

/** Shows a box to type the session to open (no `?session=` and no demo data). */
export function askForSession(container, what) {
  const input = h('input', { placeholder: '00000000-0000-4000-8000-00000000d001', class: 'grow', 'aria-label': 'session id' });
  const form = h('form', { class: 'row' }, input, h('button', { class: 'primary', type: 'submit', text: 'Open' }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = new URLSearchParams(location.search);
    next.set('session', input.value.trim());
    location.search = next.toString();
  });
  fill(container, h('div', { class: 'card stack' },
    h('h3', { text: `Which session ${what}?` }),
    h('p', { class: 'muted', text: 'Paste its id (the planner links every session), or run `hawker seed` for the demo session.' }),
    form));
}

// ---------- The room socket ----------

export class RoomError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

/**
 * One session's room: connects, keeps the last `epoch:offset` it received,
 * and reconnects by itself (resuming from that position) as docs/protocol.md
 * describes. Events at or below the position are skipped as duplicates.
 *
 * Private notices (`notice` frames) go to onNotice, each id once; on
 * reconnect the last notice id is sent as `notices_after`.
 *
 * handlers: onSnapshot(state, kind, you), onResumed(frame), onEvent(event),
 * onNotice(notice), onStatus(status, detail), onFatal(message).
 */
export class Room {
  constructor(sessionId, token, handlers) {
    this.sessionId = sessionId;
    this.token = token;
    this.handlers = handlers;
    this.position = null;
    this.noticesSeen = new Set();
    this.lastNotice = null;
    this.pending = new Map();
    this.nextId = 1;
    this.backoff = 500;
    this.slowWithoutFrames = 0;
    this.status = 'idle';
    this.clockSkew = 0;
    this.socket = null;
    this.stopped = false;
    this.reconnects = 0;
    window.addEventListener('online', () => this.reconnectNow());
    window.addEventListener('offline', () => this.abandon(4000, 'offline'));
  }

  start() {
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abandon(1000, 'bye');
  }

  /** The server's clock, estimated from the ping round trip. */
  now() {
    return Date.now() + this.clockSkew;
  }

  setStatus(status, detail) {
    this.status = status;
    this.handlers.onStatus?.(status, detail);
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    if (!navigator.onLine) {
      this.setStatus('offline');
      return;
    }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = new URLSearchParams();
    if (this.position) query.set('resume', `${this.position.epoch}:${this.position.offset}`);
    if (this.lastNotice !== null) query.set('notices_after', String(this.lastNotice));
    const q = query.toString();
    const url = `${scheme}://${location.host}/v1/sessions/${this.sessionId}/ws${q ? '?' + q : ''}`;
    this.setStatus(this.reconnects ? 'reconnecting' : 'connecting');
    const ws = new WebSocket(url, ['hawker.v1', 'bearer.' + this.token]);
    const conn = { ws, opened: false, gotFrame: false };
    this.socket = conn;
    ws.onopen = () => {
      conn.opened = true;
    };
    ws.onmessage = (message) => {
      conn.gotFrame = true;
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      this.onFrame(frame);
    };
    ws.onerror = () => {};
    ws.onclose = (e) => this.onClose(conn, e.code, e.reason);
  }

  onFrame(frame) {
    switch (frame.type) {
      case 'welcome':
      case 'reset':
        this.position = { epoch: frame.epoch, offset: frame.offset };
        this.joined(frame);
        this.handlers.onSnapshot?.(frame.state || {}, frame.type, frame.you);
        break;
      case 'resumed':
        this.joined(frame);
        this.handlers.onResumed?.(frame);
        break;
      case 'notice':
        if (typeof frame.id !== 'number' || this.noticesSeen.has(frame.id)) return;
        this.noticesSeen.add(frame.id);
        this.lastNotice = Math.max(this.lastNotice ?? 0, frame.id);
        this.handlers.onNotice?.(frame);
        break;
      case 'ack':
      case 'error': {
        const request = frame.id !== null && frame.id !== undefined ? this.pending.get(frame.id) : null;
        if (request) {
          this.pending.delete(frame.id);
          clearTimeout(request.timer);
          if (frame.type === 'ack') request.resolve(frame.data ?? {});
          else request.reject(new RoomError(frame.code, frame.message));
        } else if (frame.code === 'banned') {
          this.banned = true;
        } else if (frame.type === 'error') {
          this.handlers.onError?.(frame);
        }
        break;
      }
      default: {
        if (typeof frame.offset !== 'number') return;
        const p = this.position;
        if (p && frame.epoch === p.epoch && frame.offset <= p.offset) return;
        this.position = { epoch: frame.epoch, offset: frame.offset };
        this.handlers.onEvent?.(frame);
      }
    }
  }

  joined(frame) {
    this.backoff = 500;
    this.slowWithoutFrames = 0;
    this.you = frame.you;
    this.setStatus('live', frame.type);
    this.startHeartbeat();
  }

  onClose(conn, code, reason) {
    if (conn !== this.socket) return;
    this.socket = null;
    this.stopHeartbeat();
    for (const request of this.pending.values()) {
      clearTimeout(request.timer);
      request.reject(new RoomError('disconnected', 'the connection dropped before the answer came'));
    }
    this.pending.clear();
    if (this.stopped) return;
    if (code === 4003 || this.banned) {
      this.setStatus('banned');
      this.handlers.onFatal?.('You have been removed from this room.');
      return;
    }
    this.reconnects += 1;
    let delay;
    if (code === 4008) {
      // Too slow: resume at once; twice in a row without a frame, start afresh.
      if (!conn.gotFrame && ++this.slowWithoutFrames >= 2) {
        this.position = null;
        this.slowWithoutFrames = 0;
      }
      delay = 0;
    } else if (code === 1001 || code === 4000) {
      delay = 100;
    } else {
      delay = this.backoff / 2 + Math.random() * (this.backoff / 2);
      this.backoff = Math.min(this.backoff * 2, 30_000);
    }
    if (!conn.opened && code !== 4000 && navigator.onLine) this.checkRefusal();
    this.setStatus(navigator.onLine ? 'reconnecting' : 'offline', { code, reason, delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** A handshake that failed may be final (the session ended or is gone). */
  async checkRefusal() {
    try {
      const session = await api(`/v1/sessions/${this.sessionId}`, { token: this.token });
      if (session.status === 'ended' || session.status === 'cancelled') {
        this.stop();
        this.setStatus('ended');
        this.handlers.onFatal?.(`The session has ${session.status === 'ended' ? 'ended' : 'been cancelled'}.`);
      }
    } catch (e) {
      if (e.status === 404 || e.status === 401) {
        this.stop();
        this.setStatus('down');
        this.handlers.onFatal?.(e.status === 404 ? 'No such session.' : 'The token was refused; reload the page.');
      }
    }
  }

  /** Drops the socket now without waiting for the close handshake; reconnects unless offline. */
  abandon(code, reason) {
    const conn = this.socket;
    if (!conn) return;
    conn.ws.onclose = null;
    conn.ws.onmessage = null;
    try {
      conn.ws.close(code, reason);
    } catch {
      /* already closed */
    }
    this.onClose(conn, code, reason);
  }

  reconnectNow() {
    if (this.stopped || this.socket) return;
    this.connect();
  }

  /** Sends a command; resolves to the ack's data or rejects with a RoomError. */
  send(type, data, timeoutMs = 10_000) {
    const conn = this.socket;
    if (!conn || conn.ws.readyState !== WebSocket.OPEN || this.status !== 'live') {
      return Promise.reject(new RoomError('not_connected', 'not connected to the room'));
    }
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RoomError('timeout', 'no answer from the room'));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      conn.ws.send(JSON.stringify(data === undefined ? { id, type } : { id, type, data }));
    });
  }

  /** Resolves once the room is live again (or after `ms`). */
  whenLive(ms = 15_000) {
    if (this.status === 'live') return Promise.resolve(true);
    return new Promise((resolve) => {
      const started = Date.now();
      const tick = setInterval(() => {
        if (this.status === 'live' || Date.now() - started > ms) {
          clearInterval(tick);
          resolve(this.status === 'live');
        }
      }, 100);
    });
  }

  // A dead connection (a phone that lost its network) can look open for a
  // long time: an application ping every 15 s that is not answered in 5 s
  // drops the socket and resumes on a new one. The answer also gives the clock skew.
  startHeartbeat() {
    this.stopHeartbeat();
    const beat = async () => {
      const sent = Date.now();
      try {
        const ack = await this.send('ping', undefined, 5_000);
        const received = Date.now();
        if (typeof ack.pong === 'number') this.clockSkew = ack.pong - (sent + received) / 2;
      } catch (e) {
        if (e.code === 'timeout') this.abandon(4000, 'heartbeat');
      }
    };
    beat();
    this.heartbeat = setInterval(beat, 15_000);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeat);
  }
}

// ---------- The room's state ----------

/**
 * What the room shows, rebuilt from a `welcome`/`reset` snapshot and kept
 * current by applying events: the pinned item, the announcement, running
 * deals with their stock, coupon drops with their remaining count, slow
 * mode and the totals.
 */
export class RoomState {
  constructor() {
    this.reset({});
  }

  reset(state) {
    // Finished auctions and giveaways are not in the snapshot: keep the ones
    // already known (the pages also reload them over HTTP after a snapshot).
    const finished = (map, done) => new Map([...(map || new Map())].filter(([, v]) => done.includes(v.status)));
    this.auctions = finished(this.auctions, ['ended', 'voided']);
    this.giveaways = finished(this.giveaways, ['drawn', 'voided']);
    this.groupBuys = finished(this.groupBuys, ['succeeded', 'failed', 'cancelled']);
    this.pinned = state.pinned || null;
    this.announcement = state.announcement || null;
    this.slowMode = state.slow_mode || 0;
    this.likes = state.likes || 0;
    this.viewers = state.viewers || 0;
    this.deals = new Map();
    this.coupons = new Map();
    const entries = Object.entries(state);
    for (const [key, value] of entries) {
      const [kind, id, extra] = key.split(':');
      if (extra || !value || typeof value !== 'object') continue;
      if (kind === 'deal') this.deals.set(id, { ...value });
      if (kind === 'coupon') this.coupons.set(id, { ...value });
      if (kind === 'auction') this.auctions.set(id, { ...value });
      if (kind === 'giveaway') this.giveaways.set(id, { ...value, count: value.entry_count ?? 0 });
      if (kind === 'group_buy') this.groupBuys.set(id, { ...value });
    }
    for (const [key, value] of entries) {
      const [kind, id, extra] = key.split(':');
      if (!value || typeof value.remaining !== 'number') continue;
      if (kind === 'deal' && extra === 'stock' && this.deals.has(id)) this.deals.get(id).remaining = value.remaining;
      if (kind === 'coupon' && extra === 'remaining' && this.coupons.has(id)) this.coupons.get(id).remaining = value.remaining;
    }
    for (const [key, value] of entries) {
      const [kind, id, extra] = key.split(':');
      const giveaway = kind === 'giveaway' && extra === 'entries' ? this.giveaways.get(id) : null;
      if (giveaway && typeof value?.count === 'number') giveaway.count = Math.max(giveaway.count || 0, value.count);
    }
  }

  /**
   * Merges auctions read over HTTP (`GET /v1/sessions/{id}/auctions`) with
   * what the room said: the room's view wins unless HTTP knows a later stage
   * (an auction that ended while this page was away).
   */
  mergeAuctions(items) {
    for (const a of items) {
      const known = this.auctions.get(a.auction_id);
      const http = { ...a, bids: a.bid_seq, version: a.bid_seq, winner_name: a.outcome === 'sold' ? a.leader_name : null };
      // A running auction: the room is more current (HTTP fills what it lacks, e.g. the reserve).
      // A finished one: HTTP is final and has more (the host side sees the winner and the order).
      if (known && a.status === 'running') this.auctions.set(a.auction_id, { ...http, ...known });
      else this.auctions.set(a.auction_id, { ...known, ...http });
    }
  }

  /** As mergeAuctions, for `GET /v1/sessions/{id}/giveaways`. */
  mergeGiveaways(items) {
    const rank = { open: 0, closed: 1, drawn: 2, voided: 2 };
    for (const g of items) {
      const known = this.giveaways.get(g.giveaway_id);
      const http = { ...g, count: Math.max(known?.count || 0, g.entry_count || 0) };
      if (known && (rank[known.status] ?? 0) >= (rank[g.status] ?? 0)) this.giveaways.set(g.giveaway_id, { ...http, ...known, count: http.count });
      else this.giveaways.set(g.giveaway_id, { ...known, ...http });
    }
  }

  /** As mergeAuctions, for `GET /v1/sessions/{id}/group-buys`: the newer `version` wins, and a finished one is final. */
  mergeGroupBuys(items) {
    for (const g of items) {
      const known = this.groupBuys.get(g.group_buy_id);
      if (known && g.status === 'running' && (known.version ?? -1) >= (g.version ?? 0)) this.groupBuys.set(g.group_buy_id, { ...g, ...known });
      else this.groupBuys.set(g.group_buy_id, { ...known, ...g });
    }
  }

  /** Applies one room event; returns what it changed ('deal', 'coupon', 'pinned', ...) or null. */
  apply(event) {
    const d = event.data || {};
    switch (event.type) {
      case 'host.pinned':
        this.pinned = d.item;
        return 'pinned';
      case 'host.unpinned':
        this.pinned = null;
        return 'pinned';
      case 'host.announcement':
        this.announcement = { text: d.text, at: event.ts };
        return 'announcement';
      case 'likes':
        this.likes = d.total;
        return 'likes';
      case 'viewers':
        this.viewers = d.count;
        return 'viewers';
      case 'moderation.slow_mode':
        this.slowMode = d.seconds;
        return 'slow_mode';
      case 'deal.scheduled':
      case 'deal.started': {
        const old = this.deals.get(d.deal_id);
        const deal = { ...d };
        // A stock figure already applied is newer than the view's count.
        if (old && typeof old.remaining === 'number') deal.remaining = Math.min(old.remaining, d.remaining);
        this.deals.set(d.deal_id, deal);
        return 'deal';
      }
      case 'deal.stock': {
        const deal = this.deals.get(d.deal_id);
        if (deal) deal.remaining = d.remaining;
        return 'deal';
      }
      case 'deal.ended': {
        const deal = this.deals.get(d.deal_id);
        if (deal) {
          deal.status = 'ended';
          deal.end_reason = d.reason;
          if (d.reason === 'sold_out') deal.remaining = 0;
        }
        return 'deal';
      }
      case 'coupon.scheduled':
      case 'coupon.dropped': {
        const old = this.coupons.get(d.coupon_drop_id);
        const drop = { ...d };
        if (old && typeof old.remaining === 'number') drop.remaining = Math.min(old.remaining, d.remaining);
        this.coupons.set(d.coupon_drop_id, drop);
        return 'coupon';
      }
      case 'coupon.remaining':
      case 'coupon.exhausted': {
        const drop = this.coupons.get(d.coupon_drop_id);
        if (drop) drop.remaining = d.remaining;
        return 'coupon';
      }
      case 'coupon.ended': {
        const drop = this.coupons.get(d.coupon_drop_id);
        if (drop) drop.status = 'ended';
        return 'coupon';
      }
      case 'auction.started':
      case 'auction.bid': {
        const old = this.auctions.get(d.auction_id);
        // Versioned by the bid count: an older view never replaces a newer one.
        if (old && (old.status !== 'running' || (old.version ?? -1) > (d.version ?? 0))) return 'auction';
        this.auctions.set(d.auction_id, { ...old, ...d });
        return 'auction';
      }
      case 'auction.extended': {
        const a = this.auctions.get(d.auction_id);
        if (a && a.status === 'running' && (d.version ?? 0) >= (a.version ?? 0)) {
          a.ends_at = d.ends_at;
          a.extended = (a.extended || 0) + 1;
        }
        return 'auction';
      }
      case 'auction.ended': {
        const a = this.auctions.get(d.auction_id) || { auction_id: d.auction_id };
        this.auctions.set(d.auction_id, {
          ...a, ...d, status: 'ended', min_bid_minor: null, bid_seq: d.bids, ended_at: event.ts ?? a.ended_at,
          leader_name: d.winner_name ?? a.leader_name, from_http: false,
        });
        return 'auction';
      }
      case 'auction.voided': {
        const a = this.auctions.get(d.auction_id) || { auction_id: d.auction_id };
        this.auctions.set(d.auction_id, { ...a, status: 'voided', void_reason: d.reason, min_bid_minor: null, from_http: false });
        return 'auction';
      }
      case 'giveaway.started': {
        const old = this.giveaways.get(d.giveaway_id);
        this.giveaways.set(d.giveaway_id, { ...d, ...(old && old.status !== 'open' ? old : {}), count: old?.count || 0 });
        return 'giveaway';
      }
      case 'giveaway.entries': {
        const g = this.giveaways.get(d.giveaway_id);
        if (g && typeof d.count === 'number') g.count = Math.max(g.count || 0, d.count);
        return 'giveaway';
      }
      case 'giveaway.closed': {
        const g = this.giveaways.get(d.giveaway_id) || { giveaway_id: d.giveaway_id };
        this.giveaways.set(d.giveaway_id, {
          ...g, ...d, status: g.status === 'drawn' || g.status === 'voided' ? g.status : 'closed',
          count: d.entry_count,
        });
        return 'giveaway';
      }
      case 'giveaway.drawn': {
        const g = this.giveaways.get(d.giveaway_id) || { giveaway_id: d.giveaway_id };
        // `winners` in the event is the list of winning entry ids; in the view it is how many.
        const { winners, absent, ...rest } = d;
        this.giveaways.set(d.giveaway_id, {
          ...g, ...rest, status: 'drawn', count: d.entry_count, winner_entries: winners, absent_entries: absent,
          drawn_at: event.ts ?? g.drawn_at,
        });
        return 'giveaway';
      }
      case 'group_buy.started':
      case 'group_buy.progress': {
        const old = this.groupBuys.get(d.group_buy_id);
        // Never backwards: an older view (from a slower node) or one after the end is ignored.
        if (old && (old.status !== 'running' || (old.version ?? -1) > (d.version ?? 0))) return 'group_buy';
        this.groupBuys.set(d.group_buy_id, { ...old, ...d });
        return 'group_buy';
      }
      case 'group_buy.ended': {
        const old = this.groupBuys.get(d.group_buy_id) || {};
        this.groupBuys.set(d.group_buy_id, { ...old, ...d, status: d.outcome || d.status, cancel_reason: d.reason ?? old.cancel_reason });
        return 'group_buy';
      }
      case 'giveaway.voided': {
        const g = this.giveaways.get(d.giveaway_id) || { giveaway_id: d.giveaway_id };
        this.giveaways.set(d.giveaway_id, { ...g, status: 'voided', void_reason: d.reason, seed: d.seed });
        return 'giveaway';
      }
      default:
        return null;
    }
  }

  /** Deals to show: running and scheduled first, then ended ones still known. */
  dealList() {
    const rank = { live: 0, scheduled: 1, ended: 2 };
    return [...this.deals.values()].sort(
      (a, b) => (rank[a.status] ?? 3) - (rank[b.status] ?? 3) || String(a.starts_at).localeCompare(String(b.starts_at)),
    );
  }

  couponList() {
    return [...this.coupons.values()].filter((c) => c.status !== 'ended');
  }

  /** Auctions: running first (soonest end first), then finished, newest first. */
  auctionList() {
    return [...this.auctions.values()].sort((a, b) => (a.status === 'running' ? 0 : 1) - (b.status === 'running' ? 0 : 1)
      || (a.status === 'running' ? String(a.ends_at).localeCompare(String(b.ends_at)) : String(b.auction_id).localeCompare(String(a.auction_id))));
  }

  /** Group buys: running first (soonest end first), then finished, newest first. */
  groupBuyList() {
    return [...this.groupBuys.values()].sort((a, b) => (a.status === 'running' ? 0 : 1) - (b.status === 'running' ? 0 : 1)
      || (a.status === 'running' ? String(a.ends_at).localeCompare(String(b.ends_at)) : String(b.group_buy_id).localeCompare(String(a.group_buy_id))));
  }

  /** Giveaways: open and closed first, then drawn or voided, newest first. */
  giveawayList() {
    const rank = { open: 0, closed: 1, drawn: 2, voided: 2 };
    return [...this.giveaways.values()].sort((a, b) => (rank[a.status] ?? 3) - (rank[b.status] ?? 3)
      || String(b.giveaway_id).localeCompare(String(a.giveaway_id)));
  }
}

/** A coupon's discount as text: "20% off", "$5.00 off". */
export function discountText(drop) {
  const what = drop.discount_kind === 'percent' ? `${drop.discount_value}% off` : `${money(drop.discount_value, drop.currency || 'USD')} off`;
  return drop.min_spend_minor ? `${what} over ${money(drop.min_spend_minor, drop.currency || 'USD')}` : what;
}

/** The local UTC offset as "+HH:MM". */
export function localOffset(date = new Date()) {
  const minutes = -date.getTimezoneOffset();
  const sign = minutes >= 0 ? '+' : '-';
  const abs = Math.abs(minutes);
  return `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}

/** Updates every `[data-until]` element to the time left (server clock). */
export function startCountdowns(now) {
  const tick = () => {
    for (const el of document.querySelectorAll('[data-until]')) {
      const left = Date.parse(el.dataset.until) - now();
      el.textContent = (el.dataset.prefix || '') + clock(left);
      if (left <= 0 && el.dataset.done) el.textContent = el.dataset.done;
    }
  };
  tick();
  return setInterval(tick, 250);
}

/** Identicon-ish initials for a product swatch. */
export function initials(name) {
  return String(name || '?')
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0].toUpperCase())
    .join('');
}

// ---------- The viewer's identity across pages ----------

/**
 * The viewer this tab acts as: `?user=`, else the one this tab used before,
 * else a new random one (kept for the tab, like the viewer page does).
 */
export function viewerName() {
  const name = new URLSearchParams(location.search).get('user') || sessionStorage.getItem('hawker.viewer') || `viewer-${randomHex(3)}`;
  sessionStorage.setItem('hawker.viewer', name);
  return name;
}

/**
 * Signs the viewer in: a demo token for `viewerName()`, or a pasted one (which
 * names its own user). Null when the page asked for a token instead.
 */
export async function viewerSignIn() {
  const name = viewerName();
  const token = await obtainToken({ user: name, role: 'viewer' }, 'viewer');
  if (!token) {
    askForToken($('#app'), 'viewer', 'This server does not mint demo tokens (production). Paste a viewer token, or open the page with ?token=….');
    return null;
  }
  return { token, me: decodeClaims(token)?.sub || name };
}

/** A link to another viewer page that keeps `?user=` (and `?token=`) when this page has them. */
export function viewerHref(page, query = {}) {
  const here = new URLSearchParams(location.search);
  const next = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value !== undefined && value !== null && value !== '') next.set(key, value);
  for (const key of ['user', 'token']) if (here.get(key)) next.set(key, here.get(key));
  const q = next.toString();
  return q ? `${page}?${q}` : page;
}

/** A date and time, short: "Dec 2, 18:00". */
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })}, ${timeOfDay(d)}`;
}

// ---------- Group buys ----------

/**
 * A group buy's tiers as a ladder: each tier with whether it is unlocked
 * (the group reached its `min_participants`) and whether it is the one in
 * force; and how far the group is to the next tier (0 to 1).
 */
export function groupBuyLadder(g) {
  const tiers = g.tiers || [];
  const n = g.participants || 0;
  const current = tiers.reduce((at, t, i) => (t.min_participants <= n ? i : at), 0);
  const next = tiers[current + 1];
  const from = tiers[current]?.min_participants || 0;
  const progress = next ? Math.max(0, Math.min(1, (n - from) / (next.min_participants - from))) : 1;
  return {
    rows: tiers.map((t, i) => ({ ...t, unlocked: t.min_participants <= n, current: i === current })),
    next,
    progress,
  };
}

/** Parses "1:3000, 10:2500, 50:2000" (participants:price in minor units) into tiers. */
export function parseTiers(text) {
  const tiers = String(text || '').split(',').map((part) => part.trim()).filter(Boolean).map((part) => {
    const m = /^(\d+)\s*:\s*(\d+)$/.exec(part);
    if (!m) throw new Error(`"${part}" is not participants:price`);
    return { min_participants: Number(m[1]), price_minor: Number(m[2]) };
  });
  if (!tiers.length) throw new Error('at least one tier');
  return tiers;
}

// ---------- Giveaway draws: recomputed in the browser ----------

/** Hex of bytes. */
export function toHex(bytes) {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** Bytes of a hex string (null when it is not hex of whole bytes). */
export function fromHex(hex) {
  if (typeof hex !== 'string' || hex.length % 2 || /[^0-9a-f]/i.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i += 1) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Whether this page can hash with WebCrypto (only in a secure context: https, or localhost). */
export const canHash = () => !!globalThis.crypto?.subtle;

/** SHA-256 of bytes or of a string's UTF-8, with WebCrypto. */
export async function sha256(data) {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

/**
 * The auction pseudonym the server shows for a bidder without a display name
 * (`bidder-` and 12 hex digits of sha256("<auction_id>:<user>")), so the page
 * can tell "you lead" from the room's `leader_name`.
 */
export async function bidderPseudonym(auctionId, user) {
  if (!canHash()) return null;
  return `bidder-${toHex(await sha256(`${auctionId}:${user}`)).slice(0, 12)}`;
}

/**
 * The draw of docs/protocol.md ("Giveaway draws"), step by step: the seed's
 * hash, the frozen list's hash, then candidates
 * `sha256(seed ‖ list_hash ‖ u32be(i))` read as a big-endian u64 with
 * rejection sampling, passing over entries already taken, recording absent
 * ones (must be present to win). Returns the winning and absent entry ids.
 */
export async function computeDraw(seedBytes, sortedIds, winners, absentIds = []) {
  const listHash = await sha256(sortedIds.map((id) => `${id}\n`).join(''));
  const n = sortedIds.length;
  const result = { listHash: toHex(listHash), winners: [], absent: [], candidates: 0 };
  if (!n || !winners) return result;
  const absent = new Set(absentIds);
  const N = BigInt(n);
  const MAX = (1n << 64n) - 1n;
  const zone = MAX - ((MAX % N) + 1n) % N; // accept x ≤ zone: zone + 1 is a multiple of n
  const input = new Uint8Array(68);
  input.set(seedBytes, 0);
  input.set(listHash, 32);
  const view = new DataView(input.buffer);
  const taken = new Set();
  for (let i = 0; i <= 0xffffffff && result.winners.length < winners && taken.size < n; i += 1) {
    view.setUint32(64, i, false);
    const h = await sha256(input);
    const x = new DataView(h.buffer).getBigUint64(0, false);
    if (x > zone) continue;
    const index = Number(x % N);
    if (taken.has(index)) continue;
    taken.add(index);
    result.candidates += 1;
    const id = sortedIds[index];
    if (absent.has(id)) result.absent.push(id);
    else result.winners.push(id);
  }
  return result;
}

/**
 * An entrant's entry id (docs/protocol.md, "Giveaway draws"): the first 16
 * bytes of sha256("hawker-entry-v1" ‖ seed ‖ giveaway id's 16 bytes ‖ user),
 * as 32 hex digits. Checkable once the seed is revealed.
 */
export async function entryIdFor(seedBytes, giveawayId, user) {
  const domain = new TextEncoder().encode('hawker-entry-v1');
  const gid = fromHex(giveawayId.replaceAll('-', ''));
  const who = new TextEncoder().encode(user);
  const input = new Uint8Array(domain.length + 32 + 16 + who.length);
  input.set(domain, 0);
  input.set(seedBytes, domain.length);
  input.set(gid, domain.length + 32);
  input.set(who, domain.length + 48);
  return toHex(await sha256(input)).slice(0, 32);
}

/**
 * Verifies a drawn giveaway against its published entry list
 * (`GET /v1/giveaways/{id}/entries`): the revealed seed matches the
 * commitment shown at the start, the list matches the hash and count
 * announced when entries closed, and the draw recomputed here gives the
 * published winners (and absentees). `mine` is this viewer's entry id, if
 * any, and `user` their subject: the id must be the one the seed gives them.
 * Answers `{ ok, checks: [{ label, ok, detail }] }`.
 */
export async function verifyGiveaway(giveaway, list, mine, user) {
  const checks = [];
  const add = (label, ok, detail = '') => checks.push({ label, ok: !!ok, detail });
  if (!canHash()) {
    add('WebCrypto is available', false, 'SHA-256 in the browser needs a secure context (https, or localhost)');
    return { ok: false, checks };
  }
  const seed = fromHex(giveaway.seed);
  if (!seed || seed.length !== 32) {
    add('the seed is 32 bytes', false, String(giveaway.seed));
    return { ok: false, checks };
  }
  const seedHash = toHex(await sha256(seed));
  add('sha256(seed) is the commitment shown at the start', seedHash === giveaway.seed_hash, seedHash);
  const ids = [...list.entries];
  const sorted = [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const unique = new Set(ids).size === ids.length;
  add('the list is sorted, each entry once', unique && sorted.every((id, i) => id === ids[i]), `${ids.length} entries`);
  add('the count is the one announced at close', ids.length === giveaway.entry_count && ids.length === list.entry_count,
    `${ids.length} (announced ${giveaway.entry_count})`);
  if (mine) add('your entry is in the list', ids.includes(mine), mine);
  if (mine && user && giveaway.giveaway_id) {
    const derived = await entryIdFor(seed, giveaway.giveaway_id, user);
    add('your entry id is the one the seed gives you', derived === mine, derived);
  }
  const draw = await computeDraw(seed, sorted, giveaway.winners, giveaway.absent_entries || []);
  add('the list’s hash is the one announced at close', draw.listHash === giveaway.entries_hash && draw.listHash === list.entries_hash, draw.listHash);
  const same = (a, b) => JSON.stringify(a || []) === JSON.stringify(b || []);
  add('the recomputed winners are the published ones', same(draw.winners, giveaway.winner_entries), draw.winners.join(', ') || 'none');
  add('the recomputed absentees are the published ones', same(draw.absent, giveaway.absent_entries), draw.absent.join(', ') || 'none');
  return { ok: checks.every((c) => c.ok), checks, draw };
}

/** The `hawker verify-draw` command that recomputes a drawn giveaway offline. */
export function verifyDrawCommand(g) {
  const absent = g.absent_entries?.length ? ` --absent ${g.absent_entries.join(',')}` : '';
  return `hawker verify-draw --seed ${g.seed} --entries entries.json --winners ${g.winners}${absent}`;
}
