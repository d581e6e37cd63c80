#!/usr/bin/env python3
"""Prints what the integration modules of one ctest run counted (harness.py writes one JSON file per
module into the results folder): tests run, passed, skipped (each with its reason) and failed, per
module and in all. scripts/test.sh calls it after each ctest run of the integration label.

Exit status 1 when no module left a result (a step that ran no integration test), or when
--expect N is given and fewer modules reported."""

import argparse
import glob
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="the folder the modules wrote to (MQTTBROKER_IT_RESULTS)")
    ap.add_argument("--expect", type=int, default=0, help="how many modules must have reported")
    args = ap.parse_args()

    rows = []
    for path in sorted(glob.glob(os.path.join(args.results, "*.json"))):
        with open(path) as f:
            rows.append(json.load(f))
    total = {"ran": 0, "passed": 0, "skipped": 0, "failed": 0}
    width = max([len(r["test"]) for r in rows] + [6])
    print("%-*s %5s %6s %7s %6s" % (width, "module", "ran", "passed", "skipped", "failed"))
    for r in rows:
        print("%-*s %5d %6d %7d %6d" % (width, r["test"], r["ran"], r["passed"], len(r["skipped"]), r["failed"]))
        for k in ("ran", "passed", "failed"):
            total[k] += r[k]
        total["skipped"] += len(r["skipped"])
    print("%-*s %5d %6d %7d %6d" % (width, "all", total["ran"], total["passed"], total["skipped"], total["failed"]))
    for r in rows:
        for test, reason in r["skipped"]:
            print("SKIPPED: %s %s: %s" % (r["test"], test, reason))
    if not rows:
        print("no integration module reported to %s" % args.results)
        return 1
    if len(rows) < args.expect:
        print("%d integration modules reported, %d expected" % (len(rows), args.expect))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
