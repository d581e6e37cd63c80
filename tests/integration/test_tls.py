"""TLS (transport::tls) with real clients: mosquitto_pub/mosquitto_sub with --cafile (and --cert/--key
for mutual TLS), paho-mqtt with tls_set, Python's ssl module; certificates from another CA and
expired ones refused; use_identity_as_username deciding who may publish (--allow-publish); plain
TCP, a stalled ClientHello and garbage on the TLS port closed on time while other clients work;
certificates reloaded on SIGHUP without dropping connections. The certificates are made at run
time by tests/tls/make-certs.sh (openssl command line) into a temporary folder.

TLS itself is informative for MQTT (5.0 section 5.4.9, 3.1.1 section 5): no normative statement
is tested here."""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import harness as h
from harness import V311, V5

cert = h.Certificates("mqttbroker-it-tls-")  # cert("ca.crt"): a certificate's path, made for the module
setUpModule = cert.make
tearDownModule = cert.remove


TLS_LISTENING = re.compile(r"TLS listening on [0-9.]+:(\d+)")


class TlsPaho(h.PahoClient):
    """A paho client with tls_set: the test root CA, and a client certificate if named."""

    def __init__(self, port, client_id="", version=V311, certificate=None, **kw):
        self.certificate = certificate
        super().__init__(port, client_id, version, **kw)

    def _make_client(self):
        super()._make_client()
        kw = {}
        if self.certificate:
            kw = dict(certfile=cert(self.certificate + ".crt"), keyfile=cert(self.certificate + ".key"))
        self.client.tls_set(ca_certs=cert("ca.crt"), tls_version=ssl.PROTOCOL_TLS_CLIENT, **kw)


def mosquitto_args(certificate=None):
    args = ["--cafile", cert("ca.crt")]
    if certificate:
        args += ["--cert", cert(certificate + ".crt"), "--key", cert(certificate + ".key")]
    return args


def mosquitto_pub(port, topic, payload, certificate=None, extra=()):
    """mosquitto_pub over TLS: its CompletedProcess (not checked)."""
    h.require_mosquitto_clients()
    args = ["mosquitto_pub", "-h", h.HOST, "-p", str(port), "-t", topic, "-m", payload, "-q", "1",
            *mosquitto_args(certificate), *extra]
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=h.WAIT)


class TlsCase(h.BrokerTestCase):
    tls_args = ()

    @classmethod
    def setUpClass(cls):
        cls.broker_args = ("--certfile", cert("server-chain.crt"), "--keyfile", cert("server.key"),
                           "--tls-port", "0", "--log-level", "debug", *cls.tls_args)

    def setUp(self):
        super().setUp()
        self.tls_port = self.wait_log(TLS_LISTENING).group(1)
        self.tls_port = int(self.tls_port)

    def tls_paho(self, client_id="", version=V311, certificate=None, **kw):
        c = TlsPaho(self.tls_port, client_id, version, certificate, **kw)
        self._clients.append(c)
        return c

    def server_name(self):
        """The CN of the certificate the TLS listener presents now, seen by Python's ssl module."""
        ctx = ssl.create_default_context(cafile=cert("ca.crt"))
        with socket.create_connection((h.HOST, self.tls_port), timeout=h.WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname=h.HOST) as s:
                subject = dict(x[0] for x in s.getpeercert()["subject"])
                return subject["commonName"]

    def assert_closed_within(self, sock, seconds):
        """Reads until the broker closes `sock`; fails if that takes longer than `seconds`."""
        start = time.monotonic()
        sock.settimeout(seconds + 1)
        try:
            while sock.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
        took = time.monotonic() - start
        self.assertLess(took, seconds, "the broker took %.2f s to close the connection" % took)
        return took


class ServerTls(TlsCase):
    """A TLS listener with a server certificate and its intermediate, beside the plain one."""

    tls_args = ("--connect-timeout-ms", "1000")

    def test_mosquitto_clients_over_tls_and_a_plain_subscriber(self):
        """mosquitto_sub and mosquitto_pub with --cafile verify the chain and exchange a message over
        TLS; a plain TCP subscriber of the same broker gets it too (one session table)."""
        sub = h.MosquittoSub(self.tls_port, "tls/+", qos=1, extra=mosquitto_args())
        self._clients.append(sub)
        plain = self.paho("plain-sub")
        self.assertEqual(plain.subscribe("tls/+", 1), [1])
        r = mosquitto_pub(self.tls_port, "tls/one", "over tls")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(sub.get(), (1, 0, "tls/one", "over tls"))
        m = plain.get()
        self.assertEqual((m.topic, m.payload), ("tls/one", b"over tls"))

    def test_paho_tls_set_v5_qos1_both_ways(self):
        """paho-mqtt 5.0 clients with tls_set: QoS 1 both ways, the server's name verified."""
        self.assertEqual(self.server_name(), "mqttbroker test server")
        a = self.tls_paho("tls-a", V5)
        b = self.tls_paho("tls-b", V5)
        self.assertEqual(a.subscribe("p/a", 1), [1])
        self.assertEqual(b.subscribe("p/b", 1), [1])
        a.publish("p/b", b"to b", 1)
        b.publish("p/a", b"to a", 1)
        self.assertEqual(b.get().payload, b"to b")
        self.assertEqual(a.get().payload, b"to a")

    def test_plain_mqtt_on_the_tls_port_is_closed_at_once(self):
        """A plain-TCP MQTT CONNECT on the TLS port is not a handshake: closed at once, long before
        the CONNECT timeout."""
        with socket.create_connection((h.HOST, self.tls_port), timeout=h.WAIT) as s:
            s.sendall(h.connect("plain-on-tls"))
            self.assert_closed_within(s, 0.9)
        self.wait_log(re.compile(r"transport handshake failed"))

    def test_garbage_and_stalled_hello_closed_while_others_work(self):
        """Garbage instead of a handshake is closed at once; a ClientHello that never completes is
        closed at the CONNECT timeout (1 s here); a TLS client works all the while."""
        good = self.tls_paho("good")
        self.assertEqual(good.subscribe("g", 0), [0])
        stalled = socket.create_connection((h.HOST, self.tls_port), timeout=h.WAIT)
        self.addCleanup(stalled.close)
        stalled.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]))  # a record header, and then nothing
        stalled_at = time.monotonic()
        with socket.create_connection((h.HOST, self.tls_port), timeout=h.WAIT) as g:
            g.sendall(os.urandom(64 * 1024))
            self.assert_closed_within(g, 0.9)
        good.publish("g", b"still served")
        self.assertEqual(good.get().payload, b"still served")
        self.assert_closed_within(stalled, 3.0)
        self.assertGreater(time.monotonic() - stalled_at, 0.9, "closed before the CONNECT timeout")


