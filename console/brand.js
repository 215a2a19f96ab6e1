// The brand page: the catalog (list, create, restock), a bulk import with its
// row-by-row report, campaigns with agencies (propose, accept, decline) and
// the sales report with its CSV export.
import {
  fatal, attempt,
  $, h, fill, api, money, toast, obtainToken, askForToken, decodeClaims, devInfo, shortId, when,
} from './common.js';

const params = new URLSearchParams(location.search);
const PAGE = 20;
let token;
let brandId;
let dev;
let products = []; // the catalog pages loaded so far
let productCursor = null;
let campaigns = [];
let campaignCursor = null;
let csvUrl = null;

const pad = (n) => String(n).padStart(2, '0');
const dateInput = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
const skus = () => products.flatMap((p) => p.skus.map((s) => ({ ...s, product: p })));

/** "12.50" → 1250 (integer minor units), or NaN. */
function minor(text) {
  const value = Number(text);
  return Number.isFinite(value) ? Math.round(value * 100) : NaN;
}

async function main() {
  dev = await devInfo();
  brandId = params.get('brand') || dev?.brand_id;
  token = await obtainToken({ user: 'brand-ops', role: 'brand', brand_id: brandId }, 'brand');
  if (!token) {
    askForToken($('#app'), 'brand', 'This server does not mint demo tokens (production). Paste a brand token, or open the page with ?token=….');
    return;
  }
  brandId = brandId || decodeClaims(token)?.brand_id;
  if (!brandId) {
    fatal('No brand: open brand.html?brand=<brand id>, or use a brand token.');
    return;
  }
  const demo = dev?.brand_id === brandId;
  $('#brand-name').textContent = demo ? 'Aurora Beauty (demo)' : `brand ${shortId(brandId)}`;
  document.title = `${$('#brand-name').textContent} · brand · hawker`;
  if (dev?.agency_id) $('#propose').agency.value = dev.agency_id;
  const now = new Date();
  const period = $('#report-form');
  period.from.value = dateInput(new Date(now.getFullYear(), now.getMonth(), 1));
  period.to.value = dateInput(new Date(now.getFullYear(), now.getMonth() + 1, 1));
  await Promise.all([loadCatalog(), loadCampaigns()]);
  await loadReport();
}

// ---------- catalog ----------

async function loadCatalog(more = false) {
  const f = $('#catalog-filter');
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (f.q.value.trim()) query.set('q', f.q.value.trim());
  if (f.status.value) query.set('status', f.status.value);
  if (more && productCursor) query.set('cursor', productCursor);
  const page = await attempt('The catalog could not be loaded', () => api(`/v1/brands/${brandId}/products?${query}`, { token }));
  if (!page) return;
  products = more ? [...products, ...page.items] : page.items;
  productCursor = page.next_cursor;
  renderCatalog();
  renderPicker();
}

function renderCatalog() {
  const rows = [];
  for (const product of products) {
    if (!product.skus.length) {
      rows.push(h('tr', { dataset: { testid: 'catalog-product' } },
        h('td', {}, h('b', { text: product.name }), ' ', statusBadge(product.status)),
        h('td', { colspan: 4, class: 'muted', text: 'no SKUs' })));
    }
    for (const sku of product.skus) {
      const form = h('form', { class: 'row nowrap', dataset: { action: 'restock', skuId: sku.sku_id } },
        h('input', { name: 'delta', type: 'number', min: 1, step: 1, value: 10, class: 'qty-input', 'aria-label': `units to add to ${sku.code}` }),
        h('button', { class: 'small', type: 'submit', text: 'Add', 'data-testid': 'restock' }));
      rows.push(h('tr', { 'data-testid': 'catalog-sku', dataset: { code: sku.code, skuId: sku.sku_id } },
        h('td', {}, h('b', { text: product.name }), ' ', statusBadge(product.status)),
        h('td', {}, h('span', { text: sku.name }), h('br'), h('small', { class: 'muted', text: `${sku.code}${attributes(sku)}` })),
        h('td', { class: 'right num', text: money(sku.price_minor, sku.currency) }),
        h('td', { class: 'right num', 'data-testid': 'sku-stock', text: String(sku.stock_on_hand) }),
        h('td', {}, form)));
    }
  }
  fill($('#catalog-rows'), rows.length ? rows : h('tr', {}, h('td', { colspan: 5, class: 'empty', text: 'No products yet: create one or import a catalog.' })));
  $('#catalog-more').hidden = !productCursor;
  const count = skus().length;
  $('#catalog-count').textContent = `${products.length} products, ${count} SKUs shown`;
}

