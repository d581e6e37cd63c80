"""MQTT 5.0 features that a client asks for or sets, with paho-mqtt (MQTTv5) and hand-written
packets where paho cannot express the case: the client's Receive Maximum and Maximum Packet Size,
Message Expiry, Topic Aliases both ways."""

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


if __name__ == "__main__":
    h.main()
