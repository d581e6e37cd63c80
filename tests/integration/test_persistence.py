"""The server with --persistence killed with SIGKILL at random moments while publishers stream QoS 1
and QoS 2 messages to a persistent subscriber that is offline all along and one that is online
and slow to acknowledge: after every restart, each message the broker acknowledged (PUBACK, or
PUBREC for QoS 2) reaches both subscribers, QoS 2 exactly once and QoS 1 at least once, in the
order of its publisher; the retained message and the sessions stay.

The moments come from a seed, printed (MQTTBROKER_KILL_SEED repeats a run). A second test does the
same with the server built with the storage's crash points (MQTTBROKER_CRASHPOINT_SERVER): each
broker life dies at one named point (MQTTBROKER_CRASH_AT, storage/sqlite.hpp), so every window
between a commit and its acknowledgements is hit every run, and one start dies while loading.
Raw MQTT 3.1.1 over sockets, so the test sees every acknowledgement and keeps each client's session state itself
(packet identifiers in flight, QoS 2 identifiers received and not released) across reconnects.
"""

import os
import random
import select
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness as h

KILLS = 4                 # SIGKILLs, then one last start that delivers what is owed
ROUND = (0.3, 1.5)        # seconds of traffic before each kill
PACE = 0.01               # seconds between a publisher's messages
WINDOW = 8                # a publisher's messages in flight at once
SLOW_ACK = 0.05           # the slow subscriber holds its acknowledgements this long
CRASH_WAIT = 30           # seconds of traffic a crash point may take to be reached (ASan, a busy disk)
# One broker life per point, armed for its Nth hit (counted from that start), in the middle of the
# traffic: inside a batch's transaction (after a statement, before COMMIT); after COMMIT before
# the acknowledgements are handed on; after they were handed on (some sent, some not).
CRASH_LIVES = ("sqlite.in_transaction:400", "sqlite.committed:100", "sqlite.reported:100")
LOAD_CRASH = "sqlite.loaded"  # and one start that dies after the load, before anyone is served


