#!/usr/bin/env python3
"""Check the include layering of include/mqttbroker (STYLE.md section 2).

For every header under include/mqttbroker:
  * each `#include <mqttbroker/...>` must point down the layer table below, never up or sideways;
  * includes of our own headers use <mqttbroker/...>, never quotes (the amalgamator needs that);
  * Asio stays out of the sans-I/O layers (locking/ may have its strand only), OpenSSL and
    asio/ssl out of everything but the optional units (auth/) and transport/tls.hpp;
  * an optional unit (auth/: its own CMake target, OpenSSL) and an optional header
    (transport/tls.hpp: the target mqttbroker::tls) are included by nothing else, so no core
    header, and not the single header, ever pulls OpenSSL in;
  * likewise SQLite: only storage/sqlite.hpp (mqttbroker::sqlite) includes <sqlite3.h>, and no
    other header includes it;
  * the include guard is named after the path: codec/decoder.hpp -> MQTTBROKER_CODEC_DECODER_HPP.

Folders that do not exist yet are simply absent. Exit status 0 when clean, 1 on any violation.
"""

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# unit -> (level, units it may include besides itself). A unit is a top-level folder of
# include/mqttbroker, or a top-level header. A top-level `x.hpp` beside a folder `x/` (an umbrella
# such as codec.hpp) belongs to unit `x`.
CORE = {"config", "version", "error", "detail", "log"}
LAYERS = {
    # level 0: std only
    "config": (0, CORE),
    "version": (0, CORE),
    "error": (0, CORE),
    "detail": (0, CORE),
    "log": (0, CORE),
    # level 1: level 0 only; codec and topic never include each other; no Asio (fuzzed, benched alone)
    "codec": (1, CORE),
    "topic": (1, CORE),
    # level 2: codec properties
    "message": (2, CORE | {"codec"}),
    # level 3: levels 0-2; same-level units never include each other
    "options": (3, CORE | {"codec", "topic", "message"}),
    "storage": (3, CORE | {"codec", "topic", "message"}),
    "locking": (3, CORE | {"codec", "topic", "message"}),
    "hooks": (3, CORE | {"codec", "topic", "message"}),
    # the cluster contract and topics as NATS subjects; its NATS headers (NATS_HEADERS) on Asio
    "cluster": (3, CORE | {"codec", "topic", "message"}),
    # level 4 (options.hpp holds the limits every level-4 unit is configured with)
    "session": (4, CORE | {"codec", "topic", "message", "options"}),  # sans-I/O
    "router": (4, CORE | {"topic", "message", "locking", "options"}),  # no transport, no wire format
    "transport": (4, CORE),  # Asio + level 0: moves bytes, knows no MQTT
    "clock": (4, CORE),  # Asio + level 0: the time and timers the broker reads (a policy)
    # level 5: the protocol engine, sans-I/O: everything below but transport and clock
    "engine": (5, CORE | {"codec", "topic", "message", "options", "storage", "locking", "hooks", "cluster", "session",
                          "router"}),
    # level 6: connections and listeners on Asio, carrying out the engine's decisions
    "server": (6, CORE | {"codec", "topic", "message", "options", "storage", "locking", "hooks", "cluster", "session",
                          "router", "transport", "clock", "engine"}),
    # level 6: the client side of MQTT (a sans-I/O session, and a driver on Asio's TCP)
    "client": (6, CORE | {"codec", "topic", "message"}),
    # level 7: everything; the only place layers meet
    "broker": (7, None),
    "broker_fwd": (7, None),
    "impl": (7, None),
    "mqttbroker": (7, None),
    "metrics": (7, None),  # the counters' exposition and a scrape endpoint, over the broker's stats
    "bridge": (7, None),  # a broker's client to another broker: the routes, and (to come) the bridge
    # level 8, optional: enhanced authentication methods on OpenSSL (target mqttbroker::auth), on
    # top of the hooks contract; nothing includes them but the host
    "auth": (8, CORE | {"codec", "topic", "message", "options", "hooks"}),
}
# Units behind a CMake target of their own, with their own dependencies: no other unit includes them.
OPTIONAL_UNITS = {"auth"}
# Units whose headers may include OpenSSL and asio/ssl (besides the OPENSSL_HEADERS).
OPENSSL_UNITS = {"auth"}
# Headers behind a CMake target of their own (mqttbroker::tls, mqttbroker::websocket) inside a core
# unit: they alone there may include OpenSSL and asio/ssl, and only they include one another.
OPENSSL_HEADERS = {"transport/tls.hpp", "transport/websocket.hpp", "transport/websocket_tls.hpp", "client/tls.hpp",
                   "transport/websocket/handshake.hpp"}
# Headers behind mqttbroker::sqlite (SQLite 3) inside a core unit: they alone include <sqlite3.h>,
# and no other header includes them, so a program on memory storage neither includes nor links SQLite.
SQLITE_HEADERS = {"storage/sqlite.hpp"}
SQLITE_INCLUDE = re.compile(r"^sqlite3(ext)?\.h$")
# Headers behind mqttbroker::nats (nats.c) inside the cluster unit: they alone include <nats/...>
# and Asio there, and only they include one another.
NATS_HEADERS = {"cluster/nats.hpp", "cluster/nats_loop.hpp"}
NATS_INCLUDE = re.compile(r"^nats/")
# Single headers a unit may include although their unit is off limits: codec/types.hpp holds the
# vocabulary (qos, retain handling), not the wire format.
ALLOWED_HEADERS = {"router": {"codec/types.hpp"}}
# Files whose unit is not their folder's.
SPECIAL_FILES = {}
# Units that must not include Asio (directly; level 0 includes nothing but std).
NO_ASIO = {"config", "version", "error", "detail", "codec", "topic", "message", "session", "engine", "broker_fwd",
           "cluster"}
