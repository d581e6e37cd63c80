"""Topic matching and $-topics, client identifiers, CONNECT handling, malformed packets, and the
QoS 2 receiver's duplicate handling, mostly with a raw socket that sends what libraries won't."""

import struct
import time

import harness as h
from harness import V311, V5


class Topics(h.BrokerTestCase):
    def test_wildcard_matching(self):
        """The filter examples of sections 4.7.1.2 and 4.7.1.3: # matches the parent level and below,
        + exactly one level (an empty one included), and nothing else matches."""
        topics = ["sport", "sport/", "sport/tennis/player1", "sport/tennis/player1/ranking",
                  "sport/tennis/player1/score/wimbledon", "/finance", "finance"]
        expected = {
            "sport/tennis/player1/#": {"sport/tennis/player1", "sport/tennis/player1/ranking",
                                       "sport/tennis/player1/score/wimbledon"},
            "sport/#": set(topics[:5]),
            "sport/tennis/+": {"sport/tennis/player1"},
            "sport/+": {"sport/"},
            "+/+": {"sport/", "/finance"},
            "/+": {"/finance"},
            "+": {"sport", "finance"},
            "#": set(topics),
        }
        subs = {}
        for i, f in enumerate(expected):
            c = self.paho("wild-%d" % i, V311)
            c.subscribe(f, 1)
            subs[f] = c
        pub = self.paho("wild-pub", V311)
        for t in topics:
            pub.publish(t, t.encode(), 1)
        for f, c in subs.items():
            got = sorted(m.topic for m in c.get_n(len(expected[f])))
            self.assertEqual(got, sorted(expected[f]), "filter %r" % f)
        time.sleep(h.ABSENT)  # absence check for all subscribers at once
        for f, c in subs.items():
            c.assert_nothing(0)

    def test_sys_topics(self):
        """$SYS/x is not matched by # or +/x [MQTT-4.7.2-1]; a client's PUBLISH to $SYS/... reaches
        nobody, a $SYS/# subscriber included (clients may not publish to $-topics)."""
        subs = {}
        for f in ("#", "+/x", "$SYS/#", "+/#"):
            c = self.paho("sys-" + f, V311)
            c.subscribe(f, 1)
            subs[f] = c
        for version in (V311, V5):
            pub = self.paho("sys-pub-v%d" % version, version)
            pub.publish("$SYS/x", b"fake", 1)  # acknowledged, then dropped
            pub.publish("$SYS/x", b"fake", 0)
        pub.publish("a/x", b"real", 1)  # a control: an ordinary topic reaches the wildcards
        for f in ("#", "+/x", "+/#"):
            m = subs[f].get()
            self.assertEqual((m.topic, m.payload), ("a/x", b"real"), f)
        time.sleep(h.ABSENT)
        for c in subs.values():
            c.assert_nothing(0)

    def test_sys_publish_not_retained(self):
        """A retained PUBLISH to $SYS/... by a client is not stored: a later $SYS/# subscriber gets nothing."""
        self.paho("sysr-pub", V311).publish("$SYS/broker/fake", b"x", 1, retain=True)
        c = self.paho("sysr-sub", V311)
        c.subscribe("$SYS/#", 1)
        c.assert_nothing()


