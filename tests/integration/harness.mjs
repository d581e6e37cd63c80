// Integration harness for the MQTT.js (npm `mqtt`) tests, the node counterpart of harness.py: the
// standalone server as a child process on a port the kernel picks, MQTT.js clients whose messages
// and packets land in lists a test waits on, and node:test tests that each get a fresh server, a
// time limit and the same checks at the end (the server still alive, a clean stop on SIGTERM, no
// sanitizer report). Node's own modules and MQTT.js only; works on Node 18 (Debian 12).
//
// Every wait has a deadline: tests wait for events (WAIT) and never sleep and assume; only absence
// checks wait a fixed, short time (ABSENT).

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test as nodeTest } from 'node:test';
import { fileURLToPath } from 'node:url';

export const HOST = '127.0.0.1';
export const WAIT = 10_000;   // ms a test waits for something that must happen
export const ABSENT = 500;    // ms a test waits for something that must not happen
const TEST_TIMEOUT = 30_000;  // one test; node:test fails it after this
const MODULE_DEADLINE = 100_000;  // the whole module, below ctest's TIMEOUT of 120 s
const SKIP_STATUS = 77;  // ctest's SKIP_RETURN_CODE (tests/integration/CMakeLists.txt)

// As in harness.py: in CI (scripts/test.sh exports this when CI is set) a missing client fails the
// tests; elsewhere they are skipped, visibly (ctest's "Skipped" and the module's summary).
const REQUIRE_CLIENTS = !['', '0'].includes(process.env.MQTTBROKER_REQUIRE_CLIENTS ?? '');

// MQTT.js comes from the folder that `npm ci` filled (the ctest fixture in CMakeLists.txt, in the
// build tree), not from beside this file, so it is loaded by path.
let mqttjs = null;
let mqttjsMissing = null;
{
  const dir = process.env.MQTTBROKER_MQTTJS_DIR;
  if (!dir) {
    mqttjsMissing = 'MQTTBROKER_MQTTJS_DIR is not set (ctest sets it to the folder npm ci installs into)';
  } else {
    try {
      const require = createRequire(path.resolve(dir, 'package.json'));
      const fromMqtt = createRequire(require.resolve('mqtt'));
      mqttjs = {
        mqtt: require('mqtt'),
        packet: fromMqtt('mqtt-packet'),
        ws: fromMqtt('ws'),  // the WebSocket client MQTT.js uses in node
        // The browser bundle (one file, global `mqtt`), as the package ships it.
        bundle: path.join(path.dirname(require.resolve('mqtt/package.json')), 'dist', 'mqtt.min.js'),
      };
    } catch (e) {
      mqttjsMissing = `MQTT.js (npm mqtt) is not installed in ${dir} (npm ci failed or npm is missing: ${e.code ?? e.message})`;
    }
  }
}

/** mqtt-packet, the codec MQTT.js uses: for the packets MQTT.js itself refuses to send. */
export function mqttPacket() {
  return mqttjs.packet;
}

/** The `ws` package MQTT.js opens its WebSockets with in node (its WebSocket class). */
export function wsLibrary() {
  return mqttjs.ws;
}

/** The path of MQTT.js's browser bundle (dist/mqtt.min.js of the installed package). */
export function mqttBundle() {
  return mqttjs.bundle;
}

// ---------------------------------------------------------------------------------------------
// Waiting

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A 127.0.0.1 port that is free now: the kernel's pick for port 0, released again. For the
 *  server's options where 0 means "no listener" (--ws-port, --wss-port); another process may take
 *  it first, which is why Context.broker() retries with FREE. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, HOST, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A promise of `promise` that fails with `what` after `ms`. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// The broker process

const SANITIZER_REPORT = /(ERROR|WARNING): \w*Sanitizer|SUMMARY: \w*Sanitizer|: runtime error: /;
const live = new Set();  // brokers to kill if the module ends early

function serverPath() {
  const file = process.env.MQTTBROKER_SERVER;
  if (!file) throw new Error('MQTTBROKER_SERVER is not set (ctest sets it to the mqttbroker executable)');
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    throw new Error(`broker executable ${file} is missing: build the mqttbroker_server target`);
  }
  return file;
}