# Units that may include only these Asio headers: a locking policy says what a strand is
# (locking::shared: asio::strand), and nothing more of Asio.
ASIO_ONLY = {"locking": {"asio/strand.hpp"}}
ASIO_INCLUDE = re.compile(r"^(asio\.hpp|asio/|boost/asio)")
OPENSSL_INCLUDE = re.compile(r"^(openssl/|asio/ssl)")

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
DIRECTIVE = re.compile(r"^\s*#\s*(\w+)\s*(\S*)")


def unit_of(rel):
    """Unit of a header path relative to include/mqttbroker (posix string), or None."""
    if rel in SPECIAL_FILES:
        return SPECIAL_FILES[rel]
    first = rel.split("/", 1)[0]
    if "/" not in rel:
        first = first[: -len(".hpp")] if first.endswith(".hpp") else first
    return first if first in LAYERS else None


def expected_guard(rel):
    return "MQTTBROKER_" + re.sub(r"[^A-Za-z0-9]", "_", rel).upper()


def check_guard(rel, lines):
    directives = [m for m in (DIRECTIVE.match(line) for line in lines) if m]
    want = expected_guard(rel)
    if (len(directives) < 2 or directives[0].group(1) != "ifndef" or directives[1].group(1) != "define"
            or directives[0].group(2) != want or directives[1].group(2) != want):
        return [f"include guard should be `#ifndef {want}` / `#define {want}` as the first directives"]
    return []


def check_file(rel, text):
    errors = []
    unit = unit_of(rel)
    if unit is None:
        return [f"{rel}: not in the layer table of STYLE.md §2 (add it to scripts/check_layers.py)"]
    level, allowed = LAYERS[unit]
    lines = text.splitlines()
    errors += [f"{rel}: {e}" for e in check_guard(rel, lines)]
    for number, line in enumerate(lines, 1):
        match = INCLUDE.match(line)
        if not match:
            continue
        quote, target = match.groups()
        where = f"{rel}:{number}"
        if quote == '"':
            errors.append(f'{where}: use #include <mqttbroker/...> instead of "{target}"')
            continue
        if ASIO_INCLUDE.match(target) and unit in NO_ASIO and rel not in NATS_HEADERS:
            errors.append(f"{where}: <{target}>: no Asio in {unit} (level {level})")
        if ASIO_INCLUDE.match(target) and unit in ASIO_ONLY and target not in ASIO_ONLY[unit]:
            allowed_asio = ", ".join(f"<{h}>" for h in sorted(ASIO_ONLY[unit]))
            errors.append(f"{where}: <{target}>: {unit} may include only {allowed_asio} of Asio")
        if OPENSSL_INCLUDE.match(target) and rel not in OPENSSL_HEADERS and unit not in OPENSSL_UNITS:
            errors.append(f"{where}: <{target}>: OpenSSL and asio/ssl belong in {', '.join(sorted(OPENSSL_HEADERS))} "
                          f"and the optional units ({', '.join(sorted(OPENSSL_UNITS))}) only")
        if SQLITE_INCLUDE.match(target) and rel not in SQLITE_HEADERS:
            errors.append(f"{where}: <{target}>: SQLite belongs in {', '.join(sorted(SQLITE_HEADERS))} only")
        if NATS_INCLUDE.match(target) and rel not in NATS_HEADERS:
            errors.append(f"{where}: <{target}>: nats.c belongs in {', '.join(sorted(NATS_HEADERS))} only")
        if not target.startswith("mqttbroker/"):
            continue
        target_rel = target[len("mqttbroker/"):]
        if target_rel in SQLITE_HEADERS and rel not in SQLITE_HEADERS:
            errors.append(f"{where}: <{target}> is an optional header (mqttbroker::sqlite, SQLite): "
                          f"{unit} may not include it")
            continue
        if target_rel in NATS_HEADERS and rel not in NATS_HEADERS:
            errors.append(f"{where}: <{target}> is an optional header (mqttbroker::nats, nats.c): "
                          f"{unit} may not include it")
            continue
        if target_rel in OPENSSL_HEADERS and rel not in OPENSSL_HEADERS:
            errors.append(f"{where}: <{target}> is an optional header (a target of its own, OpenSSL): "
                          f"{unit} may not include it")
            continue
        target_unit = unit_of(target_rel)
        if target_unit is None:
            errors.append(f"{where}: <{target}> is not in the layer table")
        elif target_unit in OPTIONAL_UNITS and target_unit != unit:
            errors.append(f"{where}: <{target}> is an optional unit ({target_unit}/, a target of its own): "
                          f"{unit} may not include it")
        elif (target_unit != unit and allowed is not None and target_unit not in allowed
              and target_rel not in ALLOWED_HEADERS.get(unit, ())):
            target_level = LAYERS[target_unit][0]
            direction = "up" if target_level > level else ("sideways" if target_level == level else "down")
            errors.append(f"{where}: {unit} (level {level}) may not include <{target}> "
                          f"({target_unit}, level {target_level}, {direction})")
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=pathlib.Path, default=ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args()
    base = args.root.resolve() / "include" / "mqttbroker"
    if not base.is_dir():
        print(f"check_layers.py: {base} not found", file=sys.stderr)
        return 2
    headers = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in (".hpp", ".ipp", ".h"))
    errors = []
    for path in headers:
        errors += check_file(path.relative_to(base).as_posix(), path.read_text(encoding="utf-8"))
    for error in errors:
        print(f"include/mqttbroker/{error}")
    print(f"check_layers.py: {len(headers)} headers, {len(errors)} violations")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