class Session:
    """A raw client that keeps its MQTT session state across connections (clean session 0)."""

    def __init__(self, client_id):
        self.client_id = client_id
        self.conn = None
        self.inflight = {}        # publisher: packet id -> [seq, "publish" | "pubrel"]
        self.next_id = 0
        self.unreleased = set()   # subscriber: QoS 2 identifiers received, PUBREL not yet seen
        self.held = []            # subscriber: acknowledgements held back (slow)
        self.held_since = None

    def connect(self, port):
        self.conn = h.RawClient(port)
        self.conn.send(h.connect(self.client_id, clean=False, keepalive=0))
        ack = h.parse_connack(self.conn.expect(h.CONNACK))
        if ack.code != 0:
            raise AssertionError("%s: CONNACK %d" % (self.client_id, ack.code))
        return ack.session_present

    def lost(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.held = []

    def new_id(self):
        while True:
            self.next_id = self.next_id % 65535 + 1
            if self.next_id not in self.inflight:
                return self.next_id


class PersistenceUnderKills(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mqttbroker-it-persistence-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        seed = int(os.environ.get("MQTTBROKER_KILL_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)
        print("kill test seed: %d (MQTTBROKER_KILL_SEED=%d repeats it)" % (seed, seed), flush=True)
        self.rng = random.Random(seed)
        self.broker = None
        self.server = None  # MQTTBROKER_SERVER
        self.addCleanup(self._stop)

    def _stop(self):
        if self.broker is not None and self.broker.alive():
            self.broker.kill()

    ARGS = ("--max-queued-messages", "100000", "--max-inflight", "16")

    def start(self, crash_at=None):
        env = {"MQTTBROKER_CRASH_AT": crash_at} if crash_at else None
        self.broker = h.Broker("--persistence", self.dir, *self.ARGS, env=env, binary=self.server)
        return self.broker.port

    def crash_while_loading(self):
        """A start armed to die once the store is loaded: it must die so, before listening."""
        args = [self.server, "--bind", h.HOST, "--port", "0", "--persistence", self.dir, *self.ARGS]
        done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, errors="replace", timeout=h.WAIT * 3,
                              env=dict(os.environ, MQTTBROKER_CRASH_AT=LOAD_CRASH))
        self.assertEqual(done.returncode, -signal.SIGKILL,
                         "%s: the start did not die there; log:\n%s" % (LOAD_CRASH, done.stderr[-4000:]))
        self.assertNotIn("listening on", done.stderr, "%s: the broker served before it died" % LOAD_CRASH)

    # ---- the clients' side of the protocol

    def publish_next(self, pub, topic, qos):
        seq = self.sent[pub.client_id]
        self.sent[pub.client_id] += 1
        pid = pub.new_id()
        pub.inflight[pid] = [seq, "publish"]
        pub.conn.send(h.publish(topic, "%s:%d" % (pub.client_id, seq), qos=qos, packet_id=pid))

    def resume_publisher(self, pub, topic, qos):
        # What was in flight goes again, in order: PUBLISH with DUP, or PUBREL after a PUBREC.
        for pid, (seq, state) in sorted(pub.inflight.items(), key=lambda kv: kv[1][0]):
            if state == "publish":
                pub.conn.send(h.publish(topic, "%s:%d" % (pub.client_id, seq), qos=qos, packet_id=pid, dup=True))
            else:
                pub.conn.send(h.ack(h.PUBREL, pid))

    def on_publisher_packet(self, pub, p):
        pid = h.packet_id_of(p)
        entry = pub.inflight.get(pid)
        if p.kind == h.PUBACK and entry:
            self.acked[pub.client_id].add(entry[0])
            del pub.inflight[pid]
        elif p.kind == h.PUBREC and entry:
            self.acked[pub.client_id].add(entry[0])  # the broker answers for it from here on
            entry[1] = "pubrel"
            pub.conn.send(h.ack(h.PUBREL, pid))
        elif p.kind == h.PUBCOMP and entry:
            del pub.inflight[pid]

    def on_subscriber_packet(self, sub, p, slow):
        if p.kind == h.PUBLISH:
            m = h.parse_publish(p)
            if m.qos == 2:
                # Method B of the specification: an identifier held until PUBREL is a resend.
                if m.packet_id not in sub.unreleased:
                    sub.unreleased.add(m.packet_id)
                    self.delivered[sub.client_id].append((m.topic, m.payload.decode(), 2))
                reply = h.ack(h.PUBREC, m.packet_id)
            else:
                self.delivered[sub.client_id].append((m.topic, m.payload.decode(), m.qos))
                reply = h.ack(h.PUBACK, m.packet_id)
        elif p.kind == h.PUBREL:
            pid = h.packet_id_of(p)
            sub.unreleased.discard(pid)
            reply = h.ack(h.PUBCOMP, pid)
        else:
            return
        if slow:
            if not sub.held:
                sub.held_since = time.monotonic()
            sub.held.append(reply)
        else:
            sub.conn.send(reply)

    def pump(self, sessions, until, publishers=()):
        """Reads and answers on every connected session until `until` (monotonic) or until the
        broker's connections end; publishers keep their windows full, paced."""
        next_send = time.monotonic()
        while time.monotonic() < until:
            live = [s for s in sessions if s.conn is not None]
            if not live:
                return
            now = time.monotonic()
            if publishers and now >= next_send:
                next_send = now + PACE
                for pub, topic, qos in publishers:
                    if pub.conn is not None and len(pub.inflight) < WINDOW:
                        self.publish_next(pub, topic, qos)
            for s in live:
                if s.held and now - s.held_since >= SLOW_ACK:
                    s.conn.send(b"".join(s.held))
                    s.held = []
            ready, _, _ = select.select([s.conn.sock for s in live], [], [], 0.005)
            for s in live:
                if s.conn.sock not in ready and not s.conn.buf:
                    continue
                try:
                    if s.conn.sock in ready:
                        s.conn._fill(time.monotonic() + 1)
                    while True:
                        p = s.conn._parse()
                        if p is None:
                            break
                        if s.role == "pub":
                            self.on_publisher_packet(s, p)
                        else:
                            self.on_subscriber_packet(s, p, slow=s.role == "slow")
                except (h.Closed, TimeoutError, OSError):
                    s.lost()

    def test_acknowledged_messages_survive_sigkill(self):
        self.survive([None] * KILLS)

    def test_acknowledged_messages_survive_each_crash_point(self):
        self.server = os.environ.get("MQTTBROKER_CRASHPOINT_SERVER")
        if not self.server:
            self.skipTest("MQTTBROKER_CRASHPOINT_SERVER is not set (the mqttbroker_server_crashpoints target)")
        self.survive(CRASH_LIVES, load_crash=True)

    def survive(self, lives, load_crash=False):
        """One broker life per entry of `lives`, each ended by a SIGKILL: a random one (None) or
        the crash point armed in it; then a last start that must deliver everything acknowledged."""
        q1, q2 = Session("pub-q1"), Session("pub-q2")
        offline, slow = Session("sub-offline"), Session("sub-slow")
        q1.role = q2.role = "pub"
        offline.role, slow.role = "sub", "slow"
        self.sent = {q1.client_id: 0, q2.client_id: 0}
        self.acked = {q1.client_id: set(), q2.client_id: set()}
        self.delivered = {offline.client_id: [], slow.client_id: []}
        self.reconnects = []

        port = self.start(lives[0])
        for sub in (offline, slow):
            sub.connect(port)
            sub.conn.send(h.subscribe(1, [("kill/#", 2)]))
            sub.conn.expect(h.SUBACK)
        offline.lost()  # offline from here to the end
        retained = h.RawClient(port)
        retained.send(h.connect("retainer", clean=True))
        retained.expect(h.CONNACK)
        retained.send(h.publish("state/kept", "retained", qos=1, retain=True, packet_id=1))
        retained.expect(h.PUBACK)
        retained.close()

        publishers = [(q1, "kill/q1", 1), (q2, "kill/q2", 2)]
        for life, crash_at in enumerate(lives):
            for pub, topic, qos in publishers:
                pub.connect(port)
                self.resume_publisher(pub, topic, qos)
            slow.connect(port)
            if crash_at is None:
                self.pump([q1, q2, slow], time.monotonic() + self.rng.uniform(*ROUND), publishers)
                self.broker.kill()  # SIGKILL: nothing is flushed, nothing said goodbye
            else:
                self.until_crash(crash_at, [q1, q2, slow], publishers)
            for s in (q1, q2, slow):
                s.lost()
            if life + 1 < len(lives):
                port = self.start(lives[life + 1])
        if load_crash:
            self.crash_while_loading()
        port = self.start()

        # The last start: publishers finish what they had in flight, then both subscribers drain.
        for pub, topic, qos in publishers:
            self.assertTrue(pub.connect(port), "%s lost its session" % pub.client_id)
            self.resume_publisher(pub, topic, qos)
        self.pump([q1, q2], time.monotonic() + 3)
        self.assertTrue(offline.connect(port), "the offline subscriber lost its session")
        self.assertTrue(slow.connect(port), "the slow subscriber lost its session")
        # Until each has everything acknowledged (a disk that stalls a commit for seconds on a
        # shared machine holds the QoS 2 deliveries that long), 30 s at most; then one more
        # second, for copies that should not come.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.all_delivered(publishers, (offline, slow)):
            self.pump([offline, slow, q1, q2], time.monotonic() + 0.5)
            for sub in (offline, slow):
                if sub.conn is None:  # the connection ended: a client comes back
                    self.reconnects.append(sub.client_id)
                    sub.connect(port)
        self.pump([offline, slow, q1, q2], time.monotonic() + 1)

        print("sent %s, acknowledged %s, delivered %s, reconnects while draining %s" % (
            self.sent, {k: len(v) for k, v in self.acked.items()},
            {k: len(v) for k, v in self.delivered.items()}, self.reconnects), flush=True)
        try:
            self.check_deliveries(publishers, (offline, slow))
        except AssertionError:
            print("broker log (last lines):\n" + self.broker.log(), flush=True)
            raise

        # The retained message and the subscriptions' sessions are intact.
        c = h.RawClient(port)
        c.send(h.connect("late", clean=True))
        c.expect(h.CONNACK)
        c.send(h.subscribe(1, [("state/#", 1)]))
        c.expect(h.SUBACK)
        m = h.parse_publish(c.expect(h.PUBLISH))
        self.assertEqual((m.topic, m.payload, m.retain), ("state/kept", b"retained", 1))
        c.close()
        self.assertEqual(self.broker.stop(), 0, "the broker did not stop cleanly; log:\n" + self.broker.log())
        h.assert_no_sanitizer_report(self, self.broker.all_lines(), "the broker")

    def until_crash(self, crash_at, sessions, publishers):
        """Traffic until the broker dies at its armed crash point, which it must, by SIGKILL."""
        deadline = time.monotonic() + CRASH_WAIT
        while self.broker.alive() and time.monotonic() < deadline:
            self.pump(sessions, min(deadline, time.monotonic() + 0.5), publishers)
            if not any(s.conn is not None for s in sessions):
                try:
                    self.broker.proc.wait(timeout=h.WAIT)
                except subprocess.TimeoutExpired:
                    break
        alive = self.broker.alive()
        self.broker.kill()  # reaps it and closes its log
        self.assertFalse(alive, "%s: not reached in %d s of traffic; log:\n%s" % (crash_at, CRASH_WAIT, self.broker.log()))
        self.assertEqual(self.broker.proc.returncode, -signal.SIGKILL,
                         "%s: the broker ended otherwise; log:\n%s" % (crash_at, self.broker.log()))
        print("%s: died there, as armed; sent %s, acknowledged %s" % (
            crash_at, self.sent, {k: len(v) for k, v in self.acked.items()}), flush=True)

    def all_delivered(self, publishers, subscribers):
        for sub in subscribers:
            for pub, topic, _ in publishers:
                got = {int(payload.split(":")[1]) for t, payload, _ in self.delivered[sub.client_id] if t == topic}
                if self.acked[pub.client_id] - got:
                    return False
        return True

    def check_deliveries(self, publishers, subscribers):
        q1, q2 = publishers[0][0], publishers[1][0]
        self.assertGreater(len(self.acked[q1.client_id]), 0)
        self.assertGreater(len(self.acked[q2.client_id]), 0)
        for sub in subscribers:
            got = self.delivered[sub.client_id]
            for pub, topic, qos in publishers:
                seqs = [int(payload.split(":")[1]) for t, payload, _ in got if t == topic]
                missing = sorted(self.acked[pub.client_id] - set(seqs))
                self.assertEqual(missing, [], "%s: acknowledged messages of %s lost" % (sub.client_id, pub.client_id))
                if qos == 2:
                    twice = sorted({s for s in seqs if seqs.count(s) > 1})
                    self.assertEqual(twice, [], "%s: QoS 2 messages of %s delivered twice" % (sub.client_id, pub.client_id))
                firsts = []
                for s in seqs:
                    if s not in firsts:
                        firsts.append(s)
                self.assertEqual(firsts, sorted(firsts), "%s: %s's messages out of order" % (sub.client_id, pub.client_id))


if __name__ == "__main__":
    h.main()