// The lines examples/broker/main.cpp logs for its listeners, the plain one last (once it is ready):
// "TLS listening on ADDR:PORT", "WebSocket listening on ws://ADDR:PORT/PATH" (and wss://), then
// "mqttbroker X.Y.Z listening on ADDR:PORT (N threads)".
const LISTENER_LINES = [
  ['tcp', /mqttbroker \S+ listening on [0-9.]+:(\d+)/],
  ['tls', /TLS listening on [0-9.]+:(\d+)/],
  ['ws', /WebSocket listening on ws:\/\/[0-9.]+:(\d+)/],
  ['wss', /WebSocket listening on wss:\/\/[0-9.]+:(\d+)/],
];

/** The mqttbroker executable on 127.0.0.1 and a port the kernel picks (--port 0), read from its
 *  "mqttbroker X.Y.Z listening on ADDR:PORT" log line; the ports of its other listeners (TLS,
 *  WebSocket) from theirs, in `ports`. Its stderr is kept for failure reports. */
export class Broker {
  static start(args = []) {
    const argv = ['--bind', HOST, '--port', '0', ...args];
    const threads = process.env.MQTTBROKER_IT_THREADS;  // a whole module on N threads (the _mt variant)
    if (threads && !args.includes('--threads')) argv.push('--threads', threads);
    const b = new Broker(spawn(serverPath(), argv, { stdio: ['ignore', 'ignore', 'pipe'] }));
    return within(b.listening, WAIT, 'the broker logging its port').catch((e) => {
      b.proc.kill('SIGKILL');
      throw new Error(`${e.message}; log:\n${b.log()}`);
    });
  }

