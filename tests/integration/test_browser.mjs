// MQTT over WebSocket from a real browser: headless Chromium loads a page that this module serves
// on loopback (the page and MQTT.js's browser bundle from the npm install, nothing from the
// network), and the page's MQTT.js connects to the server over ws:// and wss://, 5.0 and 3.1.1,
// subscribes, publishes QoS 0, 1 and 2 and 200 KiB, trades messages with an MQTT.js client on the
// plain TCP port, and POSTs what it saw back to this module, which checks it. Refusals too: an
// Origin outside --ws-origin, a wrong path, a certificate the browser does not trust. Each browser
// run has a deadline and is killed after it. Run by ctest: `ctest -R integration_browser`; needs
// Chromium (Debian chromium; MQTTBROKER_CHROMIUM names the executable).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { FREE, HOST, WAIT, certificate, mqttBundle, opensslMissing, test, tlsArgs, within } from './harness.mjs';

const CHROMIUM = process.env.MQTTBROKER_CHROMIUM ?? '';
const STEP_DEADLINE = 10_000;  // ms the page gives one connection's steps
const START_SLACK = 15_000;  // ms on top of the steps for Chromium to start and load the page
const BIG = 200 * 1024;

function chromiumMissing() {
  if (!CHROMIUM) return 'Chromium (Debian chromium) is not installed (CMake found no chromium; MQTTBROKER_CHROMIUM names it)';
  try {
    fs.accessSync(CHROMIUM, fs.constants.X_OK);
    return null;
  } catch {
    return `Chromium ${CHROMIUM} (MQTTBROKER_CHROMIUM) is not executable`;
  }
}

const needs = [chromiumMissing, opensslMissing];

// ---------------------------------------------------------------------------------------------
// The page. It takes its plan from the query string: a list of steps, each one MQTT.js connection
// { name, url, version, clientId, exchange }. A step that connects and has `exchange` subscribes to
// <clientId>/#, publishes to <clientId>/echo/{0,1,2,big} and 'browser/hello/<clientId>', and waits
// for five messages: its four echoes and the reply the TCP client sends to <clientId>/reply. The
// report lists per step whether it connected, the errors, the granted QoS and each message
// received (topic, QoS, length, text when short, FNV-1a of the bytes).

const PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>mqttbroker over WebSocket</title>
<script src="/mqtt.min.js"></script></head>
<body><pre id="out">running</pre>
<script>
'use strict';
const plan = JSON.parse(new URLSearchParams(location.search).get('plan'));
const STEP_DEADLINE = ${STEP_DEADLINE};
const BIG = ${BIG};
const post = (where, body) => fetch(where, { method: 'POST', body });
const note = (text) => post('/log', text).catch(() => {});
window.addEventListener('error', (e) => note('page error: ' + e.message));

// The same pattern as bigPayload() in test_browser.mjs.
function bigPayload(seed) {
  let s = '';
  for (let i = 0; i < BIG; i++) s += String.fromCharCode(97 + ((i * 7 + seed) % 26));
  return s;
}

