"""Retained messages over TCP: store, replace, clear, delivery on subscribe, QoS and RETAIN flag."""

import time

import harness as h
from harness import V311, V5


class Retained(h.BrokerTestCase):
    def test_set_replace_clear(self):
        """Store [MQTT-3.3.1-5], replace, and clear with an empty payload [MQTT-3.3.1-10]
        [MQTT-3.3.1-11]; a non-retained PUBLISH leaves the retained message alone [MQTT-3.3.1-12]."""
        pub = self.paho("ret-pub", V311)
        pub.publish("ret/a", b"v1", 1, retain=True)
        s1 = self.paho("ret-s1", V311)
        s1.subscribe("ret/a", 1)
        m = s1.get()
        self.assertEqual((m.payload, m.retain, m.qos), (b"v1", 1, 1))

        pub.publish("ret/a", b"v2", 1, retain=True)
        m = s1.get()  # an existing subscriber gets it as a normal message
        self.assertEqual((m.payload, m.retain), (b"v2", 0))
        pub.publish("ret/a", b"not retained", 1, retain=False)
        self.assertEqual(s1.get().payload, b"not retained")

        s2 = self.paho("ret-s2", V311)
        s2.subscribe("ret/a", 1)
        m = s2.get()
        self.assertEqual((m.payload, m.retain), (b"v2", 1))  # replaced, and not by the non-retained one
        s2.assert_nothing(0.3)

        pub.publish("ret/a", b"", 1, retain=True)
        m = s1.get()  # the clearing PUBLISH is delivered as normal [MQTT-3.3.1-10]
        self.assertEqual((m.payload, m.retain), (b"", 0))
        s3 = self.paho("ret-s3", V311)
        s3.subscribe("ret/#", 1)
        s3.assert_nothing()

    def test_retained_on_subscribe_and_resubscribe(self):
        """A new subscription gets the retained messages with RETAIN=1 [MQTT-3.3.1-6] [MQTT-3.3.1-8];
        repeating the same SUBSCRIBE sends them again [MQTT-3.8.4-3]."""
        pub = self.paho("rs-pub", V311)
        pub.publish("rs/x", b"X", 1, retain=True)
        pub.publish("rs/y", b"Y", 0, retain=True)
        for version in (V311, V5):
            sub = self.paho("rs-sub-v%d" % version, version)
            sub.subscribe("rs/+", 1)
            got = sorted((m.topic, m.payload, m.retain) for m in sub.get_n(2))
            self.assertEqual(got, [("rs/x", b"X", 1), ("rs/y", b"Y", 1)])
            sub.subscribe("rs/+", 1)
            got = sorted((m.topic, m.payload, m.retain) for m in sub.get_n(2))
            self.assertEqual(got, [("rs/x", b"X", 1), ("rs/y", b"Y", 1)], "v%d re-subscribe" % version)
            sub.assert_nothing(0.3)

    def test_retained_mosquitto(self):
        """mosquitto_pub -r then mosquitto_sub: the retained message arrives with RETAIN=1 [MQTT-3.3.1-8]."""
        for version in (V311, V5):
            h.mosquitto_pub(self.port, "rm/v%d" % version, "kept", qos=1, version=version, retain=True)
            sub = h.MosquittoSub(self.port, "rm/v%d" % version, qos=1, version=version)
            self._clients.append(sub)
            self.assertEqual(sub.get(), (1, 1, "rm/v%d" % version, "kept"))

    def test_retained_qos_is_min_of_stored_and_granted(self):
        """A retained message goes out at min(stored QoS, granted QoS) [MQTT-3.8.4-6] (5.0 [MQTT-3.8.4-8])."""
        pub = self.paho("rq-pub", V311)
        for q in (0, 1, 2):
            pub.publish("rq/%d" % q, b"stored at %d" % q, q, retain=True)
        for version in (V311, V5):
            for granted in (0, 1, 2):
                sub = self.paho("rq-sub-%d-v%d" % (granted, version), version)
                sub.subscribe("rq/+", granted)
                got = {m.topic: (m.qos, m.retain) for m in sub.get_n(3)}
                self.assertEqual(got, {"rq/%d" % q: (min(q, granted), 1) for q in (0, 1, 2)},
                                 "v%d granted %d" % (version, granted))
                sub.close()

    def test_existing_subscribers_get_retain_0(self):
        """A retained PUBLISH matching an established subscription is sent with RETAIN=0
        [MQTT-3.3.1-9] (5.0 [MQTT-3.3.1-12] with Retain As Published 0), mosquitto and paho."""
        psubs = [self.paho("r0-v%d" % v, v) for v in (V311, V5)]
        for s in psubs:
            s.subscribe("r0/t", 2)
        msubs = []
        for v in (V311, V5):
            ms = h.MosquittoSub(self.port, "r0/t", qos=2, version=v)
            self._clients.append(ms)
            msubs.append(ms)
        pub = self.paho("r0-pub", V311)
        pub.publish("r0/t", b"live", 2, retain=True)
        for s in psubs:
            m = s.get()
            self.assertEqual((m.payload, m.retain, m.qos), (b"live", 0, 2))
        for ms in msubs:
            self.assertEqual(ms.get(), (2, 0, "r0/t", "live"))

    def test_more_retained_than_inflight_window(self):
        """100 retained QoS 1 messages match one SUBSCRIBE: all 100 are sent [MQTT-3.3.1-6], paced
        by the 32-message in-flight window; each PUBACK lets the next one go."""
        pub, _ = self.raw_connected("many-ret-pub", V311)
        for i in range(100):
            pub.send(h.publish("many/%03d" % i, "m%d" % i, qos=1, retain=True, packet_id=i + 1))
        for i in range(100):
            pub.expect(h.PUBACK)
        sub, _ = self.raw_connected("many-ret-sub", V311)
        sub.send(h.subscribe(1, [("many/#", 1)]))
        sub.expect(h.SUBACK)
        topics = []
        for i in range(100):
            p = h.parse_publish(sub.expect(h.PUBLISH))
            self.assertEqual((p.qos, p.retain), (1, 1))
            topics.append(p.topic)
            sub.send(h.ack(h.PUBACK, p.packet_id))
        self.assertEqual(sorted(topics), ["many/%03d" % i for i in range(100)])
        sub.assert_open(0.3)

    def test_retained_publish_racing_subscribe_delivered_once(self):
        """A retained QoS 2 PUBLISH that races a SUBSCRIBE to its topic reaches the subscriber exactly
        once: as the retained message (RETAIN=1) or as a live one (RETAIN=0), never both (QoS 2 is
        exactly once [MQTT-4.3.3]; [MQTT-3.3.1-6] [MQTT-3.3.1-9]). Each round sends, at the same
        moment, a SUBSCRIBE whose first filter is race/<n> followed by 199 filters matching nothing
        (so the broker is busy between adding race/<n> and looking up its retained message) and, on
        another connection, a retained QoS 2 PUBLISH to race/<n>. 200 rounds; a race only with
        --threads 2 (one thread handles one packet at a time)."""
        sub, _ = self.raw_connected("race-sub", V311)
        pub, _ = self.raw_connected("race-pub", V311)
        rounds, pad = 200, 199
        got = {}
        deadline = time.monotonic() + 40

        def step(c, p):
            if p.kind == h.PUBREC:
                c.send(h.ack(h.PUBREL, h.packet_id_of(p)))
            elif p.kind == h.PUBLISH:
                m = h.parse_publish(p)
                got.setdefault(m.topic, []).append(m.retain)
                c.send(h.ack(h.PUBREC, m.packet_id))
            elif p.kind == h.PUBREL:
                c.send(h.ack(h.PUBCOMP, h.packet_id_of(p)))

        for r in range(rounds):
            if r and r % 40 == 0:  # stay below --max-subscriptions (10,000 per client)
                sub.close()
                sub, _ = self.raw_connected("race-sub-%d" % r, V311)
            topic = "race/%d" % r
            filters = [(topic, 2)] + [("race/%d/pad/%d" % (r, k), 0) for k in range(pad)]
            sub.send(h.subscribe(r % 60000 + 1, filters))
            pub.send(h.publish(topic, "r%d" % r, qos=2, retain=True, packet_id=r % 60000 + 1))
            suback = pubcomp = False
            while not (suback and pubcomp and topic in got):
                self.assertLess(time.monotonic(), deadline, "round %d: SUBACK %s, PUBCOMP %s, delivered %s"
                                % (r, suback, pubcomp, got.get(topic)))
                c, p = h.read_any([sub, pub], 0.5)
                if p is None:
                    continue
                suback = suback or p.kind == h.SUBACK
                pubcomp = pubcomp or p.kind == h.PUBCOMP
                step(c, p)
        # A second copy would be close behind the first: watch a while.
        end = time.monotonic() + h.ABSENT
        while time.monotonic() < end:
            c, p = h.read_any([sub, pub], max(end - time.monotonic(), 0))
            if p is not None:
                step(c, p)
        twice = {t: r for t, r in got.items() if len(r) != 1}
        self.assertEqual(twice, {}, "delivered more than once (RETAIN flags listed) in %d of %d rounds"
                         % (len(twice), rounds))

    def test_retain_as_published_v5(self):
        """5.0 Retain As Published 1 keeps RETAIN=1 on live delivery [MQTT-3.3.1-13]."""
        c, _ = self.raw_connected("rap", h.V5)
        c.send(h.subscribe(1, [("rap/t", 0x08 | 1)], h.V5))  # RAP, QoS 1
        c.expect(h.SUBACK)
        self.paho("rap-pub", V311).publish("rap/t", b"p", 1, retain=True)
        p = h.parse_publish(c.expect(h.PUBLISH), h.V5)
        self.assertEqual((p.payload, p.retain), (b"p", 1))


if __name__ == "__main__":
    h.main()
