// MQTT 5.0 through MQTT.js 5 (npm `mqtt`), an independent client that, unlike paho-mqtt 1.6,
// resolves the topic aliases the server assigns: outbound and inbound topic aliases, properties
// passed through, Message Expiry, the client's Receive Maximum and Maximum Packet Size, shared
// subscriptions, subscription options, 3.1.1 and 5.0 clients together, and what CONNACK tells.
// Each test starts its own server (harness.mjs). Run by ctest: `ctest -R integration_mqttjs`.

import assert from 'node:assert/strict';

import { ABSENT, mqttPacket, sleep, tapPackets, test } from './harness.mjs';

/** The PUBLISH packets `client` received as they were on the wire: the topic name (empty when the
 *  server sent only an alias) and the Topic Alias, if any. */
function wirePublishes(client) {
  return client.received.filter((p) => p.cmd === 'publish')
    .map((p) => ({ topic: String(p.topic), alias: p.properties?.topicAlias }));
}

test('outbound topic aliases: MQTT.js resolves them, the topic goes once per alias, none above its maximum [MQTT-3.3.2-11] [MQTT-3.1.2-26] [MQTT-3.3.2-8]', async (it) => {
  await it.broker();
  const sub = await it.connect({ clientId: 'ta-sub', properties: { topicAliasMaximum: 2 } });
  await sub.subscribe('ta/#', { qos: 1 });
  const pub = await it.connect({ clientId: 'ta-pub' });
  // Three topics over two aliases: the third takes the least recently used one.
  const topics = ['ta/a', 'ta/a', 'ta/b', 'ta/b', 'ta/a', 'ta/c', 'ta/c', 'ta/b', 'ta/a'];
  for (const [i, topic] of topics.entries()) await pub.publish(topic, `${i}`, { qos: 1 });

  const got = await sub.take(topics.length);
  assert.deepEqual(got.map((m) => [m.topic, String(m.payload)]), topics.map((t, i) => [t, `${i}`]));
  const wire = wirePublishes(sub);
  for (const w of wire) {
    // Every PUBLISH carries an alias in 1..2: never 0 [MQTT-3.3.2-8], never above the client's 2.
    assert.ok(Number.isInteger(w.alias) && w.alias >= 1 && w.alias <= 2, `alias ${w.alias}`);
  }
  // The topic name is sent when an alias is set and left out while it still stands.
  assert.deepEqual(wire.map((w) => w.topic), ['ta/a', '', 'ta/b', '', '', 'ta/c', '', 'ta/b', 'ta/a']);
  // Resolving the wire by hand gives what MQTT.js reported.
  const table = new Map();
  const resolved = wire.map((w) => {
    if (w.topic) table.set(w.alias, w.topic);
    return table.get(w.alias);
  });
  assert.deepEqual(resolved, topics);
});

test('outbound topic aliases start afresh on a new connection of the same session [MQTT-3.3.2-7]', async (it) => {
  await it.broker();
  const options = { clientId: 'ta-again', clean: false, properties: { sessionExpiryInterval: 60, topicAliasMaximum: 4 } };
  const first = await it.connect(options);
  await first.subscribe('tr/#', { qos: 1 });
  const pub = await it.connect({ clientId: 'tr-pub' });
  await pub.publish('tr/x', 'one', { qos: 1 });
  await pub.publish('tr/x', 'two', { qos: 1 });
  await first.take(2);
  assert.deepEqual(wirePublishes(first).map((w) => w.topic), ['tr/x', '']);
  await first.end();

  await pub.publish('tr/x', 'queued', { qos: 1 });  // waits in the session for the next connection
  const again = await it.connect(options);
  assert.equal(again.connack.sessionPresent, true);
  await pub.publish('tr/x', 'live', { qos: 1 });
  const got = await again.take(2);
  assert.deepEqual(got.map((m) => [m.topic, String(m.payload)]), [['tr/x', 'queued'], ['tr/x', 'live']]);
  // The old connection's alias means nothing here: the topic name comes again first (MQTT.js
  // would also refuse an alias it never learnt, with an error).
  const wire = wirePublishes(again);
  assert.deepEqual(wire.map((w) => w.topic), ['tr/x', '']);
  assert.ok(wire[0].alias >= 1 && wire[0].alias <= 4 && wire[1].alias === wire[0].alias, JSON.stringify(wire));
  await again.nothing();
});

