"""Hostile input on the TLS and WebSocket listeners: the example server with --tls-port, --ws-port
and --wss-port, and raw sockets (Python's ssl for TLS) that do what a TLS or WebSocket server must
survive: a ClientHello that never completes, garbage instead of a TLS handshake, an upgrade request
with a header of tens of KiB, frames that claim gigabytes, unmasked frames, text frames. What the
server can judge at once it answers at once, as RFC 6455 and HTTP ask (431, 400, close 1002, 1003,
1009) or with the close; what could still become valid is closed at the CONNECT timeout. Hundreds
of them leave the server's memory and descriptors flat, and well-behaved clients on the plain, ws
and wss listeners are served throughout. The certificates are made at run time by
tests/tls/make-certs.sh."""

import base64
import hashlib
import os
import random
import selectors
import socket
import ssl
import struct
import time

import harness as h
from harness import V311
from test_limits import assert_rss_flat, check_good, open_fds, rss_kib, wait_fds

# WebSocket opcodes and the close statuses the server answers with (RFC 6455 sections 5.2, 7.4.1).
TEXT, BINARY, CLOSE, PING = 0x1, 0x2, 0x8, 0x9
NORMAL, PROTOCOL_ERROR, UNSUPPORTED_DATA, MESSAGE_TOO_BIG = 1000, 1002, 1003, 1009
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


cert = h.Certificates("mqttbroker-it-transport-")  # cert("ca.crt"): a certificate's path, made for the module
setUpModule = cert.make
tearDownModule = cert.remove


def tls_context():
    """A client context that verifies the server against the test root CA."""
    return ssl.create_default_context(cafile=cert("ca.crt"))


def client_hello():
    """The bytes of a real TLS ClientHello (Python's ssl into memory, no socket)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[0] == 0x16 and len(hello) > 100, hello[:8]  # a handshake record
    return hello


def upgrade_request(path="/mqtt", extra=b""):
    """A browser-like upgrade request and its Sec-WebSocket-Key."""
    key = base64.b64encode(os.urandom(16))
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: mqtt\r\nOrigin: http://127.0.0.1\r\n" + extra + b"\r\n"), key


def frame(opcode, payload=b"", masked=True, length=None, fin=True):
    """A client frame: masked with a random key unless `masked` is false; `length` may claim more
    than `payload` holds."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([first, mask_bit | n])
    elif n < 1 << 16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def parse_frames(buf):
    """Takes the complete server frames off the front of bytearray `buf`: [(opcode, payload)]."""
    frames = []
    while len(buf) >= 2:
        if buf[1] & 0x80:
            raise AssertionError("the server sent a masked frame (RFC 6455 section 5.1)")
        n, pos = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, pos = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, pos = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < pos + n:
            break
        frames.append((buf[0] & 0x0F, bytes(buf[pos:pos + n])))
        del buf[:pos + n]
    return frames


def close_status(payload):
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def recv_some(sock):
    """What the socket has: b"" at its end (a reset or a TLS end without close_notify too), None
    when a TLS record is still incomplete."""
    try:
        return sock.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return None
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return b""


def read_until_closed(sock, timeout):
    """Everything the server sends until it closes `sock`: (bytes, seconds until the close), or
    fails after `timeout`."""
    start = time.monotonic()
    deadline = start + timeout
    data = bytearray()
    sock.setblocking(False)
    while True:
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if not pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("still open after %.1f s; received %r" % (timeout, bytes(data[:200])))
            sel = selectors.DefaultSelector()
            sel.register(sock, selectors.EVENT_READ)
            ready = sel.select(left)
            sel.close()
            if not ready:
                continue
        chunk = recv_some(sock)
        if chunk is None:
            continue
        if not chunk:
            return bytes(data), time.monotonic() - start
        data += chunk


