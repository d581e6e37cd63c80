"""Integration test harness: the standalone broker as a child process, paho and mosquitto clients,
and a raw-socket MQTT client for the cases a well-behaved library refuses to produce.

Standard library and paho-mqtt 1.6.1 only. Every wait has a deadline: tests wait for events (10 s
by default) and never sleep and assume; only absence checks wait a fixed, short time.
"""

import faulthandler
import os
import queue
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import results

# In CI (scripts/test.sh exports this when CI is set) a missing client fails the tests; elsewhere
# it skips them, visibly: counted and named in the module's summary and in ctest's "Skipped".
REQUIRE_CLIENTS = os.environ.get("MQTTBROKER_REQUIRE_CLIENTS", "") not in ("", "0")
SKIP_STATUS = results.SKIP_STATUS


def _module_key():
    """The ctest name of the running module: integration_<module>, with _mt on two threads."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or "unknown"
    name = os.path.splitext(os.path.basename(main_file))[0]
    name = name[len("test_"):] if name.startswith("test_") else name
    return "integration_" + name + ("_mt" if os.environ.get("MQTTBROKER_IT_THREADS") else "")


def _record(ran, passed, skipped, failed):
    """Prints the module's counts and writes them for scripts/test.sh's summary (results.py)."""
    results.record(_module_key(), ran, passed, skipped, failed)


def _client_missing(what):
    """A client the tests need is not installed: a failure in CI, a skip elsewhere."""
    if REQUIRE_CLIENTS:
        raise AssertionError("%s is not installed, and MQTTBROKER_REQUIRE_CLIENTS is set (CI): "
                             "run scripts/install-deps.sh" % what)
    raise unittest.SkipTest("%s not installed" % what)


try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:
    # Every module drives paho clients: none of its tests can run.
    what = "paho-mqtt (Debian python3-paho-mqtt) for %s" % sys.executable
    if REQUIRE_CLIENTS:
        print("FAILED: %s is not installed (%s), and MQTTBROKER_REQUIRE_CLIENTS is set (CI)" % (what, e))
        _record(0, 0, [], 1)
        sys.exit(1)
    _record(0, 0, [("*", what + " not installed")], 0)
    sys.exit(SKIP_STATUS)

HOST = "127.0.0.1"
WAIT = 10.0      # how long a test waits for something that must happen
ABSENT = 1.0     # how long a test waits for something that must not happen
TEST_DEADLINE = 90  # a test that runs longer dumps its stacks and the process exits

V311 = 4
V5 = 5

# Packet types (high nibble of the first byte).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15


def broker_binary():
    path = os.environ.get("MQTTBROKER_SERVER")
    if not path:
        raise RuntimeError("MQTTBROKER_SERVER is not set (ctest sets it to the mqttbroker executable)")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"broker executable {path} is missing: build the mqttbroker_server target")
    return path


# What a sanitizer runtime writes to stderr when it reports (ASan, LSan, UBSan, TSan, MSan).
SANITIZER_REPORT = re.compile(r"(ERROR|WARNING): \w*Sanitizer|SUMMARY: \w*Sanitizer|: runtime error: ")


def sanitizer_report(lines):
    """The lines from the first sanitizer report on in a program's output, or None."""
    for i, line in enumerate(lines):
        if SANITIZER_REPORT.search(line):
            return "\n".join(lines[i:i + 60])
    return None


def assert_no_sanitizer_report(test, lines, what):
    """Fails `test` when `what`'s output (a list of lines, or one string) holds a sanitizer report:
    the exit status alone misses a report that does not end the program."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    report = sanitizer_report(lines)
    if report:
        test.fail("%s reported a sanitizer error:\n%s" % (what, report))


def _die_with_parent():
    """In the child before exec: SIGKILL when the test process dies, so a test that is killed (its
    deadline, ctest's TIMEOUT) leaves no broker or client behind. Linux prctl(PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))
    except Exception:
        pass


def _spawn_with_lines(args, stdbuf):
    """`args` as a child process with stdout and stderr on one descriptor that the caller reads
    line by line: (process, read end). A line must arrive when it is printed, so the child's
    stdio has to be line-buffered: through `stdbuf -oL -eL` and a pipe when `stdbuf`, else
    through a pseudo-terminal. A pipe keeps everything written before the child exits; a Linux
    pty may answer EIO while the last lines are still buffered (seen once: mosquitto_sub's last
    lines, its message among them, lost after -C 1). stdbuf preloads a library, which a program
    built with AddressSanitizer refuses, so our own programs keep the pty."""
    if stdbuf:
        read_end, write_end = os.pipe()
        args = ["stdbuf", "-oL", "-eL", *args]
    else:
        read_end, write_end = os.openpty()
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end,
                                preexec_fn=_die_with_parent)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return proc, read_end