test('no outbound topic alias to a client whose Topic Alias Maximum is 0 or absent [MQTT-3.1.2-27]', async (it) => {
  await it.broker();
  const zero = await it.connect({ clientId: 'ta-zero', properties: { topicAliasMaximum: 0 } });
  const none = await it.connect({ clientId: 'ta-none' });
  // The CONNECTs as sent: one says 0, the other nothing.
  const maxima = [zero, none].map((c) => c.sent.find((p) => p.cmd === 'connect').properties?.topicAliasMaximum);
  assert.deepEqual(maxima, [0, undefined]);
  for (const c of [zero, none]) await c.subscribe('tz/#', { qos: 1 });
  const pub = await it.connect({ clientId: 'tz-pub' });
  for (let i = 0; i < 4; i++) await pub.publish('tz/t', `${i}`, { qos: 1 });
  for (const c of [zero, none]) {
    const got = await c.take(4);
    assert.deepEqual(got.map((m) => m.topic), ['tz/t', 'tz/t', 'tz/t', 'tz/t']);
    assert.deepEqual(wirePublishes(c), Array(4).fill({ topic: 'tz/t', alias: undefined }));
    await c.nothing();
  }
});

test('inbound topic aliases that MQTT.js assigns reach a subscriber with their topic [MQTT-3.3.2-12]', async (it) => {
  await it.broker();
  const sub = await it.connect({ clientId: 'in-sub' });
  await sub.subscribe('in/#', { qos: 1 });
  const pub = await it.connect({ clientId: 'in-pub', autoAssignTopicAlias: true });
  const maximum = pub.connack.properties.topicAliasMaximum;
  assert.equal(maximum, 10);
  // Two topics more than aliases, each twice in a row: the second goes as the alias alone, and
  // MQTT.js gives the last two topics aliases that other topics had.
  const topics = [];
  for (let i = 0; i < maximum + 2; i++) topics.push(`in/${i}`, `in/${i}`);
  for (const [i, topic] of topics.entries()) await pub.publish(topic, `${i}`, { qos: 1 });

  const sent = pub.sent.filter((p) => p.cmd === 'publish').map((p) => [p.topic, p.properties?.topicAlias]);
  assert.equal(sent.length, topics.length);
  const owner = new Map();
  let reused = 0;
  for (const [i, [topic, alias]] of sent.entries()) {
    assert.ok(alias >= 1 && alias <= maximum, `alias ${alias}`);
    assert.equal(topic, i % 2 ? '' : topics[i]);  // the alias alone on every second PUBLISH
    if (topic && owner.has(alias)) reused++;
    if (topic) owner.set(alias, topic);
  }
  assert.equal(reused, 2);
  const got = await sub.take(topics.length);
  assert.deepEqual(got.map((m) => [m.topic, String(m.payload)]), topics.map((t, i) => [t, `${i}`]));
  await sub.nothing();
});

test('an inbound Topic Alias above the server\'s Topic Alias Maximum gets DISCONNECT 0x94, the maximum itself is taken [MQTT-3.3.2-12]', async (it) => {
  await it.broker();
  const sub = await it.connect({ clientId: 'over-sub' });
  await sub.subscribe('over/#', { qos: 1 });
  const pub = await it.connect({ clientId: 'over-pub' });
  const maximum = pub.connack.properties.topicAliasMaximum;
  // MQTT.js refuses to send an alias above the server's maximum, so these go as bytes of its codec.
  const send = (packet) => pub.mqtt.stream.write(mqttPacket().generate({ cmd: 'publish', qos: 0, ...packet }, { protocolVersion: 5 }));
  send({ topic: 'over/top', payload: 'at the maximum', properties: { topicAlias: maximum } });
  send({ topic: '', payload: 'alias alone', properties: { topicAlias: maximum } });
  const got = await sub.take(2);
  assert.deepEqual(got.map((m) => [m.topic, String(m.payload)]), [['over/top', 'at the maximum'], ['over/top', 'alias alone']]);

  send({ topic: 'over/beyond', payload: 'refused', properties: { topicAlias: maximum + 1 } });
  await pub.until(() => pub.closed, 'close after the DISCONNECT');
  assert.deepEqual(pub.disconnects.map((p) => p.reasonCode), [0x94]);
  await sub.nothing();
});

