#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/decoder_fuzz.cpp into tests/fuzz/corpus/ (deterministic).

Each file is one control byte (fragmenting mode, see decoder_fuzz.cpp) followed by valid packets
of one side of a connection, in one protocol version. Rerun after changing a seed:
    python3 tests/fuzz/make_corpus.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def b(*items):
    out = bytearray()
    for i in items:
        out += i.encode() if isinstance(i, str) else bytes([i]) if isinstance(i, int) else i
    return bytes(out)


def s(text):
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pkt(first, body):
    return bytes([first]) + varint(len(body)) + body


def props(p):
    return varint(len(p)) + p


CONNECT_311 = pkt(0x10, s("MQTT") + b(4, 0x02, 0, 60) + s("abc"))
CONNECT_31 = pkt(0x10, s("MQIsdp") + b(3, 0x02, 0, 60) + s("abc"))
CONNECT_5 = pkt(0x10, s("MQTT") + b(5, 0x02, 0, 60) + props(b(0x11, 0, 0, 0, 0x78, 0x21, 0, 10)) + s("abc"))
CONNECT_5_WILL = pkt(0x10, s("MQTT") + b(5, 0xD4, 0, 0) + props(b(0x21, 0, 10, 0x26) + s("k") + s("v")) + s("")
                     + props(b(0x18, 0, 0, 0, 5, 0x01, 1)) + s("t") + s("p") + s("u") + s("pw"))
CONNECT_311_WILL = pkt(0x10, s("MQTT") + b(4, 0xEE, 0, 10) + s("c1") + s("w/t") + s("bye") + s("u") + s(b"\x00\xff"))

SEEDS = {
    "v311_server_session.bin": b(0x00, CONNECT_311,
                                 pkt(0x32, s("a/b") + b(0, 10) + b"hi"),
                                 pkt(0x82, b(0, 11) + s("a/+") + b(1) + s("#") + b(2)),
                                 pkt(0xA2, b(0, 12) + s("a/+")),
                                 pkt(0x40, b(0, 1)), pkt(0x62, b(0, 2)), b(0xC0, 0), b(0xE0, 0)),
    "v311_connect_will.bin": b(0x01, CONNECT_311_WILL),
    "v31_server_session.bin": b(0x02, CONNECT_31, pkt(0x30, s("t") + b"payload"), b(0xC0, 0)),
    "v5_server_session.bin": b(0x01, CONNECT_5,
                               pkt(0x32, s("a/b") + b(0, 10) + props(b(0x01, 1, 0x23, 0, 1)) + b"hi"),
                               pkt(0x82, b(0, 11) + props(b(0x0B, 5)) + s("a/b") + b(0x2D) + s("#") + b(0)),
                               pkt(0xF0, b(0x19) + props(b(0x15) + s("SCRAM") + b(0x16) + s(b"\x01\x02"))),
                               pkt(0xA2, b(0, 12, 0) + s("a/b")),
                               pkt(0xE0, b(0x04))),
    "v5_connect_will.bin": b(0x03, CONNECT_5_WILL),
    "v5_connect_minimal.bin": b(0x00, CONNECT_5),
    "v311_client_session.bin": b(0x06, pkt(0x20, b(1, 0)), pkt(0x90, b(0, 11, 0, 1, 2, 0x80)), pkt(0xB0, b(0, 12)),
                                 b(0xD0, 0), pkt(0x3B, s("a/b") + b(0, 10) + b"hi"), pkt(0x50, b(0, 10)),
                                 pkt(0x70, b(0, 10))),
    "v5_client_session.bin": b(0x8A, pkt(0x20, b(1, 0) + props(b(0x22, 0, 5, 0x12) + s("id"))),
                               pkt(0x90, b(0, 11, 0, 1, 0x80, 0xA1)), pkt(0xB0, b(0, 12, 0, 0, 0x11)),
                               pkt(0x40, b(0, 10)), pkt(0x50, b(0, 10, 0x97)),
                               pkt(0x70, b(0, 10, 0x92) + props(b(0x1F) + s("x"))),
                               pkt(0xE0, b(0x8B) + props(b(0x1C) + s("s")))),
    "v5_publish_subscription_ids.bin": b(0x0E, pkt(0x30, s("") + props(b(0x0B, 1, 0x0B, 0x80, 1, 0x23, 0, 3)) + b"x")),
    "v5_puback_long_forms.bin": b(0x12, pkt(0x40, b(0, 10, 0)), pkt(0x40, b(0, 10, 0, 0)),
                                  pkt(0x40, b(0, 10, 0x80) + props(b(0x1F) + s("x")))),
    "v5_auth.bin": b(0x05, b(0xF0, 0), pkt(0xF0, b(0x18) + props(b(0x15) + s("PLAIN") + b(0x16) + s("data")))),
    "v5_publish_large_length.bin": b(0x2A, pkt(0x30, s("big") + props(b()) + b"z" * 200)),
}


def main():
    corpus = os.path.join(HERE, "corpus")
    os.makedirs(corpus, exist_ok=True)
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
