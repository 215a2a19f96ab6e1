// Giveaway panels (docs/console.md, "Giveaways"): the host starts and voids
// giveaways; viewers enter, watch the count, check their entry in the frozen
// list and see the draw's proof (seed, list hash, winners) with the command
// that recomputes it (docs/protocol.md, "Giveaway draws").
import { h, morphChildren, api, toast, attempt, shortId, timeOfDay } from './common.js';

export class Giveaways {
  /** `box`: the list's element; `role`: 'host' or 'viewer'. */
  constructor({ box, role, token, me }) {
    this.box = box;
    this.role = role;
    this.token = token;
    this.me = me;
    this.items = new Map(); // giveaway_id -> {view, count, entry, drawn, voided, listed}
    this.render();
  }

  item(id) {
    if (!this.items.has(id)) this.items.set(id, { view: { giveaway_id: id }, count: 0 });
    return this.items.get(id);
  }

  /** The room's snapshot state (`giveaway:<id>`, `giveaway:<id>:entries`). */
  fromSnapshot(stateObject) {
    for (const [key, value] of Object.entries(stateObject || {})) {
      const m = /^giveaway:([0-9a-f-]{36})(:entries)?$/.exec(key);
      if (!m) continue;
      const g = this.item(m[1]);
      if (m[2]) g.count = value.count ?? g.count;
      else g.view = { ...g.view, ...value };
    }
    this.render();
  }

  /** A room event; true if it was a giveaway's. */
  onEvent(event) {
    const d = event.data || {};
    if (!event.type?.startsWith('giveaway.') || !d.giveaway_id) return false;
    const g = this.item(d.giveaway_id);
    switch (event.type) {
      case 'giveaway.started':
        g.view = { ...g.view, ...d };
        if (this.role === 'viewer') toast('🎁 A giveaway started: enter now!', 'info', 2500);
        break;
      case 'giveaway.entries':
        g.count = Math.max(g.count, d.count);
        break;
      case 'giveaway.closed':
        g.view = { ...g.view, status: 'closed', entry_count: d.entry_count, entries_hash: d.entries_hash };
        g.count = d.entry_count;
        break;
      case 'giveaway.drawn':
        g.view = { ...g.view, status: 'drawn' };
        g.drawn = d;
        if (g.entry && d.winners.includes(g.entry.entry_id)) toast('🎉 You won the giveaway!', 'ok', 6000);
        break;
      case 'giveaway.voided':
        g.view = { ...g.view, status: 'voided' };
        g.voided = d;
        break;
      default:
        break;
    }
    this.render();
    return true;
  }

  /** The host's list on load (the room's snapshot drops drawn ones). */
  async load(sessionId) {
    const page = await api(`/v1/sessions/${sessionId}/giveaways?limit=100`, { token: this.token }).catch(() => null);
    for (const g of page?.items || []) {
      const item = this.item(g.giveaway_id);
      item.view = { ...item.view, ...g };
      if (g.entry_count != null) item.count = g.entry_count;
      if (g.status === 'drawn') {
        item.drawn = { seed: g.seed, winners: g.winner_entries || [], absent: g.absent_entries || [],
          entries_hash: g.entries_hash, entry_count: g.entry_count };
      }
      if (g.status === 'voided') item.voided = { reason: g.void_reason };
    }
    this.render();
  }

  async enter(id) {
    const entry = await attempt('The entry was refused', () =>
      api(`/v1/giveaways/${id}/entries`, { method: 'POST', token: this.token }));
    if (!entry) return;
    this.item(id).entry = entry;
    toast(entry.replayed ? 'You had already entered.' : '🎁 You are in!', 'ok', 2500);
    this.render();
  }

  async checkList(id) {
    const list = await attempt('The entry list is not published yet', () =>
      api(`/v1/giveaways/${id}/entries`, { token: this.token }));
    if (!list) return;
    const g = this.item(id);
    g.listed = { count: list.entry_count, hash: list.entries_hash,
      mine: g.entry ? list.entries.includes(g.entry.entry_id) : null };
    this.render();
  }

  async voidIt(id) {
    const reason = window.prompt('Why is the giveaway called off? (the room sees this)');
    if (!reason) return;
    await attempt('The giveaway could not be voided', () =>
      api(`/v1/giveaways/${id}/void`, { method: 'POST', token: this.token, body: { reason } }));
  }

  render() {
    const list = [...this.items.values()].filter((g) => g.view.status).reverse();
    if (!list.length) {
      morphChildren(this.box, [h('li', { class: 'empty', text: 'No giveaway running.' })]);
      return;
    }
    morphChildren(this.box, list.map((g) => this.card(g)));
  }