test('request/response: Response Topic, Correlation Data, User Properties, Content Type and Payload Format Indicator pass unchanged [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20] [MQTT-3.3.2-4]', async (it) => {
  await it.broker();
  const responder = await it.connect({ clientId: 'rr-responder' });
  await responder.subscribe('rr/request', { qos: 1 });
  const requester = await it.connect({ clientId: 'rr-requester' });
  await requester.subscribe('rr/reply/+', { qos: 1 });
  const correlation = Buffer.from([0x00, 0x01, 0x80, 0xfe, 0xff, 0x20]);
  // MQTT.js writes a key's values together in array order, keys in insertion order (not sorted).
  const userProperties = { zeta: '1', alpha: ['2', '3', '2'], mu: '', 'κλειδί': 'τιμή' };
  await requester.publish('rr/request', '{"question":6}', {
    qos: 1,
    properties: {
      responseTopic: 'rr/reply/requester',
      correlationData: correlation,
      userProperties,
      contentType: 'application/json; charset=utf-8',
      payloadFormatIndicator: true,
    },
  });
  const request = await responder.next();
  const p = request.packet.properties;
  assert.equal(p.responseTopic, 'rr/reply/requester');
  assert.ok(Buffer.compare(p.correlationData, correlation) === 0, p.correlationData.toString('hex'));
  assert.deepEqual({ ...p.userProperties }, userProperties);  // its object has no prototype
  assert.deepEqual(Object.keys(p.userProperties), Object.keys(userProperties));
  assert.equal(p.contentType, 'application/json; charset=utf-8');
  assert.equal(p.payloadFormatIndicator, true);
  assert.equal(String(request.payload), '{"question":6}');

  // The responder answers on the Response Topic with the Correlation Data it was given.
  await responder.publish(p.responseTopic, 'answer', {
    qos: 1,
    properties: { correlationData: p.correlationData, payloadFormatIndicator: false, userProperties: { in: 'reply' } },
  });
  const reply = await requester.next();
  assert.equal(reply.topic, 'rr/reply/requester');
  assert.ok(Buffer.compare(reply.packet.properties.correlationData, correlation) === 0);
  assert.deepEqual({ ...reply.packet.properties.userProperties }, { in: 'reply' });
  assert.equal(reply.packet.properties.payloadFormatIndicator, false);
  assert.equal(reply.packet.properties.responseTopic, undefined);
  assert.equal(reply.packet.properties.contentType, undefined);
});

test('Message Expiry: a queued message arrives with what is left of its interval, an expired one not at all [MQTT-3.3.2-5] [MQTT-3.3.2-6]', async (it) => {
  await it.broker();
  const options = { clientId: 'exp-sub', clean: false, properties: { sessionExpiryInterval: 300 } };
  const sub = await it.connect(options);
  await sub.subscribe('exp/#', { qos: 1 });
  await sub.end();
  const pub = await it.connect({ clientId: 'exp-pub' });
  await pub.publish('exp/short', 'gone', { qos: 1, properties: { messageExpiryInterval: 1 } });
  await pub.publish('exp/long', 'kept', { qos: 1, properties: { messageExpiryInterval: 60 } });
  await sleep(2200);  // the first has expired by any rounding; the second has 57 to 58 s left
  const again = await it.connect(options);
  const m = await again.next();
  assert.deepEqual([m.topic, String(m.payload)], ['exp/long', 'kept']);
  const left = m.packet.properties.messageExpiryInterval;
  assert.ok(left >= 55 && left <= 58, `Message Expiry Interval ${left}`);
  await again.nothing();
});

test('Receive Maximum from MQTT.js: never more unacknowledged QoS 1 PUBLISH than it, each PUBACK lets one more go [MQTT-3.3.4-9]', async (it) => {
  await it.broker();
  const held = [];  // the acknowledgements MQTT.js waits for (customHandleAcks)
  const sub = await it.connect({
    clientId: 'rm-sub',
    properties: { receiveMaximum: 2 },
    customHandleAcks: (topic, message, packet, done) => held.push(done),
  });
  let onWire = 0;
  let most = 0;
  tapPackets(sub, (type) => {
    if (type !== 3) return;  // PUBLISH
    onWire++;
    most = Math.max(most, onWire - sub.sent.filter((p) => p.cmd === 'puback').length);
  });
  await sub.subscribe('rm/#', { qos: 1 });
  const pub = await it.connect({ clientId: 'rm-pub' });
  for (let i = 0; i < 6; i++) await pub.publish('rm/t', `${i}`, { qos: 1 });

  const acknowledgeOne = async () => {
    await sub.until(() => held.length, 'a message to acknowledge');
    held.shift()(0);
  };
  await sub.until(() => onWire >= 2, 'two PUBLISH');
  await sleep(ABSENT);
  assert.equal(onWire, 2, 'a third PUBLISH before any PUBACK');
  await acknowledgeOne();
  await sub.until(() => onWire >= 3, 'the third PUBLISH');
  await sleep(ABSENT);
  assert.equal(onWire, 3, 'a fourth PUBLISH with two unacknowledged');
  while (sub.messages.length < 6) await acknowledgeOne();
  const got = await sub.take(6);
  assert.deepEqual(got.map((m) => String(m.payload)), ['0', '1', '2', '3', '4', '5']);
  assert.equal(most, 2);
});

