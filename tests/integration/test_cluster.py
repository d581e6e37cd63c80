"""Brokers as one over NATS (--cluster, cluster::nats): three nats-server processes clustered on
loopback, started here, and three broker nodes, one on each; paho clients on different nodes.
NATS tells its servers of a new subscription asynchronously, and a node makes its JetStream
consumers (QoS 1 and 2 cross through JetStream) on a thread of its own, so before a test's
messages go out it waits until probes of QoS 0 and QoS 1 published on the publisher's node reach
the subscriber on the other: after that, both routes are known."""

import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.request

import harness as h
from harness import V311, V5


def nats_server_program():
    found = shutil.which("nats-server")
    if not found:
        h._client_missing("nats-server (Debian nats-server)")
    return found


def wait_for_port(port, proc=None):
    """True once something listens on `port`; False if `proc` exits first or the wait runs out."""
    deadline = time.monotonic() + h.WAIT
    while True:
        try:
            socket.create_connection((h.HOST, port), timeout=1).close()
            return True
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                return False
            time.sleep(0.05)


class NatsCluster:
    """`n` nats-server processes on loopback, routed to each other into one cluster."""

    def __init__(self, n=3, extra=()):
        program = nats_server_program()
        # JetStream (the retained messages' bucket) keeps its files here.
        self.store = tempfile.mkdtemp(prefix="mqttbroker-it-nats-")
        # The ports are the kernel's picks of free ones, released again: another process (a test
        # running beside this one) may take one before nats-server binds it, and that server then
        # exits. Fresh picks for the whole cluster then, as its routes name every port.
        for attempt in range(3):
            self.client_ports = [h.free_port() for _ in range(n)]
            cluster_ports = [h.free_port() for _ in range(n)]
            self.args = []
            for i in range(n):
                routes = ",".join("nats://127.0.0.1:%d" % p for j, p in enumerate(cluster_ports) if j != i)
                self.args.append([program, "-a", h.HOST, "-p", str(self.client_ports[i]), "-n", "nats-%d" % i,
                                  "--cluster_name", "mqttbroker-test", "--cluster",
                                  "nats://127.0.0.1:%d" % cluster_ports[i], "--routes", routes, "-js", "-sd",
                                  os.path.join(self.store, "%d-%d" % (attempt, i)), *extra])
            self.procs = [None] * n
            for i in range(n):
                self.start(i)
            if all(wait_for_port(self.client_ports[i], self.procs[i]) for i in range(n)):
                return
            self.stop(keep_store=True)
        shutil.rmtree(self.store, ignore_errors=True)
        raise AssertionError("nats-server did not listen within %.0f s, 3 times over with fresh ports" % h.WAIT)

    def start(self, i):
        """Starts server i (again: the same ports and JetStream store)."""
        self.procs[i] = subprocess.Popen(self.args[i], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, preexec_fn=h._die_with_parent)

    def kill(self, i):
        """SIGKILL for server i, as a crash or a lost machine: no goodbye to its clients."""
        self.procs[i].kill()
        self.procs[i].wait()

    def url(self, i):
        return "nats://127.0.0.1:%d" % self.client_ports[i]

    def stop(self, keep_store=False):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=h.WAIT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if not keep_store:
            shutil.rmtree(self.store, ignore_errors=True)