  constructor(proc) {
    this.proc = proc;
    this.lines = [];
    this.port = null;
    this.ports = {};  // 'tcp', 'tls', 'ws', 'wss': the port each listener logged
    live.add(this);
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
      live.delete(this);
      resolve(code ?? signal);
    }));
    this.listening = new Promise((resolve, reject) => {
      let pending = '';
      proc.stderr.setEncoding('utf8');
      proc.stderr.on('data', (chunk) => {
        const parts = (pending + chunk).split('\n');
        pending = parts.pop();
        for (const line of parts) {
          this.lines.push(line);
          for (const [kind, rx] of LISTENER_LINES) {
            const m = this.ports[kind] === undefined && rx.exec(line);
            if (m) this.ports[kind] = Number(m[1]);
          }
          if (this.port === null && this.ports.tcp !== undefined) {
            this.port = this.ports.tcp;
            resolve(this);
          }
        }
      });
      this.exited.then((status) => reject(new Error(`the broker exited before listening (${status})`)));
    });
  }

  log() {
    return this.lines.slice(-200).join('\n');
  }

  /** The port of listener `kind` ('tcp', 'tls', 'ws', 'wss'); all are logged before the broker
   *  says it is listening. */
  portOf(kind) {
    const port = this.ports[kind];
    if (port === undefined) throw new Error(`the broker logged no ${kind} listener; log:\n${this.log()}`);
    return port;
  }

  alive() {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** SIGTERM and wait: the exit status, or null when it had to be killed. */
  async stop() {
    if (!this.alive()) return this.exited;
    this.proc.kill('SIGTERM');
    try {
      return await within(this.exited, WAIT, 'the broker stopping on SIGTERM');
    } catch {
      this.proc.kill('SIGKILL');
      await this.exited;
      return null;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// MQTT.js clients

// The pending waits of Client.until(), all polled on any client's event: a test may wait on one
// client for something that involves others.
const waiters = new Set();
const changed = () => waiters.forEach((poll) => poll());

/** An MQTT.js client whose messages, packets in and out, errors and server DISCONNECTs are kept
 *  in lists, with waits on them. `messages` are { topic, payload, packet } as MQTT.js reports
 *  them; `received` and `sent` are the packets of its 'packetreceive' and 'packetsend' events. */
export class Client {
  constructor(raw) {
    this.mqtt = raw;
    this.messages = [];
    this.read = 0;  // messages[read] is the next that next() returns
    this.received = [];
    this.sent = [];
    this.errors = [];
    this.disconnects = [];  // the server's DISCONNECT packets
    this.closed = false;
    this.connack = null;
    raw.on('message', (topic, payload, packet) => { this.messages.push({ topic, payload, packet }); changed(); });
    raw.on('packetreceive', (p) => { this.received.push(p); changed(); });
    raw.on('packetsend', (p) => { this.sent.push(p); changed(); });
    raw.on('connect', (connack) => { this.connack = connack; changed(); });
    raw.on('error', (e) => { this.errors.push(e); changed(); });
    raw.on('disconnect', (p) => { this.disconnects.push(p); changed(); });
    raw.on('close', () => { this.closed = true; changed(); });
  }

  /** Waits until `check()` returns something truthy, and returns it; fails naming `what` after
   *  `ms`, or at once when `check` throws. */
  until(check, what, ms = WAIT) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const done = (f, v) => {
        waiters.delete(poll);
        clearTimeout(timer);
        f(v);
      };
      const poll = () => {
        let v;
        try {
          v = check();
        } catch (e) {
          return done(reject, e);
        }
        if (v) done(resolve, v);
      };
      timer = setTimeout(() => done(reject, new Error(`${this.mqtt.options.clientId}: no ${what} within ${ms} ms`)), ms);
      waiters.add(poll);
      poll();
    });
  }

  /** The next message. */
  async next(ms = WAIT) {
    await this.until(() => this.messages.length > this.read || this._failed(), 'message', ms);
    return this.messages[this.read++];
  }

  /** The next `n` messages. */
  async take(n, ms = WAIT) {
    await this.until(() => this.messages.length >= this.read + n || this._failed(), `${n} messages`, ms);
    this.read += n;
    return this.messages.slice(this.read - n, this.read);
  }

  /** No further message, no error and no close for `ms`. */
  async nothing(ms = ABSENT) {
    await sleep(ms);
    const extra = this.messages.slice(this.read);
    if (extra.length) {
      throw new Error(`${this.mqtt.options.clientId}: unexpected ${extra.map((m) => `${m.topic} ${m.payload}`).join(', ')}`);
    }
    this._failed();
  }

  /** Throws when the client had an error or its connection closed. */
  _failed() {
    if (this.errors.length) throw new Error(`${this.mqtt.options.clientId}: ${this.errors[0].message}`);
    if (this.closed) throw new Error(`${this.mqtt.options.clientId}: the connection closed`);
    return false;
  }

  /** Publishes; for QoS 1 and 2 resolves once the broker has acknowledged. */
  publish(topic, payload, options = {}) {
    return within(new Promise((resolve, reject) => {
      this.mqtt.publish(topic, payload, options, (err, packet) => (err ? reject(err) : resolve(packet)));
    }), WAIT, `${this.mqtt.options.clientId}: acknowledgement of a PUBLISH to ${topic}`);
  }

  /** Subscribes; resolves with the granted QoS or reason code of each filter. */
  subscribe(filters, options = { qos: 1 }) {
    return within(new Promise((resolve, reject) => {
      this.mqtt.subscribe(filters, options, (err, granted) => (err ? reject(err) : resolve(granted.map((g) => g.qos))));
    }), WAIT, `${this.mqtt.options.clientId}: SUBACK`);
  }

  /** DISCONNECT (5.0: with `properties`) and the close. */
  end(properties) {
    const options = properties ? { properties } : {};
    return within(new Promise((resolve) => this.mqtt.end(false, options, () => resolve())), WAIT,
      `${this.mqtt.options.clientId}: the end of the connection`);
  }
}

/** A connected MQTT.js client: 5.0 unless `options.protocolVersion` says otherwise, no automatic
 *  reconnection. Resolves once CONNACK accepted it. */
export async function connect(port, options = {}) {
  const raw = mqttjs.mqtt.connect({
    host: HOST,
    port,
    protocolVersion: 5,
    reconnectPeriod: 0,
    connectTimeout: WAIT,
    ...options,
    manualConnect: true,  // connects below, once every event has its listener (the CONNECT too)
  });
  const c = new Client(raw);
  raw.connect();
  try {
    await c.until(() => c.connack || c._failed(), 'CONNACK');
  } catch (e) {
    raw.end(true);
    throw e;
  }
  return c;
}

