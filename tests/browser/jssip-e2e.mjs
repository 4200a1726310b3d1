// Roundabout's browser tests: JsSIP users in headless Chromium register over WSS through
// Roundabout to a registrar and make calls.
//
//   node tests/browser/jssip-e2e.mjs WSS_URL DOMAIN [TIMEOUT_SECONDS] [LOG_FILE] [MODE]
//   e.g. node tests/browser/jssip-e2e.mjs wss://127.0.0.1:8443 127.0.0.4 40 /tmp/jssip.log pair
//
// MODE (default "pair"):
//   pair   - two browsers, alice and bob: they exchange MESSAGEs, and alice calls bob
//            (answer, then alice's BYE).
//   phones - one browser, alice, and two phones registered at the registrar on their own
//            (SIPp on UDP, started by the caller of this script): carol (she hangs up) and
//            dave (alice hangs up). alice calls carol, then dave; then, after printing
//            "alice ready-for-call 1", she expects a call from carol (carol hangs up) and,
//            after "alice ready-for-call 2", one from dave (alice hangs up). Each call:
//            answer, ACK, BYE from the side named.
//
// DOMAIN is the registrar's address (users are sip:USER@DOMAIN, password "secret"). Prints
// one line per observed event ("<user> <event> [details]"), then "PASS" and exits 0 when
// every expected event happened within TIMEOUT_SECONDS (default 40); otherwise prints
// "FAIL: ..." and exits 1. LOG_FILE gets JsSIP's debug output (every SIP message the
// browsers sent and received) and the pages' console. Run by tests/browser.rs; needs
// `npm ci` in tests/browser (tests/run-all.sh does it) and Debian's chromium.
//
// Nothing leaves the machine: the page comes from a tiny HTTP server on 127.0.0.1 (a page
// served by page.route has no address, so Chromium's Local Network Access checks count it as
// public and block its WebSocket to 127.0.0.1: net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS),
// JsSIP is bundled in memory by esbuild, ICE gathers no candidate (relay only, no TURN
// server), and media is Chromium's fake devices.

import { appendFileSync, existsSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

const [wssUrl, domain, timeoutArg = '40', logFile, mode = 'pair'] = process.argv.slice(2);
if (!wssUrl || !domain || !['pair', 'phones'].includes(mode)) {
  console.error('usage: node jssip-e2e.mjs WSS_URL DOMAIN [TIMEOUT_SECONDS] [LOG_FILE] [pair|phones]');
  process.exit(2);
}
const started = Date.now();
const deadline = started + Number(timeoutArg) * 1000;

// The real binary, not the /usr/bin/chromium wrapper script: the wrapper sources
// /etc/chromium.d (extension and GPU flags, a /dev/shm test that prints a shell error here)
// and adds nothing a headless test needs.
const CHROMIUM = process.env.CHROMIUM || '/usr/lib/chromium/chromium';
const PASSWORD = 'secret';

if (logFile) writeFileSync(logFile, '');
const log = (line) => {
  if (logFile) appendFileSync(logFile, `${((Date.now() - started) / 1000).toFixed(3)} ${line}\n`);
};
const say = (line) => {
  console.log(line);
  log(`### ${line}`);
};

function fail(why) {
  say(`FAIL: ${why}`);
  return 1;
}

// --- events reported by the pages ------------------------------------------------------------

const events = []; // { who, name, detail }
let waiters = []; // { check }: true once settled
// An event that ends the test at once: nothing expected can follow it.
const FATAL = new Set(['registrationFailed', 'message-failed', 'failed', 'page-error']);
let fatal = null;

function onEvent(who, name, detail) {
  const event = { who, name, detail: detail || '' };
  events.push(event);
  say(`${who} ${name}${event.detail ? ` ${event.detail}` : ''}`);
  if (FATAL.has(name) && !fatal) fatal = event;
  waiters = waiters.filter((w) => !w.check());
}

// Resolves with the first event of `who` named `name` (past or future) among the events
// from index `since` on (see mark()); rejects on a fatal event, on an event of `who` named in
// `unless` (one that rules `name` out), or at the deadline.
function waitFor(who, name, unless = [], since = 0) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const recent = events.slice(since);
      const found = recent.find((e) => e.who === who && e.name === name);
      if (found) {
        resolve(found);
        return true;
      }
      const bad = fatal || recent.find((e) => e.who === who && unless.includes(e.name));
      if (bad) {
        reject(new Error(`waiting for "${who} ${name}": got "${bad.who} ${bad.name} ${bad.detail}"`));
        return true;
      }
      return false;
    };
    if (check()) return;
    const waiter = { check };
    waiters.push(waiter);
    setTimeout(() => {
      if (waiters.includes(waiter)) {
        waiters = waiters.filter((w) => w !== waiter);
        reject(new Error(`no "${who} ${name}" within ${timeoutArg} s`));
      }
    }, Math.max(0, deadline - Date.now()));
  });
}