class ClientIds(h.BrokerTestCase):
    def test_empty_id_clean_session_v311(self):
        """3.1.1: an empty client id with Clean Session 1 is accepted [MQTT-3.1.3-6] [MQTT-3.1.3-7];
        two such clients get distinct identities (neither takes over the other)."""
        a, _ = self.raw_connected("", V311)
        b, _ = self.raw_connected("", V311)
        for c in (a, b):
            c.send(h.pingreq())
            c.expect(h.PINGRESP)

    def test_empty_id_persistent_refused_v311(self):
        """3.1.1: an empty client id with Clean Session 0 gets CONNACK return code 2 (Identifier
        rejected), then the connection is closed [MQTT-3.1.3-8] [MQTT-3.2.2-5]."""
        c = self.raw()
        c.send(h.connect("", V311, clean=False))
        _, got = c.wait_closed()
        self.assertEqual(len(got), 1, got)
        self.assertEqual((got[0].kind, got[0].body), (h.CONNACK, b"\x00\x02"))

    def test_empty_id_v5_assigned(self):
        """5.0: an empty client id gets an Assigned Client Identifier in CONNACK [MQTT-3.2.2-16],
        unique per connection [MQTT-3.1.3-6]; with Clean Start 0 too."""
        ids = []
        for clean in (True, False):
            c, ack = self.raw_connected("", V5, clean=clean)
            assigned = ack.properties.get(0x12)
            self.assertTrue(assigned and assigned[0], "no Assigned Client Identifier: %r" % ack.properties)
            ids.append(assigned[0])
        self.assertNotEqual(ids[0], ids[1])
        p = self.paho("", V5, connect_now=False)
        _, code, props = p.connect()
        self.assertTrue(getattr(props, "AssignedClientIdentifier", None))


class Connect(h.BrokerTestCase):
    def test_unsupported_protocol_level(self):
        """Protocol level 6: CONNACK return code 1 (unacceptable protocol version), then close
        [MQTT-3.1.2-2]."""
        c = self.raw()
        c.send(h.connect("level6", version=6))
        _, got = c.wait_closed()
        self.assertEqual([(p.kind, p.body) for p in got], [(h.CONNACK, b"\x00\x01")])

    def test_first_packet_not_connect(self):
        """A first packet other than CONNECT closes the connection, with nothing sent [MQTT-3.1.0-1]."""
        for first in (h.pingreq(), h.publish("t", "x"), h.subscribe(1, [("t", 0)])):
            c = self.raw()
            c.send(first)
            _, got = c.wait_closed()
            self.assertEqual(got, [], first.hex())

    def test_second_connect(self):
        """A second CONNECT on a connection is a protocol violation: the connection is closed
        [MQTT-3.1.0-2]; 5.0 gets DISCONNECT 0x82 (Protocol Error) first."""
        for version in (V311, V5):
            c, _ = self.raw_connected("twice-v%d" % version, version)
            c.send(h.connect("twice-v%d" % version, version))
            _, got = c.wait_closed()
            if version == V5:
                self.assertEqual([(p.kind, p.body[:1]) for p in got], [(h.DISCONNECT, b"\x82")])
            else:
                self.assertEqual(got, [])

    def test_invalid_filter_gets_failure_return_code(self):
        """An invalid Topic Filter (# not last, + not alone in its level) gets its own failure code
        in the SUBACK (3.1.1 0x80, 5.0 0x8F) while the valid one in the same SUBSCRIBE is granted
        [MQTT-3.8.4-4] [MQTT-3.8.4-5]; the connection stays usable (3.1.1 would also allow closing
        it; this broker answers 0x80)."""
        for version in (V311, V5):
            c, _ = self.raw_connected("badf-v%d" % version, version)
            c.send(h.subscribe(3, [("ok/+", 1), ("a/#/b", 1), ("a/b+", 0)], version))
            ack = c.expect(h.SUBACK)
            codes = ack.body[2:] if version == V311 else ack.body[3:]
            self.assertEqual(h.packet_id_of(ack), 3)
            self.assertEqual(list(codes), [1, 0x80, 0x80] if version == V311 else [1, 0x8F, 0x8F])
            c.send(h.pingreq())
            c.expect(h.PINGRESP)

    def test_qos1_publish_with_packet_id_0(self):
        """A QoS 1 PUBLISH with Packet Identifier 0 is a protocol violation [MQTT-2.3.1-1]: closed."""
        c, _ = self.raw_connected("pid0", V311)
        c.send(h.publish("t", "x", qos=1, packet_id=0))
        _, got = c.wait_closed()
        self.assertEqual(got, [])

    def test_pingreq_keeps_working_after_other_client_errors(self):
        """Refused connections leave the broker serving others."""
        ok, _ = self.raw_connected("bystander", V311)
        bad = self.raw()
        bad.send(h.connect("x", version=6))
        bad.wait_closed()
        ok.send(h.pingreq())
        ok.expect(h.PINGRESP)