/** Calls `onPacket(type, body)` for each MQTT packet the server sends `client`, read from its
 *  socket before MQTT.js parses it: what is on the wire even while MQTT.js holds a packet back
 *  (it handles one packet at a time, and a held acknowledgement stalls the rest). */
export function tapPackets(client, onPacket) {
  let buf = Buffer.alloc(0);
  client.mqtt.stream.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      let length = 0;
      let pos = 1;
      for (let shift = 0; ; shift += 7, pos++) {
        if (pos >= buf.length) return;
        length += (buf[pos] & 0x7f) * 2 ** shift;
        if (!(buf[pos] & 0x80)) break;
      }
      pos++;
      if (buf.length < pos + length) return;
      onPacket(buf[0] >> 4, buf.subarray(pos, pos + length));
      buf = buf.subarray(pos + length);
      changed();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Test certificates

const MAKE_CERTS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'tls', 'make-certs.sh');
let certFolder = null;

/** Why the test certificates cannot be made here (no openssl command line), or null. For `needs`. */
export function opensslMissing() {
  const r = spawnSync('openssl', ['version'], { stdio: 'ignore', timeout: WAIT });
  return r.status === 0 ? null : 'the openssl command line (Debian openssl), which makes the test certificates, is not installed';
}

/** The path of test certificate file `name` (tests/tls/make-certs.sh lists them), made on first
 *  use into a temporary folder that is removed when the module exits. */
export function certificate(name) {
  if (!certFolder) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqttbroker-it-certs-'));
    const r = spawnSync('sh', [MAKE_CERTS, dir], { encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) throw new Error(`make-certs.sh failed (${r.status ?? r.signal ?? r.error}): ${r.stderr}`);
    certFolder = dir;
  }
  return path.join(certFolder, name);
}

/** The server's TLS arguments with the test certificates: --certfile and --keyfile, and its TLS
 *  listener (which --certfile turns on) on a port the kernel picks. */
export function tlsArgs() {
  return ['--certfile', certificate('server-chain.crt'), '--keyfile', certificate('server.key'), '--tls-port', '0'];
}

// ---------------------------------------------------------------------------------------------
// Tests

/** An argument of Context.broker() that becomes a free port (freePort()). */
export const FREE = Symbol('a free port');
const START_ATTEMPTS = 5;

/** What each test gets: its brokers and clients, stopped and checked when it ends. */
class Context {
  constructor() {
    this.brokers = [];
    this.clients = [];
  }

  /** A fresh broker with these extra arguments; each FREE among them is a port that was free a
   *  moment before. Another process may take it meanwhile: then the server cannot listen, exits,
   *  and it is started again on other ports. */
  async broker(...args) {
    for (let attempt = 1; ; attempt++) {
      const argv = await Promise.all(args.map((a) => (a === FREE ? freePort().then(String) : a)));
      try {
        const b = await Broker.start(argv);
        this.brokers.push(b);
        return b;
      } catch (e) {
        if (!args.includes(FREE) || attempt === START_ATTEMPTS || !/cannot listen.*in use/i.test(e.message)) throw e;
      }
    }
  }

  /** A connected MQTT.js client of the test's first broker (or `options.broker`), on its plain
   *  port unless `options.port` says otherwise. */
  async connect(options = {}) {
    const { broker = this.brokers[0], port = broker.port, ...rest } = options;
    const c = await connect(port, rest);
    this.clients.push(c);
    return c;
  }

  async finish() {
    for (const c of this.clients) c.mqtt.end(true);
    const problems = [];
    for (const b of this.brokers) {
      const crashed = !b.alive();
      const status = await b.stop();
      const report = b.lines.findIndex((l) => SANITIZER_REPORT.test(l));
      if (report >= 0) problems.push(`the broker reported a sanitizer error:\n${b.lines.slice(report, report + 60).join('\n')}`);
      if (crashed) problems.push(`the broker died during the test (status ${status}); log:\n${b.log()}`);
      else if (status !== 0) problems.push(`the broker did not stop cleanly on SIGTERM (status ${status}); log:\n${b.log()}`);
    }
    if (problems.length) throw new Error(problems.join('\n'));
  }
}

