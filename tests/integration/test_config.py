"""The server's -c FILE (Mosquitto's configuration syntax, examples/broker/config_file.hpp): a file
with a plain and a TLS listener serving one broker, mosquitto_pub and mosquitto_sub across them;
per-listener max_connections; a WebSocket listener from the file; a flag winning over its line;
Debian's stock mosquitto.conf loading with its include_dir; a misspelled line, an error in an
included file and a listener that cannot start stopping the server with the file and line named.
Listeners in the files use port 0, and the ports are read from the server's "listener N (FILE:LINE)"
lines. Certificates are made at run time by tests/tls/make-certs.sh."""

import faulthandler
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness as h

# Debian's /etc/mosquitto/mosquitto.conf (mosquitto 2.0), for machines without the package.
DEBIAN_CONF = """# Place your local configuration in /etc/mosquitto/conf.d/
#
# A full description of the configuration file is at
# /usr/share/doc/mosquitto/examples/mosquitto.conf.example

pid_file /run/mosquitto/mosquitto.pid

persistence true
persistence_location /var/lib/mosquitto/

log_dest file /var/log/mosquitto/mosquitto.log

include_dir /etc/mosquitto/conf.d
"""

LISTENER = re.compile(r"listener (\d+) \((.+?)\): (\w+) on ([0-9.]+):(\d+)")


cert = h.Certificates("mqttbroker-it-config-")  # cert("ca.crt"): a certificate's path, made for the module
setUpModule = cert.make
tearDownModule = cert.remove