// Where the events of the next step start (for waitFor's `since`).
function mark() {
  return events.length;
}

// --- the page ----------------------------------------------------------------------------------

// Runs in the browser: starts one JsSIP user agent and reports its events through
// window.report(name, detail). Keeps the UA and its session on window for later steps.
function startUserAgent({ user, wssUrl, domain, password }) {
  const report = (name, detail) => window.report(name, detail || '');
  const JsSIP = window.JsSIP;

  // JsSIP's debug output (every SIP message) goes to the console, which goes to the log
  // file: without CSS colour markers
  JsSIP.debug.formatArgs = function formatArgs(args) {
    args[0] = `${this.namespace} ${args[0]}`;
  };
  JsSIP.debug.enable('JsSIP:*');

  // No ICE servers, and relay candidates only: with no TURN server that is no candidate at
  // all, so gathering ends at once and no media packet leaves (the test is about SIP; host
  // candidates would be the machine's other interfaces)
  const pcConfig = { iceServers: [], iceTransportPolicy: 'relay' };
  const mediaConstraints = { audio: true, video: false };
  const ua = new JsSIP.UA({
    sockets: [new JsSIP.WebSocketInterface(wssUrl)],
    uri: `sip:${user}@${domain}`,
    password,
    register: true,
    session_timers: false,
  });
  window.ua = ua;
  window.pcConfig = pcConfig;
  window.mediaConstraints = mediaConstraints;

  ua.on('connected', () => report('connected'));
  ua.on('disconnected', (e) =>
    report('disconnected', `error=${e.error} code=${e.code || ''} reason=${e.reason || ''}`));
  ua.on('registered', (e) => report('registered', `${e.response.status_code}`));
  ua.on('registrationFailed', (e) =>
    report('registrationFailed', `cause=${e.cause} status=${e.response ? e.response.status_code : ''}`));
  ua.on('newMessage', (e) => {
    if (e.originator !== 'remote') return;
    report('newMessage', `from=${e.request.from.uri} body=${JSON.stringify(e.request.body)}`);
  });
  ua.on('newRTCSession', (e) => {
    const session = e.session;
    window.session = session;
    if (e.originator === 'remote') report('incoming', `from=${e.request.from.uri}`);
    session.on('progress', (ev) => report('progress', `${ev.response ? ev.response.status_code : ''}`));
    session.on('accepted', (ev) => report('accepted', `originator=${ev.originator}`));
    session.on('confirmed', (ev) => report('confirmed', `originator=${ev.originator}`));
    session.on('ended', (ev) => report('ended', `originator=${ev.originator} cause=${ev.cause}`));
    session.on('failed', (ev) =>
      report('failed', `originator=${ev.originator} cause=${ev.cause} status=${ev.message && ev.message.status_code || ''}`));
  });
  ua.start();
}

