// End-to-end test of the web console (docs/console.md) in headless Chromium.
//
// Starts a real `hawker serve` (HAWKER_ENV=test, a fresh database, free
// ports), seeds the demo data, then drives the planner, the host console and
// two viewers in separate browser contexts through one live session. Writes
// screenshots to docs/screenshots/. Prints "N passed, N failed" and exits
// non-zero on any failure, including any browser console error.
//
// Run it with `make test-e2e` (e2e/run.sh installs Chromium and the npm
// package if needed and builds hawker). Environment: HAWKER_BIN (the hawker
// binary), CHROMIUM (the browser), E2E_DATABASE_BASE (a Postgres URL without
// the database name), E2E_KEEP=1 to keep the database and the server log.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const HAWKER = process.env.HAWKER_BIN || path.join(ROOT, process.env.CARGO_TARGET_DIR || 'target', 'debug', 'hawker');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DB_BASE = process.env.E2E_DATABASE_BASE || 'postgres://postgres@127.0.0.1:5432';
const SHOTS = path.join(ROOT, 'docs', 'screenshots');
const MIA = '00000000-0000-4000-8000-00000000b001';
const LEO = '00000000-0000-4000-8000-00000000b002';
const SEEDED_SESSION = '00000000-0000-4000-8000-00000000d001';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

// ---------- a tiny harness ----------

const results = [];
let failed = false;
const started = Date.now();

async function step(name, fn, { always = false } = {}) {
  if (failed && !always) {
    results.push({ name, status: 'skipped' });
    console.log(`  - ${name} (skipped)`);
    return;
  }
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, status: 'passed' });
    console.log(`  ✓ ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed = true;
    results.push({ name, status: 'failed', error: e });
    console.log(`  ✗ ${name} (${Date.now() - t0} ms)\n      ${String(e?.stack || e).split('\n').slice(0, 6).join('\n      ')}`);
  }
}

/** Polls `fn` until it returns something truthy; fails with `what` after `ms`. */
async function until(what, fn, ms = 10_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// ---------- the server ----------

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const database = `hawker_test_e2e_${process.pid}_${Date.now().toString(36)}`;
const logFile = path.join(os.tmpdir(), `${database}.log`);
let server;
let base;

async function startServer() {
  check(fs.existsSync(HAWKER), `no hawker binary at ${HAWKER}: build it (cargo build --bin hawker) or set HAWKER_BIN`);
  const [port, admin] = [await freePort(), await freePort()];
  base = `http://127.0.0.1:${port}`;
  const env = {
    ...process.env,
    HAWKER_ENV: 'test',
    HAWKER_CONFIG_DIR: path.join(ROOT, 'config'),
    HAWKER__DATABASE__URL: `${DB_BASE}/${database}`,
    HAWKER__SERVER__LISTEN: `127.0.0.1:${port}`,
    HAWKER__SERVER__ADMIN_LISTEN: `127.0.0.1:${admin}`,
    HAWKER__SERVER__PUBLIC_URL: base,
    HAWKER__LOG__FILTER: process.env.E2E_LOG || 'warn',
  };
  const seeded = spawnSync(HAWKER, ['seed'], { env, encoding: 'utf8' });
  check(seeded.status === 0, `hawker seed failed:\n${seeded.stdout}${seeded.stderr}`);
  const log = fs.openSync(logFile, 'w');
  server = spawn(HAWKER, ['serve'], { env, stdio: ['ignore', log, log] });
  server.on('exit', (code, signal) => {
    server.exited = { code, signal };
  });
  await until('the server to be ready', async () => {
    check(!server.exited, `hawker serve exited: ${JSON.stringify(server.exited)}`);
    const response = await fetch(`${base}/readyz`).catch(() => null);
    return response?.ok;
  }, 30_000);
}

async function stopServer() {
  if (server && !server.exited) {
    const t0 = Date.now();
    server.kill('SIGTERM');
    await until('the server to stop', () => server.exited, 15_000).catch(() => server.kill('SIGKILL'));
    if (process.env.E2E_TIMING) console.log(`      hawker stopped in ${Date.now() - t0} ms`);
  }
  if (!process.env.E2E_KEEP) {
    // In the background: a drop waits for a checkpoint, seconds on a busy machine.
    // (`make clean-test-dbs` removes any hawker_test_* database left behind.)
    const drop = spawn('psql', [`${DB_BASE}/postgres`, '-qc', `drop database if exists "${database}" with (force)`], {
      stdio: 'ignore',
      detached: true,
    });
    drop.on('error', () => {});
    drop.unref();
  }
}

// ---------- the browser ----------

const consoleErrors = [];
let browser;

async function openPage(name, url, contextOptions = {}) {
  const context = await browser.newContext({ viewport: DESKTOP, timezoneId: 'UTC', locale: 'en-US', ...contextOptions });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(`${name}: console error: ${message.text()}`);
  });
  page.on('pageerror', (error) => consoleErrors.push(`${name}: page error: ${error.message}`));
  await page.goto(`${base}${url}`);
  return { context, page };
}

const text = async (locator) => (await locator.textContent())?.trim() ?? '';
const attr = (locator, name) => locator.getAttribute(name);
const connected = (page) => until('the room socket to connect', async () => (await attr(page.locator('#conn'), 'data-status')) === 'live');

/** A datetime-local value in UTC (the contexts run in UTC). */
const localInput = (ms) => new Date(ms).toISOString().slice(0, 16);