  card(g) {
    const v = g.view;
    const id = v.giveaway_id;
    const prize = v.prize_kind === 'coupon' ? 'a coupon' : 'the item';
    const rows = [
      h('div', { class: 'row between' },
        h('b', { text: `🎁 ${v.winners ?? '?'} × ${prize}` }),
        h('span', { class: `badge ${v.status === 'open' ? 'live' : v.status === 'voided' ? 'bad' : 'warn'}`, text: v.status })),
      h('small', { class: 'muted', text: `${g.count} entered · ${v.eligibility === 'buyers' ? 'buyers only' : 'anyone in the room'}${v.must_be_present ? ' · must be present' : ''}${v.closes_at ? ` · closes ${timeOfDay(v.closes_at)}` : ''}` }),
      h('small', { class: 'mono', text: `seed hash ${v.seed_hash ?? ''}` }),
    ];
    if (this.role === 'viewer' && v.status === 'open' && !g.entry) {
      rows.push(h('button', { class: 'primary', type: 'button', text: 'Enter', dataset: { action: 'giveaway-enter', id, testid: 'giveaway-enter' } }));
    }
    if (g.entry) rows.push(h('small', { text: `Your entry: ${g.entry.entry_id}`, dataset: { testid: 'giveaway-entry' } }));
    if (this.role === 'host' && (v.status === 'open' || v.status === 'closed')) {
      rows.push(h('button', { class: 'small', type: 'button', text: 'Void…', dataset: { action: 'giveaway-void', id, testid: 'giveaway-void' } }));
    }
    if (v.entries_hash) {
      rows.push(h('small', { class: 'mono', text: `entry list: ${v.entry_count} entries, hash ${v.entries_hash}` }));
      rows.push(h('button', { class: 'small', type: 'button', text: 'Check the entry list', dataset: { action: 'giveaway-list', id } }));
    }
    if (g.listed) {
      rows.push(h('small', { text: g.listed.mine === null
        ? `The list holds ${g.listed.count} entries (hash ${shortId(g.listed.hash)}).`
        : g.listed.mine ? `✓ Your entry is in the list of ${g.listed.count}.` : '✗ Your entry is not in the list!' }));
    }
    if (g.drawn) {
      const won = g.entry && g.drawn.winners.includes(g.entry.entry_id);
      rows.push(h('div', { class: 'stack', dataset: { testid: 'giveaway-proof' } },
        h('b', { text: won ? '🎉 You won!' : 'Winners (entry ids):' }),
        ...g.drawn.winners.map((w) => h('small', { class: 'mono', text: w })),
        g.drawn.absent?.length ? h('small', { text: `skipped as absent: ${g.drawn.absent.join(', ')}` }) : '',
        h('small', { class: 'mono', text: `seed ${g.drawn.seed}` }),
        h('small', { class: 'muted', text: `Check it: save GET /v1/giveaways/${id}/entries as entries.json, then hawker verify-draw --seed ${g.drawn.seed} --entries entries.json --winners ${v.winners ?? g.drawn.winners.length}${g.drawn.absent?.length ? ` --absent ${g.drawn.absent.join(',')}` : ''}` })));
    }
    if (g.voided) rows.push(h('small', { class: 'bad', text: `Voided: ${g.voided.reason}` }));
    return h('li', { class: 'card tight', dataset: { key: id, testid: 'giveaway', status: v.status } }, ...rows);
  }

  /** Handles the panel's buttons (call from a click listener on `box`). */
  onClick(e) {
    const button = e.target.closest('button[data-action]');
    if (!button) return;
    const { action, id } = button.dataset;
    if (action === 'giveaway-enter') this.enter(id);
    if (action === 'giveaway-list') this.checkList(id);
    if (action === 'giveaway-void') this.voidIt(id);
  }
}

/** The host's start form: `form` has fields item, winners, window, eligibility, present. */
export function wireStartForm(form, { sessionId, token }) {
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = {
      lineup_item_id: f.get('item'),
      winners: Number(f.get('winners')),
      entry_window_secs: Number(f.get('window')),
      eligibility: f.get('eligibility'),
      must_be_present: f.get('present') === 'on',
    };
    const g = await attempt('The giveaway was refused', () =>
      api(`/v1/sessions/${sessionId}/giveaways`, { method: 'POST', token, body }));
    if (g) toast(`🎁 Giveaway started: closes at ${timeOfDay(g.closes_at)}`, 'ok');
  });
}