MAKE_CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tls", "make-certs.sh")


def make_certificates(prefix):
    """Makes the test certificates (tests/tls/make-certs.sh lists them; the openssl command line)
    in a new temporary folder named from `prefix`, and returns it: the caller removes it. Without
    openssl: a skip, or a failure in CI."""
    if not shutil.which("openssl"):
        _client_missing("the openssl command line (Debian openssl)")
    folder = tempfile.mkdtemp(prefix=prefix)
    subprocess.run(["sh", MAKE_CERTS, folder], check=True, timeout=60)
    return folder


class Certificates:
    """A module's test certificates: `cert = h.Certificates("prefix-")`, then `setUpModule =
    cert.make`, `tearDownModule = cert.remove`, and `cert("ca.crt")` is a file's path."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.folder = None

    def make(self):
        self.folder = make_certificates(self.prefix)

    def remove(self):
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __call__(self, name):
        return os.path.join(self.folder, name)


def raise_fd_limit(wanted):
    """Raises the soft limit on open files to `wanted` (children inherit it); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


# ---------------------------------------------------------------------------------------------
# The broker process


class Broker:
    """The mqttbroker executable on 127.0.0.1 and a port the kernel picks (--port 0); the port is
    read from its "mqttbroker X.Y.Z listening on ADDR:PORT" log line, those of its other listeners
    (TLS, WebSocket) from theirs, into `ports`. Its stderr is kept for failure reports."""

    # examples/broker/main.cpp logs its other listeners first ("TLS listening on ADDR:PORT",
    # "WebSocket listening on ws://ADDR:PORT/PATH", wss:// likewise), then this line once it is ready.
    LISTENING = re.compile(r"mqttbroker \S+ listening on ([0-9.]+):(\d+)")
    LISTENERS = (("tls", re.compile(r"TLS listening on [0-9.]+:(\d+)")),
                 ("ws", re.compile(r"WebSocket listening on ws://[0-9.]+:(\d+)")),
                 ("wss", re.compile(r"WebSocket listening on wss://[0-9.]+:(\d+)")))

    def __init__(self, *args, env=None, binary=None):
        self.args = [binary or broker_binary(), "--bind", HOST, "--port", "0", *args]
        threads = os.environ.get("MQTTBROKER_IT_THREADS")  # run a whole module on N threads
        if threads and "--threads" not in args:
            self.args += ["--threads", threads]
        self.lines = []
        self.ports = {}  # "tcp", "tls", "ws", "wss": the port each listener logged
        self._lock = threading.Lock()
        self._port = queue.Queue()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace",
                                     env=dict(os.environ, **env) if env else None, preexec_fn=_die_with_parent)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            self.port = self._port.get(timeout=WAIT)
        except queue.Empty:
            self.kill()
            raise RuntimeError("broker did not log its port within %.0f s; log:\n%s" % (WAIT, self.log()))
        if self.port is None:
            raise RuntimeError("broker exited before listening (%s); log:\n%s" % (self.proc.poll(), self.log()))

    def _read_log(self):
        told = False
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
            if not told:
                for kind, rx in self.LISTENERS:
                    m = rx.search(line)
                    if m and kind not in self.ports:
                        self.ports[kind] = int(m.group(1))
                m = self.LISTENING.search(line)
                if m:
                    told = True
                    self.ports["tcp"] = int(m.group(2))
                    self._port.put(int(m.group(2)))
        if not told:
            self._port.put(None)

    def log(self):
        with self._lock:
            return "\n".join(self.lines[-200:])

    def port_of(self, kind):
        """The port of listener `kind` ("tcp", "tls", "ws", "wss"), all logged before the broker
        says it is listening."""
        if kind not in self.ports:
            raise AssertionError("the broker logged no %s listener; log:\n%s" % (kind, self.log()))
        return self.ports[kind]

    def all_lines(self):
        with self._lock:
            return list(self.lines)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM and wait: returns the exit status, or None when it had to be killed."""
        if not self.alive():
            self._close_log()
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self._close_log()
        return status

    def kill(self):
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=WAIT)
        self._close_log()

    def _close_log(self):
        self._reader.join(timeout=WAIT)  # it ends at the pipe's end of file, after the exit
        if not self._reader.is_alive():
            self.proc.stderr.close()


# An argument of broker_args that becomes a port free a moment before (free_port()), for options
# where 0 means "no listener" (--ws-port, --wss-port). Another process may take it meanwhile: then
# the broker cannot listen and exits, and start_broker() tries again with other ports.
FREE = object()
START_ATTEMPTS = 5


def start_broker(args, env=None):
    """A Broker with `args`, each FREE among them replaced by a free port."""
    for attempt in range(1, START_ATTEMPTS + 1):
        argv = [str(free_port()) if a is FREE else a for a in args]
        try:
            return Broker(*argv, env=env)
        except RuntimeError as e:
            if not any(a is FREE for a in args) or attempt == START_ATTEMPTS or \
                    not re.search(r"cannot listen.*in use", str(e)):
                raise


class BrokerTestCase(unittest.TestCase):
    """Each test gets a fresh broker (started with `broker_args`, its environment plus `broker_env`)
    and a hard deadline. Clients made with paho() and raw() are closed after the test; the broker
    must still be running then (a crash fails the test) and must stop cleanly on SIGTERM."""

    broker_args = ()
    broker_env = {}  # added to the broker's environment

    def setUp(self):
        self._started_at = time.monotonic()
        faulthandler.dump_traceback_later(TEST_DEADLINE, exit=True)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)
        self.broker = start_broker(self.broker_args, env=self.broker_env)
        self.port = self.broker.port
        self._clients = []
        self.addCleanup(self._finish)

    def _finish(self):
        sys.stderr.write("[%.2f s] " % (time.monotonic() - self._started_at))
        for c in reversed(self._clients):
            try:
                c.close()
            except Exception:
                pass
        crashed = not self.broker.alive()
        status = self.broker.stop()
        # Its whole stderr, the sanitizers' reports at exit (leaks) included.
        assert_no_sanitizer_report(self, self.broker.all_lines(), "the broker")
        if crashed:
            self.fail("the broker died during the test (status %s); log:\n%s" % (status, self.broker.log()))
        if status != 0:
            self.fail("the broker did not stop cleanly on SIGTERM (status %s); log:\n%s" % (status, self.broker.log()))

    def wait_log(self, pattern, timeout=WAIT):
        """The match of `pattern` (a regular expression, compiled or not) in the broker's first log
        line it matches; fails after `timeout`."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            for line in self.broker.all_lines():
                m = rx.search(line)
                if m:
                    return m
            if time.monotonic() > deadline:
                self.fail("no log line matching %r within %.0f s; log:\n%s" % (rx.pattern, timeout, self.broker.log()))
            time.sleep(0.02)

    def paho(self, client_id="", version=V311, **kw):
        c = PahoClient(self.port, client_id, version, **kw)
        self._clients.append(c)
        return c

    def raw(self, **kw):
        c = RawClient(self.port, **kw)
        self._clients.append(c)
        return c

    def raw_connected(self, client_id, version=V311, **kw):
        """A raw client that sent CONNECT and got CONNACK 0; returns it and the CONNACK."""
        c = self.raw()
        c.send(connect(client_id, version=version, **kw))
        ack = c.expect(CONNACK)
        ack = parse_connack(ack, version)
        self.assertEqual(ack.code, 0, "CONNACK refused %s" % client_id)
        return c, ack


