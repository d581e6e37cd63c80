"""QoS 0/1/2 end to end with paho and mosquitto clients, 3.1.1 and 5.0; delivered QoS; overlapping
subscriptions; the example server itself (--help, PINGREQ)."""

import subprocess
import unittest

import harness as h
from harness import V311, V5


class EndToEnd(h.BrokerTestCase):
    def _paho_round_trip(self, version):
        sub = self.paho("sub-%d" % version, version)
        pub = self.paho("pub-%d" % version, version)
        self.assertEqual(sub.subscribe("e2e/#", 2), [2])
        for qos in (0, 1, 2):
            payload = b"paho v%d qos %d" % (version, qos)
            pub.publish("e2e/q%d" % qos, payload, qos)
            m = sub.get()
            self.assertEqual((m.topic, m.payload, m.qos, m.retain), ("e2e/q%d" % qos, payload, qos, 0))
        sub.assert_nothing(0.3)  # each message once

    def test_paho_qos012_v311(self):
        """QoS 0, 1 and 2 through the broker, paho 3.1.1 on both ends [MQTT-4.3.1] [MQTT-4.3.2] [MQTT-4.3.3]."""
        self._paho_round_trip(V311)

    def test_paho_qos012_v5(self):
        """QoS 0, 1 and 2 through the broker, paho 5.0 on both ends [MQTT-4.3.1] [MQTT-4.3.2] [MQTT-4.3.3]."""
        self._paho_round_trip(V5)

    def _mosquitto_round_trip(self, version):
        for qos in (0, 1, 2):
            sub = h.MosquittoSub(self.port, "mq/#", qos=2, version=version)
            self._clients.append(sub)
            h.mosquitto_pub(self.port, "mq/t%d" % qos, "mosquitto %d" % qos, qos=qos, version=version)
            self.assertEqual(sub.get(), (qos, 0, "mq/t%d" % qos, "mosquitto %d" % qos))
            self.assertEqual(sub.proc.wait(timeout=h.WAIT), 0)  # -C 1: exits after one message

    def test_mosquitto_qos012_v311(self):
        """QoS 0, 1 and 2 from mosquitto_pub to mosquitto_sub, 3.1.1 [MQTT-4.3.1] [MQTT-4.3.2] [MQTT-4.3.3]."""
        self._mosquitto_round_trip(V311)

    def test_mosquitto_qos012_v5(self):
        """QoS 0, 1 and 2 from mosquitto_pub to mosquitto_sub, 5.0 [MQTT-4.3.1] [MQTT-4.3.2] [MQTT-4.3.3]."""
        self._mosquitto_round_trip(V5)

    def test_mixed_clients_and_versions(self):
        """mosquitto 5.0 publisher to a paho 3.1.1 subscriber and paho 5.0 publisher to a mosquitto
        3.1.1 subscriber, QoS 2: versions and libraries interoperate through the broker."""
        psub = self.paho("psub", V311)
        psub.subscribe("mix/a", 2)
        h.mosquitto_pub(self.port, "mix/a", "from mosquitto", qos=2, version=V5)
        m = psub.get()
        self.assertEqual((m.payload, m.qos), (b"from mosquitto", 2))

        msub = h.MosquittoSub(self.port, "mix/b", qos=2, version=V311)
        self._clients.append(msub)
        ppub = self.paho("ppub", V5)
        ppub.publish("mix/b", b"from paho", 2)
        self.assertEqual(msub.get(), (2, 0, "mix/b", "from paho"))

    def test_delivered_qos_is_min_of_publish_and_subscription(self):
        """Delivered QoS = min(published QoS, granted QoS), all nine pairs
        [MQTT-3.8.4-6] (3.1.1) / [MQTT-3.8.4-8] (5.0)."""
        for version in (V311, V5):
            subs = {}
            for sq in (0, 1, 2):
                c = self.paho("min-sub%d-v%d" % (sq, version), version)
                self.assertEqual(c.subscribe("min/v%d" % version, sq), [sq])
                subs[sq] = c
            pub = self.paho("min-pub-v%d" % version, version)
            for pq in (0, 1, 2):
                pub.publish("min/v%d" % version, b"pq%d" % pq, pq)
                for sq, c in subs.items():
                    m = c.get()
                    self.assertEqual((m.payload, m.qos), (b"pq%d" % pq, min(pq, sq)),
                                     "v%d publish QoS %d, subscription QoS %d" % (version, pq, sq))

    def test_overlapping_subscriptions_one_delivery_at_max_qos(self):
        """a/# at QoS 0 and a/+ at QoS 2 both match a/b: one delivery, at QoS 2 [MQTT-3.3.5-1]
        (3.1.1; the spec lets a server send extra copies, this broker promises one)."""
        sub = self.paho("overlap", V311)
        self.assertEqual(sub.subscribe("a/#", 0), [0])
        self.assertEqual(sub.subscribe("a/+", 2), [2])
        pub = self.paho("overlap-pub", V311)
        pub.publish("a/b", b"x", 2)
        m = sub.get()
        self.assertEqual((m.topic, m.qos), ("a/b", 2))
        sub.assert_nothing()
        # And the other way round: the higher QoS on the # filter.
        sub2 = self.paho("overlap2", V311)
        sub2.subscribe("a/#", 1)
        sub2.subscribe("a/+", 0)
        pub.publish("a/c", b"y", 2)
        m = sub2.get()
        self.assertEqual((m.topic, m.qos), ("a/c", 1))
        sub2.assert_nothing()

    def test_ordered_burst_beyond_inflight_window(self):
        """500 QoS 1 and 500 QoS 2 messages from one publisher arrive complete and in order, through
        the 32-message in-flight window [MQTT-4.6.0-6]."""
        for qos in (1, 2):
            sub = self.paho("burst-sub-%d" % qos, V5)
            sub.subscribe("burst/%d" % qos, qos)
            pub = self.paho("burst-pub-%d" % qos, V311)
            infos = [pub.client.publish("burst/%d" % qos, b"%d" % i, qos) for i in range(500)]
            for info in infos:
                info.wait_for_publish(timeout=h.WAIT)
                self.assertTrue(info.is_published())
            got = [int(m.payload) for m in sub.get_n(500, timeout=30)]
            self.assertEqual(got, list(range(500)), "QoS %d" % qos)

    def test_large_payload(self):
        """A 512 KiB payload goes through intact at QoS 1, 3.1.1 and 5.0."""
        data = bytes(range(256)) * 2048
        for version in (V311, V5):
            sub = self.paho("big-sub-v%d" % version, version)
            sub.subscribe("big/t", 1)
            self.paho("big-pub-v%d" % version, version).publish("big/t", data, 1)
            m = sub.get()
            self.assertEqual((len(m.payload), m.payload == data), (len(data), True))

    def test_packet_larger_than_limit(self):
        """A packet over --max-packet-size: 5.0 gets DISCONNECT 0x95 (Packet too large) and the
        connection closes [MQTT-3.2.2-15 server side, section 3.1.2.11.4]; 3.1.1 closes."""
        for version in (V311, V5):
            c, ack = self.raw_connected("huge-v%d" % version, version)
            if version == V5:
                self.assertEqual(ack.properties.get(0x27), [1024 * 1024])  # Maximum Packet Size
            # Only the start of it: the size is in the fixed header, and a broker must not need
            # the body to refuse it (sending it all would race the close).
            c.send(h.publish("huge", b"x" * (1024 * 1024 + 16), version=version)[:64])
            _, got = c.wait_closed()
            if version == V5:
                self.assertEqual([(p.kind, p.body[:1]) for p in got], [(h.DISCONNECT, b"\x95")])
            else:
                self.assertEqual(got, [])

    def test_unsubscribe_stops_delivery(self):
        """UNSUBSCRIBE gets UNSUBACK with the same id [MQTT-3.10.4-4] and stops delivery [MQTT-3.10.4-1]."""
        c, _ = self.raw_connected("unsub", V311)
        c.send(h.subscribe(5, [("un/t", 0)]))
        c.expect(h.SUBACK)
        pub = self.paho("unsub-pub", V311)
        pub.publish("un/t", b"before", 1)
        self.assertEqual(h.parse_publish(c.expect(h.PUBLISH)).payload, b"before")
        c.send(h.packet(0xA2, b"\x00\x09" + h.utf8("un/t")))
        self.assertEqual(h.packet_id_of(c.expect(h.UNSUBACK)), 9)
        pub.publish("un/t", b"after", 1)
        c.assert_open()

    def test_v5_subscription_identifier_and_no_local(self):
        """5.0: the Subscription Identifier comes back on matching PUBLISHes [MQTT-3.3.4-3]; with
        No Local a client's own messages are not sent back to it [MQTT-3.8.3-3]."""
        c, _ = self.raw_connected("v5opts", V5)
        sub_id = h.props((0x0B, h.varint(42)))
        c.send(h.packet(0x82, b"\x00\x01" + sub_id + h.utf8("v5/id") + b"\x01"))
        c.expect(h.SUBACK)
        c.send(h.subscribe(2, [("v5/nl", 0x04 | 1)], V5))  # No Local
        c.expect(h.SUBACK)
        self.paho("v5opts-pub", V5).publish("v5/id", b"x", 1)
        p = h.parse_publish(c.expect(h.PUBLISH), V5)
        self.assertEqual(p.properties.get(0x0B), [42])
        c.send(h.ack(h.PUBACK, p.packet_id))
        c.send(h.publish("v5/nl", "mine", qos=1, packet_id=3, version=V5))
        ack = c.expect(h.PUBACK)
        self.assertEqual(h.packet_id_of(ack), 3)
        c.assert_open()  # the own message is not delivered

    def test_v5_puback_no_matching_subscribers(self):
        """5.0: PUBACK reason 0x10 (No matching subscribers) when nobody subscribed, 0x00 otherwise."""
        c, _ = self.raw_connected("nomatch", V5)
        c.send(h.publish("nobody/here", "x", qos=1, packet_id=1, version=V5))
        ack = c.expect(h.PUBACK)
        self.assertEqual(ack.body[2:3], b"\x10")
        self.paho("nomatch-sub", V311).subscribe("nobody/here", 0)
        c.send(h.publish("nobody/here", "x", qos=1, packet_id=2, version=V5))
        ack = c.expect(h.PUBACK)
        self.assertIn(ack.body[2:3], (b"", b"\x00"))

    def test_pingreq_gets_pingresp(self):
        """The example answers PINGREQ with PINGRESP [MQTT-3.12.4-1], in 3.1.1 and 5.0."""
        for version in (V311, V5):
            c, _ = self.raw_connected("ping-v%d" % version, version)
            c.send(h.pingreq())
            p = c.expect(h.PINGRESP)
            self.assertEqual((p.flags, p.body), (0, b""))


class Example(unittest.TestCase):
    def test_help_exits_zero(self):
        """`mqttbroker --help` prints the flags and exits 0."""
        r = subprocess.run([h.broker_binary(), "--help"], capture_output=True, text=True, timeout=h.WAIT)
        h.assert_no_sanitizer_report(self, r.stderr, "mqttbroker --help")
        self.assertEqual(r.returncode, 0, r.stderr)
        for flag in ("--bind", "--port", "--threads", "--connect-timeout-ms", "--max-connections"):
            self.assertIn(flag, r.stdout)

    def test_bad_flag_exits_nonzero(self):
        """An unknown flag is refused with a non-zero status."""
        r = subprocess.run([h.broker_binary(), "--no-such-flag"], capture_output=True, text=True, timeout=h.WAIT)
        h.assert_no_sanitizer_report(self, r.stderr, "mqttbroker --no-such-flag")
        self.assertNotEqual(r.returncode, 0)


if __name__ == "__main__":
    h.main()
