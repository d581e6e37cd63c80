"""Shared subscriptions ($share/{ShareName}/{filter}, MQTT 5.0 section 4.8.2) with paho-mqtt 5.0
and 3.1.1 clients and raw sockets: one copy per group, round robin, each member's own QoS, the
hand-over of a member's unacknowledged QoS 1 message when its session ends."""

import time
import unittest

import harness as h
from harness import V311, V5


def collect(members, n, timeout=h.WAIT):
    """The messages the members receive until there are `n` in all: a list per member."""
    deadline = time.monotonic() + timeout
    got = [[] for _ in members]
    while sum(len(g) for g in got) < n:
        if time.monotonic() > deadline:
            raise AssertionError("%d of %d messages within %.0f s: %r" % (sum(len(g) for g in got), n, timeout, got))
        for i, m in enumerate(members):
            try:
                got[i].append(m.messages.get(timeout=0.02))
            except h.queue.Empty:
                pass
    return got


class Shared(h.BrokerTestCase):
    def test_three_members_share_thirty_messages(self):
        """Three paho 5.0 subscribers in one group get 30 QoS 1 messages between them, each message
        once, in turn (10 each); CONNACK says Shared Subscription Available 1."""
        members = []
        for i in range(3):
            c = self.paho("member-%d" % i, V5, connect_now=False)
            _, code, props = c.connect()
            self.assertEqual(code, 0)
            self.assertEqual(getattr(props, "SharedSubscriptionAvailable", None), 1)
            members.append(c)
        for c in members:
            self.assertEqual(c.subscribe("$share/workers/jobs/#", 1), [1])
        pub = self.paho("producer", V5)
        for i in range(30):
            pub.publish("jobs/%d" % (i % 4), b"%d" % i, 1)
        got = collect(members, 30)
        payloads = sorted(int(m.payload) for g in got for m in g)
        self.assertEqual(payloads, list(range(30)))  # each once
        for i, g in enumerate(got):
            # Round robin in the order the members joined: member i gets i, i+3, i+6, ...
            self.assertEqual([int(m.payload) for m in g], list(range(i, 30, 3)))
            self.assertTrue(all(m.qos == 1 for m in g))
        for c in members:
            c.assert_nothing(0.3)

    def test_versions_and_granted_qos_per_member(self):
        """A 3.1.1 member granted QoS 0 and a 5.0 member granted QoS 2 in one group, beside an
        ordinary subscriber: each member gets its messages at its own granted QoS [MQTT-4.8.2-3],
        the ordinary subscriber gets every message."""
        old = self.paho("old", V311)
        new = self.paho("new", V5)
        plain = self.paho("plain", V5)
        self.assertEqual(old.subscribe("$share/mixed/m/+", 0), [0])
        self.assertEqual(new.subscribe("$share/mixed/m/+", 2), [2])
        self.assertEqual(plain.subscribe("m/+", 1), [1])
        pub = self.paho("mixed-pub", V5)
        for i in range(6):
            pub.publish("m/x", b"%d" % i, 2)
        got = collect([old, new], 6)
        self.assertEqual([(int(m.payload), m.qos) for m in got[0]], [(0, 0), (2, 0), (4, 0)])
        self.assertEqual([(int(m.payload), m.qos) for m in got[1]], [(1, 2), (3, 2), (5, 2)])
        self.assertEqual([int(m.payload) for m in plain.get_n(6)], list(range(6)))

    def test_unacknowledged_qos1_goes_to_another_member_when_the_session_ends(self):
        """A member whose session ends with a QoS 1 message unacknowledged: the message goes to
        another member of the group (5.0 section 4.8.2)."""
        raw, ack = self.raw_connected("leaver", V5)
        self.assertEqual(ack.properties.get(0x2A), [1])  # Shared Subscription Available
        raw.send(h.subscribe(1, [("$share/g/handover", 1)], version=V5))
        self.assertEqual(raw.expect(h.SUBACK).body[-1], 1)
        stays = self.paho("stays", V5)
        self.assertEqual(stays.subscribe("$share/g/handover", 1), [1])
        self.paho("handover-pub", V5).publish("handover", b"once", 1)
        first = h.parse_publish(raw.expect(h.PUBLISH), V5)  # the first member's turn
        self.assertEqual(first.payload, b"once")
        stays.assert_nothing(0.3)
        raw.drop()  # no PUBACK, no DISCONNECT; Session Expiry 0: the session ends
        m = stays.get()
        self.assertEqual((m.topic, m.payload, m.qos), ("handover", b"once", 1))
        stays.assert_nothing(0.3)

    def test_no_local_on_shared_subscription_is_a_protocol_error(self):
        """No Local 1 on a shared subscription: DISCONNECT 0x82 and the close [MQTT-3.8.3-4]."""
        raw, _ = self.raw_connected("no-local", V5)
        raw.send(h.subscribe(1, [("$share/g/t", 0x04)], version=V5))  # No Local is bit 2
        _, got = raw.wait_closed()
        self.assertEqual([(p.kind, p.body[:1]) for p in got], [(h.DISCONNECT, b"\x82")])


if __name__ == "__main__":
    h.main()