class Cluster(unittest.TestCase):
    """Three nodes: node i on nats-server i."""

    nats_args = ()  # more arguments for each nats-server
    node_args = ()  # and for each node

    def setUp(self):
        if not os.environ.get("MQTTBROKER_IT_CLUSTER"):
            raise unittest.SkipTest("the server was built without nats.c (no --cluster)")
        self.nats = NatsCluster(3, self.nats_args)
        self.addCleanup(self.nats.stop)
        self.nodes = []
        self.killed = set()  # nodes a test killed on purpose
        self._clients = []
        for i, name in enumerate("abc"):
            # One NATS server's address each: nats.c learns the others from it, to reconnect to.
            b = h.Broker("--cluster", self.nats.url(i), "--cluster-node", name, "--metrics", "127.0.0.1:0",
                         *self.node_args)
            self.nodes.append(b)
        self.addCleanup(self._finish)

    def _finish(self):
        for c in reversed(self._clients):
            try:
                c.close()
            except Exception:
                pass
        for i, b in enumerate(self.nodes):
            if i in self.killed:
                continue
            crashed = not b.alive()
            status = b.stop()
            h.assert_no_sanitizer_report(self, b.all_lines(), "a broker node")
            if crashed or status != 0:
                self.fail("a node ended badly (status %s); log:\n%s" % (status, b.log()))

    def client(self, node, client_id, version=V311, **kw):
        c = h.PahoClient(self.nodes[node].port, client_id, version, **kw)
        self._clients.append(c)
        return c

    def metrics(self, node):
        """The node's Prometheus samples, {'name{labels}': value}."""
        with self.nodes[node]._lock:
            lines = list(self.nodes[node].lines)
        port = next(int(m.group(1)) for m in map(re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/").search, lines) if m)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=h.WAIT) as r:
            body = r.read().decode()
        return {name: float(value) for name, value in
                (line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#"))}

    def wait_connected(self, node, connected=1):
        """Until the node's metrics say it is connected to NATS (or, with 0, that it is not)."""
        deadline = time.monotonic() + h.WAIT
        while self.metrics(node)["mqttbroker_cluster_connected"] != connected:
            if time.monotonic() > deadline:
                raise AssertionError("node %d's connected gauge is not %d after %.0f s" % (node, connected, h.WAIT))
            time.sleep(0.05)

    PROBES = (b"probe", b"probe+")  # published at QoS 0 (core NATS) and QoS 1 (JetStream)

    def wait_stream(self, node, client_id):
        """A client of `node` whose QoS 1 publish JetStream took (its PUBACK waits for that),
        tried with a new connection each time until the stream answers. A connection refused
        (no node can own the client while the owners' bucket is away) is tried again too."""
        deadline = time.monotonic() + 3 * h.WAIT
        while True:
            c = self.client(node, client_id, connect_now=False)
            try:
                code = c.connect(expect_code=None)[1]
            except AssertionError:  # no CONNACK yet: the claim waits for the bucket
                code = None
            if code == 0:
                info = c.client.publish("stream/probe", b"", 1)
                info.wait_for_publish(timeout=7)  # JetStream's own wait is 5 s
                if info.is_published():
                    return c
            c.close()
            if time.monotonic() > deadline:
                raise AssertionError("JetStream took no QoS 1 message on node %d within %.0f s" % (node, 3 * h.WAIT))
            time.sleep(0.2)

    def wait_route(self, publisher, subscriber, topic, others=None):
        """Publishes probes on `topic`, at QoS 0 and 1, until `subscriber` got one of each; drains
        the rest. Any other message that comes meanwhile fails, or with `others` is appended to it."""
        deadline = time.monotonic() + h.WAIT

        def other(m):
            if others is None:
                self.fail("%r (%r) came while waiting for a probe" % (m.topic, m.payload))
            others.append(m)

        seen = set()
        while len(seen) < 2:
            for q, payload in enumerate(self.PROBES):
                if payload not in seen:
                    publisher.publish(topic, payload, q)
            try:
                m = subscriber.messages.get(timeout=0.1)
                if m.payload in self.PROBES:
                    seen.add(m.payload)
                else:
                    other(m)
            except h.queue.Empty:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("no probe on %s crossed the cluster within %.0f s" % (topic, h.WAIT))
        time.sleep(0.2)  # the probes still on their way
        while not subscriber.messages.empty():
            m = subscriber.messages.get()
            if m.payload not in self.PROBES:
                other(m)

    def test_publish_on_one_node_reaches_the_others_at_each_qos(self):
        """QoS 0, 1 and 2 published on node a reach wildcard subscribers on b and c with the QoS
        of min(message, subscription) [MQTT-3.8.4-6], in order, each once; a subscriber on b whose
        filter does not match gets nothing."""
        on_b = self.client(1, "on-b", V5)
        on_c = self.client(2, "on-c", V311)
        other = self.client(1, "other", V311)
        self.assertEqual(on_b.subscribe("cl/+/x", 2), [2])
        self.assertEqual(on_c.subscribe("cl/#", 1), [1])
        self.assertEqual(other.subscribe("elsewhere/#", 2), [2])
        pub = self.client(0, "pub", V311)
        self.wait_route(pub, on_b, "cl/probe/x")
        self.wait_route(pub, on_c, "cl/probe")
        sent = [("cl/%d/x" % i, b"m%d" % i, i % 3) for i in range(30)]
        for topic, payload, q in sent:
            pub.publish(topic, payload, q)
        got_b = [(m.topic, m.payload, m.qos) for m in on_b.get_n(30)]
        got_c = [(m.topic, m.payload, m.qos) for m in on_c.get_n(30)]
        # Each once; in the order published among those of one QoS (a QoS 2 message is routed
        # when it arrives, on any node, but another QoS does not wait for it).
        self.assertEqual(sorted(got_b), sorted(sent))
        self.assertEqual(sorted(got_c), sorted((t, p, min(q, 1)) for t, p, q in sent))
        for q in (0, 1, 2):
            self.assertEqual([m for m in got_b if int(m[1][1:]) % 3 == q], [m for m in sent if m[2] == q])
            self.assertEqual([m[:2] for m in got_c if int(m[1][1:]) % 3 == q], [m[:2] for m in sent if m[2] == q])
        on_b.assert_nothing(0.3)
        on_c.assert_nothing(0.1)
        other.assert_nothing(0.1)

    def test_shared_group_across_nodes_gets_each_message_once(self):
        """A shared group with a member on each node: 60 messages published on node a go to one
        member each, in the whole cluster (MQTT 5.0, 4.8.2)."""
        members = [self.client(i, "member-%d" % i, V5) for i in range(3)]
        for m in members:
            self.assertEqual(m.subscribe("$share/g/jobs/#", 1), [1])
        pub = self.client(0, "producer", V5)
        # A probe reaches some member once every node's queue subscription is known: publish
        # probes until one arrives, then the rest are drained and not counted.
        deadline = time.monotonic() + h.WAIT
        seen = False
        while not seen:
            pub.publish("jobs/probe", b"probe", 1)  # QoS 1: the group's JetStream consumer is there
            time.sleep(0.05)
            seen = any(not m.messages.empty() for m in members)
            if time.monotonic() > deadline:
                raise AssertionError("no probe reached a member within %.0f s" % h.WAIT)
        time.sleep(0.3)
        for m in members:
            while not m.messages.empty():
                m.messages.get()
        for i in range(60):
            pub.publish("jobs/%d" % (i % 5), b"%d" % i, 1)
        deadline = time.monotonic() + h.WAIT
        got = []
        while len(got) < 60 and time.monotonic() < deadline:
            for m in members:
                try:
                    got.append(int(m.messages.get(timeout=0.02).payload))
                except h.queue.Empty:
                    pass
        time.sleep(0.3)
        for m in members:
            while not m.messages.empty():
                got.append(int(m.messages.get().payload))
        self.assertEqual(sorted(got), list(range(60)))  # each once, none twice

    def test_retained_set_on_one_node_is_seen_on_subscribe_at_another(self):
        """A retained message published on node a is sent to a new subscription on node c with
        RETAIN 1 [MQTT-3.3.1-6] [MQTT-3.3.1-8]; cleared on node b [MQTT-3.3.1-10], node c sends it no
        more."""
        pub = self.client(0, "ret-pub", V311)
        pub.publish("ret/t", b"kept", 1, retain=True)
        # Node c mirrors the cluster's bucket a moment later: new subscribers are tried until one
        # gets it, and after the clearing until one does not.
        m = self.retained_on_new_subscriber(2, "ret/#", lambda m: m is not None)
        self.assertEqual((m.topic, m.payload, m.qos, m.retain), ("ret/t", b"kept", 1, 1))
        clearer = self.client(1, "ret-clear", V311)
        clearer.publish("ret/t", b"", 0, retain=True)
        self.retained_on_new_subscriber(2, "ret/#", lambda m: m is None)

    def retained_on_new_subscriber(self, node, topic_filter, done):
        """What a new subscriber on `node` gets first (None: nothing within 0.2 s), tried with new
        clients until `done` says so."""
        deadline = time.monotonic() + h.WAIT
        while True:
            sub = self.client(node, "", V5)
            self.assertEqual(sub.subscribe(topic_filter, 1), [1])
            try:
                m = sub.messages.get(timeout=0.2)
            except h.queue.Empty:
                m = None
            sub.close()
            if done(m):
                return m
            if time.monotonic() > deadline:
                raise AssertionError("node %d did not come round within %.0f s (last: %r)" % (node, h.WAIT, m))

    def wait_metric(self, node, name, value):
        """Until the node's metric `name` is at least `value`."""
        deadline = time.monotonic() + h.WAIT
        while self.metrics(node).get(name, 0) < value:
            if time.monotonic() > deadline:
                raise AssertionError("node %d's %s is not %s after %.0f s" % (node, name, value, h.WAIT))
            time.sleep(0.05)

    def test_a_client_moving_to_another_node_keeps_its_session(self):
        """A client id is owned by one node at a time. 'mover' (5.0, Session Expiry 300) subscribes
        on node a and goes; 10 QoS 1 messages published on node b wait in its session on a. It
        connects on node c: session present [MQTT-3.2.2-3], the 10 arrive in order
        [MQTT-4.6.0-6]. Connecting on a again while connected on c, the connection on c gets
        DISCONNECT 0x8E and closes [MQTT-3.1.4-3], and a message left unacknowledged on c comes
        again on a with DUP [MQTT-4.4.0-1]. A 3.1.1 client connecting on c with Clean Session 1
        then ends the session: nothing of it comes back."""
        mover = self.client(0, "mover", V5, clean=False, session_expiry=300)
        self.assertEqual(mover.subscribe("mv/#", 1), [1])
        pub = self.client(1, "mv-pub", V311)
        self.wait_route(pub, mover, "mv/probe")
        mover.disconnect()
        delivered = "mqttbroker_cluster_messages_received_total{result=\"delivered\"}"
        before = self.metrics(0)[delivered]
        for i in range(10):
            pub.publish("mv/t", b"%d" % i, 1)
        self.wait_metric(0, delivered, before + 10)  # all in the session on a

        on_c = h.PahoClient(self.nodes[2].port, "mover", V5, clean=False, session_expiry=300, connect_now=False)
        self._clients.append(on_c)
        present, code, _ = on_c.connect()
        self.assertEqual((present, code), (1, 0))
        self.assertEqual([int(m.payload) for m in on_c.get_n(10)], list(range(10)))
        on_c.assert_nothing(0.2)

        # One left in flight on c: paho acknowledges on its own, so a raw-socket client takes it.
        raw = h.RawClient(self.nodes[2].port)
        self._clients.append(raw)
        raw.send(h.connect("mover", V5, clean=False, properties=h.props((0x11, struct.pack("!I", 300)))))
        ack = h.parse_connack(raw.expect(h.CONNACK), V5)
        self.assertEqual((ack.session_present, ack.code), (True, 0))
        on_c.disconnected.wait(h.WAIT)  # taken over on the same node: 0x8E
        self.assertEqual(on_c.disconnect_rc, 0x8E)
        pub.publish("mv/t", b"left", 1)
        first = h.parse_publish(raw.expect(h.PUBLISH), V5)
        self.assertEqual(first.payload, b"left")

        on_a = h.PahoClient(self.nodes[0].port, "mover", V5, clean=False, session_expiry=300, connect_now=False)
        self._clients.append(on_a)
        present, code, _ = on_a.connect()
        self.assertEqual((present, code), (1, 0))
        _, last = raw.wait_closed()
        self.assertEqual([(p.kind, p.body[:1]) for p in last], [(14, b"\x8e")])  # DISCONNECT 0x8E
        again = on_a.get()
        self.assertEqual((again.topic, again.payload, again.qos), ("mv/t", b"left", 1))
        self.assertTrue(again.dup)

        gone = self.client(2, "mover", V311, clean=True)  # Clean Session 1 on c: the session ends
        on_a.disconnected.wait(h.WAIT)
        self.assertEqual(on_a.disconnect_rc, 0x8E)
        gone.close()
        pub.publish("mv/t", b"after", 1)
        back = h.PahoClient(self.nodes[0].port, "mover", V5, clean=False, session_expiry=300, connect_now=False)
        self._clients.append(back)
        present, code, _ = back.connect()
        self.assertEqual((present, code), (0, 0))  # [MQTT-3.2.2-2] nothing kept anywhere
        back.assert_nothing(0.3)

        moved = "mqttbroker_cluster_sessions_moved_total{direction=\"%s\"}"
        # a to c, c to a; the Clean Session one on c took nothing, and the last found nothing.
        for node in (0, 2):
            self.assertEqual(self.metrics(node)[moved % "given"], 1)
            self.assertEqual(self.metrics(node)[moved % "taken"], 1)
        for node in range(3):
            self.assertEqual(self.metrics(node)[moved % "lost"], 0)
            self.assertEqual(self.metrics(node)["mqttbroker_cluster_claims_total{result=\"failed\"}"], 0)

    def test_a_node_killed_while_messages_flow(self):
        """Node b killed with SIGKILL while QoS 1 messages flow from node a to node c and to b's
        client: the other nodes go on, and every message reaches c once, in order
        [MQTT-4.6.0-6]. b's client, whose session (Session Expiry 300) lived on b, reconnects on
        c: its claim gets no answer from b (NATS says no one listens there), so the hand-over is
        counted lost, and c resumes the session from what the cluster kept of it: Session
        Present 1 [MQTT-3.2.2-3], its subscription in place with no SUBSCRIBE, and every message
        the publisher had acknowledged [MQTT-4.3.2-2]: those b held and had not seen
        acknowledged, and those that came while no node had the session, from the session's
        JetStream consumer. At least once: some may come twice."""
        on_c = self.client(2, "kill-sub", V311)
        self.assertEqual(on_c.subscribe("kill/#", 1), [1])
        pub = self.client(0, "kill-pub", V311)
        self.wait_route(pub, on_c, "kill/probe")
        victim = self.client(1, "victim", V5, clean=False, session_expiry=300)
        self.assertEqual(victim.subscribe("kill/#", 1), [1])
        self.wait_route(pub, victim, "kill/probe-victim")
        for i in range(20):
            pub.publish("kill/t", b"%d" % i, 1)  # each acknowledged to the publisher
        self.nodes[1].kill()
        self.killed.add(1)
        for i in range(20, 40):
            pub.publish("kill/t", b"%d" % i, 1)
        # Late probes to the victim's topic come to c too: not counted.
        flow = []
        while len(flow) < 40:
            m = on_c.get()
            if m.topic == "kill/t":
                flow.append(int(m.payload))
        self.assertEqual(flow, list(range(40)))
        time.sleep(0.2)
        self.assertEqual([m.topic for m in list(on_c.messages.queue) if m.topic == "kill/t"], [])
        victim.disconnected.wait(h.WAIT)
        got = set()
        while not victim.messages.empty():
            m = victim.messages.get()
            if m.topic == "kill/t":
                got.add(int(m.payload))
        again = h.PahoClient(self.nodes[2].port, "victim", V5, clean=False, session_expiry=300, connect_now=False)
        self._clients.append(again)
        present, code, _ = again.connect()
        self.assertEqual((present, code), (1, 0))
        # What b held comes again once JetStream's wait for b's acknowledgement (5 s) is over.
        deadline = time.monotonic() + h.WAIT + 10
        while got != set(range(40)):
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("missing after the reconnect: %s" % sorted(set(range(40)) - got))
            try:
                m = again.messages.get(timeout=left)
            except h.queue.Empty:
                continue
            if m.topic == "kill/t":
                got.add(int(m.payload))
        moved = "mqttbroker_cluster_sessions_moved_total{direction=\"%s\"}"
        self.assertEqual(self.metrics(2)[moved % "lost"], 1)
        self.assertEqual(self.metrics(2)[moved % "restored"], 1)
        self.assertEqual(self.metrics(2)[moved % "taken"], 0)
        # The node that took it over owns it now: a message published on a reaches it on c,
        # through the subscription the session kept (repeats of earlier ones may come before).
        self.wait_route(pub, again, "kill/probe2", others=[])
        self.assertEqual(self.metrics(2)["mqttbroker_cluster_session_writes_total{result=\"failed\"}"], 0)

    def test_mosquitto_clients_across_nodes(self):
        """mosquitto_sub on node c gets, at QoS 1, what mosquitto_pub sends on node a."""
        probe_sub = self.client(2, "probe-sub", V311)
        self.assertEqual(probe_sub.subscribe("mq/#", 0), [0])
        probe_pub = self.client(0, "probe-pub", V311)
        self.wait_route(probe_pub, probe_sub, "mq/probe")
        sub = h.MosquittoSub(self.nodes[2].port, "mq/t", qos=1, version=V5)
        self._clients.append(sub)
        h.mosquitto_pub(self.nodes[0].port, "mq/t", "across", qos=1, version=V5)
        self.assertEqual(sub.get(), (1, 0, "mq/t", "across"))

    def test_nats_restarted_nodes_reconnect_and_count_what_could_not_go(self):
        """Every nats-server killed, then started again on its ports and store. While NATS is
        gone the nodes and their MQTT clients stay up; each QoS 0 message published on node a is
        counted once, as sent (into nats.c's reconnect buffer) or as failed (a QoS 1 one would not
        be acknowledged: JetStream does not have it); b's subscriber gets
        none of them twice nor out of order; a new client is refused at once, Server unavailable,
        as no node can own it. After the restart every node connects again, counts the disconnect
        and the reconnect, new clients connect, and messages cross again."""
        on_b = self.client(1, "restart-b", V311)
        self.assertEqual(on_b.subscribe("rs/#", 1), [1])
        pub = self.client(0, "restart-pub", V311)
        self.wait_route(pub, on_b, "rs/probe")
        before = [self.metrics(i) for i in range(3)]
        for i in range(3):
            self.nats.kill(i)
        for node in range(3):  # each node notices (its connection ended with the process)
            self.wait_connected(node, 0)
        sent = lambda m: (m['mqttbroker_cluster_messages_sent_total{result="sent"}']
                          + m['mqttbroker_cluster_messages_sent_total{result="failed"}'])
        outage = self.metrics(0)
        for i in range(50):
            pub.publish("rs/t", b"%d" % i, 0)
        # Its SUBACK: node a has handled the 50 before it. (Not a QoS 1 publish: its PUBACK waits
        # for JetStream, which is gone.)
        pub.subscribe("barrier", 0)
        self.assertEqual(sent(self.metrics(0)) - sent(outage), 50)
        # No node can own a new client now: refused at once, Server unavailable (5.0 0x88).
        refused = h.PahoClient(self.nodes[2].port, "restart-new", V5, connect_now=False)
        self._clients.append(refused)
        self.assertEqual(refused.connect(expect_code=None)[1], 0x88)
        for i in range(3):
            self.nats.start(i)
        for node in range(3):
            self.wait_connected(node)
        # JetStream comes back after the servers (its leaders elected, the stream and the buckets
        # read from the store): on a busy machine that takes longer than WAIT. Until then a QoS 1
        # probe is not acknowledged and its publisher is disconnected once the answer is overdue.
        pub = self.wait_stream(0, "restart-pub2")
        outage_got = []  # whatever of the 50 crossed once both ends were back
        self.wait_route(pub, on_b, "rs/probe", outage_got)
        for node in range(3):
            m = self.metrics(node)
            self.assertGreaterEqual(m["mqttbroker_cluster_disconnects_total"],
                                    before[node]["mqttbroker_cluster_disconnects_total"] + 1)
            self.assertGreaterEqual(m["mqttbroker_cluster_reconnects_total"],
                                    before[node]["mqttbroker_cluster_reconnects_total"] + 1)
        # And a new client is owned again (tried until the owners' bucket is back).
        deadline = time.monotonic() + h.WAIT
        while True:
            again = h.PahoClient(self.nodes[2].port, "restart-new", V5, connect_now=False)
            self._clients.append(again)
            code = again.connect(expect_code=None)[1]
            if code == 0 or time.monotonic() > deadline:
                break
            again.close()
            time.sleep(0.2)
        self.assertEqual(code, 0)
        for i in range(20):
            pub.publish("rs/after", b"%d" % i, 1)
        self.assertEqual([(m.topic, int(m.payload)) for m in on_b.get_n(20)], [("rs/after", i) for i in range(20)])
        on_b.assert_nothing(0.3)
        self.assertTrue(all(m.topic == "rs/t" for m in outage_got), [m.topic for m in outage_got])
        numbers = [int(m.payload) for m in outage_got]
        self.assertEqual(numbers, sorted(set(numbers)))  # none twice, in order


class ClusterReplicated(Cluster):
    """Three nodes, the cluster's JetStream state on all three nats-servers (--cluster-replicas
    3), so that it outlives one of them. With one copy, a test that kills a server depends on
    where JetStream happened to place the stream."""

    node_args = ("--cluster-replicas", "3")

    def test_a_lost_nats_server_s_node_reconnects_to_another(self):
        """nats-server 1 killed: node b, connected only to it, reconnects to another server of the
        NATS cluster (which it learned from it); its MQTT clients keep their connections, and
        messages from node a reach them again, each once and in order [MQTT-4.6.0-6]; b's counters
        show the disconnect and the reconnect."""
        on_b = self.client(1, "lost-b", V311)
        self.assertEqual(on_b.subscribe("lost/#", 1), [1])
        pub = self.client(0, "lost-pub", V311)
        self.wait_route(pub, on_b, "lost/probe")
        before = self.metrics(1)
        self.assertEqual(before["mqttbroker_cluster_connected"], 1)
        self.nats.kill(1)
        self.wait_connected(1)
        # Where server 1 led a copy of the stream, the other two elect a new leader: until then a
        # QoS 1 publish is not acknowledged (its publisher is disconnected once JetStream's answer
        # is overdue).
        pub = self.wait_stream(0, "lost-pub2")
        self.wait_route(pub, on_b, "lost/probe")
        after = self.metrics(1)
        self.assertGreaterEqual(after["mqttbroker_cluster_disconnects_total"],
                                before["mqttbroker_cluster_disconnects_total"] + 1)
        self.assertGreaterEqual(after["mqttbroker_cluster_reconnects_total"],
                                before["mqttbroker_cluster_reconnects_total"] + 1)
        for i in range(20):
            pub.publish("lost/t", b"%d" % i, 1)
        self.assertEqual([int(m.payload) for m in on_b.get_n(20)], list(range(20)))
        on_b.assert_nothing(0.3)


class ClusterWithoutDiscovery(Cluster):
    """Three nodes, each knowing only its own nats-server (--no_advertise: NATS tells clients of
    no other), and the cluster's JetStream state on all three (--cluster-replicas 3)."""

    nats_args = ("--no_advertise",)
    node_args = ("--cluster-replicas", "3")

    def test_qos1_published_while_a_node_is_cut_off_reaches_it_when_it_is_back(self):
        """nats-server 1 killed: node b, which knows no other, is cut off from the cluster while
        node a publishes 20 QoS 1 messages (and 5 at QoS 0) to b's subscriber, whose connection
        to b stays up. JetStream keeps the QoS 1 ones for b's consumer: when nats-server 1 is back
        and b reconnects, all 20 arrive, each once and in order [MQTT-4.6.0-6]. The
        QoS 0 ones had no node to go to: none of them comes. On core NATS alone none of the 20
        would come either."""
        on_b = self.client(1, "cut-b", V311)
        self.assertEqual(on_b.subscribe("cut/#", 1), [1])
        on_c = self.client(2, "cut-c", V311)
        self.assertEqual(on_c.subscribe("cut/#", 1), [1])
        pub = self.client(0, "cut-pub", V311)
        self.wait_route(pub, on_b, "cut/probe")
        self.wait_route(pub, on_c, "cut/probe")
        self.nats.kill(1)
        self.wait_connected(1, 0)
        # JetStream's copies on the other two servers elect new leaders where server 1 led: until
        # the stream takes messages again, a QoS 1 publish is not acknowledged (its publisher is
        # disconnected once JetStream's answer is overdue). Then a probe crosses to node c (b
        # gets those probes too).
        pub = self.wait_stream(0, "cut-pub2")
        self.wait_route(pub, on_c, "cut/probe")
        for i in range(20):
            pub.publish("cut/t", b"%d" % i, 1)
        for i in range(5):
            pub.publish("cut/zero", b"%d" % i, 0)
        pub.publish("barrier", b"", 1)  # its PUBACK: node a has sent the 25 before it
        time.sleep(0.3)
        while not on_b.messages.empty():  # only probes from before the cut
            self.assertIn(on_b.messages.get().payload, self.PROBES)
        self.nats.start(1)
        self.wait_connected(1)
        got = []
        while len(got) < 20:
            m = on_b.get()
            if m.payload not in self.PROBES:
                got.append(m)
        self.assertEqual([(m.topic, int(m.payload)) for m in got], [("cut/t", i) for i in range(20)])
        time.sleep(0.5)
        while not on_b.messages.empty():  # only probes may follow
            self.assertIn(on_b.messages.get().payload, self.PROBES)
        self.assertEqual(self.metrics(1)['mqttbroker_cluster_messages_received_total{result="repeat"}'], 0)

        # Cut off again, node b stops at once on SIGTERM: it does not wait for JetStream's answers
        # to its goodbyes (its consumers, the retained bucket's watcher), which cannot come (it
        # took 5 s, each such call's own timeout).
        self.nats.kill(1)
        self.wait_connected(1, 0)
        start = time.monotonic()
        status = self.nodes[1].stop()
        took = time.monotonic() - start
        self.killed.add(1)  # stopped here
        h.assert_no_sanitizer_report(self, self.nodes[1].all_lines(), "node b")
        self.assertEqual(status, 0)
        self.assertLess(took, 4.0)


# The other class's tests run there only.
for _name in [n for n in vars(Cluster) if n.startswith("test_")]:
    setattr(ClusterReplicated, _name, None)
    setattr(ClusterWithoutDiscovery, _name, None)

if __name__ == "__main__":
    h.main()
