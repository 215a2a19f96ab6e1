// My orders: the viewer's orders from the API (cursor paging, filter by
// status), an order's detail with its events, cancelling a pending order and
// asking for a return once delivered.
import {
  fatal, viewerSignIn,
  $, h, fill, api, money, toast, shortId, viewerHref, when,
} from './common.js';

const params = new URLSearchParams(location.search);
const PAGE = 20;
let token;
let orders = [];
let cursor = null;
let selected = params.get('order');

const STATUS = {
  pending_payment: ['waiting for payment', 'warn'],
  paid: ['paid', 'ok'],
  cancelled: ['cancelled', ''],
  refund_due: ['refund due', 'bad'],
  refunded: ['refunded', 'blue'],
  partially_refunded: ['partly refunded', 'blue'],
};
const EVENT = {
  created: 'Order placed',
  paid: 'Paid',
  paid_after_expiry: 'Paid after it expired: a refund is due',
  expired: 'Expired unpaid',
  cancelled: 'Cancelled',
  refunded: 'Refunded',
  shipped: 'Shipped',
  delivered: 'Delivered',
  return_requested: 'Return requested',
  return_approved: 'Return approved',
  return_refused: 'Return refused',
};

const badge = (status) => {
  const [label, kind] = STATUS[status] || [status, ''];
  return h('span', { class: `badge ${kind}`, 'data-testid': 'order-status', text: label });
};

async function main() {
  const signedIn = await viewerSignIn();
  if (!signedIn) return;
  token = signedIn.token;
  const { me } = signedIn;
  $('#me').textContent = `Signed in as ${me}`;
  $('#nav-live').href = viewerHref('live.html');
  $('#nav-orders').href = viewerHref('orders.html');
  if (params.get('status')) $('#status').value = params.get('status');
  if (params.get('session')) {
    const note = $('#session-filter');
    note.classList.remove('hidden');
    fill(note, `Orders of session ${shortId(params.get('session'))} only. `, h('a', { href: viewerHref('orders.html'), text: 'Show all' }));
  }
  await load();
  if (selected) await showOrder(selected);
}

async function load(more = false) {
  const query = new URLSearchParams({ limit: String(PAGE) });
  if ($('#status').value) query.set('status', $('#status').value);
  if (params.get('session')) query.set('session_id', params.get('session'));
  if (more && cursor) query.set('cursor', cursor);
  let page;
  try {
    page = await api(`/v1/me/orders?${query}`, { token });
  } catch (e) {
    fatal(`Your orders could not be loaded: ${e.message}`);
    return;
  }
  orders = more ? [...orders, ...page.items] : page.items;
  cursor = page.next_cursor;
  render();
}

function render() {
  const items = orders.map((o) => h('li', {
    'data-testid': 'my-order', class: o.order_id === selected ? 'selected' : null,
    dataset: { orderId: o.order_id, status: o.status },
  },
  h('div', { class: 'row between nowrap' },
    h('button', { class: 'link grow', type: 'button', dataset: { action: 'open' } },
      h('span', { text: `${o.quantity} × ${o.product_name}` }), ' ', h('span', { class: 'muted', text: o.sku_name })),
    h('b', { class: 'num', 'data-testid': 'my-order-amount', text: money(o.amount_minor, o.currency) })),
  h('div', { class: 'row' }, badge(o.status),
    o.fulfilment !== 'unfulfilled' ? h('span', { class: 'badge', text: o.fulfilment }) : null,
    o.return_status ? h('span', { class: 'badge warn', text: `return ${o.return_status}` }) : null,
    h('small', { class: 'muted', text: `${when(o.created_at)} · #${shortId(o.order_id)}` }))));
  fill($('#orders'), items.length ? items : h('li', { class: 'empty', text: 'No orders here yet. Find a live session and shop!' },
    ' ', h('a', { href: viewerHref('live.html'), text: 'Live now →' })));
  $('#more').hidden = !cursor;
}

async function showOrder(id) {
  selected = id;
  render();
  let order;
  try {
    order = await api(`/v1/me/orders/${id}`, { token });
  } catch (e) {
    fill($('#detail'), h('h2', { text: 'Order' }), h('p', { class: 'notice bad', text: e.status === 404 ? 'No such order of yours.' : e.message }));
    return;
  }
  renderDetail(order);
}