function sendMessage({ target, body }) {
  window.ua.sendMessage(target, body, {
    eventHandlers: {
      succeeded: (e) => window.report('message-succeeded', `${e.response.status_code}`),
      failed: (e) => window.report('message-failed',
        `cause=${e.cause} status=${e.response ? e.response.status_code : ''}`),
    },
  });
}

function call({ target }) {
  window.ua.call(target, { mediaConstraints: window.mediaConstraints, pcConfig: window.pcConfig });
}

function answer() {
  window.session.answer({ mediaConstraints: window.mediaConstraints, pcConfig: window.pcConfig });
}

function hangUp() {
  window.session.terminate();
}

// --- main ----------------------------------------------------------------------------------------

async function main() {
  if (!existsSync(CHROMIUM)) {
    return fail(`${CHROMIUM} not found: run \`bash tests/run-all.sh\` (it installs chromium)`);
  }
  let playwright;
  let esbuild;
  try {
    playwright = require('playwright-core');
    esbuild = require('esbuild');
    require.resolve('jssip');
  } catch (e) {
    return fail(`${e.message.split('\n')[0]}: run \`bash tests/run-all.sh\` (npm ci in tests/browser)`);
  }

  // JsSIP ships CommonJS only: bundle it into one script that sets window.JsSIP
  const bundle = await esbuild.build({
    entryPoints: [require.resolve('jssip')],
    bundle: true,
    format: 'iife',
    globalName: 'JsSIP',
    platform: 'browser',
    target: 'es2020',
    write: false,
    logLevel: 'error',
  });
  const jssip = bundle.outputFiles[0].text;

  // the page, from loopback: a secure context (getUserMedia), and in the same address space
  // as Roundabout's WSS listener
  const server = createServer((req, res) => {
    if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><meta charset="utf-8"><title>jssip</title><script src="/jssip.js"></script>');
    } else if (req.url === '/jssip.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(jssip);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const page_url = `http://127.0.0.1:${server.address().port}/`;

  const browser = await playwright.chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 20000,
    // Playwright gives the browser a fresh temporary profile (--user-data-dir) and removes it
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage', // what the wrapper's /etc/chromium.d/dev-shm would add
      '--ignore-certificate-errors', // Roundabout's WSS certificate is self-signed
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
    ],
  });
  try {
    const users = mode === 'pair' ? ['alice', 'bob'] : ['alice'];
    const pages = {};
    for (const user of users) {
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      const page = await context.newPage();
      page.setDefaultTimeout(10000);
      await page.exposeFunction('report', (name, detail) => onEvent(user, name, detail));
      page.on('console', (msg) => log(`${user} console.${msg.type()} ${msg.text()}`));
      page.on('pageerror', (e) => onEvent(user, 'page-error', String(e)));
      await page.goto(page_url);
      pages[user] = page;
    }

    for (const user of users) {
      await pages[user].evaluate(startUserAgent, { user, wssUrl, domain, password: PASSWORD });
    }
    await (mode === 'pair' ? pairCalls(pages) : phoneCalls(pages));

    say(`PASS (${events.length} events in ${((Date.now() - started) / 1000).toFixed(1)} s)`);
    // unregister (bounded: the result does not matter)
    await Promise.race([
      Promise.all(Object.values(pages).map((p) => p.evaluate(() => window.ua.stop()).catch(() => {}))),
      new Promise((r) => setTimeout(r, 2000)),
    ]);
    return 0;
  } catch (e) {
    return fail(e.message);
  } finally {
    await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
    server.close();
  }
}