class ConnectTimeout(h.BrokerTestCase):
    broker_args = ("--connect-timeout-ms", "500")

    def test_silent_connection_closed_after_connect_timeout(self):
        """A connection that never sends CONNECT is closed after --connect-timeout-ms (500 ms), with
        nothing sent (section 4.8 / 3.1: a server closes a connection that does not send CONNECT
        in reasonable time)."""
        c = self.raw()
        opened = time.monotonic()
        closed, got = c.wait_closed(timeout=5)
        self.assertEqual(got, [])
        self.assertGreaterEqual(closed - opened, 0.45)
        self.assertLessEqual(closed - opened, 3.0)

    def test_partial_connect_closed_after_connect_timeout(self):
        """Half a CONNECT is not a CONNECT: closed after the timeout."""
        c = self.raw()
        opened = time.monotonic()
        c.send(h.connect("partial")[:5])
        closed, got = c.wait_closed(timeout=5)
        self.assertEqual(got, [])
        self.assertGreaterEqual(closed - opened, 0.45)
        self.assertLessEqual(closed - opened, 3.0)

    def test_connected_client_outlives_connect_timeout(self):
        """After CONNACK the connect timeout no longer applies (Keep Alive 60 rules)."""
        c, _ = self.raw_connected("quick", V311)
        c.assert_open(1.0)
        c.send(h.pingreq())
        c.expect(h.PINGRESP)


class Malformed(h.BrokerTestCase):
    def _qos3(self, version):
        sub = self.paho("mf-sub-v%d" % version, V311)
        sub.subscribe("mf/#", 1)
        bad, _ = self.raw_connected("mf-bad-v%d" % version, version)
        body = h.utf8("mf/bad") + struct.pack("!H", 1) + (b"\x00" if version == V5 else b"") + b"payload"
        bad.send(h.packet(0x36, body))  # PUBLISH with QoS bits 11
        _, got = bad.wait_closed()
        if version == V5:
            # [MQTT-4.13.1-1] DISCONNECT with 0x81 (Malformed Packet) before closing.
            self.assertEqual([(p.kind, p.body[:1]) for p in got], [(h.DISCONNECT, b"\x81")])
        else:
            self.assertEqual(got, [])  # 3.1.1: just close [MQTT-4.8.0-1]
        pub = self.paho("mf-pub-v%d" % version, V311)
        pub.publish("mf/ok", b"still here", 1)
        m = sub.get()
        self.assertEqual((m.topic, m.payload), ("mf/ok", b"still here"))
        sub.assert_nothing(0.3)  # the malformed PUBLISH was not routed

    def test_qos3_publish_closes_only_that_connection_v311(self):
        """PUBLISH with QoS 3 is malformed [MQTT-3.3.1-4]: that connection is closed [MQTT-4.8.0-1],
        another client keeps working."""
        self._qos3(V311)

    def test_qos3_publish_closes_only_that_connection_v5(self):
        """5.0: PUBLISH with QoS 3 gets DISCONNECT 0x81 then close [MQTT-3.3.1-4] [MQTT-4.13.1-1];
        another client keeps working."""
        self._qos3(V5)

    def test_bad_remaining_length(self):
        """A Remaining Length of five bytes is malformed (section 2.2.3): the connection closes."""
        c, _ = self.raw_connected("badlen", V311)
        c.send(b"\x30\xff\xff\xff\xff\x01")
        _, got = c.wait_closed()
        self.assertEqual(got, [])

    def test_wildcard_in_publish_topic(self):
        """A PUBLISH topic with a wildcard is refused: the connection closes [MQTT-3.3.2-2]."""
        sub = self.paho("wt-sub", V311)
        sub.subscribe("#", 0)
        c, _ = self.raw_connected("wt", V311)
        c.send(h.publish("wt/+", "x"))
        _, got = c.wait_closed()
        self.assertEqual(got, [])
        sub.assert_nothing(0.3)