class ConfigCase(h.BrokerTestCase):
    """Each test writes its files into a folder of its own, then starts the broker with -c and the
    main file make_conf() wrote (conf, with {certs} filled in), or none when it returns None."""

    conf = None

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mqttbroker-it-conf-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = self.make_conf()
        if self.path is None:
            faulthandler.dump_traceback_later(h.TEST_DEADLINE, exit=True)
            self.addCleanup(faulthandler.cancel_dump_traceback_later)
            return
        self.broker_args = ("-c", self.path, *self.extra_args())
        super().setUp()

    def make_conf(self):
        return None if self.conf is None else self.write("mqttbroker.conf", self.conf.format(certs=cert.folder))

    def extra_args(self):
        return ()

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def listeners(self, n):
        """The first `n` listeners the server announced: [(transport, port, origin)], by index."""
        deadline = time.monotonic() + h.WAIT
        while True:
            found = {}
            for line in self.broker.all_lines():
                m = LISTENER.search(line)
                if m:
                    found[int(m.group(1))] = (m.group(3), int(m.group(5)), m.group(2))
            if all(i in found for i in range(n)):
                return [found[i] for i in range(n)]
            if time.monotonic() > deadline:
                self.fail("%d listeners not announced within %.0f s; log:\n%s" % (n, h.WAIT, self.broker.log()))
            time.sleep(0.02)

    def run_server(self, *args):
        """The server run to its end (it must exit by itself): (exit status, stderr)."""
        r = subprocess.run([h.broker_binary(), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=h.WAIT)
        h.assert_no_sanitizer_report(self, r.stderr, "the broker")
        return r.returncode, r.stderr


def mosquitto_sub(port, topic, *extra):
    """mosquitto_sub for one message, with -d so that its SUBACK shows, its output line by line
    through a pipe: the harness's Program, once it has its SUBACK."""
    h.require_mosquitto_clients()
    sub = h.Program(["mosquitto_sub", "-h", h.HOST, "-p", str(port), "-t", topic, "-C", "1", "-W", "10", "-q", "1",
                     "-d", "-v", *extra], stdbuf=True)
    sub.wait_line(r"received SUBACK")
    return sub


def received(sub, line):
    """mosquitto_sub printed `line` and ended by itself with status 0 (-C 1)."""
    sub.wait_line(re.escape(line))
    status = sub.proc.wait(timeout=h.WAIT)
    if status != 0:
        raise AssertionError("mosquitto_sub ended with %s:\n%s" % (status, sub.output()))


def mosquitto_pub(port, topic, payload, *extra):
    h.require_mosquitto_clients()
    r = subprocess.run(["mosquitto_pub", "-h", h.HOST, "-p", str(port), "-t", topic, "-m", payload, "-q", "1", *extra],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=h.WAIT)
    if r.returncode != 0:
        raise AssertionError("mosquitto_pub on port %d failed (%d): %s" % (port, r.returncode, r.stderr))


TLS_CLIENT = ("--cafile", "{certs}/ca.crt")


class TwoListeners(ConfigCase):
    """A plain and a TLS listener from the file; a comment and Mosquitto's spacing on the way."""

    conf = """# two listeners, one broker
listener 0 127.0.0.1

listener  0 127.0.0.1   # TLS
certfile {certs}/server-chain.crt
keyfile {certs}/server.key
cafile {certs}/ca.crt
crlfile {certs}/crl.pem
"""

    def test_messages_cross_between_the_plain_and_the_tls_listener(self):
        """mosquitto_pub on the plain listener reaches mosquitto_sub on the TLS one, and the other way
        round: both listeners serve one broker."""
        (plain, plain_port, plain_origin), (tls, tls_port, tls_origin) = self.listeners(2)
        self.assertEqual((plain, tls), ("tcp", "tls"))
        self.assertEqual(plain_origin, self.path + ":2")
        self.assertEqual(tls_origin, self.path + ":4")
        self.assertEqual(plain_port, self.port)  # the first listener is the one the "listening on" line names
        tls_client = [a.format(certs=cert.folder) for a in TLS_CLIENT]

        sub = mosquitto_sub(tls_port, "cross/#", *tls_client)
        self.addCleanup(sub.kill)
        mosquitto_pub(plain_port, "cross/to-tls", "from the plain listener")
        received(sub, "cross/to-tls from the plain listener")

        sub = mosquitto_sub(plain_port, "cross/#")
        self.addCleanup(sub.kill)
        mosquitto_pub(tls_port, "cross/to-plain", "from the TLS listener", *tls_client)
        received(sub, "cross/to-plain from the TLS listener")

    def test_the_files_crlfile_refuses_a_revoked_certificate(self):
        """crlfile: a client certificate the list revokes is refused, alice's is not."""
        _, (_, tls_port, _) = self.listeners(2)
        tls_client = [a.format(certs=cert.folder) for a in TLS_CLIENT]
        mosquitto_pub(tls_port, "crl/ok", "alice", *tls_client, "--cert", cert("alice.crt"), "--key", cert("alice.key"))
        h.require_mosquitto_clients()
        r = subprocess.run(["mosquitto_pub", "-h", h.HOST, "-p", str(tls_port), "-t", "crl/no", "-m", "x", *tls_client,
                            "--cert", cert("revoked.crt"), "--key", cert("revoked.key")],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=h.WAIT)
        self.assertNotEqual(r.returncode, 0, "a revoked certificate was let in")


class ListenerLimit(ConfigCase):
    """max_connections in a listener block is that listener's own limit."""

    conf = """listener 0 127.0.0.1
max_connections 1
listener 0 127.0.0.1
"""

    def test_a_listener_limited_to_one_refuses_the_second_while_the_other_accepts(self):
        (_, limited, _), (_, other, _) = self.listeners(2)
        first = h.RawClient(limited)
        self._clients.append(first)
        first.send(h.connect("first"))
        self.assertEqual(h.parse_connack(first.expect(h.CONNACK)).code, 0)

        second = h.RawClient(limited)
        self._clients.append(second)
        second.send(h.connect("second"))
        _, got = second.wait_closed()
        self.assertEqual(got, [], "refused before any CONNACK")
        self.wait_log(r"connection refused: listener 0's max_connections \(1\) reached")

        for i in range(2):
            c = h.RawClient(other)
            self._clients.append(c)
            c.send(h.connect("other-%d" % i))
            self.assertEqual(h.parse_connack(c.expect(h.CONNACK)).code, 0)

        # The first one leaving makes room: the server counts the close before it closes the socket.
        first.send(h.disconnect())
        first.wait_closed()
        third = h.RawClient(limited)
        self._clients.append(third)
        third.send(h.connect("third"))
        self.assertEqual(h.parse_connack(third.expect(h.CONNACK)).code, 0)


class FlagsWin(ConfigCase):
    """A flag given on the command line wins over its line in the file; the file's other lines hold."""

    conf = "max_qos 1\nmax_topic_alias 3\nlistener 0 127.0.0.1\n"

    def extra_args(self):
        return ("--max-qos", "2")

    def test_max_qos_from_the_flag(self):
        self.listeners(1)
        c = self.paho("flag-wins")
        self.assertEqual(c.subscribe("q/#", 2), [2])


class FileOnly(ConfigCase):
    conf = "max_qos 1\nlistener 0 127.0.0.1\n"

    def test_max_qos_from_the_file(self):
        self.listeners(1)
        c = self.paho("file-says")
        self.assertEqual(c.subscribe("q/#", 2), [1])


class WebSocketListener(ConfigCase):
    """protocol websockets in the file: a paho client over WebSocket (any path, as in Mosquitto) and a
    plain one share the broker."""

    conf = "listener 0 127.0.0.1\nlistener 0 127.0.0.1\nprotocol websockets\n"

    def setUp(self):
        try:
            super().setUp()
        except RuntimeError as e:
            if "built without WebSocket" in str(e):
                raise unittest.SkipTest("the server was built without WebSocket (OpenSSL's libcrypto)")
            raise

    def test_a_websocket_client_and_a_plain_one(self):
        (_, plain, _), (kind, ws_port, _) = self.listeners(2)
        self.assertEqual(kind, "ws")
        sub = self.paho("plain-sub")
        sub.subscribe("ws/#", 1)

        class WsPaho(h.PahoClient):
            def _make_client(self):
                proto = h.mqtt.MQTTv311
                self.client = h.mqtt.Client(client_id=self.client_id, protocol=proto, transport="websockets",
                                            reconnect_on_failure=False)
                self.client.ws_set_options(path="/anything")
                self.client.on_connect = self._on_connect
                self.client.on_message = self._on_message
                self.client.on_subscribe = self._on_subscribe
                self.client.on_disconnect = self._on_disconnect
                self.client.on_unsubscribe = self._on_unsubscribe

        w = WsPaho(ws_port, "ws-pub")
        self._clients.append(w)
        w.publish("ws/hello", b"over websocket", 1)
        m = sub.get()
        self.assertEqual((m.topic, m.payload), ("ws/hello", b"over websocket"))


class DebianStock(ConfigCase):
    """Debian's /etc/mosquitto/mosquitto.conf, its include_dir pointed at a folder of this test; no
    listener in it, so the server listens as its flags say (the harness's --port 0)."""

    def make_conf(self):
        try:
            with open("/etc/mosquitto/mosquitto.conf") as f:
                text = f.read()
        except OSError:
            text = DEBIAN_CONF
        self.write("conf.d/README", "Any files placed in this directory that have a .conf ending will be loaded\n")
        text, n = re.subn(r"(?m)^include_dir .*$", "include_dir " + os.path.join(self.dir, "conf.d"), text)
        self.assertEqual(n, 1, "the stock file has its include_dir line")
        # persistence true: the SQLite store, in this test's folder rather than /var/lib/mosquitto.
        text, n = re.subn(r"(?m)^persistence_location .*$", "persistence_location " + self.dir + "/", text)
        self.assertEqual(n, 1, "the stock file has its persistence_location line")
        # log_dest file: this test's folder rather than /var/log/mosquitto, and stderr beside it,
        # where the harness reads the server's port (a line added at the end: the numbers stay).
        self.log_file = os.path.join(self.dir, "mosquitto.log")
        text, n = re.subn(r"(?m)^log_dest file .*$", "log_dest file " + self.log_file, text)
        self.assertEqual(n, 1, "the stock file has its log_dest line")
        text += "\nlog_dest stderr\n"
        self.lines = text.splitlines()
        return self.write("mosquitto.conf", text)

    def test_the_stock_file_loads_and_the_server_serves(self):
        number = next(i + 1 for i, line in enumerate(self.lines) if line.split(" ")[0] == "pid_file")
        self.wait_log(r"\[warning\] %s:%d: pid_file ignored: " % (re.escape(self.path), number))
        self.wait_log(r"\[info\] persistence: %s " % re.escape(os.path.join(self.dir, "mqttbroker.db")))
        with open(self.log_file) as f:
            self.assertIn("pid_file ignored", f.read())
        c = self.paho("debian")
        c.subscribe("stock/#", 1)
        c.publish("stock/ok", b"served", 1)
        self.assertEqual(c.get().payload, b"served")


class PasswordFile(ConfigCase):
    """password_file with a file made by Debian's mosquitto_passwd (2.0: PBKDF2-SHA512, and
    -H sha512 for 1.x's SHA-512), allow_anonymous left to its default (false with a password
    file, as in Mosquitto 2.0); refusals are "not authorized" (3.1.1 5, 5.0 0x87), as Mosquitto
    answers, and come after the server's delay of a second; SIGHUP reads the file again."""

    def make_conf(self):
        h.require_mosquitto_passwd()
        self.passwd = os.path.join(self.dir, "passwd")
        self.mosquitto_passwd("-c", "-b", self.passwd, "alice", "s3cret")
        self.mosquitto_passwd("-H", "sha512", "-b", self.passwd, "carol", "old style")
        return self.write("mqttbroker.conf", "listener 0 127.0.0.1\npassword_file %s\n" % self.passwd)

    @staticmethod
    def mosquitto_passwd(*args):
        subprocess.run(["mosquitto_passwd", *args], check=True, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=h.WAIT)

    def connack(self, credentials, version=h.V311):
        """The CONNACK code paho gets with `credentials` ((user, password) or None)."""
        c = h.PahoClient(self.port, version=version, connect_now=False, credentials=credentials)
        self._clients.append(c)
        return c.connect(expect_code=None)[1]

    def test_the_users_of_mosquitto_passwd_log_in_and_nobody_else(self):
        for version, refused in ((h.V311, 5), (h.V5, 0x87)):
            with self.subTest(version=version):
                self.assertEqual(self.connack(("alice", "s3cret"), version), 0)
                self.assertEqual(self.connack(("carol", "old style"), version), 0)
                self.assertEqual(self.connack(("alice", "S3cret"), version), refused)
                self.assertEqual(self.connack(("mallory", "s3cret"), version), refused)
                self.assertEqual(self.connack(None, version), refused)  # anonymous
        self.wait_log(r"login refused: client \S+ from 127\.0\.0\.1:\d+, username mallory")

    def test_the_log_says_who_connected_from_where_and_why_they_left(self):
        c = h.PahoClient(self.port, client_id="logged", credentials=("alice", "s3cret"))
        self._clients.append(c)
        self.wait_log(r"client 'logged' connected \(MQTT 3\.1\.1, new session\) from 127\.0\.0\.1:\d+ on listener 0 "
                      r"\(tcp\), username alice")
        c.disconnect()
        self.wait_log(r"client 'logged' disconnected: DISCONNECT received")
        self.assertEqual(self.connack(("alice", "nope")), 5)
        self.wait_log(r"CONNECT of '\S+' from 127\.0\.0\.1:\d+ refused: Not authorized \(0x87\)")

    def test_a_refusal_is_answered_a_second_late(self):
        started = time.monotonic()
        self.assertEqual(self.connack(("alice", "guess")), 5)
        self.assertGreaterEqual(time.monotonic() - started, 0.9)

    def test_mosquitto_clients_with_credentials(self):
        sub = mosquitto_sub(self.port, "pw/#", "-u", "alice", "-P", "s3cret")
        self.addCleanup(sub.kill)
        mosquitto_pub(self.port, "pw/t", "from carol", "-u", "carol", "-P", "old style")
        received(sub, "pw/t from carol")

    def test_sighup_reads_the_file_again_and_connected_clients_stay(self):
        alice = h.PahoClient(self.port, credentials=("alice", "s3cret"))
        self._clients.append(alice)
        alice.subscribe("reload/#", qos=1)
        self.mosquitto_passwd("-b", self.passwd, "erin", "new one")
        self.mosquitto_passwd("-D", self.passwd, "alice")
        self.broker.proc.send_signal(signal.SIGHUP)
        self.wait_log(r"SIGHUP: password file .* read again: 2 users")
        self.assertEqual(self.connack(("erin", "new one")), 0)
        self.assertEqual(self.connack(("alice", "s3cret")), 5)
        # Already connected, alice stays: the file decides who may log in, not who may stay.
        erin = h.PahoClient(self.port, credentials=("erin", "new one"))
        self._clients.append(erin)
        erin.publish("reload/x", b"after the reload", qos=1)
        self.assertEqual(alice.get().payload, b"after the reload")

    def test_a_file_written_by_mqttbroker_passwd_serves_mosquitto_and_this_server(self):
        """examples/passwd writes what mosquitto_passwd writes: the real Mosquitto takes its file."""
        if not os.environ.get("MQTTBROKER_PASSWD"):
            self.skipTest("built without mqttbroker::auth: no mqttbroker_passwd")
        if not shutil.which("mosquitto"):
            h._client_missing("mosquitto (Debian mosquitto)")
        path = os.path.join(self.dir, "written")
        subprocess.run([h.example_binary("MQTTBROKER_PASSWD"), "-c", "-b", path, "zoe", "z pass"], check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=h.WAIT)
        port = h.free_port()
        # `user`: started as root, Mosquitto would become user mosquitto, which may not read the
        # file (mqttbroker_passwd makes it the owner's alone).
        conf = self.write("mosquitto.conf", "user %s\nlistener %d 127.0.0.1\npassword_file %s\n"
                          % (pwd.getpwuid(os.getuid()).pw_name, port, path))
        mosquitto = h.Program(["mosquitto", "-c", conf, "-v"], stdbuf=True)
        self.addCleanup(mosquitto.terminate)
        # "Opening ... listen socket" comes before the bind; "running" after every listener is up.
        mosquitto.wait_line(r"mosquitto version \S+ running")
        mosquitto_pub(port, "t", "to mosquitto", "-u", "zoe", "-P", "z pass")
        with self.assertRaises(AssertionError):
            mosquitto_pub(port, "t", "to mosquitto", "-u", "zoe", "-P", "wrong")
        ours = h.start_broker(("--password-file", path))
        self.addCleanup(ours.stop)
        mosquitto_pub(ours.port, "t", "to mqttbroker", "-u", "zoe", "-P", "z pass")

    def test_a_broken_file_at_sighup_keeps_the_users_read_before(self):
        with open(self.passwd, "a") as f:
            f.write("broken line\n")
        self.broker.proc.send_signal(signal.SIGHUP)
        self.wait_log(r"SIGHUP: .*line 3: not a line of a password file; the users read before stay")
        self.assertEqual(self.connack(("alice", "s3cret")), 0)


class AnonymousAllowed(PasswordFile):
    """allow_anonymous true beside the password file: a CONNECT without a user name is accepted,
    a wrong password still is not."""

    def make_conf(self):
        path = super().make_conf()
        with open(path, "a") as f:
            f.write("allow_anonymous true\n")
        return path

    def test_the_users_of_mosquitto_passwd_log_in_and_nobody_else(self):
        self.assertEqual(self.connack(None), 0)
        self.assertEqual(self.connack(("alice", "s3cret")), 0)
        self.assertEqual(self.connack(("alice", "wrong")), 5)

    test_a_refusal_is_answered_a_second_late = None
    test_the_log_says_who_connected_from_where_and_why_they_left = None
    test_mosquitto_clients_with_credentials = None
    test_sighup_reads_the_file_again_and_connected_clients_stay = None
    test_a_broken_file_at_sighup_keeps_the_users_read_before = None
    test_a_file_written_by_mqttbroker_passwd_serves_mosquitto_and_this_server = None


ACL_RULES = """# anonymous clients
topic read public/#
topic write public/anon
topic readwrite test/#
topic deny test/nosubscribe

user watcher
topic read public/#
topic read sensors/#
topic deny sensors/private/#

user writer
topic write #

pattern read inbox/%u
"""


def acl_scenario(port, passwords=None):
    """What each subscriber receives when writer and an anonymous client publish under ACL_RULES:
    {subscriber: [topics, in order]}. Each subscriber reads until public/end, the last message.
    `passwords`: user -> password, where a password file checks them."""
    passwords = passwords or {}
    got = {}
    clients = []
    try:
        subscribers = {"watcher": h.PahoClient(port, client_id="acl-watcher",
                                               credentials=("watcher", passwords.get("watcher", ""))),
                       "anonymous": h.PahoClient(port, client_id="acl-anon")}
        clients.extend(subscribers.values())
        for c in subscribers.values():
            c.subscribe("#", 1)  # granted to both; what each may read is decided per message
        writer = h.PahoClient(port, client_id="acl-writer", credentials=("writer", passwords.get("writer", "")))
        anon = h.PahoClient(port, client_id="acl-anon-pub")
        clients.extend([writer, anon])
        for topic in ("public/news", "sensors/a", "sensors/private/key", "inbox/watcher", "inbox/anonymous"):
            writer.publish(topic, b"w", 1)
        anon.publish("public/anon", b"a", 1)
        anon.publish("sensors/b", b"a", 1)  # anonymous may not write there: dropped
        writer.publish("public/end", b"w", 1)
        for name, c in subscribers.items():
            topics = []
            while not topics or topics[-1] != "public/end":
                topics.append(c.get().topic)
            got[name] = topics
    finally:
        for c in clients:
            c.close()
    return got


class AclFile(ConfigCase):
    """acl_file in Mosquitto's format: the same file in Mosquitto and here gives every subscriber
    the same messages; a filter a deny rule takes whole is refused (SUBACK 0x80 / 0x87), where
    Mosquitto 2.0 grants it and delivers nothing; SIGHUP reads the file again."""

    def make_conf(self):
        self.acl = self.write("acl", ACL_RULES)
        return self.write("mqttbroker.conf", "listener 0 127.0.0.1\nallow_anonymous true\nacl_file %s\n" % self.acl)

    def test_the_same_file_in_mosquitto_and_here_delivers_the_same(self):
        if not shutil.which("mosquitto"):
            h._client_missing("mosquitto (Debian mosquitto)")
        ours = acl_scenario(self.port)
        self.assertEqual(ours, {"watcher": ["public/news", "sensors/a", "inbox/watcher", "public/anon", "public/end"],
                                "anonymous": ["public/news", "public/anon", "public/end"]})
        port = h.free_port()
        conf = self.write("mosquitto.conf", "user %s\nlistener %d 127.0.0.1\nallow_anonymous true\nacl_file %s\n"
                          % (pwd.getpwuid(os.getuid()).pw_name, port, self.acl))
        mosquitto = h.Program(["mosquitto", "-c", conf, "-v"], stdbuf=True)
        self.addCleanup(mosquitto.terminate)
        mosquitto.wait_line(r"mosquitto version \S+ running")
        self.assertEqual(acl_scenario(port), ours)

    def test_paho_nosubscribe_is_refused_in_both_versions(self):
        """Paho's interoperability test_subscribe_failure: test/nosubscribe denied."""
        for version, refused in ((h.V311, 0x80), (h.V5, 0x87)):
            with self.subTest(version=version):
                c = self.paho("nosub-%d" % version, version=version)
                self.assertEqual(c.subscribe("test/nosubscribe", 2), [refused])
                self.assertEqual(c.subscribe("test/+", 2), [2])
        self.wait_log(r"nosub-\d+ \(username none\) may not subscribe to test/nosubscribe: the ACL file refuses it")

    def test_sighup_takes_out_subscriptions_the_new_file_refuses(self):
        sub = self.paho("reloaded", credentials=("watcher", ""))
        self.assertEqual(sub.subscribe("sensors/#", 1), [1])
        writer = self.paho("writer", credentials=("writer", ""))
        writer.publish("sensors/a", b"before", 1)
        self.assertEqual(sub.get().topic, "sensors/a")
        with open(self.acl, "w") as f:
            f.write(ACL_RULES.replace("topic read sensors/#\n", ""))
        self.broker.proc.send_signal(signal.SIGHUP)
        self.wait_log(r"SIGHUP: ACL file .* read again: \d+ rules")
        self.wait_log(r"SIGHUP: 1 subscriptions no longer allowed taken out")
        self.wait_log(r"client 'reloaded': subscription to sensors/# taken out: no longer authorized")
        writer.publish("sensors/a", b"after", 1)
        writer.publish("public/x", b"still allowed", 1)
        sub.subscribe("public/#", 1)
        writer.publish("public/y", b"still allowed", 1)
        self.assertEqual(sub.get().topic, "public/y")  # nothing from sensors/ came before it

    def test_a_broken_file_at_sighup_keeps_the_rules_read_before(self):
        with open(self.acl, "a") as f:
            f.write("topic sometimes a/b\n")
        self.broker.proc.send_signal(signal.SIGHUP)
        self.wait_log(r"SIGHUP: mqttbroker: ACL file '.*', line \d+: an access other than read, write, readwrite "
                      r"or deny; the rules read before stay")
        c = self.paho("still", credentials=("watcher", ""))
        self.assertEqual(c.subscribe("sensors/x", 1), [1])


class OneMosquittoConf(ConfigCase):
    """One mosquitto.conf, written for Mosquitto (listener, allow_anonymous, password_file made by
    mosquitto_passwd, acl_file, limits, logging, the user to run as), run through Mosquitto and
    then through this server on the same port: the same logins succeed and fail, and every
    subscriber gets the same messages."""

    PASSWORDS = {"watcher": "watch pass", "writer": "write pass"}

    def make_conf(self):
        return None  # each test starts its servers itself

    def conf_text(self, port):
        h.require_mosquitto_passwd()
        passwd = os.path.join(self.dir, "passwd")
        for i, (user, password) in enumerate(sorted(self.PASSWORDS.items())):
            subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", passwd, user, password], check=True,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=h.WAIT)
        acl = self.write("acl", ACL_RULES)
        return ("# Written for Mosquitto 2.0\n"
                "user %s\n"
                "per_listener_settings false\n"
                "listener %d 127.0.0.1\n"
                "allow_anonymous true\n"
                "password_file %s\n"
                "acl_file %s\n"
                "max_inflight_messages 20\n"
                "max_queued_messages 1000\n"
                "max_keepalive 120\n"
                "persistent_client_expiration 1d\n"
                "retain_available true\n"
                "sys_interval 10\n"
                "log_dest stderr\n"
                "log_type all\n"
                "connection_messages true\n"
                "log_timestamp true\n"
                % (pwd.getpwuid(os.getuid()).pw_name, port, passwd, acl))

    def behaviour(self, port):
        """What a client sees: CONNACK codes for good, bad and no credentials, then the ACL scenario."""
        codes = []
        for creds in (("watcher", "watch pass"), ("watcher", "wrong"), ("nobody", "x"), None):
            c = h.PahoClient(port, connect_now=False, credentials=creds)
            try:
                codes.append(c.connect(expect_code=None)[1])
            finally:
                c.close()
        return codes, acl_scenario(port, self.PASSWORDS)

    def test_mosquitto_and_this_server_behave_alike(self):
        if not shutil.which("mosquitto"):
            h._client_missing("mosquitto (Debian mosquitto)")
        port = h.free_port()
        path = self.write("mosquitto.conf", self.conf_text(port))
        mosquitto = h.Program(["mosquitto", "-c", path], stdbuf=True)
        try:
            mosquitto.wait_line(r"mosquitto version \S+ running")
            theirs = self.behaviour(port)
        finally:
            mosquitto.terminate()
        ours_server = h.start_broker(("-c", path))
        self.addCleanup(ours_server.stop)
        self.assertEqual(ours_server.port, port)
        ours = self.behaviour(port)
        self.assertEqual(theirs[0], [0, 5, 5, 0])  # the file's users, then anonymous allowed
        self.assertEqual(ours, theirs)


class PerListenerSettings(ConfigCase):
    """per_listener_settings true: each listener with its own password file, ACL file and
    allow_anonymous, as Mosquitto reads them."""

    def make_conf(self):
        h.require_mosquitto_passwd()
        self.passwd = os.path.join(self.dir, "passwd")
        subprocess.run(["mosquitto_passwd", "-c", "-b", self.passwd, "alice", "s3cret"], check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=h.WAIT)
        acl = self.write("acl", "topic readwrite #\ntopic deny test/nosubscribe\n")
        return self.write("mqttbroker.conf", "per_listener_settings true\n"
                          "listener 0 127.0.0.1\npassword_file %s\n"
                          "listener 0 127.0.0.1\nallow_anonymous true\nacl_file %s\n" % (self.passwd, acl))

    def connack(self, port, credentials):
        c = h.PahoClient(port, connect_now=False, credentials=credentials)
        self._clients.append(c)
        return c.connect(expect_code=None)[1]

    def test_each_listener_checks_with_its_own_files(self):
        (_, guarded, _), (_, open_one, _) = self.listeners(2)
        self.assertEqual(self.connack(guarded, None), 5)  # a password file: anonymous refused
        self.assertEqual(self.connack(guarded, ("alice", "s3cret")), 0)
        self.assertEqual(self.connack(open_one, None), 0)  # allow_anonymous true there
        alice = h.PahoClient(guarded, client_id="on-guarded", credentials=("alice", "s3cret"))
        self._clients.append(alice)
        self.assertEqual(alice.subscribe("test/nosubscribe", 1), [1])  # no ACL on that listener
        anon = h.PahoClient(open_one, client_id="on-open")
        self._clients.append(anon)
        self.assertEqual(anon.subscribe("test/nosubscribe", 1), [0x80])  # its listener's ACL
        self.wait_log(r"access control \(listener 1\): ")


class Metrics(ConfigCase):
    """metrics_listener: Prometheus' text format over HTTP, scraped with curl; the numbers move
    with the traffic."""

    conf = "listener 0 127.0.0.1\nmetrics_listener 127.0.0.1:0\n"

    def scrape(self, path="/metrics"):
        if not shutil.which("curl"):
            h._client_missing("curl (Debian curl)")
        port = int(self.wait_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
        r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "http://127.0.0.1:%d%s" % (port, path)],
                           capture_output=True, text=True, timeout=h.WAIT, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stderr)
        body, _, code = r.stdout.rpartition("\n")
        return int(code), body

    @staticmethod
    def value(body, sample):
        m = re.search(r"(?m)^%s (\S+)$" % re.escape(sample), body)
        if m is None:
            raise AssertionError("no sample %s in:\n%s" % (sample, body))
        return float(m.group(1))

    def test_a_scrape_counts_connections_messages_bytes_and_memory(self):
        code, before = self.scrape()
        self.assertEqual(code, 200)
        self.assertIn("# TYPE mqttbroker_messages_received_total counter", before)
        sub = self.paho("scraped-sub")
        sub.subscribe("metrics/#", 1)
        pub = self.paho("scraped-pub")
        for i in range(5):
            pub.publish("metrics/%d" % i, b"x" * 100, 1)
        for _ in range(5):
            sub.get()
        code, after = self.scrape()
        self.assertEqual(code, 200)
        self.assertEqual(self.value(after, "mqttbroker_connections"), 2)
        self.assertEqual(self.value(after, 'mqttbroker_messages_received_total{qos="1"}')
                         - self.value(before, 'mqttbroker_messages_received_total{qos="1"}'), 5)
        self.assertEqual(self.value(after, 'mqttbroker_messages_sent_total{qos="1"}'), 5)
        self.assertGreater(self.value(after, "mqttbroker_bytes_received_total"), 500)
        self.assertGreater(self.value(after, "mqttbroker_bytes_sent_total"), 500)
        self.assertEqual(self.value(after, "mqttbroker_subscriptions"), 1)
        self.assertGreater(self.value(after, "process_resident_memory_bytes"), 1 << 20)
        self.assertEqual(self.scrape("/")[0], 404)


