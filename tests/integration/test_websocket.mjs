// MQTT over WebSocket with MQTT.js 5 (npm `mqtt`) in node: its 5.0 and 3.1.1 clients on the
// server's ws:// (--ws-port) and wss:// (--wss-port, verifying the test CA) listeners, QoS 0, 1 and
// 2, a 200 KiB payload, clients of ws, wss and plain TCP sharing subscriptions and sessions, and
// upgrades the server refuses (a wrong path: 404; an Origin outside --ws-origin: 403). Each test
// starts its own server (harness.mjs); the certificates are made at run time by
// tests/tls/make-certs.sh. Run by ctest: `ctest -R integration_websocket`.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';

import { ABSENT, FREE, certificate, opensslMissing, test, tlsArgs, wsLibrary } from './harness.mjs';

const WS_PATH = '/mqtt';  // the server's default --ws-path

/** The server's arguments for a ws and a wss listener on free ports (the TLS flags' certificates). */
function wsArgs(...extra) {
  return ['--ws-port', FREE, '--wss-port', FREE, ...tlsArgs(), ...extra];
}

/** MQTT.js options for listener `kind` ('tcp', 'ws', 'wss') of broker `b`. Over wss the server's
 *  chain is verified against the test root CA (`ca`; MQTT.js hands it to `ws`). Each WebSocket
 *  MQTT.js opens is kept, with what it reported, in the returned options' `sockets`. */
function via(b, kind, options = {}) {
  const o = { port: b.portOf(kind), ...options };
  if (kind === 'tcp') return o;
  o.protocol = kind;
  o.path ??= WS_PATH;
  if (kind === 'wss') o.ca ??= fs.readFileSync(certificate('ca.crt'));
  o.sockets = [];
  o.createWebsocket = (url, protocols, opts) => {
    const WebSocket = wsLibrary();
    const socket = new WebSocket(url, protocols, opts.wsOptions);
    // What crossed it: the messages it received (binary or text) and sent (each send() is one
    // WebSocket message).
    const seen = { url, offered: protocols, socket, status: null, errors: [], binary: 0, text: 0, sent: [] };
    socket.on('message', (data, isBinary) => (isBinary ? seen.binary++ : seen.text++));
    const send = socket.send.bind(socket);
    socket.send = (data, ...rest) => {
      seen.sent.push(data.length);
      return send(data, ...rest);
    };
    // ws reports a refused upgrade as an error without a code, which MQTT.js passes over in
    // silence (only the close reaches its client): the HTTP status is read here.
    socket.on('error', (e) => {
      seen.errors.push(e);
      const m = /Unexpected server response: (\d+)/.exec(e.message);
      if (m) seen.status = Number(m[1]);
    });
    o.sockets.push(seen);
    return socket;
  };
  return o;
}

/** Connecting with `options` fails without a CONNACK; returns what the WebSocket saw. */
async function refused(it, options) {
  await assert.rejects(it.connect(options), /the connection closed|: /);
  assert.equal(options.sockets.length, 1);
  return options.sockets[0];
}