function attributes(sku) {
  const entries = Object.entries(sku.attributes || {});
  return entries.length ? ` · ${entries.map(([k, v]) => `${k}: ${v}`).join(', ')}` : '';
}

function statusBadge(status) {
  const kind = { active: 'ok', draft: 'warn', archived: '', accepted: 'ok', proposed: 'warn', declined: 'bad' }[status] ?? '';
  return h('span', { class: `badge ${kind}`, text: status });
}

$('#catalog-filter').addEventListener('submit', (e) => {
  e.preventDefault();
  loadCatalog();
});
$('#catalog-more').addEventListener('click', () => loadCatalog(true));

$('#catalog-rows').addEventListener('submit', async (e) => {
  const form = e.target.closest('form[data-action=restock]');
  if (!form) return;
  e.preventDefault();
  const delta = Number(form.delta.value);
  if (!Number.isInteger(delta) || delta < 1) {
    toast('Restock with a whole number of units.', 'warn');
    return;
  }
  const movement = await attempt('Restock failed', () => api(`/v1/skus/${form.dataset.skuId}/stock-movements`, {
    method: 'POST', token, body: { kind: 'restock', delta, note: 'restocked from the console' },
  }));
  if (!movement) return;
  for (const product of products) {
    for (const sku of product.skus) if (sku.sku_id === movement.sku_id) sku.stock_on_hand = movement.stock_after;
  }
  renderCatalog();
  renderPicker();
  toast(`Stock now ${movement.stock_after}.`, 'ok');
});

$('#new-product').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const price = minor(f.price.value);
  const body = {
    name: f.name.value.trim(),
    status: f.status.value,
    skus: [{
      code: f.code.value.trim(),
      name: f.sku_name.value.trim(),
      price_minor: price,
      currency: f.currency.value.trim(),
      stock: Number(f.stock.value || 0),
    }],
  };
  const product = await attempt('The product was not created', () => api(`/v1/brands/${brandId}/products`, { method: 'POST', token, body }));
  if (!product) return;
  toast(`Created ${product.name}.`, 'ok');
  f.reset();
  await loadCatalog();
});

// ---------- import ----------

function detectFormat(text, fileName) {
  if (/\.(jsonl|ndjson|json)$/i.test(fileName || '')) return 'jsonl';
  if (/\.csv$/i.test(fileName || '')) return 'csv';
  return text.trimStart().startsWith('{') ? 'jsonl' : 'csv';
}

$('#import-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const file = f.file.files[0];
  const text = file ? await file.text() : f.text.value;
  if (!text.trim()) {
    toast('Paste a catalog or choose a file first.', 'warn');
    return;
  }
  const format = f.format.value === 'auto' ? detectFormat(text, file?.name) : f.format.value;
  const button = f.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const report = await api(`/v1/brands/${brandId}/catalog/import`, {
      method: 'POST', token, raw: text, contentType: format === 'csv' ? 'text/csv' : 'application/x-ndjson',
    });
    renderImport(report);
    await loadCatalog();
  } catch (err) {
    renderImportFailure(err);
  } finally {
    button.disabled = false;
  }
});