const registered = [];
const outcomes = new Map();  // test name -> 'passed', 'failed' or ['skipped', reason]

/** A node:test test that gets a Context: `test('name', async (it) => { const b = await it.broker(); ... })`.
 *  `options.skip` (a reason) skips it, for a known bug named there. `options.needs`: functions
 *  that each return why a program the test needs is missing, or null; a missing one is treated as
 *  missing MQTT.js is (a skip, or a failure in CI). `options.timeout`: ms, instead of 30 s. */
export function test(name, options, fn) {
  if (typeof options === 'function') [options, fn] = [{}, options];
  registered.push(name);
  if (options.skip) outcomes.set(name, ['skipped', options.skip]);
  nodeTest(name, { timeout: options.timeout ?? TEST_TIMEOUT, skip: options.skip }, async (t) => {
    const missing = mqttjs ? (options.needs ?? []).map((need) => need()).find(Boolean) : mqttjsMissing;
    if (missing) {
      if (REQUIRE_CLIENTS) {
        throw new Error(`${missing}, and MQTTBROKER_REQUIRE_CLIENTS is set (CI): run scripts/install-deps.sh`);
      }
      outcomes.set(name, ['skipped', missing]);
      t.skip(missing);
      return;
    }
    const it = new Context();
    let error = null;
    try {
      await fn(it);
    } catch (e) {
      error = e;
    }
    try {
      await it.finish();
    } catch (e) {
      error ??= e;
    }
    outcomes.set(name, error ? 'failed' : 'passed');
    if (error) throw error;
  });
}

// The ctest name of the module: integration_<file without test_>, with _mt on two threads.
function moduleKey() {
  const base = path.basename(process.argv[1] ?? 'unknown', '.mjs').replace(/^test_/, '');
  return `integration_${base}${process.env.MQTTBROKER_IT_THREADS ? '_mt' : ''}`;
}

// At the end, the counts as harness.py prints and writes them (scripts/test.sh's summary reads the
// file). A test without an outcome failed (its time ran out, or the module was stopped) when
// node:test failed the run, and was not selected (--test-name-pattern) otherwise. Exit status:
// node:test's (1 on a failure), 1 when no test ran, SKIP_STATUS when every test was skipped.
process.on('exit', (code) => {
  for (const b of live) b.proc.kill('SIGKILL');
  if (certFolder) fs.rmSync(certFolder, { recursive: true, force: true });
  const ran = code ? registered : registered.filter((n) => outcomes.has(n));
  const skipped = ran.filter((n) => Array.isArray(outcomes.get(n))).map((n) => [n, outcomes.get(n)[1]]);
  const passed = ran.filter((n) => outcomes.get(n) === 'passed').length;
  const failed = ran.length - passed - skipped.length;
  const key = moduleKey();
  let out = `\n== ${key}: ${ran.length} ran, ${passed} passed, ${skipped.length} skipped, ${failed} failed\n`;
  for (const [n, reason] of skipped) out += `SKIPPED: ${key} ${n}: ${reason}\n`;
  if (ran.length === 0) out += 'FAILED: no test ran\n';
  process.stdout.write(out);
  const folder = process.env.MQTTBROKER_IT_RESULTS;
  if (folder) {
    fs.mkdirSync(folder, { recursive: true });
    fs.writeFileSync(path.join(folder, `${key}.json`),
      JSON.stringify({ test: key, ran: ran.length, passed, failed, skipped }));
  }
  if (failed || ran.length === 0) process.exitCode = code || 1;
  else if (skipped.length === ran.length) process.exitCode = SKIP_STATUS;
});

// A module that hangs past its deadline (a wait without one, a child that keeps it alive) ends
// here, with its brokers killed by the exit handler; unref'd, so it never keeps a finished module up.
setTimeout(() => {
  process.stdout.write(`\nFAILED: the module ran past its deadline of ${MODULE_DEADLINE / 1000} s\n`);
  process.exit(1);
}, MODULE_DEADLINE).unref();

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));