/** Deterministic bytes, different for each `seed`. */
function bytes(size, seed) {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 131 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

const needs = [opensslMissing];

test('MQTT.js 5.0 and 3.1.1 over ws:// and wss://: subprotocol mqtt, SUBACK, QoS 0, 1 and 2 published and received at their QoS, packets across messages, binary only [MQTT-6.0.0-4] [MQTT-6.0.0-2] [MQTT-6.0.0-1]', { needs }, async (it) => {
  const b = await it.broker(...wsArgs());
  for (const [version, kind] of [[5, 'ws'], [5, 'wss'], [4, 'ws'], [4, 'wss']]) {
    const subOptions = via(b, kind, { clientId: `${kind}-sub-${version}`, protocolVersion: version });
    const sub = await it.connect(subOptions);
    // The server chose the subprotocol MQTT.js offered: mqtt [MQTT-6.0.0-4].
    assert.deepEqual(subOptions.sockets.map((s) => [s.offered, s.socket.protocol]), [[['mqtt'], 'mqtt']]);
    assert.equal(sub.connack.returnCode ?? sub.connack.reasonCode, 0);
    assert.deepEqual(await sub.subscribe(`${kind}/${version}/#`, { qos: 2 }), [2]);
    const pubOptions = via(b, kind, { clientId: `${kind}-pub-${version}`, protocolVersion: version });
    const pub = await it.connect(pubOptions);
    for (const qos of [0, 1, 2]) await pub.publish(`${kind}/${version}/q${qos}`, `${kind} at QoS ${qos}`, { qos });
    const got = await sub.take(3);
    assert.deepEqual(got.map((m) => [m.topic, String(m.payload), m.packet.qos]),
      [0, 1, 2].map((qos) => [`${kind}/${version}/q${qos}`, `${kind} at QoS ${qos}`, qos]));
    // The QoS 2 exchange completed both ways: PUBREC/PUBREL/PUBCOMP went over the WebSocket.
    assert.ok(pub.received.some((p) => p.cmd === 'pubcomp'), 'PUBCOMP to the publisher');
    assert.ok(sub.sent.some((p) => p.cmd === 'pubcomp'), 'PUBCOMP from the subscriber');
    await sub.nothing(ABSENT / 2);
    // MQTT.js in node writes each packet as several WebSocket messages (fixed header, length,
    // topic, ... each a send()): the server put them together [MQTT-6.0.0-2]. What the server
    // sent came in binary messages only [MQTT-6.0.0-1].
    const [ps, ss] = [pubOptions.sockets[0], subOptions.sockets[0]];
    assert.ok(ps.sent.length > pub.sent.length, `${ps.sent.length} messages for ${pub.sent.length} packets`);
    assert.ok(ps.binary >= 4 && ss.binary >= 5, `binary messages: ${ps.binary} to the publisher, ${ss.binary} to the subscriber`);
    assert.equal(ps.text + ss.text, 0);
  }
});

test('wss:// is verified: MQTT.js without the test CA refuses the server\'s certificate, with it connects', { needs }, async (it) => {
  const b = await it.broker(...wsArgs());
  const options = via(b, 'wss', { clientId: 'no-ca' });
  delete options.ca;
  await assert.rejects(it.connect(options), /unable to get local issuer certificate/);
  // The control: the same with the CA connects.
  await it.connect(via(b, 'wss', { clientId: 'with-ca' }));
});

test('ws://, wss:// and TCP clients of one broker exchange messages at QoS 0, 1 and 2 in every direction', { needs }, async (it) => {
  const b = await it.broker(...wsArgs());
  const kinds = ['tcp', 'ws', 'wss'];
  const clients = {};
  for (const [i, kind] of kinds.entries()) {
    // 5.0 and 3.1.1 mixed: tcp 5.0, ws 3.1.1, wss 5.0.
    clients[kind] = await it.connect(via(b, kind, { clientId: `x-${kind}`, protocolVersion: i % 2 ? 4 : 5 }));
    await clients[kind].subscribe(`to/${kind}/#`, { qos: 2 });
  }
  for (const from of kinds) {
    for (const to of kinds) {
      if (from === to) continue;
      for (const qos of [0, 1, 2]) await clients[from].publish(`to/${to}/from/${from}`, `${from}>${to}@${qos}`, { qos });
    }
  }
  for (const to of kinds) {
    const got = await clients[to].take(6);
    // One publisher's messages arrive in the order sent [MQTT-4.6.0-2]. Between two publishers
    // there is no order to keep: with several threads, the second one's first message may come
    // before the first one's last, although that was acknowledged before the second one sent.
    for (const from of kinds.filter((k) => k !== to)) {
      const expected = [0, 1, 2].map((qos) => [`to/${to}/from/${from}`, `${from}>${to}@${qos}`, qos]);
      const mine = got.filter((m) => m.topic === `to/${to}/from/${from}`);
      assert.deepEqual(mine.map((m) => [m.topic, String(m.payload), m.packet.qos]), expected);
    }
    await clients[to].nothing(ABSENT / 2);
  }
});

test('one session across listeners: subscribed over ws, queued while away, resumed over wss, taken over from TCP', { needs }, async (it) => {
  const b = await it.broker(...wsArgs());
  const session = { clientId: 'roamer', clean: false, properties: { sessionExpiryInterval: 300 } };
  const first = await it.connect(via(b, 'ws', session));
  assert.equal(first.connack.sessionPresent, false);
  await first.subscribe('roam/#', { qos: 1 });
  await first.end();

  const pub = await it.connect(via(b, 'tcp', { clientId: 'roam-pub' }));
  await pub.publish('roam/a', 'while away', { qos: 1 });
  const second = await it.connect(via(b, 'wss', session));
  assert.equal(second.connack.sessionPresent, true);
  const queued = await second.next();
  assert.deepEqual([queued.topic, String(queued.payload), queued.packet.qos], ['roam/a', 'while away', 1]);
  await pub.publish('roam/b', 'live', { qos: 1 });
  assert.equal(String((await second.next()).payload), 'live');
  // Both PUBACKs sent, then a SUBACK as a barrier: the server handles a connection's packets in
  // order, so the session holds nothing in flight when the takeover comes.
  await second.until(() => second.sent.filter((p) => p.cmd === 'puback').length === 2, 'the PUBACKs');
  await second.subscribe('roam/barrier', { qos: 0 });

  // The same client id over TCP takes the session over: the wss connection gets DISCONNECT 0x8E
  // (Session taken over) and closes; the subscription goes on over TCP.
  const third = await it.connect(via(b, 'tcp', session));
  assert.equal(third.connack.sessionPresent, true);
  await second.until(() => second.closed, 'close after the takeover');
  assert.deepEqual(second.disconnects.map((p) => p.reasonCode), [0x8e]);
  await pub.publish('roam/c', 'over tcp', { qos: 1 });
  assert.equal(String((await third.next()).payload), 'over tcp');
});

test('a 200 KiB payload over ws:// and wss://, to WebSocket and TCP subscribers, unchanged', { needs }, async (it) => {
  const b = await it.broker(...wsArgs());
  const subs = [];
  for (const kind of ['tcp', 'ws', 'wss']) {
    const s = await it.connect(via(b, kind, { clientId: `big-sub-${kind}` }));
    await s.subscribe('big/#', { qos: 1 });
    subs.push(s);
  }
  const payloads = [];
  for (const [seed, kind] of ['ws', 'wss'].entries()) {
    const pub = await it.connect(via(b, kind, { clientId: `big-pub-${kind}` }));
    const payload = bytes(200 * 1024 + seed, seed + 1);
    payloads.push(payload);
    await pub.publish(`big/${kind}`, payload, { qos: 1 });
  }
  for (const s of subs) {
    const got = await s.take(2);
    assert.deepEqual(got.map((m) => [m.topic, m.payload.length, sha(m.payload)]),
      [['big/ws', payloads[0].length, sha(payloads[0])], ['big/wss', payloads[1].length, sha(payloads[1])]]);
  }
});

test('a wrong path gets HTTP 404 and no connection; --ws-path chooses the path', { needs }, async (it) => {
  const b = await it.broker(...wsArgs());
  for (const kind of ['ws', 'wss']) {
    const seen = await refused(it, via(b, kind, { clientId: `lost-${kind}`, path: '/elsewhere' }));
    assert.equal(seen.status, 404, seen.errors.map((e) => e.message).join('; '));
  }
  // Another path configured: that one works and /mqtt is refused; a query string is no part of the path.
  const custom = await it.broker(...wsArgs('--ws-path', '/brokers/one'));
  await it.connect(via(custom, 'ws', { clientId: 'custom', path: '/brokers/one?token=abc' }));
  const seen = await refused(it, via(custom, 'ws', { clientId: 'default-path' }));
  assert.equal(seen.status, 404);
  // --ws-path '' takes every path.
  const any = await it.broker(...wsArgs('--ws-path', ''));
  for (const path of ['/', '/mqtt', '/x/y']) await it.connect(via(any, 'wss', { clientId: `any${path}`, path }));
});

test('an Origin outside --ws-origin gets HTTP 403; a listed one (any case) and none (not a browser) connect', { needs }, async (it) => {
  const b = await it.broker(...wsArgs('--ws-origin', 'https://app.example', '--ws-origin', 'http://127.0.0.1:8000'));
  const origin = (o) => ({ wsOptions: { headers: { Origin: o } } });
  for (const kind of ['ws', 'wss']) {
    for (const evil of ['https://evil.example', 'https://app.example.evil.example', 'null', 'http://127.0.0.1:8001']) {
      const seen = await refused(it, via(b, kind, { clientId: 'evil', ...origin(evil) }));
      assert.equal(seen.status, 403, `${kind} ${evil}: ${seen.errors.map((e) => e.message).join('; ')}`);
    }
    const good = await it.connect(via(b, kind, { clientId: `good-${kind}`, ...origin('HTTPS://App.Example') }));
    const none = await it.connect(via(b, kind, { clientId: `none-${kind}` }));
    await good.subscribe('o/t', { qos: 1 });
    await none.publish('o/t', `from ${kind}`, { qos: 1 });
    assert.equal(String((await good.next()).payload), `from ${kind}`);
  }
});

test('an MQTT.js client over ws:// whose connection drops without DISCONNECT leaves its will to a TCP subscriber', { needs }, async (it) => {
  const b = await it.broker(...wsArgs());
  const watcher = await it.connect(via(b, 'tcp', { clientId: 'watcher' }));
  await watcher.subscribe('wills/#', { qos: 1 });
  for (const kind of ['ws', 'wss']) {
    const options = via(b, kind, { clientId: `mortal-${kind}`, will: { topic: `wills/${kind}`, payload: `${kind} gone`, qos: 1 } });
    const mortal = await it.connect(options);
    options.sockets[0].socket.terminate();  // the TCP connection ends, no close frame, no DISCONNECT
    await mortal.until(() => mortal.closed, 'the close');
    const will = await watcher.next();
    assert.deepEqual([will.topic, String(will.payload)], [`wills/${kind}`, `${kind} gone`]);
  }
});
