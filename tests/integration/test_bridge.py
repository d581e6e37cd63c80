"""The server's bridges (`connection` sections of -c FILE) to Debian's mosquitto as the remote:
topics out and in with prefixes, over 3.1.1 (try_private) and 5.0, mosquitto_pub and
mosquitto_sub on both sides; the notification topic; a remote that refuses the login, logged and
retried without harm to the server. Each test starts its own mosquitto on a free port."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness as h


def mosquitto_binary():
    for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto"):
        if os.access(p, os.X_OK):
            return p
    h._client_missing("mosquitto (Debian mosquitto)")


class Mosquitto:
    """Debian's mosquitto on 127.0.0.1 and a free port, with `extra` configuration lines."""

    def __init__(self, folder, extra="", port=None):
        self.port = port or h.free_port()
        conf = os.path.join(folder, "remote.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\nlog_dest none\n%s" % (self.port, extra))
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=h._die_with_parent)
        deadline = time.monotonic() + h.WAIT
        while True:
            try:
                h.socket.create_connection((h.HOST, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError("mosquitto did not start on port %d" % self.port)
                time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=h.WAIT)


class BridgeCase(h.BrokerTestCase):
    """setUp starts the remote (remote_conf lines), then the server with a file whose bridge lines
    are bridge_conf, {port} filled in with the remote's."""

    remote_conf = ""
    bridge_conf = ""

    def setUp(self):
        h.require_mosquitto_clients()
        self.dir = tempfile.mkdtemp(prefix="mqttbroker-it-bridge-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.remote = Mosquitto(self.dir, self.remote_conf)
        self.addCleanup(self.remote.stop)
        path = os.path.join(self.dir, "mqttbroker.conf")
        with open(path, "w") as f:
            f.write(self.bridge_conf.format(port=self.remote.port))
        self.broker_args = ("-c", path)
        super().setUp()


class OutAndIn(BridgeCase):
    bridge_conf = ("connection cloud\n"
                   "address 127.0.0.1:{port}\n"
                   "remote_clientid gw-it\n"
                   "topic # out 1 gw/ site/gw/\n"
                   "topic # in 1 cmd/ site/cmd/\n"
                   "restart_timeout 1 2\n")

    def check_both_ways(self):
        self.wait_log(r"bridge cloud: connected to the remote")
        # The bridge says "1" (retained) on the remote once connected: then its subscription is in place.
        state = h.MosquittoSub(self.remote.port, "$SYS/broker/connection/gw-it/state", count=1)
        self.assertEqual(state.get()[1:], (1, "$SYS/broker/connection/gw-it/state", "1"))
        state.close()
        up = h.MosquittoSub(self.remote.port, "site/gw/#", qos=1, count=2)
        h.mosquitto_pub(self.port, "gw/temp", "21.5", qos=1)
        h.mosquitto_pub(self.port, "other/temp", "not bridged", qos=1)
        h.mosquitto_pub(self.port, "gw/kept", "k", qos=1, retain=True)
        self.assertEqual(up.get(), (1, 0, "site/gw/temp", "21.5"))
        self.assertEqual(up.get()[2:], ("site/gw/kept", "k"))
        up.close()
        down = h.MosquittoSub(self.port, "cmd/#", qos=1, count=1)
        h.mosquitto_pub(self.remote.port, "site/cmd/reboot", "now", qos=1)
        self.assertEqual(down.get(), (1, 0, "cmd/reboot", "now"))
        down.close()
        # Locally the state topic is retained too.
        local_state = h.MosquittoSub(self.port, "$SYS/broker/connection/gw-it/state", count=1)
        self.assertEqual(local_state.get()[1:], (1, "$SYS/broker/connection/gw-it/state", "1"))
        local_state.close()

    def test_mqtt311_try_private(self):
        self.check_both_ways()


class OutAndIn5(OutAndIn):
    bridge_conf = OutAndIn.bridge_conf + "bridge_protocol_version mqttv50\n"

    def test_mqtt5(self):
        self.check_both_ways()

    test_mqtt311_try_private = None


class RefusedLogin(BridgeCase):
    remote_conf = "allow_anonymous false\n"
    bridge_conf = ("connection locked\n"
                   "address 127.0.0.1:{port}\n"
                   "remote_username gateway\n"
                   "remote_password wrong\n"
                   "topic # out 1\n"
                   "restart_timeout 1\n")

    def test_refused_login_is_logged_and_retried(self):
        """The remote's CONNACK refusal is logged each time, the bridge tries again, and the server
        goes on serving its own clients meanwhile."""
        deadline = time.monotonic() + h.WAIT
        while True:
            refusals = [l for l in self.broker.all_lines()
                        if "bridge locked: the remote refused the connection: not authorized" in l]
            if len(refusals) >= 2:
                break
            self.assertLess(time.monotonic(), deadline, "fewer than 2 refusals logged:\n" + self.broker.log())
            time.sleep(0.05)
        sub = h.MosquittoSub(self.port, "local/#", count=1)
        h.mosquitto_pub(self.port, "local/x", "still serving")
        self.assertEqual(sub.get()[2:], ("local/x", "still serving"))
        sub.close()


class OverTls(BridgeCase):
    """bridge_cafile, bridge_certfile and bridge_keyfile against a mosquitto TLS listener that
    requires a client certificate."""

    def setUp(self):
        if os.environ.get("MQTTBROKER_IT_TLS") != "1":
            self.skipTest("the server was built without TLS")
        self.certs = h.make_certificates("mqttbroker-it-bridge-certs-")
        self.addCleanup(shutil.rmtree, self.certs, True)
        # mosquitto drops to its own user before it reads them: a copy it can read.
        readable = tempfile.mkdtemp(prefix="mqttbroker-it-bridge-remote-")
        self.addCleanup(shutil.rmtree, readable, True)
        os.chmod(readable, 0o755)
        for name in ("ca.crt", "server-chain.crt", "server.key"):
            shutil.copy(os.path.join(self.certs, name), readable)
            os.chmod(os.path.join(readable, name), 0o644)
        self.tls_port = h.free_port()
        self.remote_conf = ("listener {port} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server-chain.crt\n"
                            "keyfile {d}/server.key\nrequire_certificate true\n").format(port=self.tls_port, d=readable)
        self.bridge_conf = ("connection secure\n"
                            "address 127.0.0.1:%d\n"
                            "topic # out 1 gw/ site/\n"
                            "bridge_cafile %s\n"
                            "bridge_certfile %s\n"
                            "bridge_keyfile %s\n"
                            "restart_timeout 1\n") % (self.tls_port, os.path.join(self.certs, "ca.crt"),
                                                       os.path.join(self.certs, "alice.crt"),
                                                       os.path.join(self.certs, "alice.key"))
        super().setUp()

    def test_client_certificate(self):
        self.wait_log(r"bridge secure: connected to the remote")
        up = h.MosquittoSub(self.remote.port, "site/#", qos=1, count=1)  # the remote's plain listener
        h.mosquitto_pub(self.port, "gw/x", "sealed", qos=1)
        self.assertEqual(up.get(), (1, 0, "site/x", "sealed"))
        up.close()


class Persistence(h.BrokerTestCase):
    """With persistence true a bridge's queue is the store's: messages published while the remote
    is down survive a restart of the server and reach the remote once it is up, in order."""

    def setUp(self):
        if os.environ.get("MQTTBROKER_IT_SQLITE") != "1":
            self.skipTest("the server was built without SQLite")
        h.require_mosquitto_clients()
        self.dir = tempfile.mkdtemp(prefix="mqttbroker-it-bridge-store-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.remote_port = h.free_port()
        # Anonymous clients may only write: the bridge's own session (which reads q/#) is not
        # bound by the file.
        acl = os.path.join(self.dir, "acl")
        with open(acl, "w") as f:
            f.write("topic write q/#\n")
        path = os.path.join(self.dir, "mqttbroker.conf")
        with open(path, "w") as f:
            f.write("persistence true\npersistence_location %s\nacl_file %s\nlog_type information\nlog_type subscribe\n"
                    "connection cloud\naddress 127.0.0.1:%d\ntopic q/# out 1\nrestart_timeout 1\n"
                    % (self.dir, acl, self.remote_port))
        self.broker_args = ("-c", path)
        super().setUp()

    def test_queue_survives_a_restart(self):
        # The bridge's session subscribes once the server runs; what is published before that has
        # no subscriber to be kept for (after a restart the stored session has its filter at once).
        self.wait_log(r"subscribed to q/# at QoS 1")
        for i in range(20):
            h.mosquitto_pub(self.port, "q/seq", str(i), qos=1)
        # The server goes down with the messages owed to the unreachable remote in its store.
        self.assertEqual(self.broker.stop(), 0, self.broker.log())
        remote = Mosquitto(self.dir, port=self.remote_port)
        self.addCleanup(remote.stop)
        sub = h.MosquittoSub(remote.port, "q/#", qos=1, count=20)
        self.broker = h.start_broker(self.broker_args)
        self.port = self.broker.port
        got = [sub.get()[3] for _ in range(20)]
        self.assertEqual(got, [str(i) for i in range(20)])
        sub.close()


if __name__ == "__main__":
    h.main()