function renderImport(report) {
  const box = $('#import-report');
  box.classList.remove('hidden');
  box.dataset.failed = String(report.failed);
  box.dataset.created = String(report.created);
  const tile = (label, value, testid) => h('div', { class: 'tile' },
    h('div', { class: 'label', text: label }), h('div', { class: 'value', 'data-testid': testid, text: String(value) }));
  fill(box,
    h('div', { class: `notice ${report.failed ? 'warn' : 'ok'}`, text: report.failed
      ? `${report.rows - report.failed} of ${report.rows} rows imported; ${report.failed} refused (below). Fix them and import again: the good rows will not change.`
      : `All ${report.rows} rows imported.` }),
    h('div', { class: 'tiles' },
      tile('Rows', report.rows, 'import-rows'),
      tile('Created', report.created, 'import-created'),
      tile('Updated', report.updated, 'import-updated'),
      tile('Unchanged', report.unchanged, 'import-unchanged'),
      tile('Refused', report.failed, 'import-failed')),
    report.errors.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, h('th', { text: 'Row' }), h('th', { text: 'SKU code' }), h('th', { text: 'Error' }), h('th', { text: 'Why' }))),
      h('tbody', {}, report.errors.map((err) => h('tr', { 'data-testid': 'import-error', dataset: { row: String(err.row) } },
        h('td', { class: 'num', text: String(err.row) }),
        h('td', { text: err.sku_code ?? '—' }),
        h('td', {}, h('code', { text: err.error })),
        h('td', { text: err.message })))))) : null);
}

function renderImportFailure(err) {
  const box = $('#import-report');
  box.classList.remove('hidden');
  box.dataset.failed = 'all';
  fill(box, h('div', { class: 'notice bad', role: 'alert', 'data-testid': 'import-refused' },
    h('b', { text: 'Nothing was imported. ' }), h('code', { text: err.code }), ' ', err.message));
}

// ---------- campaigns ----------

async function loadCampaigns(more = false) {
  const query = new URLSearchParams({ limit: String(PAGE) });
  const status = $('#campaign-status').value;
  if (status) query.set('status', status);
  if (more && campaignCursor) query.set('cursor', campaignCursor);
  const page = await attempt('The campaigns could not be loaded', () => api(`/v1/brands/${brandId}/campaigns?${query}`, { token }));
  if (!page) return;
  campaigns = more ? [...campaigns, ...page.items] : page.items;
  campaignCursor = page.next_cursor;
  renderCampaigns();
}

function agencyName(id) {
  return id === dev?.agency_id ? 'Starlight MCN (demo)' : `agency ${shortId(id)}`;
}

function renderCampaigns() {
  const rows = campaigns.map((c) => {
    const theirs = c.status === 'proposed' && c.proposed_by === 'agency';
    return h('tr', { 'data-testid': 'campaign', dataset: { campaignId: c.campaign_id, status: c.status } },
      h('td', {}, h('button', { class: 'link', type: 'button', dataset: { action: 'show' }, text: c.name }),
        h('br'), h('small', { class: 'muted', text: c.allow_below_floor ? 'below floor allowed' : 'floors hold' })),
      h('td', { text: agencyName(c.agency_id) }),
      h('td', {}, statusBadge(c.status), h('br'), h('small', { class: 'muted', text: c.status === 'proposed'
        ? `proposed by ${c.proposed_by === 'brand' ? 'you' : 'the agency'}`
        : `by ${c.decided_by ?? '—'}` })),
      h('td', { class: 'num', text: `${when(c.starts_at)} → ${c.ends_at ? when(c.ends_at) : 'open'}` }),
      h('td', {}, theirs ? h('div', { class: 'row nowrap' },
        h('button', { class: 'small primary', type: 'button', dataset: { action: 'accept' }, text: 'Accept' }),
        h('button', { class: 'small danger', type: 'button', dataset: { action: 'decline' }, text: 'Decline' })) : null));
  });
  fill($('#campaign-rows'), rows.length ? rows : h('tr', {}, h('td', { colspan: 5, class: 'empty', text: 'No campaigns yet: propose one below.' })));
  $('#campaign-more').hidden = !campaignCursor;
}

$('#campaign-status').addEventListener('change', () => loadCampaigns());
$('#campaign-more').addEventListener('click', () => loadCampaigns(true));

$('#campaign-rows').addEventListener('click', async (e) => {
  const button = e.target.closest('button[data-action]');
  const row = e.target.closest('tr[data-campaign-id]');
  if (!button || !row) return;
  const id = row.dataset.campaignId;
  if (button.dataset.action === 'show') {
    await showCampaign(id);
    return;
  }
  button.disabled = true;
  const done = await attempt(`The campaign could not be ${button.dataset.action}ed`, () => api(`/v1/campaigns/${id}/${button.dataset.action}`, { method: 'POST', token }));
  button.disabled = false;
  if (done) {
    toast(`Campaign ${done.status}.`, 'ok');
    await loadCampaigns();
  }
});

