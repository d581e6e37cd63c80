"""MQTT 5.0 features that a client asks for or sets, with paho-mqtt (MQTTv5) and hand-written
packets where paho cannot express the case: the client's Receive Maximum and Maximum Packet Size,
Message Expiry, Topic Aliases both ways; and what the server's flags switch: Wildcard Subscriptions
and Subscription Identifiers off, redirection to another server, a PUBLISH rate limit."""

import struct
import time
import unittest

import harness as h
from harness import V5

RECEIVE_MAXIMUM = 0x21
MAXIMUM_PACKET_SIZE = 0x27
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MESSAGE_EXPIRY = 0x02
SUBSCRIPTION_IDENTIFIER = 0x0B
SERVER_REFERENCE = 0x1C
REQUEST_PROBLEM_INFORMATION = 0x17
REASON_STRING = 0x1F
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29


class ClientLimits(h.BrokerTestCase):
    def test_receive_maximum_from_client(self):
        """No more unacknowledged QoS 1 PUBLISH than the client's Receive Maximum [MQTT-3.3.4-9];
        each acknowledgement lets the next one go."""
        c, _ = self.raw_connected("rm2", V5, properties=h.props((RECEIVE_MAXIMUM, struct.pack("!H", 2))))
        c.send(h.subscribe(1, [("rm/#", 1)], V5))
        c.expect(h.SUBACK)
        pub = self.paho("rm-pub", V5)
        for i in range(5):
            pub.publish("rm/t", b"%d" % i, 1)
        first = [h.parse_publish(c.expect(h.PUBLISH), V5) for _ in range(2)]
        c.assert_open()  # the third waits for an acknowledgement
        c.send(h.ack(h.PUBACK, first[0].packet_id))
        third = h.parse_publish(c.expect(h.PUBLISH), V5)
        self.assertEqual([p.payload for p in first + [third]], [b"0", b"1", b"2"])
        c.assert_open()

    def test_maximum_packet_size_from_client(self):
        """A message larger than a client's Maximum Packet Size is not sent to it [MQTT-3.1.2-24],
        and only to it: others still get it [MQTT-3.1.2-25]."""
        small = self.paho("mps-small", V5, connect_properties={"MaximumPacketSize": 200})
        big = self.paho("mps-big", V5)
        small.subscribe("mps/#", 1)
        big.subscribe("mps/#", 1)
        pub = self.paho("mps-pub", V5)
        pub.publish("mps/t", b"x" * 1000, 1)
        pub.publish("mps/t", b"small", 1)
        self.assertEqual(small.get().payload, b"small")
        small.assert_nothing()
        self.assertEqual([m.payload for m in big.get_n(2)], [b"x" * 1000, b"small"])


class MessageExpiry(h.BrokerTestCase):
    def test_offline_queue_expires_and_the_rest_carries_what_is_left(self):
        """A queued message whose Message Expiry Interval ran out is not delivered [MQTT-3.3.2-5];
        one still valid arrives with the interval less the time it waited [MQTT-3.3.2-6]."""
        sub = self.paho("exp-sub", V5, clean=False, session_expiry=300)
        sub.subscribe("exp/#", 1)
        sub.disconnect()
        pub = self.paho("exp-pub", V5)
        pub.publish("exp/short", b"gone", 1, properties={"MessageExpiryInterval": 1})
        pub.publish("exp/long", b"kept", 1, properties={"MessageExpiryInterval": 60})
        time.sleep(2.2)  # the first has expired by any rounding; the second has 57 to 58 s left
        sub.reconnect()
        m = sub.get()
        self.assertEqual(m.payload, b"kept")
        left = m.properties.MessageExpiryInterval
        self.assertTrue(55 <= left <= 58, left)
        sub.assert_nothing()

    def test_expired_retained_message_is_not_served(self):
        pub = self.paho("expr-pub", V5)
        pub.publish("expr/t", b"brief", 1, retain=True, properties={"MessageExpiryInterval": 1})
        pub.publish("expr/u", b"lasting", 1, retain=True, properties={"MessageExpiryInterval": 600})
        time.sleep(2.2)
        sub = self.paho("expr-sub", V5)
        sub.subscribe("expr/#", 1)
        self.assertEqual(sub.get().payload, b"lasting")
        sub.assert_nothing()