function fnv(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

function step(s, seed) {
  return new Promise((resolve) => {
    const r = { name: s.name, connected: false, errors: [], granted: null, received: [] };
    let finished = false;
    let c = null;
    const finish = (why) => {
      if (finished) return;
      finished = true;
      if (why) r.errors.push(why);
      clearTimeout(timer);
      c.end(true);
      resolve(r);
    };
    const timer = setTimeout(() => finish('no end within ' + STEP_DEADLINE + ' ms'), STEP_DEADLINE);
    let waiting = null;  // called on each message while the page waits for them
    c = mqtt.connect(s.url, { protocolVersion: s.version, clientId: s.clientId, reconnectPeriod: 0,
                              connectTimeout: STEP_DEADLINE, clean: true });
    c.on('error', (e) => r.errors.push(String((e && e.message) || e)));
    c.on('message', (topic, payload, packet) => {
      r.received.push({ topic, qos: packet.qos, length: payload.length, fnv: fnv(payload),
                        text: payload.length <= 64 ? new TextDecoder().decode(payload) : null });
      if (waiting) waiting();
    });
    c.on('close', () => finish(null));
    c.on('connect', () => {
      r.connected = true;
      note(s.name + ': connected');
      if (!s.exchange) return c.end(false, {}, () => finish(null));
      const id = s.clientId;
      const publish = (topic, payload, qos) =>
        new Promise((ok, fail) => c.publish(topic, payload, { qos }, (e) => (e ? fail(e) : ok())));
      new Promise((ok, fail) => c.subscribe(id + '/#', { qos: 2 }, (e, g) => (e ? fail(e) : ok(g))))
        .then((granted) => {
          r.granted = granted.map((g) => g.qos);
          return publish(id + '/echo/0', 'q0 from ' + id, 0);
        })
        .then(() => publish(id + '/echo/1', 'q1 from ' + id, 1))
        .then(() => publish(id + '/echo/2', 'q2 from ' + id, 2))
        .then(() => publish(id + '/echo/big', bigPayload(seed), 1))
        .then(() => publish('browser/hello/' + id, 'hello from ' + id, 1))
        .then(() => new Promise((ok) => {
          waiting = () => r.received.length >= 5 && ok();
          waiting();
        }))
        .then(() => c.end(false, {}, () => finish(null)))
        .catch((e) => finish(String((e && e.message) || e)));
    });
  });
}

(async () => {
  const results = [];
  for (const [i, s] of plan.entries()) results.push(await step(s, i));
  document.getElementById('out').textContent = JSON.stringify(results, null, 1);
  await post('/result', JSON.stringify({ userAgent: navigator.userAgent, results }));
})().catch((e) => post('/result', JSON.stringify({ failed: String(e.stack || e) })));
</script>
</body>
</html>
`;

/** The page's 200 KiB payload for step `seed`: lower-case letters, so it is the same bytes as the
 *  JavaScript string the page publishes. */
function bigPayload(seed) {
  const b = Buffer.alloc(BIG);
  for (let i = 0; i < BIG; i++) b[i] = 97 + ((i * 7 + seed) % 26);
  return b;
}

function fnv(bytes) {
  let h = 0x811c9dc5;
  for (const byte of bytes) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

// ---------------------------------------------------------------------------------------------
// The page's server: loopback HTTP, only the page, the bundle and the page's reports.

class PageServer {
  static async start() {
    const s = new PageServer();
    await new Promise((resolve, reject) => {
      s.server.on('error', reject);
      s.server.listen(0, HOST, resolve);
    });
    s.origin = `http://${HOST}:${s.server.address().port}`;
    return s;
  }

  constructor() {
    this.requests = [];  // [method, path] of each request
    this.notes = [];  // the page's progress (POST /log), for failure reports
    this.reports = [];  // resolvers of report()
    this.bundle = fs.readFileSync(mqttBundle());
    this.server = http.createServer((req, res) => this.serve(req, res));
  }

  serve(req, res) {
    const url = new URL(req.url, this.origin);
    this.requests.push([req.method, url.pathname]);
    const reply = (status, type, body) => {
      res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      res.end(body);
    };
    if (req.method === 'GET' && url.pathname === '/') return reply(200, 'text/html; charset=utf-8', PAGE);
    if (req.method === 'GET' && url.pathname === '/mqtt.min.js') return reply(200, 'text/javascript', this.bundle);
    if (req.method === 'POST' && (url.pathname === '/log' || url.pathname === '/result')) {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        reply(204, 'text/plain', '');
        if (url.pathname === '/log') this.notes.push(body);
        else this.reports.splice(0).forEach((resolve) => resolve(JSON.parse(body)));
      });
      return undefined;
    }
    return reply(404, 'text/plain', 'not here');
  }

  /** The next report the page POSTs. */
  report() {
    return new Promise((resolve) => this.reports.push(resolve));
  }

  close() {
    this.server.closeAllConnections?.();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------------
// Chromium

const browsers = new Set();  // process groups to kill if the module ends early
process.on('exit', () => {
  for (const pid of browsers) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** The SHA-256 of the server certificate's public key (SubjectPublicKeyInfo), base64: what
 *  Chromium's --ignore-certificate-errors-spki-list takes. */
function serverKeyPin() {
  const cert = new crypto.X509Certificate(fs.readFileSync(certificate('server.crt')));
  return crypto.createHash('sha256').update(cert.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
}

/** Loads the page with `plan` in headless Chromium (with `flags`) and returns the page's report;
 *  Chromium is killed once it reported or its deadline passed. */
async function runPage(pages, plan, flags = []) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'mqttbroker-chromium-'));
  const url = `${pages.origin}/?plan=${encodeURIComponent(JSON.stringify(plan))}`;
  const args = [
    '--headless=new',
    // The page is this module's own. As root Chromium does not start with its sandbox, and
    // containers often lack the user namespaces the sandbox needs.
    '--no-sandbox',
    '--disable-gpu', '--disable-dev-shm-usage', `--user-data-dir=${profile}`,
    // No first-run work and nothing from the network but the page.
    '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--disable-sync',
    '--disable-background-networking', '--disable-component-update', '--disable-default-apps',
    '--mute-audio',
    ...flags, url,
  ];
  const report = pages.report();
  // Its own process group (detached), so the browser's helper processes go with it.
  const proc = spawn(CHROMIUM, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  browsers.add(proc.pid);
  const stderr = [];
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => stderr.push(d));
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal)));
  const deadline = START_SLACK + plan.length * STEP_DEADLINE;
  try {
    return await Promise.race([
      within(report, deadline, 'the page\'s report'),
      exited.then((status) => { throw new Error(`Chromium exited before the page reported (${status})`); }),
    ]);
  } catch (e) {
    throw new Error(`${e.message}\npage notes:\n${pages.notes.join('\n')}\nrequests: ${JSON.stringify(pages.requests)}\n`
      + `Chromium's stderr (end):\n${stderr.join('').split('\n').slice(-40).join('\n')}`);
  } finally {
    try {
      process.kill(-proc.pid, 'SIGKILL');
    } catch {
      // it exited on its own
    }
    await within(exited, WAIT, 'Chromium ending on SIGKILL').catch(() => {});
    browsers.delete(proc.pid);
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

/** Runs `fn` with a page server of its own, closed at the end. */
async function withPages(fn) {
  const pages = await PageServer.start();
  try {
    return await fn(pages);
  } finally {
    await pages.close();
  }
}

/** Waits for a log line of broker `b` that matches `rx`, and returns all that do. */
async function logLines(b, rx, count) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const lines = b.lines.filter((l) => rx.test(l));
    if (lines.length >= count || Date.now() > deadline) return lines;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('Chromium: MQTT.js 5.0 and 3.1.1 over ws:// and wss:// subscribe, publish QoS 0, 1, 2 and 200 KiB, and trade messages with a TCP client [MQTT-6.0.0-4]', { needs, timeout: 70_000 }, async (it) => {
  await withPages(async (pages) => {
    // Only the page's own origin may connect: the browser's Origin header is checked for real.
    const b = await it.broker('--ws-port', FREE, '--wss-port', FREE, ...tlsArgs(), '--ws-origin', pages.origin,
      '--log-level', 'debug');
    // The TCP side: answers each page's hello on <clientId>/reply, and takes its 200 KiB too.
    const tcp = await it.connect({ clientId: 'tcp-peer' });
    await tcp.subscribe(['browser/hello/+', '+/echo/big'], { qos: 2 });
    tcp.mqtt.on('message', (topic, payload) => {
      const m = /^browser\/hello\/(.+)$/.exec(topic);
      if (m) tcp.mqtt.publish(`${m[1]}/reply`, `reply to ${m[1]}, after ${payload}`, { qos: 2 });
    });

    const plan = [];
    for (const kind of ['ws', 'wss']) {
      for (const version of [5, 4]) {
        const clientId = `chromium-${kind}-${version}`;
        plan.push({ name: clientId, url: `${kind}://${HOST}:${b.portOf(kind)}/mqtt`, version, clientId, exchange: true });
      }
    }
    // wss: Chromium trusts the server certificate's key, pinned by its SHA-256 (less than
    // --ignore-certificate-errors would allow: nothing else is trusted). The test CA itself would
    // need an NSS database (certutil, another package); the refusal test below shows that without
    // the pin the browser does verify, and refuses.
    const report = await runPage(pages, plan, [`--ignore-certificate-errors-spki-list=${serverKeyPin()}`]);
    assert.equal(report.failed, undefined, report.failed);
    assert.match(report.userAgent, /HeadlessChrome|Chrome/);
    assert.deepEqual(report.results.map((r) => r.name), plan.map((s) => s.name));
    for (const [seed, r] of report.results.entries()) {
      const id = plan[seed].clientId;
      assert.deepEqual(r.errors, [], `${id}: ${r.errors.join('; ')}`);
      assert.equal(r.connected, true, `${id} did not connect; the broker's log:\n${b.log()}`);
      assert.deepEqual(r.granted, [2], id);
      const text = (s) => ({ length: Buffer.byteLength(s), fnv: fnv(Buffer.from(s)), text: s });
      const big = bigPayload(seed);
      assert.deepEqual(r.received, [
        { topic: `${id}/echo/0`, qos: 0, ...text(`q0 from ${id}`) },
        { topic: `${id}/echo/1`, qos: 1, ...text(`q1 from ${id}`) },
        { topic: `${id}/echo/2`, qos: 2, ...text(`q2 from ${id}`) },
        { topic: `${id}/echo/big`, qos: 1, length: BIG, fnv: fnv(big), text: null },
        { topic: `${id}/reply`, qos: 2, ...text(`reply to ${id}, after hello from ${id}`) },
      ], id);
    }
    // The TCP client got each page's hello and its 200 KiB byte for byte.
    const got = await tcp.take(2 * plan.length);
    for (const [seed, s] of plan.entries()) {
      const mine = got.filter((m) => m.topic.startsWith(`${s.clientId}/`) || m.topic.endsWith(`/${s.clientId}`));
      assert.deepEqual(mine.map((m) => m.topic), [`${s.clientId}/echo/big`, `browser/hello/${s.clientId}`]);
      assert.ok(mine[0].payload.equals(bigPayload(seed)), `${s.clientId}: the 200 KiB as sent`);
    }
    // The server saw each page connection on its WebSocket listener, in the version asked for.
    for (const s of plan) {
      const kind = s.url.slice(0, s.url.indexOf(':'));
      const version = s.version === 5 ? '5\\.0' : '3\\.1\\.1';
      for (const rx of [`client '${s.clientId}' connected \\(MQTT ${version},`, `\\[debug\\] ${s.clientId} is .* \\(${kind}\\)`]) {
        assert.equal((await logLines(b, new RegExp(rx), 1)).length, 1, `${rx}; log:\n${b.log()}`);
      }
    }
    // Everything the page needed came from this module's server.
    for (const [method, where] of pages.requests) {
      assert.ok(['/', '/mqtt.min.js', '/favicon.ico', '/log', '/result'].includes(where), `${method} ${where}`);
    }
  });
});

test('Chromium: refused are an Origin outside --ws-origin, a wrong path and a certificate it does not trust; the page\'s origin on /mqtt connects', { needs, timeout: 70_000 }, async (it) => {
  await withPages(async (pages) => {
    const strict = await it.broker('--ws-port', FREE, '--wss-port', FREE, ...tlsArgs(), '--ws-origin', 'https://app.example');
    const open = await it.broker('--ws-port', FREE, '--wss-port', FREE, ...tlsArgs(), '--ws-origin', pages.origin);
    const url = (b, kind, where = '/mqtt') => `${kind}://${HOST}:${b.portOf(kind)}${where}`;
    const plan = [
      { name: 'origin refused', url: url(strict, 'ws'), version: 5, clientId: 'refused-origin' },
      { name: 'wrong path', url: url(open, 'ws', '/not-mqtt'), version: 5, clientId: 'refused-path' },
      { name: 'untrusted certificate', url: url(open, 'wss'), version: 5, clientId: 'refused-cert' },
      { name: 'control', url: url(open, 'ws'), version: 5, clientId: 'accepted' },
    ];
    const report = await runPage(pages, plan);  // no certificate pin: the browser verifies
    assert.equal(report.failed, undefined, report.failed);
    assert.deepEqual(report.results.map((r) => [r.name, r.connected]),
      [['origin refused', false], ['wrong path', false], ['untrusted certificate', false], ['control', true]]);
    // Why, from the servers' side (a page learns nothing of a failed upgrade but the close).
    assert.equal((await logLines(strict, /handshake failed: WebSocket Origin not allowed/, 1)).length, 1, strict.log());
    assert.equal((await logLines(open, /handshake failed: WebSocket upgrade on an unknown path/, 1)).length, 1, open.log());
    // The TLS handshake the browser broke off: the server saw it fail, no upgrade, no client.
    assert.ok((await logLines(open, /handshake failed/, 2)).length >= 2, open.log());
    assert.ok(!open.lines.some((l) => /refused-(cert|path)/.test(l)), open.log());
    assert.ok(!strict.lines.some((l) => /refused-origin/.test(l)), strict.log());
  });
});