async function showCampaign(id) {
  const campaign = campaigns.find((c) => c.campaign_id === id);
  const items = await attempt('The campaign’s SKUs could not be loaded', () => api(`/v1/campaigns/${id}/skus`, { token }));
  if (!items) return;
  const box = $('#campaign-detail');
  box.classList.remove('hidden');
  fill(box, h('div', { class: 'card tight inset' },
    h('div', { class: 'row between' },
      h('h3', { text: campaign?.name ?? 'Campaign' }),
      h('button', { class: 'small', type: 'button', text: 'Close', onclick: () => box.classList.add('hidden') })),
    items.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, h('th', { text: 'SKU' }), h('th', { class: 'right', text: 'Price' }), h('th', { class: 'right', text: 'Floor' }),
        h('th', { class: 'right', text: 'Allocated' }), h('th', { class: 'right', text: 'Taken' }))),
      h('tbody', {}, items.map((s) => h('tr', { 'data-testid': 'campaign-sku', dataset: { code: s.code } },
        h('td', {}, h('b', { text: s.product_name }), ' ', h('span', { text: s.sku_name }), h('br'), h('small', { class: 'muted', text: s.code })),
        h('td', { class: 'right num', text: money(s.price_minor, s.currency) }),
        h('td', { class: 'right num', text: money(s.floor_price_minor, s.currency) }),
        h('td', { class: 'right num', text: s.allocated_units === null || s.allocated_units === undefined ? 'any' : String(s.allocated_units) }),
        h('td', { class: 'right num', text: String(s.units_taken) })))))) : h('p', { class: 'empty', text: 'No SKUs in this campaign.' })));
}

function renderPicker() {
  const box = $('#pick-rows');
  const picked = new Map([...box.querySelectorAll('tr[data-sku-id]')].map((tr) => [tr.dataset.skuId, {
    on: tr.querySelector('[name=pick]').checked, floor: tr.querySelector('[name=floor]').value, alloc: tr.querySelector('[name=alloc]').value,
  }]));
  const rows = skus().filter((s) => s.product.status !== 'archived').map((s) => {
    const before = picked.get(s.sku_id);
    const label = `${s.product.name} · ${s.name}`;
    return h('tr', { 'data-testid': 'pick-sku', dataset: { skuId: s.sku_id, code: s.code } },
      h('td', {}, h('input', { type: 'checkbox', name: 'pick', checked: before?.on ?? false, 'aria-label': `include ${label}` })),
      h('td', {}, h('span', { text: label }), h('br'), h('small', { class: 'muted', text: s.code })),
      h('td', { class: 'right num', text: money(s.price_minor, s.currency) }),
      h('td', {}, h('input', { name: 'floor', type: 'number', min: 0.01, step: 0.01, class: 'qty-input',
        value: before?.floor ?? (Math.ceil(s.price_minor * 0.7) / 100).toFixed(2), 'aria-label': `floor price of ${label}` })),
      h('td', {}, h('input', { name: 'alloc', type: 'number', min: 0, step: 1, class: 'qty-input', placeholder: 'any',
        value: before?.alloc ?? '', 'aria-label': `units allocated of ${label}` })));
  });
  fill(box, rows.length ? rows : h('tr', {}, h('td', { colspan: 5, class: 'empty', text: 'The catalog is empty.' })));
}