test('Maximum Packet Size from MQTT.js: a larger message is not sent to it, a smaller one after it is [MQTT-3.1.2-24] [MQTT-3.1.2-25]', async (it) => {
  await it.broker();
  const small = await it.connect({ clientId: 'mps-small', properties: { maximumPacketSize: 200 } });
  const big = await it.connect({ clientId: 'mps-big' });
  for (const c of [small, big]) await c.subscribe('mps/#', { qos: 1 });
  const pub = await it.connect({ clientId: 'mps-pub' });
  await pub.publish('mps/t', 'x'.repeat(1000), { qos: 1 });
  await pub.publish('mps/t', 'small', { qos: 1 });
  // MQTT.js would end the connection with an error on a packet above its maximum.
  assert.equal(String((await small.next()).payload), 'small');
  await small.nothing();
  assert.deepEqual((await big.take(2)).map((m) => String(m.payload)), ['x'.repeat(1000), 'small']);
});

test('shared subscription $share/g/t with two MQTT.js members: each message to exactly one of them, in turn', async (it) => {
  await it.broker();
  const members = [];
  for (const id of ['member-1', 'member-2']) {
    const c = await it.connect({ clientId: id });
    assert.deepEqual(await c.subscribe('$share/g/sh/t', { qos: 1 }), [1]);
    members.push(c);
  }
  const pub = await it.connect({ clientId: 'sh-pub' });
  for (let i = 0; i < 10; i++) await pub.publish('sh/t', `${i}`, { qos: 1 });
  await members[0].until(() => members[0].messages.length + members[1].messages.length >= 10, '10 messages');
  const got = members.map((c) => c.messages.map((m) => Number(m.payload)));
  assert.deepEqual([...got[0], ...got[1]].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  // Round robin, the server's default: the members take turns in the order they joined.
  assert.deepEqual(got, [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]);
  assert.ok(members.every((c) => c.messages.every((m) => m.topic === 'sh/t')));
  await sleep(ABSENT);
  assert.equal(members[0].messages.length + members[1].messages.length, 10);
});

test('subscription option No Local: a client\'s own messages do not come back, others\' do [MQTT-3.8.3-3]', async (it) => {
  await it.broker();
  const self = await it.connect({ clientId: 'nl-self' });
  await self.subscribe('nl/#', { qos: 1, nl: true });
  const other = await it.connect({ clientId: 'nl-other' });
  await other.subscribe('nl/#', { qos: 1 });
  await self.publish('nl/own', 'mine', { qos: 1 });
  assert.equal((await other.next()).topic, 'nl/own');
  await self.nothing();
  await other.publish('nl/theirs', 'yours', { qos: 1 });
  assert.equal((await self.next()).topic, 'nl/theirs');
});

test('subscription option Retain As Published: RETAIN kept with it, cleared without it [MQTT-3.3.1-12] [MQTT-3.3.1-13]', async (it) => {
  await it.broker();
  const keep = await it.connect({ clientId: 'rap-keep' });
  await keep.subscribe('rap/#', { qos: 1, rap: true });
  const clear = await it.connect({ clientId: 'rap-clear' });
  await clear.subscribe('rap/#', { qos: 1, rap: false });
  const pub = await it.connect({ clientId: 'rap-pub' });
  await pub.publish('rap/t', 'retained', { qos: 1, retain: true });
  await pub.publish('rap/t', 'plain', { qos: 1 });
  for (const [c, flags] of [[keep, [true, false]], [clear, [false, false]]]) {
    const got = await c.take(2);
    assert.deepEqual(got.map((m) => [String(m.payload), m.packet.retain]), [['retained', flags[0]], ['plain', flags[1]]]);
  }
});

test('subscription option Retain Handling: 0 sends retained messages on every SUBSCRIBE, 1 on a new one only, 2 never [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]', async (it) => {
  await it.broker();
  const pub = await it.connect({ clientId: 'rh-pub' });
  await pub.publish('rh/t', 'stored', { qos: 1, retain: true });
  const retainedOnSubscribe = async (c, rh) => {
    await c.subscribe('rh/#', { qos: 1, rh });
    await sleep(ABSENT);
    const got = c.messages.splice(c.read);
    assert.ok(got.every((m) => m.topic === 'rh/t' && m.packet.retain), JSON.stringify(got));
    return got.length;
  };
  const never = await it.connect({ clientId: 'rh-2' });
  assert.equal(await retainedOnSubscribe(never, 2), 0);
  const once = await it.connect({ clientId: 'rh-1' });
  assert.deepEqual([await retainedOnSubscribe(once, 1), await retainedOnSubscribe(once, 1)], [1, 0]);
  const always = await it.connect({ clientId: 'rh-0' });
  assert.deepEqual([await retainedOnSubscribe(always, 0), await retainedOnSubscribe(always, 0)], [1, 1]);
  // All three subscriptions hold: a new message reaches each, RETAIN 0 as sent to a subscription.
  await pub.publish('rh/t', 'live', { qos: 1 });
  for (const c of [never, once, always]) assert.deepEqual(String((await c.next()).payload), 'live');
});

test('mixed versions: an MQTT.js 3.1.1 client and a 5.0 client exchange messages both ways at QoS 0, 1 and 2', async (it) => {
  await it.broker();
  const v311 = await it.connect({ clientId: 'mix-311', protocolVersion: 4 });
  const v5 = await it.connect({ clientId: 'mix-5' });
  assert.deepEqual(await v311.subscribe('mix/to311', { qos: 2 }), [2]);
  assert.deepEqual(await v5.subscribe('mix/to5', { qos: 2 }), [2]);
  for (const qos of [0, 1, 2]) {
    await v5.publish('mix/to311', `from 5.0 at ${qos}`, { qos, properties: { userProperties: { k: 'v' }, contentType: 'text/plain' } });
    await v311.publish('mix/to5', `from 3.1.1 at ${qos}`, { qos });
    const a = await v311.next();
    const b = await v5.next();
    assert.deepEqual([a.topic, String(a.payload), a.packet.qos], ['mix/to311', `from 5.0 at ${qos}`, qos]);
    assert.deepEqual([b.topic, String(b.payload), b.packet.qos], ['mix/to5', `from 3.1.1 at ${qos}`, qos]);
  }
  await v311.nothing();
  await v5.nothing();
});

test('CONNACK properties MQTT.js sees match the server\'s options', async (it) => {
  await it.broker();
  const defaults = await it.connect({ clientId: 'connack-default' });
  assert.equal(defaults.connack.reasonCode, 0);
  const p = defaults.connack.properties;
  // broker_options' defaults. The three availability properties are always sent; Maximum QoS and
  // Retain Available are absent, which means QoS 2 and retained messages are available.
  assert.deepEqual(
    [p.topicAliasMaximum, p.receiveMaximum, p.maximumPacketSize, p.sharedSubscriptionAvailable,
      p.wildcardSubscriptionAvailable, p.subscriptionIdentifiersAvailable],
    [10, 1024, 1024 * 1024, true, true, true]);
  for (const absent of ['maximumQoS', 'retainAvailable', 'serverKeepAlive']) {
    assert.equal(p[absent], undefined, absent);
  }
  const limited = await it.broker('--max-packet-size', '4096', '--wildcard-subscriptions', '0',
    '--subscription-identifiers', '0');
  const c = await it.connect({ clientId: 'connack-limited', broker: limited });
  const q = c.connack.properties;
  assert.deepEqual([q.maximumPacketSize, q.wildcardSubscriptionAvailable, q.subscriptionIdentifiersAvailable],
    [4096, false, false]);
  // With wildcards switched off, SUBACK refuses a wildcard filter with 0xA2.
  await assert.rejects(c.subscribe('w/+', { qos: 1 }), (e) => e.packet?.granted?.[0] === 0xA2);
});
