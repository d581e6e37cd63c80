#!/usr/bin/env python3
"""Writes the seed corpora of the WebSocket fuzz targets (deterministic):
tests/fuzz/corpus-websocket/ for websocket_fuzz.cpp (frames) and tests/fuzz/corpus-upgrade/ for
upgrade_fuzz.cpp (upgrade requests). Each file is one control byte, then the client's bytes.
Rerun after changing a seed:
    python3 tests/fuzz/make_ws_corpus.py
"""
import hashlib
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def frame(first, payload, mask=b"\x37\xfa\x21\x3d", masked=True, length_bits=0):
    n = len(payload)
    bits = length_bits or (7 if n < 126 else 16 if n <= 0xFFFF else 64)
    m = 0x80 if masked else 0
    out = bytearray([first])
    if bits == 7:
        out.append(m | n)
    elif bits == 16:
        out += bytes([m | 126]) + n.to_bytes(2, "big")
    else:
        out += bytes([m | 127]) + n.to_bytes(8, "big")
    if masked:
        out += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(out + payload)


CONNECT = bytes.fromhex("101000044d5154540402003c0004746573742d")[:18]
PUBLISH = b"\x30\x08\x00\x03t/1abc"

FRAMES = [
    frame(0x82, CONNECT),
    frame(0x82, CONNECT + PUBLISH + b"\xc0\x00"),
    frame(0x02, CONNECT[:5]) + frame(0x89, b"ping") + frame(0x80, CONNECT[5:]),
    frame(0x82, b"x" * 200) + frame(0x82, b"y" * 300, length_bits=16),
    frame(0x82, b"z" * 70000),
    frame(0x88, b"\x03\xe8bye"),
    frame(0x88, b""),
    frame(0x8A, b"pong"),
    frame(0x82, PUBLISH, masked=False),
    frame(0x81, b"text"),
    frame(0x82, b"a", length_bits=64),
    b"\x82\xff" + (1 << 62).to_bytes(8, "big") + b"abcd",
]

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(target="/mqtt", extra="", key=KEY, version="13", protocol="mqtt"):
    lines = [f"GET {target} HTTP/1.1", "Host: broker.example:8080", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", f"Sec-WebSocket-Version: {version}"]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


UPGRADES = [
    request(),
    request(extra="Origin: https://a.example\r\n"),
    request(target="/mqtt?x=1", protocol="mqttv3.1, mqtt"),
    request(protocol=""),
    request(protocol="wamp"),
    request(version="8"),
    request(key="c2hvcnQ="),
    request(target="/other"),
    request(extra="X-Folded: a\r\n b\r\n"),
    request() + frame(0x82, CONNECT),
    b"POST /mqtt HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
    b"GET /mqtt HTTP/1.1\r\nX-Filler: " + b"a" * 600,
]


def write(folder, seeds):
    path = os.path.join(HERE, folder)
    os.makedirs(path, exist_ok=True)
    for old in os.listdir(path):
        os.remove(os.path.join(path, old))
    for i, seed in enumerate(seeds):
        # Large seeds once: their variants add bytes to the repository, not coverage.
        for control in (0x00,) if len(seed) > 4096 else (0x00, 0x01, 0x80 | (i * 13 % 128)):
            data = bytes([control]) + seed
            with open(os.path.join(path, hashlib.sha1(data).hexdigest()), "wb") as f:
                f.write(data)


write("corpus-websocket", FRAMES)
write("corpus-upgrade", UPGRADES)