class MutualTls(TlsCase):
    """Mutual TLS: client certificates from the test root CA required, their CN the username, and
    only the username alice may publish."""

    tls_args = ("--cafile", None, "--require-certificate", "--use-identity-as-username",
                "--allow-publish", "alice")

    @classmethod
    def setUpClass(cls):
        cls.tls_args = tuple(cert("ca.crt") if a is None else a for a in MutualTls.tls_args)
        super().setUpClass()

    def test_identity_as_username_decides_who_publishes(self):
        """alice's certificate may publish (whatever username her CONNECT claims), bob's may not,
        even claiming to be alice: the subscriber gets alice's message only. The broker's log shows
        each client's username and certificate."""
        sub = self.tls_paho("watcher", certificate="alice")
        self.assertEqual(sub.subscribe("acl/#", 0), [0])
        r = mosquitto_pub(self.tls_port, "acl/bob", "from bob", "bob", extra=("-u", "alice", "-i", "bob-pub"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = mosquitto_pub(self.tls_port, "acl/alice", "from alice", "alice", extra=("-u", "mallory", "-i", "alice-pub"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        m = sub.get()
        self.assertEqual((m.topic, m.payload), ("acl/alice", b"from alice"))
        sub.assert_nothing(0.3)
        self.wait_log(re.compile(r"alice-pub is .* username alice, certificate alice"))
        self.wait_log(re.compile(r"bob-pub is .* username bob, certificate bob"))
        self.wait_log(re.compile(r"bob-pub \(username bob\) may not publish to acl/bob"))

    def test_certificates_refused(self):
        """No certificate, one signed by another CA (even with CN alice), an expired one: each
        refused at the handshake (mosquitto_pub fails); alice's own still works afterwards."""
        for certificate in (None, "rogue", "expired"):
            r = mosquitto_pub(self.tls_port, "acl/x", "refused", certificate)
            self.assertNotEqual(r.returncode, 0, "%s: %s%s" % (certificate, r.stdout, r.stderr))
        deadline = time.monotonic() + h.WAIT
        while sum("transport handshake failed" in l for l in self.broker.all_lines()) < 3:
            self.assertLess(time.monotonic(), deadline, "not three handshake failures; log:\n" + self.broker.log())
            time.sleep(0.02)
        ok = self.tls_paho("alice-ok", V5, certificate="alice")
        self.assertEqual(ok.subscribe("acl/#", 1), [1])


class Reload(TlsCase):
    """SIGHUP reads the certificate files again: new connections get the new certificate, open
    ones stay."""

    def setUp(self):
        self.live = tempfile.mkdtemp(prefix="mqttbroker-it-live-")
        self.addCleanup(shutil.rmtree, self.live, True)
        shutil.copy(cert("server-chain.crt"), os.path.join(self.live, "chain.pem"))
        shutil.copy(cert("server.key"), os.path.join(self.live, "key.pem"))
        self.broker_args = ("--certfile", os.path.join(self.live, "chain.pem"),
                            "--keyfile", os.path.join(self.live, "key.pem"), "--tls-port", "0", "--log-level", "debug")
        super().setUp()

    def test_sighup_reloads_without_dropping(self):
        old = self.tls_paho("old", V5)
        self.assertEqual(old.subscribe("r", 1), [1])
        self.assertEqual(self.server_name(), "mqttbroker test server")
        shutil.copy(cert("server2-chain.crt"), os.path.join(self.live, "chain.pem"))
        shutil.copy(cert("server2.key"), os.path.join(self.live, "key.pem"))
        self.broker.proc.send_signal(signal.SIGHUP)
        self.wait_log(re.compile(r"SIGHUP: TLS certificates of listener \d+ reloaded"))
        self.assertEqual(self.server_name(), "mqttbroker test server 2")
        new = self.tls_paho("new", V5)
        new.publish("r", b"after reload", 1)
        self.assertEqual(old.get().payload, b"after reload")  # the old connection was kept
        # A broken reload keeps the certificate that works.
        os.remove(os.path.join(self.live, "key.pem"))
        self.broker.proc.send_signal(signal.SIGHUP)
        self.wait_log(re.compile(r"not reloaded, the old ones stay: .*key\.pem"))
        self.assertEqual(self.server_name(), "mqttbroker test server 2")


if __name__ == "__main__":
    h.main()