# ---------------------------------------------------------------------------------------------
# The example programs (examples/embed, examples/gateway)


def example_binary(variable):
    """The executable named by environment variable `variable` (ctest sets MQTTBROKER_EMBED and
    MQTTBROKER_GATEWAY)."""
    path = os.environ.get(variable)
    if not path:
        raise RuntimeError("%s is not set (ctest sets it to the example's executable)" % variable)
    if not os.access(path, os.X_OK):
        raise RuntimeError("example executable %s is missing: build the examples" % path)
    return path


def free_port(kind=socket.SOCK_STREAM):
    """A 127.0.0.1 port that is free now: the kernel's pick for port 0, released again. Only for
    programs that take a fixed port; another process may take it first, so callers retry."""
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


class Program:
    """A program as a child process whose stdout and stderr are collected as lines, each when it
    is printed (see _spawn_with_lines; `stdbuf` for programs not built here)."""

    def __init__(self, args, stdbuf=False):
        self.args = [str(a) for a in args]
        self.proc, self._master = _spawn_with_lines(self.args, stdbuf)
        self._lock = threading.Lock()
        self._new_line = threading.Condition(self._lock)
        self.lines = []
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        pending = b""
        while True:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO: the child closed its pseudo-terminal
                data = b""
            if not data:
                break
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                with self._lock:
                    self.lines.append(line.rstrip(b"\r").decode(errors="replace"))
                    self._new_line.notify_all()
        os.close(self._master)
        with self._lock:
            if pending:
                self.lines.append(pending.decode(errors="replace"))
            self._ended = True
            self._new_line.notify_all()

    def wait_line(self, pattern, timeout=WAIT):
        """The match of regular expression `pattern` in the first output line it matches; fails
        after `timeout` or when the program's output ends first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._lock:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    why = "its output ended (status %s)" % self.proc.poll() if self._ended else \
                        "%.0f s passed" % timeout
                    raise AssertionError("%s: no line matching %r before %s; output:\n%s"
                                         % (os.path.basename(self.args[0]), pattern, why,
                                            "\n".join(self.lines[-200:])))
                self._new_line.wait(left)

    def output(self):
        with self._lock:
            return "\n".join(self.lines[-200:])

    def all_lines(self):
        with self._lock:
            return list(self.lines)

    def alive(self):
        return self.proc.poll() is None

    def terminate(self, timeout=WAIT):
        """SIGTERM and wait: returns (exit status, seconds it took), or (None, timeout) when the
        program had to be killed."""
        start = time.monotonic()
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None, timeout
        took = time.monotonic() - start
        self._reader.join(timeout=WAIT)
        return status, took

    def kill(self):
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)


# ---------------------------------------------------------------------------------------------
# paho


class Message:
    def __init__(self, topic, payload, qos, retain, dup=False, properties=None):
        self.topic, self.payload, self.qos, self.retain, self.dup = topic, payload, qos, retain, dup
        self.properties = properties

    def __repr__(self):
        return "Message(%r, %r, qos=%d, retain=%d)" % (self.topic, self.payload, self.qos, self.retain)


class PahoClient:
    """A paho client on its own network thread; messages land in a thread-safe queue and the
    acknowledgements the test waits for are events."""

    def __init__(self, port, client_id="", version=V311, clean=True, keepalive=60, will=None,
                 session_expiry=None, connect_now=True, connect_properties=None, credentials=None):
        self.port = port
        self.credentials = credentials  # (username, password), or None
        self.version = version
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.unsubacks = queue.Queue()
        self.disconnected = threading.Event()
        self.disconnect_rc = None
        self.disconnect_properties = None  # 5.0: those of the server's DISCONNECT, if it sent one
        self.client_id = client_id
        self.clean = clean
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.connect_properties = connect_properties or {}  # 5.0: paho Properties attribute -> value
        self.will = will
        self._make_client()
        self._started = False
        if connect_now:
            self.connect()

    def _make_client(self):
        proto = mqtt.MQTTv5 if self.version == V5 else mqtt.MQTTv311
        if self.version == V5:
            self.client = mqtt.Client(client_id=self.client_id, protocol=proto, reconnect_on_failure=False)
        else:
            self.client = mqtt.Client(client_id=self.client_id, clean_session=self.clean, protocol=proto,
                                      reconnect_on_failure=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_unsubscribe = self._on_unsubscribe
        if self.will:
            self.client.will_set(*self.will)
        if self.credentials:
            self.client.username_pw_set(*self.credentials)

    # callbacks, on paho's thread
    def _on_connect(self, client, userdata, flags, rc, properties=None):
        code = rc.value if hasattr(rc, "value") else rc
        self.connacks.put((flags.get("session present", 0), code, properties))

    def _on_message(self, client, userdata, msg):
        self.messages.put(Message(msg.topic, msg.payload, msg.qos, int(msg.retain), bool(msg.dup),
                                  getattr(msg, "properties", None)))

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        self.subacks.put((mid, [g.value if hasattr(g, "value") else g for g in granted]))

    def _on_unsubscribe(self, client, userdata, mid, *rest):
        self.unsubacks.put(mid)

    def _on_disconnect(self, client, userdata, rc, properties=None):
        self.disconnect_rc = rc.value if hasattr(rc, "value") else rc
        self.disconnect_properties = properties
        self.disconnected.set()

    def connect(self, expect_code=0):
        """Connects and waits for CONNACK; returns (session_present, code, properties)."""
        self.disconnected.clear()
        if self.version == V5:
            props = None
            if self.session_expiry is not None or self.connect_properties:
                props = Properties(PacketTypes.CONNECT)
                if self.session_expiry is not None:
                    props.SessionExpiryInterval = self.session_expiry
                for name, value in self.connect_properties.items():
                    setattr(props, name, value)
            self.client.connect(HOST, self.port, self.keepalive, clean_start=self.clean, properties=props)
        else:
            self.client.connect(HOST, self.port, self.keepalive)
        if not self._started:
            self.client.loop_start()
            self._started = True
        try:
            ack = self.connacks.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no CONNACK within %.0f s" % WAIT)
        if expect_code is not None and ack[1] != expect_code:
            raise AssertionError("CONNACK code %r, expected %r" % (ack[1], expect_code))
        return ack

    def reconnect(self):
        """After disconnect(): a new connection with the same client id and options (a fresh paho
        client object: paho leaks a socket pair when one object's loop is started twice)."""
        self.close()
        self._make_client()
        return self.connect()

    def subscribe(self, topic, qos=0, options=None):
        """Subscribes and waits for SUBACK; returns the granted QoS (or reason code) list."""
        if options is not None:
            rc, mid = self.client.subscribe(topic, options=options)
        else:
            rc, mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError("subscribe failed locally: %s" % rc)
        try:
            got_mid, granted = self.subacks.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no SUBACK for %r within %.0f s" % (topic, WAIT))
        assert got_mid == mid, (got_mid, mid)
        # A barrier: the broker handles one connection's packets in order, so once the UNSUBACK
        # of a filter nobody uses is back, the SUBSCRIBE has been handled completely (its retained
        # messages sent), not just acknowledged. Races between SUBSCRIBE and PUBLISH are tested on
        # purpose elsewhere, not by accident here.
        rc, mid = self.client.unsubscribe("barrier/" + self.client_id)
        try:
            got_mid = self.unsubacks.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no UNSUBACK within %.0f s" % WAIT)
        assert got_mid == mid, (got_mid, mid)
        return granted

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        """Publishes and, for QoS 1/2, waits for the broker's acknowledgement to complete. 5.0
        `properties`: paho Properties attribute -> value (MessageExpiryInterval=60, ...)."""
        props = None
        if properties:
            props = Properties(PacketTypes.PUBLISH)
            for name, value in properties.items():
                setattr(props, name, value)
        info = self.client.publish(topic, payload, qos, retain, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError("publish failed locally: %s" % info.rc)
        info.wait_for_publish(timeout=WAIT)
        if not info.is_published():
            raise AssertionError("publish of %r (QoS %d) not completed within %.0f s" % (topic, qos, WAIT))

    def get(self, timeout=WAIT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message within %.1f s" % timeout)

    def get_n(self, n, timeout=WAIT):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("got %d of %d messages within %.1f s: %r" % (len(out), n, timeout, out))
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                pass
        return out

    def assert_nothing(self, timeout=ABSENT):
        """Nothing arrives within `timeout` (an absence check)."""
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError("unexpected message %r" % (m,))

    def disconnect(self):
        """A graceful DISCONNECT; waits until paho reports the connection closed."""
        self.client.disconnect()
        if not self.disconnected.wait(WAIT):
            raise AssertionError("paho did not close within %.0f s" % WAIT)
        self.client.loop_stop()
        self._started = False

    def close(self):
        try:
            self.client.disconnect()
        except Exception:
            pass
        if self._started:
            self.client.loop_stop()
            self._started = False


# ---------------------------------------------------------------------------------------------
# mosquitto_pub / mosquitto_sub


class MosquittoSub:
    """mosquitto_sub in debug mode: waits for its SUBACK, then collects messages printed with
    -F "MSG| %q %r %t %p" (QoS, retain flag, topic, payload)."""

    def __init__(self, port, topic, qos=0, version=V311, count=1, extra=()):
        require_mosquitto_clients()
        vname = "mqttv5" if version == V5 else "mqttv311"
        self.args = ["mosquitto_sub", "-h", HOST, "-p", str(port), "-V", vname, "-t", topic, "-q", str(qos),
                     "-C", str(count), "-W", str(int(WAIT) + 5), "-d", "-F", "MSG| %q %r %t %p", *extra]
        self.proc, self._master = _spawn_with_lines(self.args, stdbuf=True)
        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()
        self._wait_line(lambda l: "received SUBACK" in l, "SUBACK")

    def _read(self):
        pending = b""
        while True:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO: the child closed its pseudo-terminal
                data = b""
            if not data:
                break
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                line = line.rstrip(b"\r").decode(errors="replace")
                self.output.append(line)
                self.lines.put(line)
        os.close(self._master)
        self.lines.put(None)

    def _wait_line(self, pred, what):
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = ""
            if line is None:
                try:
                    status = self.proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    status = "still running"
                raise AssertionError("mosquitto_sub ended (status %s) before %s:\n%s"
                                     % (status, what, "\n".join(self.output)))
            if pred(line):
                return line
            if left <= 0:
                raise AssertionError("mosquitto_sub: no %s within %.0f s:\n%s" % (what, WAIT, "\n".join(self.output)))

    def get(self):
        """The next message as (qos, retain, topic, payload)."""
        line = self._wait_line(lambda l: l.startswith("MSG| "), "message")
        _, q, r, topic, payload = line.split(" ", 4)
        return int(q), int(r), topic, payload

    def close(self):
        # After its -C count it exits by itself; otherwise (or if it lingers) SIGKILL: a SIGTERM
        # that lands while it is already disconnecting was once seen to leave it running.
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=WAIT)


def require_mosquitto_passwd():
    if not shutil.which("mosquitto_passwd"):
        _client_missing("mosquitto_passwd (Debian mosquitto)")


def require_mosquitto_clients():
    if not (shutil.which("mosquitto_sub") and shutil.which("mosquitto_pub")):
        _client_missing("mosquitto_pub/mosquitto_sub (Debian mosquitto-clients)")


def mosquitto_pub(port, topic, payload, qos=0, version=V311, retain=False):
    require_mosquitto_clients()
    vname = "mqttv5" if version == V5 else "mqttv311"
    args = ["mosquitto_pub", "-h", HOST, "-p", str(port), "-V", vname, "-t", topic, "-m", payload, "-q", str(qos)]
    if retain:
        args.append("-r")
    r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=WAIT)
    if r.returncode != 0:
        raise AssertionError("mosquitto_pub failed (%d): %s%s" % (r.returncode, r.stdout, r.stderr))


# ---------------------------------------------------------------------------------------------
# Raw MQTT: encoding by hand


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def utf8(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(first_byte, body=b""):
    return bytes([first_byte]) + varint(len(body)) + body


def props(*pairs):
    """5.0 properties from (id, encoded value) pairs, with their length prefix."""
    body = b"".join(bytes([pid]) + value for pid, value in pairs)
    return varint(len(body)) + body


def connect(client_id, version=V311, clean=True, keepalive=60, will=None, properties=b"",
            protocol_name="MQTT", username=None, password=None, will_properties=b""):
    """CONNECT. `will` is (topic, payload, qos, retain); `version` is the protocol level byte;
    5.0 `properties` and `will_properties` are encoded with props()."""
    flags = 0x02 if clean else 0
    payload = utf8(client_id)
    if will:
        topic, data, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if version == V5:
            payload += will_properties or props()
        payload += utf8(topic) + utf8(data)
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += utf8(password)
    body = utf8(protocol_name) + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == V5:
        body += properties or props()
    return packet(0x10, body + payload)


def publish(topic, payload, qos=0, retain=False, dup=False, packet_id=None, version=V311, properties=b""):
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = utf8(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if version == V5:
        body += properties or props()
    data = payload.encode() if isinstance(payload, str) else payload
    return packet(first, body + data)


def subscribe(packet_id, filters, version=V311):
    """SUBSCRIBE; `filters` is a list of (filter, options byte)."""
    body = struct.pack("!H", packet_id)
    if version == V5:
        body += props()
    for f, opts in filters:
        body += utf8(f) + bytes([opts])
    return packet(0x82, body)


def ack(kind, packet_id):
    """PUBACK, PUBREC, PUBREL or PUBCOMP (reason code omitted: success in 5.0)."""
    return packet((kind << 4) | (0x02 if kind == PUBREL else 0), struct.pack("!H", packet_id))


def pingreq():
    return packet(0xC0)


def disconnect(version=V311, reason=0):
    if version == V5 and reason:
        return packet(0xE0, bytes([reason]) + props())
    return packet(0xE0)


# ---------------------------------------------------------------------------------------------
# Raw MQTT: decoding


class Packet:
    def __init__(self, kind, flags, body):
        self.kind, self.flags, self.body = kind, flags, body

    def __repr__(self):
        return "Packet(type=%d, flags=0x%x, body=%s)" % (self.kind, self.flags, self.body.hex())


class Closed(Exception):
    pass


_PROP_TYPES = {}
for _ids, _t in (((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A), "byte"),
                 ((0x13, 0x21, 0x22, 0x23), "u16"),
                 ((0x02, 0x11, 0x18, 0x27), "u32"),
                 ((0x0B,), "varint"),
                 ((0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F), "str"),
                 ((0x09, 0x16), "bin"),
                 ((0x26,), "pair")):
    for _i in _ids:
        _PROP_TYPES[_i] = _t


def read_varint(b, pos):
    n, mult = 0, 1
    while True:
        byte = b[pos]
        pos += 1
        n += (byte & 0x7F) * mult
        if not byte & 0x80:
            return n, pos
        mult *= 128


def parse_props(b, pos):
    """5.0 properties at `pos`: returns ({id: [values]}, position after them)."""
    length, pos = read_varint(b, pos)
    end = pos + length
    out = {}
    while pos < end:
        pid = b[pos]
        pos += 1
        t = _PROP_TYPES[pid]
        if t == "byte":
            v, pos = b[pos], pos + 1
        elif t == "u16":
            v, pos = struct.unpack_from("!H", b, pos)[0], pos + 2
        elif t == "u32":
            v, pos = struct.unpack_from("!I", b, pos)[0], pos + 4
        elif t == "varint":
            v, pos = read_varint(b, pos)
        elif t in ("str", "bin"):
            n = struct.unpack_from("!H", b, pos)[0]
            v, pos = bytes(b[pos + 2:pos + 2 + n]), pos + 2 + n
            if t == "str":
                v = v.decode()
        else:
            n = struct.unpack_from("!H", b, pos)[0]
            k = bytes(b[pos + 2:pos + 2 + n]).decode()
            pos += 2 + n
            n = struct.unpack_from("!H", b, pos)[0]
            v, pos = (k, bytes(b[pos + 2:pos + 2 + n]).decode()), pos + 2 + n
        out.setdefault(pid, []).append(v)
    return out, end


class Connack:
    def __init__(self, session_present, code, properties):
        self.session_present, self.code, self.properties = session_present, code, properties


def parse_connack(p, version=V311):
    assert p.kind == CONNACK, p
    props_ = {}
    if version == V5 and len(p.body) > 2:
        props_, _ = parse_props(p.body, 2)
    return Connack(p.body[0] & 1, p.body[1], props_)


class Publish:
    def __init__(self, topic, payload, qos, retain, dup, packet_id, properties):
        self.topic, self.payload, self.qos, self.retain = topic, payload, qos, retain
        self.dup, self.packet_id, self.properties = dup, packet_id, properties

    def __repr__(self):
        return "Publish(%r, %r, qos=%d, retain=%d, dup=%d, id=%s)" % (
            self.topic, self.payload, self.qos, self.retain, self.dup, self.packet_id)


def parse_publish(p, version=V311):
    assert p.kind == PUBLISH, p
    qos = (p.flags >> 1) & 3
    n = struct.unpack_from("!H", p.body, 0)[0]
    topic = bytes(p.body[2:2 + n]).decode()
    pos = 2 + n
    pid = None
    if qos:
        pid = struct.unpack_from("!H", p.body, pos)[0]
        pos += 2
    properties = {}
    if version == V5:
        properties, pos = parse_props(p.body, pos)
    return Publish(topic, bytes(p.body[pos:]), qos, p.flags & 1, (p.flags >> 3) & 1, pid, properties)


def packet_id_of(p):
    return struct.unpack_from("!H", p.body, 0)[0]


class RawClient:
    """A TCP connection speaking MQTT bytes the test writes by hand."""

    def __init__(self, port, timeout=WAIT):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            raise TimeoutError
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            raise Closed
        self.buf += data

    def _parse(self):
        """One complete packet from the buffer, or None."""
        if len(self.buf) < 2:
            return None
        n, mult, pos = 0, 1, 1
        while True:
            if pos >= len(self.buf):
                return None
            byte = self.buf[pos]
            pos += 1
            n += (byte & 0x7F) * mult
            if not byte & 0x80:
                break
            mult *= 128
        if len(self.buf) < pos + n:
            return None
        p = Packet(self.buf[0] >> 4, self.buf[0] & 0x0F, bytes(self.buf[pos:pos + n]))
        del self.buf[:pos + n]
        return p

    def read(self, timeout=WAIT):
        """The next packet. Raises TimeoutError, or Closed when the broker closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            p = self._parse()
            if p is not None:
                return p
            if self.eof:
                raise Closed
            self._fill(deadline)

    def expect(self, kind, timeout=WAIT):
        """The next packet, which must be of type `kind`."""
        try:
            p = self.read(timeout)
        except TimeoutError:
            raise AssertionError("no packet of type %d within %.1f s" % (kind, timeout))
        except Closed:
            raise AssertionError("connection closed while waiting for packet type %d" % kind)
        if p.kind != kind:
            raise AssertionError("expected packet type %d, got %r" % (kind, p))
        return p

    def wait_closed(self, timeout=WAIT):
        """Reads until the broker closes; returns (monotonic time of the close, packets before it).
        Fails when the connection is still open after `timeout`."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                got.append(self.read(max(deadline - time.monotonic(), 0)))
            except Closed:
                return time.monotonic(), got
            except TimeoutError:
                raise AssertionError("connection still open after %.1f s (received %r)" % (timeout, got))

    def assert_open(self, timeout=ABSENT):
        """Nothing arrives and the connection stays open for `timeout`."""
        try:
            p = self.read(timeout)
        except TimeoutError:
            return
        except Closed:
            raise AssertionError("connection closed unexpectedly")
        raise AssertionError("unexpected packet %r" % (p,))

    def drop(self):
        """Closes the socket without DISCONNECT (an ungraceful end for the broker)."""
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def read_any(clients, timeout):
    """The next packet from any of `clients`: (client, packet), or (None, None) after `timeout`.
    Raises Closed when one of them is closed by the broker."""
    deadline = time.monotonic() + timeout
    while True:
        for c in clients:
            p = c._parse()
            if p is not None:
                return c, p
            if c.eof:
                raise Closed
        left = deadline - time.monotonic()
        if left <= 0:
            return None, None
        ready, _, _ = select.select([c.sock for c in clients], [], [], left)
        for c in clients:
            if c.sock in ready:
                try:
                    c._fill(time.monotonic() + 1)
                except TimeoutError:
                    pass


def main():
    """Runs the module's tests and prints how many ran, passed, were skipped (each with its reason)
    and failed. Exit status 0 when all ran passed, 1 on a failure or when the module ran no test
    at all, SKIP_STATUS when every test was skipped."""
    prog = unittest.main(verbosity=2, exit=False)
    r = prog.result
    failed = len(r.failures) + len(r.errors) + len(r.unexpectedSuccesses)
    skipped = [(t.id().split(".", 1)[-1], reason) for t, reason in r.skipped]
    passed = r.testsRun - failed - len(skipped)
    _record(r.testsRun, passed, skipped, failed)
    if failed or r.testsRun == 0:
        if r.testsRun == 0:
            print("FAILED: no test ran")
        sys.exit(1)
    sys.exit(SKIP_STATUS if len(skipped) == r.testsRun else 0)


if __name__ == "__main__":
    sys.exit("harness.py is a module")