class Logging(ConfigCase):
    """log_dest file and stderr, log_timestamp (seconds since the epoch, as Mosquitto writes them),
    log_type subscribe beside information, connection_messages false."""

    def make_conf(self):
        self.log_file = os.path.join(self.dir, "broker.log")
        return self.write("mqttbroker.conf", "listener 0 127.0.0.1\nlog_dest file %s\nlog_dest stderr\n"
                          "log_timestamp true\nlog_type information\nlog_type subscribe\n"
                          "connection_messages false\n" % self.log_file)

    def test_the_file_gets_stamped_lines_and_no_connection_messages(self):
        c = self.paho("quiet")
        c.subscribe("logged/#", 1)
        self.wait_log(r"^\d+: \[info\] quiet subscribed to logged/# at QoS 1$")
        c.disconnect()
        self.wait_log(r"\[info\] mqttbroker \S+ listening on")
        deadline = time.monotonic() + h.WAIT
        while True:
            with open(self.log_file) as f:
                text = f.read()
            if "subscribed to logged/#" in text or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.assertRegex(text, r"(?m)^\d+: \[info\] quiet subscribed to logged/# at QoS 1$")
        self.assertRegex(text, r"(?m)^\d+: \[info\] mqttbroker \S+ listening on")
        self.assertNotIn("'quiet' connected", text)
        self.assertNotIn("'quiet' disconnected", text)