$('#propose').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const items = [];
  for (const tr of $('#pick-rows').querySelectorAll('tr[data-sku-id]')) {
    if (!tr.querySelector('[name=pick]').checked) continue;
    const floor = minor(tr.querySelector('[name=floor]').value);
    const alloc = tr.querySelector('[name=alloc]').value;
    if (!(floor >= 1)) {
      toast(`Give ${tr.dataset.code} a floor price.`, 'warn');
      return;
    }
    const item = { sku_id: tr.dataset.skuId, floor_price_minor: floor };
    if (alloc !== '') item.allocated_units = Number(alloc);
    items.push(item);
  }
  if (!items.length) {
    toast('Tick at least one SKU for the campaign.', 'warn');
    return;
  }
  const body = { brand_id: brandId, agency_id: f.agency.value.trim(), name: f.name.value.trim(), allow_below_floor: f.below.checked };
  if (f.start.value) body.starts_at = new Date(f.start.value).toISOString();
  if (f.end.value) body.ends_at = new Date(f.end.value).toISOString();
  const button = f.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const campaign = await attempt('The campaign was not proposed', () => api('/v1/campaigns', { method: 'POST', token, body }));
    if (!campaign) return;
    const added = await attempt('The campaign was proposed, but its SKUs were refused', () => api(`/v1/campaigns/${campaign.campaign_id}/skus`, {
      method: 'POST', token, body: { items },
    }));
    if (added) toast(`Proposed “${campaign.name}” with ${added.length} SKUs; the agency must accept it.`, 'ok');
    f.name.value = '';
    await loadCampaigns();
    await showCampaign(campaign.campaign_id);
  } finally {
    button.disabled = false;
  }
});

// ---------- reports ----------

/** A local date-time as an RFC 3339 instant in UTC, without fractions: "2026-12-01T00:00:00Z". */
const rfc3339 = (local) => new Date(local).toISOString().replace(/\.\d{3}Z$/, 'Z');

const GROUP_LABEL = { product: 'Product', session: 'Session', host: 'Host', agency: 'Agency' };

async function loadReport() {
  const f = $('#report-form');
  if (!f.from.value || !f.to.value) return;
  const query = new URLSearchParams({
    group_by: f.group.value,
    from: rfc3339(`${f.from.value}T00:00`),
    to: rfc3339(`${f.to.value}T00:00`),
  });
  const path = `/v1/brands/${brandId}/reports/sales?${query}`;
  const error = $('#report-error');
  const link = $('#report-csv');
  $('#report-key').textContent = GROUP_LABEL[f.group.value];
  let report;
  try {
    report = await api(path, { token });
  } catch (e) {
    error.classList.remove('hidden');
    error.textContent = e.status === 404
      ? `No sales report is available here yet (${e.message}).`
      : `The report could not be loaded: ${e.message} (${e.code}).`;
    fill($('#report-rows'));
    fill($('#report-totals'));
    link.classList.add('hidden');
    return;
  }
  error.classList.add('hidden');
  const figures = (r) => [
    h('td', { class: 'right num', text: String(r.orders) }),
    h('td', { class: 'right num', text: String(r.units) }),
    h('td', { class: 'right num', text: money(r.gross_minor, report.currency) }),
    h('td', { class: 'right num', text: String(r.returned_orders) }),
    h('td', { class: 'right num', text: String(r.returned_units) }),
    h('td', { class: 'right num', text: money(r.returned_minor, report.currency) }),
    h('td', { class: 'right num', 'data-testid': 'report-net', text: money(r.net_minor, report.currency) }),
  ];
  fill($('#report-rows'), report.rows.length
    ? report.rows.map((r) => h('tr', { 'data-testid': 'report-row', dataset: { key: r.key } },
      h('td', { text: r.label || r.key }), figures(r)))
    : h('tr', {}, h('td', { colspan: 8, class: 'empty', text: 'No sales in this period.' })));
  fill($('#report-totals'), report.totals ? h('tr', {}, h('th', { text: 'Total' }), figures(report.totals)) : null);
  // The CSV needs the token, which a plain link cannot send: fetch it and link the file.
  const csv = await api(`${path}&format=csv`, { token, asText: true }).catch(() => null);
  if (csvUrl) URL.revokeObjectURL(csvUrl);
  csvUrl = null;
  if (csv === null) {
    link.classList.add('hidden');
    return;
  }
  csvUrl = URL.createObjectURL(new Blob([csv], { type: 'text/csv' }));
  link.href = csvUrl;
  link.download = `sales-by-${f.group.value}-${f.from.value}-to-${f.to.value}.csv`;
  link.classList.remove('hidden');
}

$('#report-form').addEventListener('submit', (e) => {
  e.preventDefault();
  loadReport();
});
$('#report-form').group.addEventListener('change', () => loadReport());

main().catch((e) => fatal(`The page failed to start: ${e.message}`));