class Qos2Receiver(h.BrokerTestCase):
    def _duplicate(self, version):
        sub = self.paho("q2-sub-v%d" % version, V311)
        sub.subscribe("q2/#", 2)
        c, _ = self.raw_connected("q2-pub-v%d" % version, version)
        c.send(h.publish("q2/dup", "once", qos=2, packet_id=7, version=version))
        self.assertEqual(h.packet_id_of(c.expect(h.PUBREC)), 7)
        c.send(h.publish("q2/dup", "once", qos=2, packet_id=7, dup=True, version=version))
        self.assertEqual(h.packet_id_of(c.expect(h.PUBREC)), 7)  # acknowledged again
        m = sub.get()
        self.assertEqual((m.payload, m.qos), (b"once", 2))
        sub.assert_nothing()  # ...but delivered once

        c.send(h.ack(h.PUBREL, 7))
        p = c.expect(h.PUBCOMP)
        self.assertEqual(p.flags, 0)
        self.assertEqual(h.packet_id_of(p), 7)
        c.send(h.ack(h.PUBREL, 7))  # repeated PUBREL: PUBCOMP again
        p = c.expect(h.PUBCOMP)
        self.assertEqual(h.packet_id_of(p), 7)
        if version == V5 and len(p.body) > 2:
            self.assertIn(p.body[2], (0x00, 0x92))  # Success or Packet Identifier not found

        # After PUBCOMP the identifier names a new message.
        c.send(h.publish("q2/dup", "twice", qos=2, packet_id=7, version=version))
        self.assertEqual(h.packet_id_of(c.expect(h.PUBREC)), 7)
        self.assertEqual(sub.get().payload, b"twice")
        c.send(h.ack(h.PUBREL, 7))
        self.assertEqual(h.packet_id_of(c.expect(h.PUBCOMP)), 7)
        sub.assert_nothing(0.3)

    def test_qos2_duplicate_publish_delivered_once_v311(self):
        """QoS 2 PUBLISH id 7 twice (DUP=1) before PUBREL: two PUBRECs, one delivery; PUBREL gets
        PUBCOMP, a repeated PUBREL gets PUBCOMP again; then id 7 is a new message [MQTT-4.3.3-2]."""
        self._duplicate(V311)

    def test_qos2_duplicate_publish_delivered_once_v5(self):
        """As above in 5.0 [MQTT-4.3.3-10] [MQTT-4.3.3-11] [MQTT-4.3.3-12]; a repeated PUBREL may
        carry 0x92 (Packet Identifier not found)."""
        self._duplicate(V5)


class SysTopics(h.BrokerTestCase):
    broker_args = ("--sys-interval", "1")

    def test_broker_publishes_sys_statistics(self):
        """The broker publishes Mosquitto's $SYS/broker/... figures, retained; a $SYS/# subscriber
        sees them and a # subscriber does not [MQTT-4.7.2-1]."""
        hash_sub = self.paho("sys-hash", V311)
        hash_sub.subscribe("#", 0)
        sys_sub = self.paho("sys-sys", V5)
        sys_sub.subscribe("$SYS/broker/clients/connected", 0)
        m = sys_sub.get()  # within a couple of intervals
        self.assertEqual(m.topic, "$SYS/broker/clients/connected")
        self.assertGreaterEqual(int(m.payload), 2)
        late = self.paho("sys-late", V311)
        late.subscribe("$SYS/broker/version", 0)
        m = late.get()
        self.assertTrue(m.retain)  # a retained figure reaches a new subscriber at once
        self.assertTrue(m.payload.startswith(b"mqttbroker "))
        hash_sub.assert_nothing()


if __name__ == "__main__":
    h.main()