def read_http_response(sock, timeout=h.WAIT):
    """The status code, headers (lower-case names) and the bytes after the response's blank line."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError("connection closed before the HTTP response ended: %r" % buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def open_websocket(port, tls=False):
    """A connection upgraded to WebSocket on `port` (over TLS verified against the test CA with
    `tls`): (socket, bytes that came after the 101)."""
    sock = socket.create_connection((h.HOST, port), timeout=h.WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        sock = tls_context().wrap_socket(sock, server_hostname=h.HOST)
    request, key = upgrade_request()
    sock.sendall(request)
    status, headers, rest = read_http_response(sock)
    assert status == 101, "upgrade answered %d" % status
    assert headers.get("sec-websocket-accept") == base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
    assert headers.get("sec-websocket-protocol") == "mqtt", headers  # [MQTT-6.0.0-4]
    return sock, rest


class WsClient(h.RawClient):
    """MQTT bytes written by hand over a WebSocket (ws://, or wss:// with `tls`): each send() one
    masked binary frame; the server's binary frames read as one MQTT byte stream, pings answered."""

    def __init__(self, port, tls=False):
        self.sock, rest = open_websocket(port, tls)
        self.buf = bytearray()  # MQTT bytes (RawClient parses packets from here)
        self.raw = bytearray(rest)  # bytes not yet parsed as frames
        self.eof = False

    def send(self, data):
        self.sock.sendall(frame(BINARY, data))

    def _fill(self, deadline):
        """Reads until at least one frame is complete and takes the frames (RawClient.read()
        calls this until a packet is complete)."""
        frames = parse_frames(self.raw)
        while not frames:
            if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                raise TimeoutError
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                data = b""
            if not data:
                self.eof = True
                raise h.Closed
            self.raw += data
            frames = parse_frames(self.raw)
        for opcode, payload in frames:
            if opcode in (BINARY, 0x0):  # 0x0: a continuation
                self.buf += payload
            elif opcode == PING:
                self.sock.sendall(frame(0xA, payload))
            elif opcode == CLOSE:
                self.eof = True
                raise h.Closed
            else:
                raise AssertionError("the server sent opcode %d" % opcode)


class TransportCase(h.BrokerTestCase):
    connect_timeout = 1.0  # --connect-timeout-ms, in seconds
    # One malloc arena: with --threads 2, glibc's per-thread arenas keep freed memory unevenly,
    # which would hide or fake a leak (as in test_limits.py).
    broker_env = {"MALLOC_ARENA_MAX": "1"}

    @classmethod
    def setUpClass(cls):
        cls.broker_args = ("--ws-port", h.FREE, "--wss-port", h.FREE, "--tls-port", "0",
                           "--certfile", cert("server-chain.crt"), "--keyfile", cert("server.key"),
                           "--connect-timeout-ms", str(int(cls.connect_timeout * 1000)))

    def setUp(self):
        super().setUp()
        self.ports = {kind: self.broker.port_of(kind) for kind in ("tcp", "tls", "ws", "wss")}

    def ws_client(self, tls=False):
        c = WsClient(self.ports["wss" if tls else "ws"], tls)
        self._clients.append(c)
        return c

    def ws_connected(self, client_id, tls=False, **kw):
        c = self.ws_client(tls)
        c.send(h.connect(client_id, **kw))
        self.assertEqual(h.parse_connack(c.expect(h.CONNACK)).code, 0)
        return c


# The misbehaving connections, each (name, listener, upgraded, bytes, answer, when): on `listener`
# ("ws", "tls", "wss"), after a valid upgrade (101) when `upgraded`, the client sends `bytes` and
# then nothing more. `answer` is what the server sends before its close: ("http", status), ("close",
# WebSocket close status), ("tls", None) (TLS records or nothing), ("nothing", None), or ("connack",
# None) (a CONNACK, then the close frame). `when`: the close comes AT_ONCE (the server can tell),
# or AT_TIMEOUT (it could still become valid: the CONNECT timeout, or Keep Alive).
AT_ONCE, AT_TIMEOUT = "at once", "at its timeout"
KEEP_ALIVE = 1.5  # Keep Alive 1 s times the server's --keep-alive-multiplier (1.5 by default)


def misbehaviours():
    hello = client_hello()
    huge = b"X-Filler: " + b"a" * (40 * 1024) + b"\r\n"  # tens of KiB of header; the limit is 8 KiB
    # A CONNECT with Keep Alive 1, then a frame that claims a whole 200 KiB PUBLISH and brings the
    # first 64 KiB of it: held until Keep Alive runs out [MQTT-3.1.2-24].
    big = 200 * 1024
    publish_head = bytes([0x32]) + h.varint(big) + h.utf8("big/t") + struct.pack("!H", 1)
    publish_start = publish_head + b"x" * (64 * 1024 - len(publish_head))
    half_frame = frame(BINARY, h.connect("half", keepalive=1)) + \
        frame(BINARY, publish_start, length=1 + len(h.varint(big)) + big)
    return [
        ("ws-huge-header", "ws", False, upgrade_request(extra=huge)[0], ("http", 431), AT_ONCE),
        ("ws-tls-hello", "ws", False, hello, ("http", 400), AT_ONCE),
        ("ws-text-frame", "ws", True, frame(TEXT, h.connect("text")), ("close", UNSUPPORTED_DATA), AT_ONCE),  # [MQTT-6.0.0-1]
        ("ws-unmasked-frame", "ws", True, frame(BINARY, h.connect("bare"), masked=False), ("close", PROTOCOL_ERROR), AT_ONCE),
        ("ws-4-GiB-frame", "ws", True, frame(BINARY, length=4 << 30), ("close", MESSAGE_TOO_BIG), AT_ONCE),
        ("ws-2^63-frame", "ws", True, frame(BINARY, length=1 << 63), ("close", PROTOCOL_ERROR), AT_ONCE),
        ("ws-half-upgrade", "ws", False, upgrade_request()[0][:40], ("nothing", None), AT_TIMEOUT),
        ("ws-upgraded-silent", "ws", True, b"", ("close", NORMAL), AT_TIMEOUT),
        ("ws-half-frame", "ws", True, half_frame, ("connack", None), AT_TIMEOUT),
        ("tls-garbage", "tls", False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ("tls", None), AT_ONCE),
        ("tls-half-hello", "tls", False, hello[:len(hello) // 2], ("nothing", None), AT_TIMEOUT),
        ("tls-hello-silent", "tls", False, hello, ("tls", None), AT_TIMEOUT),
        ("wss-garbage", "wss", False, h.connect("not-tls"), ("tls", None), AT_ONCE),
        ("wss-half-hello", "wss", False, hello[:len(hello) // 2], ("nothing", None), AT_TIMEOUT),
        ("wss-4-GiB-frame", "wss", True, frame(BINARY, length=4 << 30), ("close", MESSAGE_TOO_BIG), AT_ONCE),
        ("wss-upgraded-silent", "wss", True, b"", ("close", NORMAL), AT_TIMEOUT),
    ]


ROUNDS = 4
EACH = 12  # connections of each kind per round: 16 kinds, 192 connections


class Conn:
    """One misbehaving connection: its socket, what it received, when it started and closed."""

    def __init__(self, name, sock, started, answer, when):
        self.name, self.sock, self.started, self.answer, self.when = name, sock, started, answer, when
        self.data = bytearray()
        self.closed_at = None

    def elapsed(self):
        return self.closed_at - self.started


class Hostile(TransportCase):
    """What the misbehaving connections have in common: opening them, reading until the server
    closes them, checking its answer."""

    def open(self, name, listener, upgraded, data, answer, when):
        """Connects and misbehaves as `name`; the Conn, not yet closed."""
        started = time.monotonic()
        rest = b""
        if upgraded:
            sock, rest = open_websocket(self.ports[listener], tls=listener == "wss")
        else:
            sock = socket.create_connection((h.HOST, self.ports[listener]), timeout=h.WAIT)
        try:
            sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            pass  # refused before all of it was read
        c = Conn(name, sock, started, answer, when)
        c.data += rest
        return c

    def watch(self, conns, timeout):
        """Reads every connection of `conns` until the server closes it, noting when; fails naming
        those still open after `timeout`."""
        sel = selectors.DefaultSelector()
        for c in conns:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, c)
        deadline = time.monotonic() + timeout
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                names = sorted(key.data.name for key in sel.get_map().values())
                sel.close()
                self.fail("%d of %d connections still open after %.1f s: %s" % (
                    len(names), len(conns), timeout, ", ".join("%d %s" % (names.count(n), n) for n in sorted(set(names)))))
            for key, _ in sel.select(min(left, 1.0)):
                c = key.data
                while True:  # TLS may hold decrypted bytes that select() does not see
                    chunk = recv_some(c.sock)
                    if chunk is None:
                        break
                    if not chunk:
                        c.closed_at = time.monotonic()
                        sel.unregister(c.sock)
                        break
                    c.data += chunk
                    if not (isinstance(c.sock, ssl.SSLSocket) and c.sock.pending()):
                        break
        sel.close()

    def check_answer(self, c):
        """The server sent what `c`'s misbehaviour calls for before closing."""
        kind, value = c.answer
        data = bytes(c.data)
        what = "%s: received %r" % (c.name, data[:120])
        if kind == "http":
            self.assertTrue(data.startswith(b"HTTP/1.1 %d " % value), what)
            self.assertIn(b"\r\n\r\n", data, what)
        elif kind == "nothing":
            self.assertEqual(data, b"", what)
        elif kind == "tls":
            # TLS records (an alert, or the server's side of the handshake) or nothing at all.
            self.assertTrue(data == b"" or data[0] in (0x15, 0x16), what)
        else:
            frames = parse_frames(bytearray(data))
            self.assertTrue(frames and frames[-1][0] == CLOSE, what)
            if kind == "close":
                self.assertEqual([(op, close_status(p)) for op, p in frames], [(CLOSE, value)], what)
            else:  # the CONNACK, in binary frames, then the close
                mqtt = b"".join(p for op, p in frames if op == BINARY)
                self.assertEqual(mqtt, b"\x20\x02\x00\x00", what)

class Answers(Hostile):
    """One of each, with the CONNECT timeout at 3 s: a close well before it is the server's own
    judgement, not its timer."""

    connect_timeout = 3.0

    def test_each_misbehaviour_gets_its_answer_in_time(self):
        """One connection of each kind, all at once: each gets its answer (431 for a 40 KiB
        header, 400 for a ClientHello on the ws port, close 1003 for a text frame [MQTT-6.0.0-1],
        1002 for an unmasked frame and a 2^63-byte length, 1009 for a frame of 4 GiB, over ws and
        wss); those the server can judge are closed before the CONNECT timeout could have fired,
        the others (half a ClientHello, a ClientHello and silence, half an upgrade, an upgrade and
        no CONNECT, half a frame after CONNECT) not before their timeout, and within 10 s."""
        conns = [self.open(*m) for m in misbehaviours()]
        self.watch(conns, h.WAIT)
        for c in conns:
            self.check_answer(c)
            if c.when == AT_ONCE:
                # The CONNECT timer starts at the accept, after `started`: a close sooner than its
                # length after `started` is not the timer's.
                self.assertLess(c.elapsed(), self.connect_timeout, "%s closed after %.2f s" % (c.name, c.elapsed()))
            else:
                least = KEEP_ALIVE if c.answer[0] == "connack" else self.connect_timeout
                self.assertGreaterEqual(c.elapsed(), least, "%s closed after %.2f s" % (c.name, c.elapsed()))
            c.sock.close()
        self.assertTrue(self.broker.alive())


class Rounds(Hostile):
    """Hundreds of them, with the CONNECT timeout at 1 s so that a round takes about 2.5 s (the
    Keep Alive of the half-sent frames is the longest wait)."""

    def _check_good(self, good, n, when):
        """The bystanders still work: a QoS 1 message from the ws client reaches the plain-TCP paho
        client and the wss client; pings are answered on both WebSockets."""
        ws_pub, wss_sub, paho_sub = good
        check_good(self, wss_sub, ws_pub, n, when)
        self.assertEqual(paho_sub.get().payload, b"msg %d" % n, when)

    def test_rounds_of_hostile_connections(self):
        """4 rounds of 192 misbehaving connections (12 of each kind above, in a seeded random
        order) against the TLS, ws and wss listeners: each gets its answer and its close, a ws
        publisher, a wss subscriber and a plain-TCP paho subscriber are served while they are open,
        after they are closed by the server and after the clients let go, and neither the broker's
        memory (VmRSS, round 4 against round 2) nor its descriptors grow."""
        seed = int(os.environ.get("MQTTBROKER_IT_SEED", time.time_ns() % 1_000_000))
        print("\n  seed %d (MQTTBROKER_IT_SEED reruns it)" % seed)
        rng = random.Random(seed)
        pid = self.broker.proc.pid
        paho_sub = self.paho("good-paho", V311)
        paho_sub.subscribe("good/#", 1)
        wss_sub = self.ws_connected("good-wss", tls=True)
        wss_sub.send(h.subscribe(1, [("good/#", 1)]))
        wss_sub.expect(h.SUBACK)
        ws_pub = self.ws_connected("good-ws")
        good = (ws_pub, wss_sub, paho_sub)
        checks = 0
        self._check_good(good, checks, "at the start")
        fd_baseline = open_fds(pid)
        kinds = misbehaviours()
        rss = []
        print("  start: broker RSS %d KiB, %d descriptors" % (rss_kib(pid), fd_baseline))
        for rnd in range(1, ROUNDS + 1):
            started = time.monotonic()
            plan = [m for m in kinds for _ in range(EACH)]
            rng.shuffle(plan)
            conns = []
            try:
                for m in plan:
                    conns.append(self.open(*m))
                opened = time.monotonic()
                checks += 1
                self._check_good(good, checks, "round %d, all connections open" % rnd)
                self.watch(conns, h.WAIT)
                for c in conns:
                    self.check_answer(c)
                checks += 1
                self._check_good(good, checks, "round %d, all closed by the server" % rnd)
            finally:
                for c in conns:
                    c.sock.close()
            fds = wait_fds(pid, fd_baseline, "round %d, all closed by the client" % rnd)
            checks += 1
            self._check_good(good, checks, "round %d, after" % rnd)
            rss.append(rss_kib(pid))
            print("  round %d: opened in %.2f s, done in %.2f s; broker RSS %d KiB, %d descriptors (baseline %d)"
                  % (rnd, opened - started, time.monotonic() - started, rss[-1], fds, fd_baseline))
        assert_rss_flat(self, rss)


if __name__ == "__main__":
    h.main()