class TopicAliases(h.BrokerTestCase):
    def test_aliases_from_client(self):
        """A client sets an alias with a topic and then publishes with the alias alone; every alias
        up to the CONNACK's Topic Alias Maximum is taken [MQTT-3.3.2-12]; one above it ends the
        connection with 0x94."""
        c, ack = self.raw_connected("ta-pub", V5)
        maximum = ack.properties[TOPIC_ALIAS_MAXIMUM][0]
        self.assertGreaterEqual(maximum, 1)
        sub = self.paho("ta-sub", V5)
        sub.subscribe("ta/#", 1)
        alias = h.props((TOPIC_ALIAS, struct.pack("!H", maximum)))
        c.send(h.publish("ta/long/topic/name", "first", qos=1, packet_id=1, version=V5, properties=alias))
        c.expect(h.PUBACK)
        c.send(h.publish("", "second", qos=1, packet_id=2, version=V5, properties=alias))
        c.expect(h.PUBACK)
        got = sub.get_n(2)
        self.assertEqual([(m.topic, m.payload) for m in got],
                         [("ta/long/topic/name", b"first"), ("ta/long/topic/name", b"second")])
        too_big = h.props((TOPIC_ALIAS, struct.pack("!H", maximum + 1)))
        c.send(h.publish("ta/x", "third", qos=1, packet_id=3, version=V5, properties=too_big))
        _, before = c.wait_closed()
        self.assertEqual([(p.kind, p.body[:1]) for p in before], [(h.DISCONNECT, b"\x94")])

    def test_aliases_to_client(self):
        """The broker uses aliases toward a client that announced a Topic Alias Maximum, never 0 nor
        above it [MQTT-3.3.2-8] [MQTT-3.3.2-11]; the topic is sent once per alias, then left out."""
        c, _ = self.raw_connected("ta-in", V5, properties=h.props((TOPIC_ALIAS_MAXIMUM, struct.pack("!H", 1))))
        c.send(h.subscribe(1, [("tb/#", 0)], V5))
        c.expect(h.SUBACK)
        pub = self.paho("tb-pub", V5)
        for topic in ("tb/a", "tb/a", "tb/b", "tb/b"):
            pub.publish(topic, b"m", 1)
        table = {}
        seen, wire = [], []
        for _ in range(4):
            p = h.parse_publish(c.expect(h.PUBLISH), V5)
            alias = p.properties.get(TOPIC_ALIAS, [None])[0]
            self.assertEqual(alias, 1)
            if p.topic:
                table[alias] = p.topic
            wire.append(p.topic)
            seen.append(table[alias])
        self.assertEqual(seen, ["tb/a", "tb/a", "tb/b", "tb/b"])
        self.assertEqual(wire, ["tb/a", "", "tb/b", ""])


class SubscriptionFeaturesOff(h.BrokerTestCase):
    broker_args = ("--wildcard-subscriptions", "false", "--subscription-identifiers", "false")

    def test_connack_says_so_and_suback_refuses(self):
        """CONNACK says Wildcard Subscription Available 0 and Subscription Identifiers Available 0;
        a filter with a wildcard gets SUBACK 0xA2 (3.1.1: 0x80 [MQTT-3.8.3-2]), a SUBSCRIBE with a
        Subscription Identifier 0xA1 for each filter; the connections stay."""
        c = self.paho("off-v5", V5, connect_now=False)
        _, code, props = c.connect()
        self.assertEqual(code, 0)
        self.assertEqual(getattr(props, "WildcardSubscriptionAvailable", None), 0)
        self.assertEqual(getattr(props, "SubscriptionIdentifierAvailable", None), 0)
        self.assertEqual(c.subscribe("off/+", 1), [0xA2])
        self.assertEqual(c.subscribe("off/#", 1), [0xA2])
        self.assertEqual(c.subscribe("off/exact", 1), [1])
        old = self.paho("off-v311", h.V311)
        self.assertEqual(old.subscribe("off/+", 1), [0x80])
        raw, _ = self.raw_connected("off-raw", V5)
        with_id = struct.pack("!H", 7) + h.props((SUBSCRIPTION_IDENTIFIER, h.varint(5)))
        with_id += h.utf8("off/exact") + bytes([1]) + h.utf8("off/other") + bytes([1])
        raw.send(h.packet(0x82, with_id))
        ack = raw.expect(h.SUBACK)
        self.assertEqual(ack.body, struct.pack("!H", 7) + b"\x00" + b"\xa1\xa1")  # no properties, two codes
        pub = self.paho("off-pub", V5)
        pub.publish("off/exact", b"m", 1)
        self.assertEqual(c.get().payload, b"m")
        old.assert_nothing()
        raw.assert_open()


class Redirection(h.BrokerTestCase):
    broker_args = ("--redirect", "elsewhere.example:1883")

    def test_connack_use_another_server(self):
        """Every authenticated client is sent elsewhere: 5.0 CONNACK 0x9C with the Server
        Reference, 3.1.1 CONNACK 3 (Server unavailable); then the close [MQTT-3.2.2-7]."""
        c = self.paho("go-v5", V5, connect_now=False)
        _, code, props = c.connect(expect_code=None)
        self.assertEqual(code, 0x9C)
        self.assertEqual(getattr(props, "ServerReference", None), "elsewhere.example:1883")
        raw = self.raw()
        raw.send(h.connect("go-raw", version=V5))
        ack = h.parse_connack(raw.expect(h.CONNACK), V5)
        self.assertEqual((ack.session_present, ack.code), (0, 0x9C))
        self.assertEqual(ack.properties.get(SERVER_REFERENCE), ["elsewhere.example:1883"])
        raw.wait_closed()
        old = self.raw()
        old.send(h.connect("go-v311"))
        self.assertEqual(h.parse_connack(old.expect(h.CONNACK)).code, 3)
        old.wait_closed()


