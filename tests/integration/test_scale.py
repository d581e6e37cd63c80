"""Many clients at once: 1,000 concurrent connections, each CONNECT -> CONNACK, each publishing one
message that a single subscriber receives. Raw non-blocking sockets, one selector, bounded time."""

import selectors
import socket
import struct
import time

import harness as h
from harness import V311

CLIENTS = 1000
DEADLINE = 30.0  # for each phase; a Debug build needs well under a second


class ManyClients(h.BrokerTestCase):
    def setUp(self):
        # 1,000 sockets here and 1,000 in the broker (which inherits the limit), plus slack.
        limit = h.raise_fd_limit(CLIENTS + 1024)
        if limit < CLIENTS + 100:
            self.skipTest("RLIMIT_NOFILE is %d; %d connections need more" % (limit, CLIENTS))
        super().setUp()

    def _read_all(self, socks, want, what):
        """Reads from every socket until want(index, buffer) says it has its packets."""
        sel = selectors.DefaultSelector()
        bufs = {}
        for i, s in enumerate(socks):
            s.setblocking(False)
            bufs[i] = bytearray()
            sel.register(s, selectors.EVENT_READ, i)
        pending = set(range(len(socks)))
        deadline = time.monotonic() + DEADLINE
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                sel.close()
                self.fail("%s: %d of %d clients still waiting after %.0f s" % (what, len(pending), len(socks), DEADLINE))
            for key, _ in sel.select(timeout=min(left, 1.0)):
                i = key.data
                data = key.fileobj.recv(65536)
                if not data:
                    sel.close()
                    self.fail("%s: client %d closed by the broker" % (what, i))
                bufs[i] += data
                if want(i, bufs[i]):
                    pending.discard(i)
                    sel.unregister(key.fileobj)
        sel.close()
        return bufs

    def test_1000_concurrent_clients(self):
        """1,000 clients connected at the same time each get CONNACK 0 and each publish once (QoS 1,
        PUBACK back); one subscriber receives all 1,000 messages [MQTT-3.2.0-1] [MQTT-4.3.2]."""
        sub, _ = self.raw_connected("load-sub", V311)
        sub.send(h.subscribe(1, [("load/#", 0)]))
        sub.expect(h.SUBACK)

        start = time.monotonic()
        socks = []
        for i in range(CLIENTS):
            s = socket.create_connection((h.HOST, self.port), timeout=h.WAIT)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
            self._clients.append(_Sock(s))
            s.sendall(h.connect("load-%04d" % i))

        bufs = self._read_all(socks, lambda i, b: len(b) >= 4, "CONNACK")
        for i, b in bufs.items():
            self.assertEqual(bytes(b), b"\x20\x02\x00\x00", "client %d: CONNACK 0, no session" % i)
        connected = time.monotonic()

        for i, s in enumerate(socks):
            s.setblocking(True)
            s.sendall(h.publish("load/%04d" % i, "m%d" % i, qos=1, packet_id=i + 1))

        puback = {i: h.packet(0x40, struct.pack("!H", i + 1)) for i in range(CLIENTS)}
        bufs = self._read_all(socks, lambda i, b: len(b) >= 4, "PUBACK")
        for i, b in bufs.items():
            self.assertEqual(bytes(b), puback[i], "client %d" % i)

        topics = set()
        deadline = time.monotonic() + DEADLINE
        while len(topics) < CLIENTS:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("the subscriber got %d of %d messages" % (len(topics), CLIENTS))
            p = h.parse_publish(sub.read(left))
            self.assertEqual(p.payload, b"m%d" % int(p.topic.split("/")[1]))
            topics.add(p.topic)
        self.assertEqual(topics, {"load/%04d" % i for i in range(CLIENTS)})
        done = time.monotonic()
        print("\n  %d clients: connected in %.2f s, all published and received in %.2f s"
              % (CLIENTS, connected - start, done - connected))

        # All still connected: a PINGREQ on every connection gets PINGRESP.
        for s in socks:
            s.sendall(h.pingreq())
        bufs = self._read_all(socks, lambda i, b: len(b) >= 2, "PINGRESP")
        for i, b in bufs.items():
            self.assertEqual(bytes(b), b"\xd0\x00", "client %d" % i)


class _Sock:
    def __init__(self, s):
        self.s = s

    def close(self):
        self.s.close()


if __name__ == "__main__":
    h.main()
