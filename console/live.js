// Live now / upcoming: the sessions on air (with their hosts, agency, brands,
// pinned item and viewers) and the scheduled ones, each linking to the viewer.
import {
  fatal, viewerSignIn,
  $, h, fill, api, money, initials, viewerHref, when,
} from './common.js';

const PAGE = 12;
let token;
const lists = {
  live: { items: [], cursor: null, query: { status: 'live' } },
  upcoming: { items: [], cursor: null, query: { status: 'scheduled' } },
};

async function main() {
  const signedIn = await viewerSignIn();
  if (!signedIn) return;
  token = signedIn.token;
  const { me } = signedIn;
  $('#me').textContent = `You are ${me}`;
  $('#nav-orders').href = viewerHref('orders.html');
  $('#nav-live').href = viewerHref('live.html');
  await refresh();
  setInterval(() => load('live'), 15_000);
}

async function refresh() {
  await Promise.all([load('live'), load('upcoming')]);
}

async function load(which, more = false) {
  const list = lists[which];
  const query = new URLSearchParams({ ...list.query, limit: String(PAGE) });
  // Upcoming: what has not ended yet (a scheduled session whose window passed is not upcoming).
  if (which === 'upcoming') query.set('from', new Date().toISOString());
  if (more && list.cursor) query.set('cursor', list.cursor);
  let page;
  try {
    page = await api(`/v1/sessions?${query}`, { token });
  } catch (e) {
    fatal(`The sessions could not be loaded: ${e.message}`);
    return;
  }
  $('#fatal').classList.add('hidden');
  list.items = more ? [...list.items, ...page.items] : page.items;
  list.cursor = page.next_cursor;
  render(which);
}

function render(which) {
  const list = lists[which];
  const empty = which === 'live' ? 'Nobody is live right now. See what is coming up below.' : 'Nothing scheduled yet.';
  fill($(`#${which}`), list.items.length ? list.items.map(card) : h('p', { class: 'empty', text: empty }));
  $(`#${which}-more`).hidden = !list.cursor;
}

function card(s) {
  const live = s.status === 'live';
  const onAir = s.hosts.filter((x) => x.on_air);
  const hosts = (onAir.length ? onAir : s.hosts).map((x) => x.display_name).join(', ');
  const pinned = live && s.pinned;
  return h('a', {
    class: 'card session-card',
    href: viewerHref('viewer.html', { session: s.session_id }),
    'data-testid': 'session-card',
    dataset: { sessionId: s.session_id, status: s.status },
  },
  h('div', { class: 'row between' },
    live ? h('span', { class: 'badge live', text: '● live' }) : h('span', { class: 'badge blue', text: when(s.planned_start) }),
    live ? h('span', { class: 'muted num', 'data-testid': 'session-viewers', text: `${s.viewers} watching` }) : null),
  h('h3', { 'data-testid': 'session-title', text: s.title }),
  h('div', { class: 'muted' },
    h('span', { text: hosts ? `with ${hosts}` : 'no host booked yet' }),
    h('br'),
    h('span', { text: [s.agency?.name, ...s.brands.map((b) => b.name)].filter(Boolean).join(' · ') })),
  pinned ? h('div', { class: 'pinned', 'data-testid': 'session-pinned' },
    h('div', { class: 'swatch', 'aria-hidden': 'true', text: initials(pinned.product_name) }),
    h('div', { class: 'grow' },
      h('b', { text: pinned.product_name }), ' ', h('span', { class: 'muted', text: pinned.sku_name }),
      h('br'), h('span', { class: 'num', text: money(pinned.price_minor, pinned.currency) }))) : null,
  h('span', { class: 'button small', text: live ? 'Watch and shop →' : 'Open →' }));
}

$('#refresh').addEventListener('click', refresh);
$('#live-more').addEventListener('click', () => load('live', true));
$('#upcoming-more').addEventListener('click', () => load('upcoming', true));

main().catch((e) => fatal(`The page failed to start: ${e.message}`));