class RedirectionPermanent(h.BrokerTestCase):
    broker_args = ("--redirect", "new.example:8883", "--redirect-permanent")

    def test_connack_server_moved(self):
        """--redirect-permanent: CONNACK 0x9D (Server moved) with the Server Reference."""
        c = self.paho("moved-v5", V5, connect_now=False)
        _, code, props = c.connect(expect_code=None)
        self.assertEqual(code, 0x9D)
        self.assertEqual(getattr(props, "ServerReference", None), "new.example:8883")


class PublishRate(h.BrokerTestCase):
    broker_args = ("--max-publish-rate", "5")

    def test_within_the_limit(self):
        """Four PUBLISH packets at a time, a second apart, stay within 5 per second of the clock:
        all are delivered and the connection stays."""
        sub = self.paho("rate-sub", V5)
        sub.subscribe("rate/#", 1)
        pub = self.paho("rate-ok", V5)
        for burst in range(2):
            if burst:
                time.sleep(1.05)  # the next burst is in another second, wherever the first began
            for i in range(4):
                pub.publish("rate/ok", b"%d-%d" % (burst, i), 1)
        self.assertEqual(len(sub.get_n(8)), 8)
        sub.assert_nothing()
        self.assertFalse(pub.disconnected.is_set())

    def test_over_the_limit(self):
        """Twenty PUBLISH packets at once, at most 5 per second allowed: 5.0 DISCONNECT 0x96
        (Message rate too high) and the close; 3.1.1 the close; at most 10 get through (the burst
        may straddle two seconds)."""
        sub = self.paho("over-sub", V5)
        sub.subscribe("over/#", 0)
        for version in (V5, h.V311):
            c, _ = self.raw_connected("over-%d" % version, version)
            c.send(b"".join(h.publish("over/t", "m", version=version) for _ in range(20)))
            _, before = c.wait_closed()
            expected = [(h.DISCONNECT, b"\x96")] if version == V5 else []
            self.assertEqual([(p.kind, p.body[:1]) for p in before], expected)
        got = []
        try:
            while True:
                got.append(sub.get(0.5))
        except AssertionError:
            pass
        self.assertTrue(10 <= len(got) <= 20, len(got))

    def test_paho_client_disconnected(self):
        """A paho 5.0 client over the limit is disconnected. (It may report 7, the connection lost,
        when the reset of a socket closed with input unread overtakes the DISCONNECT;
        test_over_the_limit reads the reason.)"""
        c = self.paho("over-paho", V5)
        for i in range(12):
            c.client.publish("over/paho", b"m", 0)
        self.assertTrue(c.disconnected.wait(h.WAIT))


class ReasonStrings(h.BrokerTestCase):
    def test_reason_string_seen_by_paho(self):
        """paho 5.0 reads the Reason String of a refusing CONNACK and of a DISCONNECT (here a
        takeover); a client that sent Request Problem Information 0 gets none [MQTT-3.1.2-29]."""
        long_id = "x" * 300  # above the server's max_client_id_length
        refused = self.paho(long_id, V5, connect_now=False)
        _, code, props = refused.connect(expect_code=None)
        self.assertEqual(code, 0x85)
        self.assertEqual(getattr(props, "ReasonString", None), "client identifier not valid")
        quiet = self.raw()
        quiet.send(h.connect(long_id, version=V5, properties=h.props((REQUEST_PROBLEM_INFORMATION, b"\x00"))))
        ack = h.parse_connack(quiet.expect(h.CONNACK), V5)
        self.assertEqual(ack.code, 0x85)
        self.assertNotIn(REASON_STRING, ack.properties)

        first = self.paho("rs-same", V5)
        self.paho("rs-same", V5)
        self.assertTrue(first.disconnected.wait(h.WAIT))
        self.assertEqual(first.disconnect_rc, 0x8E)
        self.assertEqual(getattr(first.disconnect_properties, "ReasonString", None),
                         "a newer connection with this Client Identifier took over")
        old, _ = self.raw_connected("rs-quiet", V5, properties=h.props((REQUEST_PROBLEM_INFORMATION, b"\x00")))
        self.raw_connected("rs-quiet", V5)
        _, before = old.wait_closed()
        self.assertEqual([p.kind for p in before], [h.DISCONNECT])
        self.assertEqual(before[0].body[:1], b"\x8e")
        self.assertNotIn(REASON_STRING, h.parse_props(before[0].body, 1)[0] if len(before[0].body) > 1 else {})


if __name__ == "__main__":
    h.main()
