"""The example programs as documented: examples/embed (a host that runs the broker beside its own
timer work and answers in-process) and examples/gateway (UDP <-> MQTT with an intercept hook), each
as a child process on fixed ports the test found free, driven by paho clients and UDP sockets; and
the command line of every example program (examples/broker and examples/auth too): --help and
--version."""

import faulthandler
import os
import re
import socket
import subprocess
import sys
import time
import unittest

import harness as h
from harness import V311

STOP_WITHIN = 5.0  # SIGTERM to exit: a bound on a hang, not a timing measurement


class ExampleTestCase(unittest.TestCase):
    """A hard deadline per test; paho clients and programs started here are closed afterwards."""

    def setUp(self):
        self._started_at = time.monotonic()
        faulthandler.dump_traceback_later(h.TEST_DEADLINE, exit=True)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)
        self._clients = []
        self._programs = []
        self.addCleanup(self._finish)

    def _finish(self):
        sys.stderr.write("[%.2f s] " % (time.monotonic() - self._started_at))
        for c in reversed(self._clients):
            try:
                c.close()
            except Exception:
                pass
        for p in self._programs:
            p.kill()
        for p in self._programs:  # stopped by assert_stops() or killed above: all output is in
            h.assert_no_sanitizer_report(self, p.all_lines(), os.path.basename(p.args[0]))

    def start(self, make_args, ready, timeout=h.WAIT):
        """Starts the program `make_args()` names until its `ready` line appears (within `timeout`);
        returns it and the match. A fixed port can be taken by another process between free_port()
        and the program's bind (the program then exits), so that is retried with new ports."""
        for attempt in range(3):
            p = h.Program(make_args())
            self._programs.append(p)
            try:
                return p, p.wait_line(ready, timeout=timeout)
            except AssertionError:
                if attempt == 2:
                    raise
                try:
                    p.proc.wait(timeout=1)  # its output ended: it is exiting (bind failed)
                except subprocess.TimeoutExpired:
                    raise AssertionError("%s hangs before its ready line; output:\n%s"
                                         % (p.args[0], p.output())) from None

    def paho(self, port, client_id, **kw):
        c = h.PahoClient(port, client_id, V311, **kw)
        self._clients.append(c)
        return c

    def udp_socket(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._clients.append(s)
        s.bind((h.HOST, 0))
        s.settimeout(h.WAIT)
        return s

    def assert_stops(self, program):
        """SIGTERM (with clients still connected): exit status 0, promptly."""
        status, took = program.terminate(timeout=STOP_WITHIN)
        self.assertEqual(status, 0, "status %s after SIGTERM (%.2f s); output:\n%s"
                         % (status, took, program.output()))


class Embed(ExampleTestCase):
    def _start(self):
        wanted = []

        def args():
            wanted.append(h.free_port())
            return [h.example_binary("MQTTBROKER_EMBED"), "--port", wanted[-1]]

        p, m = self.start(args, r"embedded broker on 127\.0\.0\.1:(\d+)")
        self.assertEqual(int(m.group(1)), wanted[-1], "it listens on the port given with --port")
        return p, wanted[-1]

    def test_heartbeat_ping_and_sigterm(self):
        """examples/embed: the host's heartbeat is published every second and retained, so a late
        subscriber to host/# gets it at once with the retain flag [MQTT-3.3.1-6]; a client's cmd/ping
        reaches the in-process subscriber, whose host/reply "pong: <payload>" reaches the client;
        SIGTERM with clients connected stops it with status 0."""
        program, port = self._start()

        early = self.paho(port, "embed-early")
        early.subscribe("host/heartbeat", 0)
        beat = early.get(timeout=5)  # live (or already retained): one per second
        self.assertEqual(beat.topic, "host/heartbeat")
        self.assertTrue(beat.payload.isdigit(), beat)

        late = self.paho(port, "embed-late")
        late.subscribe("host/#", 1)
        m = late.get()  # the retained heartbeat, sent on subscribe
        self.assertEqual((m.topic, m.retain), ("host/heartbeat", 1))
        self.assertGreaterEqual(int(m.payload), int(beat.payload))

        pinger = self.paho(port, "embed-pinger")
        pinger.publish("cmd/ping", b"hello embed", 1)
        deadline = time.monotonic() + h.WAIT
        while True:  # heartbeats interleave with the reply
            m = late.get(timeout=max(deadline - time.monotonic(), 0.01))
            if m.topic != "host/heartbeat":
                break
        self.assertEqual((m.topic, m.payload, m.qos), ("host/reply", b"pong: hello embed", 1))
        program.wait_line(r"host got cmd/ping 'hello embed'")

        self.assert_stops(program)
        self.assertTrue(late.disconnected.wait(h.WAIT), "the client's connection was closed")


class Gateway(ExampleTestCase):
    def _start(self, peer, *extra):
        ports = []

        def args():
            ports[:] = [h.free_port(), h.free_port(socket.SOCK_DGRAM)]
            return [h.example_binary("MQTTBROKER_GATEWAY"), "--mqtt-port", ports[0], "--udp-port", ports[1],
                    "--peer", "%s:%d" % peer.getsockname(), *extra]

        p, m = self.start(args, r"gateway: MQTT on 127\.0\.0\.1:(\d+), UDP in on (\d+), out to ([0-9.:]+)")
        self.assertEqual((int(m.group(1)), int(m.group(2)), m.group(3)),
                         (ports[0], ports[1], "%s:%d" % peer.getsockname()))
        return p, ports[0], ports[1]

    def test_udp_to_mqtt_and_mqtt_to_udp(self):
        """examples/gateway: a datagram "gw/in hello" becomes a QoS 1 publish of "hello" to gw/in;
        a client's publish to to-udp/x (a --forward filter) goes to --peer as "to-udp/x <payload>";
        a topic outside the filters does not; SIGTERM stops it with status 0."""
        peer = self.udp_socket()
        program, mqtt_port, udp_port = self._start(peer, "--forward", "to-udp/#")

        sub = self.paho(mqtt_port, "gw-sub")
        sub.subscribe("gw/in", 1)
        sender = self.udp_socket()
        sender.sendto(b"gw/in hello", (h.HOST, udp_port))
        m = sub.get()
        self.assertEqual((m.topic, m.payload, m.qos, m.retain), ("gw/in", b"hello", 1, 0))

        pub = self.paho(mqtt_port, "gw-pub")
        pub.publish("not-forwarded/x", b"stays", 1)
        pub.publish("to-udp/x", b"over udp", 1)
        data, _ = peer.recvfrom(65536)
        self.assertEqual(data, b"to-udp/x over udp")  # not-forwarded/x, published first, never came
        peer.settimeout(h.ABSENT)
        with self.assertRaises(socket.timeout):
            data, _ = peer.recvfrom(65536)

        self.assert_stops(program)

    def test_intercept_drops_client_publish_to_gateway_internal(self):
        """The gateway's intercept hook drops a client's publish to gateway/internal/...: a gateway/#
        subscriber does not get it (QoS 0 or 1; the QoS 1 publish is still acknowledged), while a
        client's publish to gateway/public/... passes."""
        peer = self.udp_socket()
        program, mqtt_port, _ = self._start(peer)

        sub = self.paho(mqtt_port, "gw-watch")
        sub.subscribe("gateway/#", 1)
        pub = self.paho(mqtt_port, "gw-client")
        pub.publish("gateway/internal/secret", b"dropped 1", 1)
        pub.publish("gateway/internal/secret", b"dropped 0", 0)
        pub.publish("gateway/public/ok", b"passes", 1)
        m = sub.get()  # in order from one publisher: had the first two passed, they came first
        self.assertEqual((m.topic, m.payload), ("gateway/public/ok", b"passes"))
        sub.assert_nothing()

        self.assert_stops(program)


class CommandLine(unittest.TestCase):
    """Every example program parses its arguments before it starts anything: --help lists the
    options and exits 0 without starting a broker, --version prints the library's version."""

    PROGRAMS = (  # environment variable naming the executable, an option its --help must list,
                  # and what the program prints once its broker runs
        ("MQTTBROKER_SERVER", "--port", r"listening on"),
        ("MQTTBROKER_EMBED", "--port", r"embedded broker on"),
        ("MQTTBROKER_GATEWAY", "--mqtt-port", r"gateway: MQTT on"),
        ("MQTTBROKER_AUTH", "--port", r"broker with access control on"),
    ) + ((("MQTTBROKER_PASSWD", "-D", r"\$7\$"),) if os.environ.get("MQTTBROKER_PASSWD") else ())  # with OpenSSL

    def run_program(self, *args):
        r = subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=h.WAIT)
        h.assert_no_sanitizer_report(self, r.stderr, " ".join(os.path.basename(str(a)) for a in args))
        return r

    def test_help_lists_options_and_starts_nothing(self):
        for variable, option, running in self.PROGRAMS:
            program = h.example_binary(variable)
            with self.subTest(program=os.path.basename(program)):
                r = self.run_program(program, "--help")
                self.assertEqual(r.returncode, 0, r.stderr)
                for wanted in (option, "--version", "--help"):
                    self.assertIn(wanted, r.stdout)
                self.assertNotRegex(r.stdout + r.stderr, running, "--help started a broker")

    def test_version_prints_the_library_version(self):
        version = os.environ.get("MQTTBROKER_VERSION")
        self.assertTrue(version, "MQTTBROKER_VERSION is not set (ctest sets it to the project's version)")
        for variable, _, running in self.PROGRAMS:
            program = h.example_binary(variable)
            with self.subTest(program=os.path.basename(program)):
                r = self.run_program(program, "--version")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertRegex(r.stdout.strip(), r"^%s %s$" % (re.escape(os.path.basename(program)),
                                                                 re.escape(version)))
                self.assertNotRegex(r.stdout + r.stderr, running, "--version started a broker")


if __name__ == "__main__":
    h.main()