class Refused(ConfigCase):
    """What stops the server before it listens: exit status 1, the file and line named."""

    def test_a_misspelled_line(self):
        path = self.write("bad.conf", "# fine so far\nlistener 0 127.0.0.1\nlistner 1884\n")
        status, err = self.run_server("-c", path)
        self.assertEqual(status, 1, err)
        self.assertIn("mqttbroker: %s:3: unknown option 'listner'" % path, err)
        self.assertNotIn("listening on", err)

    def test_an_error_in_an_included_file(self):
        self.write("conf.d/a.conf", "max_inflight_messages 10\n")
        bad = self.write("conf.d/b.conf", "\n\nretain_available maybe\n")
        path = self.write("main.conf", "include_dir %s\n" % os.path.join(self.dir, "conf.d"))
        status, err = self.run_server("-c", path)
        self.assertEqual(status, 1, err)
        self.assertIn("mqttbroker: %s:3: 'retain_available' must be true or false, not 'maybe'" % bad, err)

    def test_an_unsupported_option(self):
        path = self.write("auth.conf", "listener 0 127.0.0.1\npsk_file /etc/mosquitto/psk\n")
        status, err = self.run_server("-c", path)
        self.assertEqual(status, 1, err)
        self.assertIn("mqttbroker: %s:2: 'psk_file' is not supported by mqttbroker" % path, err)

    def test_a_listener_that_cannot_start_names_its_line(self):
        path = self.write("tls.conf", "listener 0 127.0.0.1\n\nlistener 0 127.0.0.1\ncertfile %s\nkeyfile %s\n"
                          % (os.path.join(self.dir, "missing.crt"), cert("server.key")))
        status, err = self.run_server("-c", path)
        self.assertEqual(status, 1, err)
        self.assertRegex(err, r"cannot listen \(tls\) on 127\.0\.0\.1:0 \(%s:3\): .*missing\.crt" % re.escape(path))

    def test_log_dest_topic(self):
        path = self.write("log.conf", "listener 0 127.0.0.1\nlog_dest topic\n")
        status, err = self.run_server("-c", path)
        self.assertEqual(status, 1, err)
        self.assertIn("mqttbroker: %s:2: 'log_dest topic' is not supported by mqttbroker" % path, err)

    def test_a_password_file_that_cannot_be_used(self):
        bad = self.write("passwd", "alice:$7$101$AAAA$AAAA\n")
        path = self.write("auth.conf", "listener 0 127.0.0.1\npassword_file %s\n" % bad)
        status, err = self.run_server("-c", path)
        self.assertEqual(status, 1, err)
        self.assertIn("password file '%s', line 1: not a line of a password file" % bad, err)
        status, err = self.run_server("--bind", "127.0.0.1", "--port", "0", "--password-file", bad + "-x")
        self.assertEqual(status, 1, err)
        self.assertIn("password file '%s-x' cannot be read" % bad, err)

    def test_a_file_that_cannot_be_read(self):
        path = os.path.join(self.dir, "absent.conf")
        status, err = self.run_server("-c", path)
        self.assertEqual(status, 1, err)
        self.assertIn("mqttbroker: %s: cannot open" % path, err)


if __name__ == "__main__":
    h.main()