// Mode "pair": alice and bob exchange MESSAGEs, alice calls bob and hangs up.
async function pairCalls(pages) {
  await waitFor('alice', 'registered');
  await waitFor('bob', 'registered');

  await pages.alice.evaluate(sendMessage, { target: `sip:bob@${domain}`, body: 'hello bob' });
  check(await waitFor('bob', 'newMessage'), `from=sip:alice@${domain} body="hello bob"`);
  await waitFor('alice', 'message-succeeded');
  await pages.bob.evaluate(sendMessage, { target: `sip:alice@${domain}`, body: 'hello alice' });
  check(await waitFor('alice', 'newMessage'), `from=sip:bob@${domain} body="hello alice"`);
  await waitFor('bob', 'message-succeeded');

  await pages.alice.evaluate(call, { target: `sip:bob@${domain}` });
  check(await waitFor('bob', 'incoming'), `from=sip:alice@${domain}`);
  await pages.bob.evaluate(answer);
  await waitFor('alice', 'accepted', ['ended']);
  await waitFor('alice', 'confirmed', ['ended']);
  await waitFor('bob', 'confirmed', ['ended']);
  await pages.alice.evaluate(hangUp);
  check(await waitFor('alice', 'ended'), 'originator=local cause=Terminated');
  check(await waitFor('bob', 'ended'), 'originator=remote cause=Terminated');
}

// Mode "phones": alice (the browser) and the UDP phones carol and dave, registered at the
// registrar on their own: a call in each direction with each of them; carol always hangs
// up herself, alice hangs up on dave. The caller of this script starts the phones' SIPp:
// carol's and dave's answering side before it runs, their calling side when it reads
// "alice ready-for-call N".
async function phoneCalls(pages) {
  await waitFor('alice', 'registered');

  // alice calls a phone: answered, confirmed, then `hangs` ('phone' or 'alice') ends it
  const callPhone = async (phone, hangs) => {
    const since = mark();
    say(`step: alice calls ${phone}, ${hangs === 'alice' ? 'alice' : phone} hangs up`);
    await pages.alice.evaluate(call, { target: `sip:${phone}@${domain}` });
    await waitFor('alice', 'accepted', ['ended'], since);
    await waitFor('alice', 'confirmed', ['ended'], since);
    if (hangs === 'alice') await pages.alice.evaluate(hangUp);
    const ended = await waitFor('alice', 'ended', [], since);
    check(ended, `originator=${hangs === 'alice' ? 'local' : 'remote'} cause=Terminated`);
  };
  await callPhone('carol', 'phone');
  await callPhone('dave', 'alice');

  // a phone calls alice: she answers; the ACK confirms; then `hangs` ends it
  const callFromPhone = async (n, phone, hangs) => {
    const since = mark();
    say(`step: ${phone} calls alice, ${hangs === 'alice' ? 'alice' : phone} hangs up`);
    onEvent('alice', 'ready-for-call', `${n}`);
    const incoming = await waitFor('alice', 'incoming', [], since);
    if (!incoming.detail.startsWith(`from=sip:${phone}@`)) {
      throw new Error(`call ${n} should come from ${phone}: "${incoming.detail}"`);
    }
    await pages.alice.evaluate(answer);
    await waitFor('alice', 'accepted', ['ended'], since);
    await waitFor('alice', 'confirmed', ['ended'], since);
    if (hangs === 'alice') await pages.alice.evaluate(hangUp);
    const ended = await waitFor('alice', 'ended', [], since);
    check(ended, `originator=${hangs === 'alice' ? 'local' : 'remote'} cause=Terminated`);
  };
  await callFromPhone(1, 'carol', 'phone');
  await callFromPhone(2, 'dave', 'alice');
}

function check(event, detail) {
  if (event.detail !== detail) {
    throw new Error(`"${event.who} ${event.name}" has "${event.detail}", expected "${detail}"`);
  }
}

// The whole run is bounded even if the browser hangs.
const guard = setTimeout(() => {
  say(`FAIL: still running ${Number(timeoutArg) + 15} s after the start`);
  process.exit(1);
}, (Number(timeoutArg) + 15) * 1000);

main().then(
  (code) => {
    clearTimeout(guard);
    process.exit(code);
  },
  (e) => {
    clearTimeout(guard);
    say(`FAIL: ${e.stack || e}`);
    process.exit(1);
  },
);