function renderDetail(o) {
  const address = o.shipping_address;
  const canReturn = o.status === 'paid' && o.fulfilment === 'delivered' && !o.return_status;
  const returnForm = canReturn ? h('form', { class: 'stack', id: 'return-form' },
    h('label', { class: 'field' }, 'Why do you return it?',
      h('textarea', { name: 'reason', rows: 3, maxlength: 500, required: true, 'data-testid': 'return-reason' })),
    h('div', { class: 'row' }, h('button', { class: 'dark', type: 'submit', 'data-testid': 'request-return', text: 'Request a return' }))) : null;
  fill($('#detail'),
    h('div', { class: 'row between' }, h('h2', { text: `Order #${shortId(o.order_id)}` }), badge(o.status)),
    h('div', { class: 'stack', dataset: { orderId: o.order_id, status: o.status } },
      h('div', {},
        h('h3', { text: `${o.quantity} × ${o.product_name}` }),
        h('span', { class: 'muted', text: o.sku_name }),
        h('p', { class: 'num' },
          `${money(o.unit_price_minor, o.currency)} each`,
          o.discount_minor ? ` − ${money(o.discount_minor, o.currency)} coupon` : '',
          ' = ', h('b', { text: money(o.amount_minor, o.currency) }))),
      h('p', {}, h('a', { href: viewerHref('viewer.html', { session: o.session_id }), text: 'Back to the session →' })),
      o.carrier ? h('p', { text: `Shipped with ${o.carrier}, tracking ${o.tracking_number}` }) : null,
      address ? h('p', { class: 'muted', text: `Ships to ${[address.name, address.line1, address.line2, address.city, address.postal_code, address.country].filter(Boolean).join(', ')}` }) : null,
      o.return ? h('p', { class: 'notice info', text: `Return ${o.return.status}: “${o.return.reason}”${o.return.note ? ` — ${o.return.note}` : ''}` }) : null,
      h('h2', { text: 'History' }),
      h('ul', { class: 'plain events', 'data-testid': 'order-events' }, (o.events || []).map((ev) => h('li', { 'data-testid': 'order-event', dataset: { kind: ev.kind } },
        h('b', { text: EVENT[ev.kind] || ev.kind }), ' ', h('small', { class: 'muted', text: when(ev.at) })))),
      o.status === 'pending_payment' ? h('div', { class: 'row' },
        h('button', { class: 'danger', type: 'button', id: 'cancel-order', 'data-testid': 'cancel-order', text: 'Cancel this order' }),
        h('small', { class: 'muted', text: `unpaid orders expire at ${when(o.expires_at)}` })) : null,
      returnForm));
}

$('#orders').addEventListener('click', (e) => {
  const button = e.target.closest('button[data-action=open]');
  if (button) showOrder(button.closest('li').dataset.orderId);
});

$('#detail').addEventListener('click', async (e) => {
  if (e.target.id !== 'cancel-order') return;
  e.target.disabled = true;
  try {
    const order = await api(`/v1/me/orders/${selected}/cancel`, { method: 'POST', token });
    toast('Order cancelled; its units are back on sale.', 'ok');
    renderDetail(order);
    await load();
  } catch (err) {
    toast(`The order was not cancelled: ${err.message}`, 'bad', 7000);
    e.target.disabled = false;
  }
});

$('#detail').addEventListener('submit', async (e) => {
  if (e.target.id !== 'return-form') return;
  e.preventDefault();
  const reason = e.target.reason.value.trim();
  try {
    const order = await api(`/v1/orders/${selected}/return`, { method: 'POST', token, body: { reason } });
    toast('Return requested: the brand will answer.', 'ok');
    renderDetail(order);
    await load();
  } catch (err) {
    toast(`The return was not requested: ${err.message}`, 'bad', 7000);
  }
});

$('#status').addEventListener('change', () => load());
$('#more').addEventListener('click', () => load(true));

main().catch((e) => fatal(`The page failed to start: ${e.message}`));