async function shoot(page, name, viewport) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const previous = page.viewportSize();
  if (viewport) await page.setViewportSize(viewport);
  // A clean frame: no passing notices, scrolled to the top (the bar is sticky).
  await page.evaluate(() => {
    document.querySelector('#toasts')?.replaceChildren();
    window.scrollTo(0, 0);
  });
  await page.waitForTimeout(300);
  // Readable at this width: nothing wider than the screen.
  const { scroll, inner, wide } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth,
    wide: [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(0, 5)
      .map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${e.className}`),
  }));
  check(scroll <= inner, `${name}: the page is ${scroll} px wide in a ${inner} px window (${wide.join(', ')})`);
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  if (viewport) await page.setViewportSize(previous);
}

// ---------- the scenario ----------

async function main() {
  console.log(`hawker console e2e: ${HAWKER}, ${CHROMIUM}`);
  let planner;
  let host;
  let alice;
  let bob;
  let sessionId;
  let productOne;
  const hour = 3_600_000;
  // Today 17:00–21:00 UTC, whatever the time now: it goes live early, which
  // is allowed, and the timeline looks the same at any hour.
  const sessionStart = Date.parse(new Date().toISOString().slice(0, 10)) + 17 * hour;

  await step('hawker serves on a fresh database, seeded', startServer);
  await step('headless Chromium starts', async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  await step('planner: the roster and the seeded session load', async () => {
    planner = await openPage('planner', '/console/planner.html');
    const { page } = planner;
    await until('two hosts on the roster', async () => (await page.locator('[data-testid=roster-host]').count()) === 2);
    check((await text(page.locator('#agency-name'))) === 'Starlight MCN', 'the agency name is shown');
  });

  await step('planner: schedule an evening session', async () => {
    const { page } = planner;
    await page.fill('[data-testid=session-title]', 'E2E Glow Night');
    await page.fill('[data-testid=session-start]', localInput(sessionStart));
    await page.fill('[data-testid=session-end]', localInput(sessionStart + 3 * hour));
    await page.click('[data-testid=session-submit]');
    const row = page.locator('[data-testid=session-row]', { hasText: 'E2E Glow Night' });
    await row.waitFor();
    sessionId = await attr(row, 'data-session-id');
    check(/^[0-9a-f-]{36}$/.test(sessionId), `a session id (${sessionId})`);
  });

  await step('planner: book a shift, see a conflict before booking, book around it', async () => {
    const { page } = planner;
    const row = page.locator(`[data-testid=session-row][data-session-id="${sessionId}"]`);
    await page.selectOption('[data-testid=book-session]', sessionId);
    await page.selectOption('[data-testid=book-host]', MIA);
    await page.fill('[data-testid=book-start]', localInput(sessionStart));
    await page.fill('[data-testid=book-end]', localInput(sessionStart + 2 * hour));
    await until('the booking to be allowed', () => page.isEnabled('[data-testid=book-submit]'));
    await page.click('[data-testid=book-submit]');
    await until('Mia on the timeline', async () => (await row.locator('[data-testid=shift-block]').count()) === 1);

    await page.selectOption('[data-testid=book-session]', sessionId);
    await page.selectOption('[data-testid=book-host]', LEO);
    await page.fill('[data-testid=book-start]', localInput(sessionStart + hour));
    await page.fill('[data-testid=book-end]', localInput(sessionStart + 2.5 * hour));
    const conflict = await until('the conflict to be shown', async () => {
      const t = await text(page.locator('[data-testid=conflicts]'));
      return t.includes('mia_live') && t.includes('one host at a time') && t;
    });
    check(conflict.includes('cannot be booked'), 'the conflict says the shift cannot be booked');
    check(!(await page.isEnabled('[data-testid=book-submit]')), 'booking is disabled while there is a conflict');
    check((await row.locator('[data-testid=ghost].conflict').count()) === 1, 'the timeline marks the conflicting shift');

    await page.fill('[data-testid=book-start]', localInput(sessionStart + 2 * hour));
    await page.fill('[data-testid=book-end]', localInput(sessionStart + 3 * hour));
    await until('the booking to be allowed', () => page.isEnabled('[data-testid=book-submit]'));
    await page.click('[data-testid=book-submit]');
    await until('two shifts on the timeline', async () => (await row.locator('[data-testid=shift-block]').count()) === 2);
    const leoRow = page.locator(`[data-testid=host-row][data-host-id="${LEO}"]`);
    check((await leoRow.locator('[data-testid=shift-block]').count()) === 1, 'Leo’s lane shows his shift');

    // Mia is taken 17:00–19:00: the seeded session (18:00–22:00) cannot have her at 18:00.
    await page.selectOption('[data-testid=book-session]', SEEDED_SESSION);
    await page.selectOption('[data-testid=book-host]', MIA);
    await page.fill('[data-testid=book-start]', localInput(sessionStart + hour));
    await page.fill('[data-testid=book-end]', localInput(sessionStart + 3 * hour));
    await until('the host conflict to be shown', async () => (await text(page.locator('[data-testid=conflicts]'))).includes('Mia Chen is already booked in E2E Glow Night 17:00–19:00'));
    check(!(await page.isEnabled('[data-testid=book-submit]')), 'booking is disabled while there is a conflict');
  });

  await step('planner: commission terms for the session', async () => {
    const { page } = planner;
    await page.selectOption('[data-testid=terms-session]', sessionId);
    await page.fill('[data-testid=terms-percent]', '10');
    await page.fill('[data-testid=terms-share]', '50');
    await page.click('[data-testid=terms-submit]');
    await until('the terms to be in force', async () => (await text(page.locator('[data-testid=terms-current]'))).includes('10% of net sales'));
  });

  await step('host: go live and build the lineup', async () => {
    host = await openPage('host', `/console/host.html?session=${sessionId}`);
    const { page } = host;
    await connected(page);
    await page.click('[data-testid=go-live]');
    await until('the session to be live', async () => (await attr(page.locator('[data-testid=session-status]'), 'data-status')) === 'live');
    for (const n of [1, 2]) {
      await page.click('[data-testid=add-item]');
      await until(`${n} lineup items`, async () => (await page.locator('[data-testid=lineup-item]').count()) === n);
    }
    productOne = (await text(page.locator('[data-testid=lineup-item][data-link="1"] td:nth-child(2)'))).split('\n')[0];
    check(productOne.length > 2, 'the first item has a product name');
    await until('the shift on air', async () => (await page.locator('[data-testid=shift]', { hasText: 'on air' }).count()) === 1);
  });

  await step('two viewers join (desktop and phone, separate contexts)', async () => {
    alice = await openPage('viewer alice', `/console/viewer.html?session=${sessionId}&user=viewer-alice`);
    bob = await openPage('viewer bob', `/console/viewer.html?session=${sessionId}&user=viewer-bob`, {
      viewport: PHONE, isMobile: true, hasTouch: true,
    });
    await Promise.all([connected(alice.page), connected(bob.page)]);
  });

  await step('host pins a product; both viewers see it', async () => {
    await host.page.click('[data-testid=lineup-item][data-link="1"] [data-testid=pin]');
    for (const { page } of [alice, bob]) {
      await until('the pinned product', async () => productOne.startsWith(await text(page.locator('[data-testid=pinned-name]'))));
    }
  });

  await step('host launches a flash deal; both viewers see it live with its stock', async () => {
    const { page } = host;
    await page.selectOption('[data-testid=deal-item]', '1');
    await page.fill('[data-testid=deal-price]', '15.99');
    await page.fill('[data-testid=deal-quantity]', '50');
    await page.fill('[data-testid=deal-countdown]', '0');
    await page.click('[data-testid=launch-deal]');
    for (const viewer of [alice, bob]) {
      const deal = viewer.page.locator('[data-testid=deal][data-status=live]');
      await until('a live deal', async () => (await deal.count()) === 1);
      await until('its stock', async () => (await attr(deal.locator('[data-testid=deal-stock]'), 'data-remaining')) === '50');
      check((await text(deal.locator('.countdown'))).startsWith('ends in'), 'the countdown runs');
    }
  });

  await step('host drops a coupon; both viewers see it', async () => {
    const { page } = host;
    await page.fill('[data-testid=coupon-total]', '100');
    await page.fill('[data-testid=coupon-value]', '20');
    await page.click('[data-testid=drop-coupon]');
    for (const viewer of [alice, bob]) {
      const coupon = viewer.page.locator('[data-testid=coupon]');
      await until('the coupon', async () => (await attr(coupon.locator('[data-testid=coupon-remaining]'), 'data-remaining')) === '100');
      check((await text(coupon)).includes('20% off'), 'the discount is shown');
    }
  });

  await step('chat and moderation: a viewer chats, the host mutes them, slow mode', async () => {
    await bob.page.fill('#chat-input', 'hello from bob');
    await bob.page.press('#chat-input', 'Enter');
    const message = host.page.locator('[data-testid=host-chat-message][data-from="viewer-bob"]');
    await message.waitFor();
    await message.locator('[data-action=mute]').click();
    await until('the mute to reach bob', async () => (await bob.page.getAttribute('#chat-input', 'placeholder')).includes('muted'));
    await bob.page.fill('#chat-input', 'can I still talk?');
    await bob.page.press('#chat-input', 'Enter');
    await until('the refusal', async () => (await text(bob.page.locator('#toasts'))).includes('muted'));
    await host.page.selectOption('[data-testid=slow-mode]', '10');
    await until('slow mode on the viewer', async () => (await text(alice.page.locator('#slow-mode'))).includes('10 s'));
  });

  await step('bob’s phone loses its connection', async () => {
    await bob.context.setOffline(true);
    await bob.page.evaluate(() => window.hawker.drop());
    await until('bob offline', async () => ['offline', 'reconnecting'].includes(await attr(bob.page.locator('#conn'), 'data-status')));
  });

  await step('alice claims the coupon and buys two with it, then pays', async () => {
    const { page } = alice;
    await page.click('[data-testid=claim]');
    await page.locator('[data-testid=claimed]').waitFor();
    const deal = page.locator('[data-testid=deal][data-status=live]');
    await deal.locator('[data-action=more]').click();
    await until('quantity 2', async () => (await text(deal.locator('[data-testid=quantity]'))) === '2');
    check((await deal.locator('[data-testid=use-coupon]').isChecked()), 'the coupon is applied');
    await deal.locator('[data-testid=buy]').click();
    const order = page.locator('[data-testid=order]');
    await until('the order', async () => (await attr(order, 'data-status')) === 'pending_payment');
    // 2 × $15.99 = $31.98, 20% off ($6.39, rounded down) = $25.59.
    check((await text(order.locator('[data-testid=order-amount]'))) === '$25.59', 'the coupon is applied by the server');
    await order.locator('[data-testid=pay]').click();
    await until('the order paid', async () => (await attr(order, 'data-status')) === 'paid');
    // The payment is told to alice alone, as a private notice.
    const notice = page.locator('[data-testid=notices] li[data-kind="order.paid"]');
    await until('the payment-confirmed notice', async () => (await notice.count()) === 1);
    check((await text(notice)).includes('Payment confirmed'), 'the notice says the payment is confirmed');
    alice.paidOrder = await attr(notice, 'data-order');
    await until('the coupon count to fall', async () => (await attr(page.locator('[data-testid=coupon-remaining]'), 'data-remaining')) === '99');
  });

  await step('the host sees the sale and the stock fall', async () => {
    const { page } = host;
    await until('stock 48 on the host', async () => (await page.locator('[data-testid=host-deal][data-status=live] [data-testid=host-deal-stock][data-remaining="48"]').count()) === 1);
    await until('one paid order in the figures', async () => (await text(page.locator('[data-testid=fig-orders]'))) === '1');
    await until('the sales figure', async () => (await text(page.locator('[data-testid=fig-sales]'))) === '$25.59');
    await until('the sales count in the activity feed', async () => (await text(page.locator('[data-testid=feed]'))).includes('paid so far: 2 units in 1 orders'));
    check((await text(page.locator('[data-testid=fig-units]'))) === '2', 'two units taken');
  });

  await step('while bob is away the host launches a second deal and drops a second coupon', async () => {
    const { page } = host;
    await page.selectOption('[data-testid=deal-item]', '2');
    await page.fill('[data-testid=deal-quantity]', '20');
    await page.click('[data-testid=launch-deal]');
    await until('two deals live on the host', async () => (await page.locator('[data-testid=host-deal][data-status=live]').count()) === 2);
    await page.selectOption('#coupon-form [name=kind]', 'fixed');
    await page.fill('[data-testid=coupon-total]', '10');
    await page.fill('[data-testid=coupon-value]', '5');
    await page.click('[data-testid=drop-coupon]');
    await until('two drops on the host', async () => (await page.locator('[data-testid=host-drop]').count()) === 2);
    await until('alice sees both', async () => (await alice.page.locator('[data-testid=deal][data-status=live]').count()) === 2
      && (await alice.page.locator('[data-testid=coupon]').count()) === 2);
  });

  /** What bob must show after coming back: both deals, the current stock, both coupons. */
  async function bobCaughtUp() {
    const { page } = bob;
    await until('both deals on bob', async () => (await page.locator('[data-testid=deal][data-status=live]').count()) === 2);
    const first = page.locator('[data-testid=deal][data-status=live]', { hasText: productOne });
    await until('the current stock on bob', async () => (await attr(first.locator('[data-testid=deal-stock]'), 'data-remaining')) === '48');
    await until('both coupons on bob', async () => (await page.locator('[data-testid=coupon]').count()) === 2);
    const remaining = await page.locator('[data-testid=coupon-remaining]').evaluateAll((els) => els.map((e) => e.dataset.remaining).sort());
    check(JSON.stringify(remaining) === JSON.stringify(['10', '99']), `coupon counts ${remaining}`);
  }

  await step('bob reconnects by himself, resumes from his offset and shows the current deals and stock', async () => {
    // Still away: nothing of the above reached him.
    check((await attr(bob.page.locator('#conn'), 'data-status')) === 'offline', 'bob stayed offline');
    check((await attr(bob.page.locator('[data-testid=deal-stock]'), 'data-remaining')) === '50', 'bob saw no sale while offline');
    check((await bob.page.locator('[data-testid=coupon]').count()) === 1, 'bob saw no second coupon while offline');
    await bob.context.setOffline(false);
    await connected(bob.page);
    const stats = await bob.page.evaluate(() => ({ ...window.hawker.stats }));
    check(stats.resumed >= 1 && stats.welcome === 1 && stats.reset === 0, `resumed, not restarted: ${JSON.stringify(stats)}`);
    await bobCaughtUp();
    // Alice's payment was hers alone: bob's page shows none of her notices.
    check((await bob.page.locator('[data-testid=notices] li').count()) === 0, 'bob sees no notice of alice');
    const bobNotices = await bob.page.evaluate(() => window.hawker.notices.length);
    check(bobNotices === 0, `bob received no notice frame (${bobNotices})`);
    check(!(await text(bob.page.locator('body'))).includes(alice.paidOrder), 'alice’s order id is nowhere on bob’s page');
  });

  await step('a resume the server cannot serve gets a reset: the page rebuilds from the snapshot', async () => {
    await bob.page.evaluate(() => window.hawker.forgetEpoch());
    await until('the reset', async () => (await bob.page.evaluate(() => window.hawker.stats.reset)) === 1);
    await connected(bob.page);
    await bobCaughtUp();
  });

  await step('screenshots of the viewer and the host at desktop and phone widths', async () => {
    await shoot(alice.page, 'viewer-desktop');
    await shoot(bob.page, 'viewer-phone');
    await shoot(host.page, 'host-desktop');
    await shoot(host.page, 'host-phone', PHONE);
  });

  await step('host schedules a coupon drop a few seconds ahead; it counts down, then drops', async () => {
    const { page } = host;
    await page.selectOption('#coupon-form [name=kind]', 'percent');
    await page.fill('[data-testid=coupon-total]', '5');
    await page.fill('[data-testid=coupon-value]', '50');
    await page.selectOption('[data-testid=coupon-when]', 'at');
    await page.fill('[data-testid=coupon-at]', new Date(Date.now() + 4000).toISOString().slice(0, 19));
    await page.click('[data-testid=drop-coupon]');
    const card = alice.page.locator('[data-testid=coupon]', { hasText: '50% off' });
    await until('the announced drop', async () => (await attr(card, 'data-status')) === 'scheduled');
    check((await text(card.locator('.countdown'))).startsWith('drops in'), 'it counts down');
    await until('the drop', async () => (await attr(card, 'data-status')) === 'dropped', 15_000);
    await card.locator('[data-testid=claim]').click();
    await card.locator('[data-testid=claimed]').waitFor();
  });

  await step('planner: the shift on air and the sale’s commission in the statement', async () => {
    const { page } = planner;
    await until('the commission entries', async () => {
      await page.click('#period button');
      await page.waitForTimeout(300);
      return (await page.locator('[data-testid=statement-entry]').count()) >= 2;
    }, 15_000);
    await page.click('#today');
    const row = page.locator(`[data-testid=session-row][data-session-id="${sessionId}"]`);
    await until('Mia on air', async () => (await row.locator('[data-testid=shift-block][data-status=on_air]').count()) === 1);
    await shoot(page, 'planner-desktop');
    await shoot(page, 'planner-phone', PHONE);
  });

  // ---------- issue 14: a brand's catalog and campaign, found and bought by a new viewer ----------

  let brand;
  let carol;
  let campaignId;
  let scarfSku;
  const SCARF = 'E2E Silk Scarf';
  const CATALOG_CSV = [
    'product_name,sku_code,sku_name,price_minor,currency,stock,attributes',
    `${SCARF},E2E-SCARF-RED,Red,2500,USD,40,colour=red`,
    `${SCARF},E2E-SCARF-BLUE,Blue,2500,USD,40,colour=blue`,
    'E2E Lip Oil,E2E-OIL-1,Clear,1200,USD,100,',
    'E2E Broken,E2E-BAD,Bad,-5,USD,1,',
  ].join('\n');

  await step('brand: imports a catalog as CSV; the report names the refused row', async () => {
    brand = await openPage('brand', '/console/brand.html');
    const { page } = brand;
    await until('the brand signed in', async () => (await text(page.locator('#brand-name'))).includes('Aurora'));
    await page.fill('[data-testid=import-text]', CATALOG_CSV);
    await page.click('[data-testid=import-submit]');
    const report = page.locator('[data-testid=import-report]');
    await until('the import report', async () => (await attr(report, 'data-failed')) === '1');
    check((await attr(report, 'data-created')) === '3', 'three SKUs created');
    const error = report.locator('[data-testid=import-error]');
    check((await error.count()) === 1, 'one refused row');
    check((await attr(error, 'data-row')) === '4', 'the refused row is row 4');
    check((await text(error)).includes('bad_price'), 'it says why');
    const row = page.locator('[data-testid=catalog-sku][data-code=E2E-SCARF-RED]');
    await row.waitFor();
    scarfSku = await attr(row, 'data-sku-id');
    check((await text(row.locator('[data-testid=sku-stock]'))) === '40', 'the opening stock');
    // Importing the same file again changes nothing.
    await page.click('[data-testid=import-submit]');
    await until('the second report', async () => (await text(report.locator('[data-testid=import-unchanged]'))) === '3');
    check((await text(report.locator('[data-testid=import-created]'))) === '0', 'nothing created the second time');
  });

  await step('brand: restocks a SKU', async () => {
    const row = brand.page.locator('[data-testid=catalog-sku][data-code=E2E-SCARF-RED]');
    await row.locator('input[name=delta]').fill('10');
    await row.locator('[data-testid=restock]').click();
    await until('the stock after the restock', async () => (await text(row.locator('[data-testid=sku-stock]'))) === '50');
  });

  await step('brand: proposes a campaign to the demo agency with a floor price and an allocation', async () => {
    const { page } = brand;
    await page.fill('[data-testid=campaign-name]', 'E2E Scarf week');
    const pick = page.locator('[data-testid=pick-sku][data-code=E2E-SCARF-RED]');
    await pick.locator('input[name=pick]').check();
    await pick.locator('input[name=floor]').fill('20.00');
    await pick.locator('input[name=alloc]').fill('30');
    await page.click('[data-testid=propose-submit]');
    const row = page.locator('[data-testid=campaign]', { hasText: 'E2E Scarf week' });
    await until('the proposed campaign', async () => (await attr(row, 'data-status')) === 'proposed');
    campaignId = await attr(row, 'data-campaign-id');
    const sku = page.locator('[data-testid=campaign-detail] [data-testid=campaign-sku][data-code=E2E-SCARF-RED]');
    await sku.waitFor();
    check((await text(sku)).includes('$20.00'), 'the floor is shown');
    check((await page.locator('[data-testid=campaign-detail] [data-testid=campaign-sku]').count()) === 1, 'only the ticked SKU');
  });

  await step('the agency accepts the campaign on the planner', async () => {
    const { page } = planner;
    await page.click('[data-testid=reload-campaigns]');
    const row = page.locator(`[data-testid=planner-campaign][data-campaign-id="${campaignId}"]`);
    await until('the proposal on the planner', async () => (await attr(row, 'data-status')) === 'proposed');
    await row.locator('[data-testid=accept-campaign]').click();
    await until('accepted on the planner', async () => (await attr(row, 'data-status')) === 'accepted');
    await brand.page.selectOption('#campaign-status', 'accepted');
    await until('the campaign accepted on the brand page', async () => (await attr(brand.page.locator(`[data-testid=campaign][data-campaign-id="${campaignId}"]`), 'data-status')) === 'accepted');
  });

  let scarfLink;
  await step('host: the picker lists only campaign SKUs; the campaign SKU joins the lineup and a deal launches on it', async () => {
    const { page } = host;
    await page.click('[data-testid=refresh-catalog]');
    const options = page.locator('[data-testid=catalog] option');
    await until('the campaign SKU in the picker', async () => (await page.locator(`[data-testid=catalog] option[value="${scarfSku}"]`).count()) === 1);
    const offered = await options.evaluateAll((els) => els.map((e) => e.value));
    const sellable = await page.evaluate(async (id) => {
      const token = Object.entries(localStorage).find(([k]) => k.startsWith('hawker.token.agency.ops-console.'))?.[1];
      const r = await fetch(`/v1/sessions/${id}/sellable-skus`, { headers: { Authorization: `Bearer ${token}` } });
      return (await r.json()).map((s) => s.sku_id);
    }, sessionId);
    check(offered.length === sellable.length && offered.every((v) => sellable.includes(v)), 'the picker offers exactly the sellable SKUs');
    const optionTexts = await options.allTextContents();
    check(!optionTexts.some((t) => t.includes('E2E Lip Oil') || t.includes('Blue')), 'SKUs outside the campaign are not offered');
    await page.selectOption('[data-testid=catalog]', scarfSku);
    await page.click('[data-testid=add-item]');
    const item = page.locator('[data-testid=lineup-item]', { hasText: SCARF });
    await item.waitFor();
    scarfLink = await attr(item, 'data-link');
    await page.selectOption('[data-testid=deal-item]', scarfLink);
    await page.fill('[data-testid=deal-price]', '22.00');
    await page.fill('[data-testid=deal-quantity]', '5');
    await page.fill('[data-testid=deal-countdown]', '0');
    await page.click('[data-testid=launch-deal]');
    await until('the scarf deal live on the host', async () => (await page.locator('[data-testid=host-deal][data-status=live]', { hasText: SCARF }).count()) === 1, 30_000);
  });

  await step('a viewer finds the session on “live now”, opens it, buys and pays', async () => {
    carol = await openPage('viewer carol', '/console/live.html?user=viewer-carol');
    const { page } = carol;
    const card = page.locator(`[data-testid=session-card][data-session-id="${sessionId}"]`);
    await card.waitFor();
    check((await attr(card, 'data-status')) === 'live', 'listed as live');
    const cardText = await text(card);
    check(cardText.includes('E2E Glow Night') && cardText.includes('Mia Chen') && cardText.includes('Starlight MCN'), `title, host and agency: ${cardText}`);
    check((await text(card.locator('[data-testid=session-pinned]'))).includes(productOne.split(' ')[0]), 'the pinned item');
    // The count is the hub's last announcement: refresh until it has come.
    await until('the viewer count', async () => {
      if (/^[1-9]\d* watching$/.test(await text(card.locator('[data-testid=session-viewers]')))) return true;
      await page.click('#refresh');
      await page.waitForTimeout(500);
      return false;
    }, 20_000);
    await shoot(page, 'live-desktop');
    await shoot(page, 'live-phone', PHONE);
    await card.click();
    await page.waitForURL(/viewer\.html\?.*session=/);
    check(page.url().includes('user=viewer-carol'), 'the viewer keeps its identity');
    await connected(page);
    const deal = page.locator('[data-testid=deal][data-status=live]', { hasText: SCARF });
    await deal.waitFor();
    await deal.locator('[data-testid=buy]').click();
    const order = page.locator('[data-testid=order]');
    await until('the order', async () => (await attr(order, 'data-status')) === 'pending_payment');
    check((await text(order.locator('[data-testid=order-amount]'))) === '$22.00', 'the deal price');
    carol.order = await attr(order, 'data-order-id');
    await order.locator('[data-testid=pay]').click();
    await until('the order paid', async () => (await attr(order, 'data-status')) === 'paid');
  });

  await step('the viewer sees the order under “my orders”, with its history', async () => {
    const { page } = carol;
    await page.click('[data-testid=nav-orders]');
    await page.waitForURL(/orders\.html/);
    const mine = page.locator('[data-testid=my-order]');
    await until('one order', async () => (await mine.count()) === 1);
    check((await attr(mine, 'data-order-id')) === carol.order, 'the order just paid');
    check((await attr(mine, 'data-status')) === 'paid', 'paid');
    check((await text(mine.locator('[data-testid=my-order-amount]'))) === '$22.00', 'its amount');
    await mine.locator('button[data-action=open]').click();
    const events = page.locator('[data-testid=order-detail] [data-testid=order-event]');
    await until('created and paid events', async () => JSON.stringify(await events.evaluateAll((els) => els.map((e) => e.dataset.kind))) === '["created","paid"]');
    await shoot(page, 'orders-desktop');
    await shoot(page, 'orders-phone', PHONE);
    await page.selectOption('[data-testid=order-status-filter]', 'cancelled');
    await until('no cancelled orders', async () => (await mine.count()) === 0);
    // Nobody else's orders: alice's paid order is not here.
    check(!(await text(page.locator('body'))).includes(alice.paidOrder.slice(-6)), 'alice’s order is not listed');
  });

  await step('the viewer cancels a pending order from “my orders”; the units go back', async () => {
    const { page } = carol;
    const viewer = await openPage('viewer carol 2', `/console/viewer.html?session=${sessionId}&user=viewer-carol`);
    await connected(viewer.page);
    const deal = viewer.page.locator('[data-testid=deal][data-status=live]', { hasText: SCARF });
    await until('4 left', async () => (await attr(deal.locator('[data-testid=deal-stock]'), 'data-remaining')) === '4');
    await deal.locator('[data-testid=buy]').click();
    await until('3 left after the second order', async () => (await attr(deal.locator('[data-testid=deal-stock]'), 'data-remaining')) === '3');
    await page.selectOption('[data-testid=order-status-filter]', 'pending_payment');
    const pending = page.locator('[data-testid=my-order][data-status=pending_payment]');
    await until('the pending order', async () => (await pending.count()) === 1);
    await pending.locator('button[data-action=open]').click();
    await page.click('[data-testid=cancel-order]');
    await until('cancelled', async () => (await page.locator('[data-testid=order-detail] [data-testid=order-event][data-kind=cancelled]').count()) === 1);
    await until('the units back in the room', async () => (await attr(deal.locator('[data-testid=deal-stock]'), 'data-remaining')) === '4');
    await viewer.context.close();
  });

  await step('brand: the sales report shows the sale, with a CSV download', async () => {
    const { page } = brand;
    await page.click('[data-testid=report-submit]');
    const row = page.locator('[data-testid=report-row]', { hasText: SCARF });
    await until('the scarf in the report', async () => (await row.count()) === 1, 15_000);
    check((await text(row.locator('[data-testid=report-net]'))) === '$22.00', `net of the scarf: ${await text(row)}`);
    const link = page.locator('[data-testid=report-csv]');
    await until('the CSV link', async () => (await attr(link, 'href'))?.startsWith('blob:'));
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    const csv = fs.readFileSync(await download.path(), 'utf8');
    check(csv.includes(SCARF), `the CSV has the scarf: ${csv.slice(0, 300)}`);
    await shoot(page, 'brand-desktop');
    await shoot(page, 'brand-phone', PHONE);
  });

  // ---------- issue 16: one auction and one giveaway, each to the end ----------

  let auctionEnd;
  await step('host starts an 8-second anti-snipe auction (8 s window: every bid extends it); both viewers see it', async () => {
    const { page } = host;
    await page.selectOption('[data-testid=auction-item]', '1');
    await page.fill('[data-testid=auction-start]', '15.00');
    await page.fill('[data-testid=auction-duration]', '8');
    await page.selectOption('[data-testid=auction-mode]', 'anti_snipe');
    await page.fill('[data-testid=auction-window]', '8');
    check((await page.locator('[data-testid=increment-line]').count()) === 3, 'the default increment table has three lines');
    await page.click('[data-testid=start-auction]');
    await until('the auction on the host', async () => (await page.locator('[data-testid=host-auction][data-status=running]').count()) === 1);
    for (const { page: viewer } of [alice, bob]) {
      const card = viewer.locator('[data-testid=auction][data-status=running]');
      await until('the auction on the viewer', async () => (await card.count()) === 1);
      check((await text(card.locator('[data-testid=bid]'))) === 'Bid $15.00', 'the first bid is the start price');
      check((await text(card.locator('.countdown'))).startsWith('ends in'), 'its countdown runs');
    }
    auctionEnd = Date.parse(await attr(alice.page.locator('[data-testid=auction] .countdown'), 'data-until'));
  });

  await step('alice sets a maximum and leads; bob’s higher maximum outbids her, and she is told privately', async () => {
    const mine = alice.page.locator('[data-testid=auction]');
    await mine.locator('[data-testid=max-bid-input]').fill('25.00');
    await mine.locator('[data-testid=set-max-bid]').click();
    await until('alice leading', async () => (await attr(mine, 'data-leading')) === 'true');
    check((await attr(mine.locator('[data-testid=auction-price]'), 'data-price')) === '1500', 'her proxy bids the start price only');
    const his = bob.page.locator('[data-testid=auction]');
    await until('bob sees alice’s bid', async () => (await attr(his.locator('[data-testid=auction-price]'), 'data-price')) === '1500');
    await his.locator('[data-testid=max-bid-input]').fill('40.00');
    await his.locator('[data-testid=set-max-bid]').click();
    await until('bob leading', async () => (await attr(his, 'data-leading')) === 'true');
    // Her maximum answers first ($25.00); his takes the lead one step above it ($2 from $20): $27.00.
    await until('$27.00 on alice’s page', async () => (await attr(mine.locator('[data-testid=auction-price]'), 'data-price')) === '2700');
    await mine.locator('[data-testid=auction-outbid]').waitFor();
    check((await attr(mine, 'data-leading')) === 'false', 'alice no longer leads');
    await until('the outbid notice', async () => (await alice.page.locator('[data-testid=notices] li[data-kind="auction.outbid"]').count()) === 1);
    check((await bob.page.locator('[data-testid=notices] li[data-kind="auction.outbid"]').count()) === 0, 'bob was not outbid');
    // Each bid came inside the anti-snipe window: the end moved, on the viewers and the host.
    await until('the countdown moved', async () => Date.parse(await attr(mine.locator('.countdown'), 'data-until')) > auctionEnd);
    await mine.locator('[data-testid=auction-extended]').waitFor();
    await until('the extension on the host', async () => (await text(host.page.locator('[data-testid=host-auction][data-status=running] [data-testid=host-auction-leader]'))).includes('extended'));
    auctionEnd = Date.parse(await attr(his.locator('.countdown'), 'data-until'));
  });

  let giveawayEntries;
  await step('host starts a giveaway (5 s entry window); both viewers enter once and see the count', async () => {
    const { page } = host;
    const prize = await page.locator('[data-testid=giveaway-prize] option').evaluateAll((els) => els.find((o) => o.textContent.startsWith('#2 '))?.value);
    check(prize?.startsWith('item:'), `the second lineup item is offered as a prize (${prize})`);
    await page.selectOption('[data-testid=giveaway-prize]', prize);
    await page.fill('[data-testid=giveaway-winners]', '1');
    await page.fill('[data-testid=giveaway-window]', '5');
    check(await page.isChecked('[data-testid=giveaway-present]'), 'must be present is on by default');
    await page.click('[data-testid=start-giveaway]');
    for (const { page: viewer } of [alice, bob]) {
      const card = viewer.locator('[data-testid=giveaway][data-status=open]');
      await until('the giveaway on the viewer', async () => (await card.count()) === 1);
      await card.locator('[data-testid=enter-giveaway]').click();
      await card.locator('[data-testid=giveaway-entered]').waitFor();
    }
    giveawayEntries = await Promise.all([alice, bob].map(({ page: viewer }) => attr(viewer.locator('[data-testid=giveaway-entry]'), 'data-entry-id')));
    check(giveawayEntries.every((id) => /^[0-9a-f]{32}$/.test(id)) && giveawayEntries[0] !== giveawayEntries[1], `two entry ids: ${giveawayEntries}`);
    for (const { page: viewer } of [alice, bob, host]) {
      await until('2 entries', async () => (await viewer.locator('[data-testid=giveaway-count][data-count="2"], [data-testid=host-giveaway-count][data-count="2"]').count()) === 1);
    }
  });

  await step('the auction ends at its extended end: bob wins at $27.00; alice and the host see the sale', async () => {
    const won = bob.page.locator('[data-testid=auction] [data-testid=auction-won]');
    await until('bob’s win', async () => (await won.count()) === 1, 15_000);
    check(Date.now() >= auctionEnd - 500, 'not before the extended end');
    check((await text(won)).includes('$27.00'), `the hammer price: ${await text(won)}`);
    await until('the notice of the win', async () => (await bob.page.locator('[data-testid=notices] li[data-kind="auction.won"]').count()) === 1);
    await won.locator('[data-testid=auction-pay]').waitFor();
    const order = bob.page.locator(`[data-testid=order][data-order-id="${await attr(won, 'data-order-id')}"]`);
    check((await text(order.locator('[data-testid=order-amount]'))) === '$27.00', 'his order is at the hammer price');
    const outcome = alice.page.locator('[data-testid=auction] [data-testid=auction-outcome]');
    await until('the sale on alice’s page', async () => (await text(outcome)).includes('for $27.00'));
    check((await alice.page.locator('[data-testid=auction-won]').count()) === 0, 'alice did not win');
    const hostAuction = host.page.locator('[data-testid=host-auction][data-outcome=sold]');
    await until('the sale on the host', async () => (await text(hostAuction.locator('[data-testid=host-auction-outcome]'))).includes('viewer-bob'));
    check((await hostAuction.locator('[data-testid=host-bid-feed] li').count()) >= 2, 'the host sees the bid feed');
    bob.auctionOrder = await attr(won, 'data-order-id');
  });

  await step('bob backs out; the host makes a second-chance offer; alice gets it at her last bid and pays', async () => {
    // Bob cancels his unpaid order (as "my orders" does): it lapses.
    const status = await bob.page.evaluate(async (id) => {
      const token = Object.entries(localStorage).find(([k]) => k.startsWith('hawker.token.viewer.viewer-bob.'))?.[1];
      const r = await fetch(`/v1/me/orders/${id}/cancel`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
      return r.status;
    }, bob.auctionOrder);
    check(status === 200, `the cancel answered ${status}`);
    const hostAuction = host.page.locator('[data-testid=host-auction][data-outcome=sold]');
    const offer = hostAuction.locator('[data-testid=second-chance]');
    await until('the second-chance button', async () => (await offer.count()) === 1);
    await offer.click();
    await until('the offer recorded', async () => (await text(hostAuction.locator('[data-testid=second-chance-made]'))).includes('viewer-alice at $25.00'));
    const won = alice.page.locator('[data-testid=auction] [data-testid=auction-won]');
    await until('alice’s second chance', async () => (await text(won)).includes('Second chance'));
    check((await text(won)).includes('$25.00'), `at her maximum: ${await text(won)}`);
    const pay = won.locator('[data-testid=auction-pay]');
    await pay.waitFor();
    await pay.click();
    await until('alice’s auction order paid', async () => (await attr(won, 'data-order-status')) === 'paid');
    const order = alice.page.locator(`[data-testid=order][data-order-id="${await attr(won, 'data-order-id')}"]`);
    check((await text(order.locator('[data-testid=order-amount]'))) === '$25.00', 'the order is at her last bid');
  });

  await step('the giveaway closes and draws: the viewers see the winner, the seed and verify the draw in the browser', async () => {
    const cards = [alice, bob].map(({ page: viewer }) => viewer.locator('[data-testid=giveaway]'));
    for (const card of cards) await until('the draw', async () => (await attr(card, 'data-status')) === 'drawn', 15_000);
    const winners = await cards[0].locator('[data-testid=giveaway-winners] code').allTextContents();
    check(winners.length === 1, `one winner: ${winners}`);
    const winner = winners[0].split(' ')[0];
    check(giveawayEntries.includes(winner), `the winner is one of the two entries (${winner})`);
    check(/^[0-9a-f]{64}$/.test(await text(cards[0].locator('[data-testid=giveaway-seed]'))), 'the seed is revealed');
    check(/^[0-9a-f]{64}$/.test(await text(cards[0].locator('[data-testid=giveaway-entries-hash]'))), 'the frozen list’s hash is shown');
    const winnerPage = giveawayEntries[0] === winner ? alice : bob;
    await winnerPage.page.locator('[data-testid=giveaway-won]').waitFor();
    for (const card of cards) {
      await card.locator('[data-testid=verify-draw]').click();
      await until('the verification', async () => (await attr(card.locator('[data-testid=verify-result]'), 'data-verified')) === 'match');
    }
    // The winner's prize is a free order, paid at once.
    await until('the prize order', async () => (await winnerPage.page.locator('[data-testid=order][data-status=paid]', { hasText: 'giveaway prize' }).count()) === 1);
    const hostCard = host.page.locator('[data-testid=host-giveaway][data-status=drawn]');
    await hostCard.locator('[data-action=verify-giveaway]').click();
    await until('the host’s verification', async () => (await attr(hostCard.locator('[data-testid=verify-result]'), 'data-verified')) === 'match');
    await shoot(alice.page, 'formats-viewer-phone', PHONE);
    await shoot(alice.page, 'formats-viewer-desktop');
    await shoot(host.page, 'formats-host-desktop');
  });

  // ---------- issue 17: a group buy to success ----------

  await step('host starts a group buy (10 s, tiers $20 then $15 from 2 buyers); both viewers join and see the second tier unlock', async () => {
    const { page } = host;
    await page.selectOption('[data-testid=group-buy-item]', '1');
    await page.fill('[data-testid=group-buy-tiers-input]', '1:20.00, 2:15.00');
    await page.fill('[data-testid=group-buy-min]', '2');
    await page.fill('[data-testid=group-buy-duration]', '10');
    await page.fill('[data-testid=group-buy-cap]', '2');
    await page.fill('[data-testid=group-buy-stock]', '10');
    await page.click('[data-testid=start-group-buy]');
    await until('the group buy on the host', async () => (await page.locator('[data-testid=host-group-buy][data-status=running]').count()) === 1);
    const cards = [alice, bob].map(({ page: viewer }) => viewer.locator('[data-testid=group-buy][data-status=running]'));
    for (const card of cards) await until('the group buy on the viewer', async () => (await card.count()) === 1);
    const first = cards[0].locator('[data-testid=group-buy-tier][data-tier="0"]');
    check((await attr(first, 'data-current')) === 'true', 'the first tier is in force before anyone joins');
    await cards[0].locator('[data-testid=join-group-buy]').click();
    await cards[0].locator('[data-testid=group-buy-joined][data-units="1"]').waitFor();
    await cards[1].locator('[data-action=gb-more]').click();
    await cards[1].locator('[data-testid=join-group-buy]').click();
    await cards[1].locator('[data-testid=group-buy-joined][data-units="2"]').waitFor();
    // The room's progress reaches every page: two buyers, the $15 tier unlocked.
    for (const card of cards) {
      await until('2 participants', async () => (await attr(card.locator('[data-testid=group-buy-participants]'), 'data-count')) === '2');
      await until('the second tier', async () => (await attr(card.locator('[data-testid=group-buy-tier][data-tier="1"]'), 'data-current')) === 'true');
    }
    await until('2 buyers on the host', async () => (await attr(page.locator('[data-testid=host-group-buy-figures]'), 'data-participants')) === '2');
    await shoot(alice.page, 'group-buy-viewer-phone', PHONE);
  });

  await step('the countdown ends: the group buy succeeds, alice pays $15.00 (the final tier), bob owes $30.00', async () => {
    for (const { page: viewer } of [alice, bob]) {
      await until('success', async () => (await viewer.locator('[data-testid=group-buy][data-status=succeeded]').count()) === 1, 20_000);
      await until('the success notice', async () => (await viewer.locator('[data-testid=notices] li[data-kind="group_buy.succeeded"]').count()) === 1);
    }
    const order = alice.page.locator('[data-testid=order][data-status=pending_payment]', { hasText: 'group buy' });
    await until('alice’s group-buy order', async () => (await order.count()) === 1);
    check((await text(order.locator('[data-testid=order-amount]'))) === '$15.00', 'alice pays the final tier’s price');
    await order.locator('[data-testid=pay]').click();
    await until('alice’s group-buy order paid', async () => (await alice.page.locator('[data-testid=order][data-status=paid]', { hasText: 'group buy' }).count()) === 1);
    const his = bob.page.locator('[data-testid=order]', { hasText: 'group buy' });
    await until('bob’s group-buy order', async () => (await his.count()) === 1);
    check((await text(his.locator('[data-testid=order-amount]'))) === '$30.00', 'bob’s two units at the final price');
    await until('the success on the host', async () => (await host.page.locator('[data-testid=host-group-buy][data-status=succeeded]').count()) === 1);
  });
  // ---- comment-to-buy (issue 17): the host page's toggle ----
  await step('host turns comment-to-buy on with its own keywords, then off', async () => {
    const { page } = host;
    await page.fill('[data-testid=c2b-keywords]', 'sold mine');
    await page.check('[data-testid=c2b-enabled]');
    await until('the room to say it is on', async () => (await text(page.locator('#feed'))).includes('comment-to-buy on (SOLD, MINE)'));
    check((await page.inputValue('[data-testid=c2b-keywords]')) === 'SOLD MINE', 'the keywords as stored (upper-case)');
    await page.uncheck('[data-testid=c2b-enabled]');
    await until('the room to say it is off', async () => (await text(page.locator('#feed'))).includes('comment-to-buy off'));
  });
  // ---- end of comment-to-buy ----

  // ---------- waitlists (issue 17) ----------
  await step('a deal sells out; alice joins its waitlist; bob lets his order go; alice gets the offer with its countdown and buys it', async () => {
    const { page } = host;
    await page.selectOption('[data-testid=deal-item]', '2');
    await page.fill('[data-testid=deal-price]', '19.00');
    await page.fill('[data-testid=deal-quantity]', '1');
    await page.fill('#deal-form [name=cap]', '1');
    await page.fill('[data-testid=deal-countdown]', '0');
    await page.click('[data-testid=launch-deal]');
    const deal = bob.page.locator('[data-testid=deal][data-status=live]', { has: bob.page.locator('[data-testid=deal-stock][data-remaining="1"]') });
    await until('the one-unit deal on bob’s page', async () => (await deal.count()) === 1);
    const dealId = await attr(deal, 'data-deal-id');
    await deal.locator('[data-testid=buy]').click();
    await until('bob’s order', async () => (await text(bob.page.locator(`[data-testid=deal][data-deal-id="${dealId}"] [data-testid=deal-result]`))).startsWith('Ordered 1'));
    const card = alice.page.locator(`[data-testid=waitlist][data-deal-id="${dealId}"]`);
    await until('the sold-out deal’s waitlist card', async () => (await card.count()) === 1);
    await card.locator('[data-testid=waitlist-join]').click();
    await until('alice in line', async () => (await text(card.locator('[data-testid=waitlist-position]'))) === 'You are #1 in line');
    await until('the count', async () => (await text(card.locator('[data-testid=waitlist-count]'))) === '1 waiting');
    // Bob cancels his unpaid order: its unit goes to the waitlist, first in line first.
    const status = await bob.page.evaluate(async (id) => {
      const token = Object.entries(localStorage).find(([k]) => k.startsWith('hawker.token.viewer.viewer-bob.'))?.[1];
      const headers = { Authorization: `Bearer ${token}` };
      const orders = await (await fetch('/v1/me/orders?limit=100', { headers })).json();
      const order = orders.items.find((o) => o.deal_id === id && o.status === 'pending_payment');
      return (await fetch(`/v1/me/orders/${order.order_id}/cancel`, { method: 'POST', headers })).status;
    }, dealId);
    check(status === 200, `the cancel answered ${status}`);
    const offer = card.locator('[data-testid=waitlist-offer]');
    await until('alice’s offer', async () => (await offer.count()) === 1);
    check((await text(offer.locator('.countdown'))).startsWith('held for you for'), 'the offer’s countdown runs');
    await until('the offer notice', async () => (await alice.page.locator('[data-testid=notices] li[data-kind="waitlist.offer"]').count()) === 1);
    await offer.locator('[data-testid=waitlist-buy]').click();
    await until('alice’s order from the offer', async () => (await text(card.locator('[data-testid=waitlist-result]'))).startsWith('Ordered 1 for $19.00'));
  });

  await step('host ends the session; the viewers are told', async () => {
    const { page } = host;
    await page.click('[data-testid=end-session]');
    await page.click('[data-testid=end-session]');
    await until('the session ended', async () => (await attr(page.locator('[data-testid=session-status]'), 'data-status')) === 'ended');
    await until('the goodbye on the viewer', async () => (await text(alice.page.locator('[data-testid=announcement]'))).includes('ended'));
  });

  await step('no console errors in any page', async () => {
    check(consoleErrors.length === 0, `browser console errors:\n  ${consoleErrors.join('\n  ')}`);
  }, { always: true });

  await step('the browser closes and hawker shuts down cleanly', async () => {
    const t0 = Date.now();
    await browser?.close();
    const t1 = Date.now();
    await stopServer();
    if (process.env.E2E_TIMING) console.log(`      browser ${t1 - t0} ms, server ${Date.now() - t1} ms`);
    check(server.exited?.code === 0, `hawker exited with ${JSON.stringify(server.exited)}`);
  }, { always: true });
  const count = (status) => results.filter((r) => r.status === status).length;
  const skipped = count('skipped');
  console.log(`\n${count('passed')} passed, ${count('failed') + skipped} failed${skipped ? ` (${skipped} not run after a failure)` : ''} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (failed) {
    console.log(`server log: ${logFile}`);
    try {
      console.log(fs.readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n'));
    } catch {
      /* no log */
    }
  } else if (!process.env.E2E_KEEP) {
    fs.rmSync(logFile, { force: true });
  }
  process.exit(failed ? 1 : 0);
}

main().catch(async (e) => {
  console.error(e);
  await browser?.close().catch(() => {});
  await stopServer().catch(() => {});
  process.exit(1);
});
