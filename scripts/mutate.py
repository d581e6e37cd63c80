#!/usr/bin/env python3
"""A mutation round: plants one small bug at a time in a scratch copy of the library and checks
that the fast unit tests catch it (issue 18, part 6).

The mutations are listed in tests/mutations.json. Each names a header under include/mqttbroker/,
an exact snippet that must occur exactly once in it, the snippet's replacement and, in one line,
what the change breaks. A snippet that no longer occurs, or occurs twice, stops the script before
anything is built: the list fails loudly instead of rotting. Why JSON rather than a patch format:
the standard library reads it, a multi-line snippet is one string with "\\n" in it, and a snippet
is checked against the current source on every run, which a patch with line numbers and context
would not survive as the headers change.

Method:
  1. The parts of the repository the unit tests need (include/, tests/ without integration/ and
     fuzz/, cmake/, CMakeLists.txt, single_include/) are copied into a scratch folder (by default
     in the system's temp folder, kept between runs so that a rerun only rebuilds what changed;
     the working tree is never touched). Only files whose bytes changed are copied again.
  2. The copy is configured once (Debug, no benches, no examples, no fuzzers, no header check, no
     install rules, no integration tests), and the baseline, unmutated, is built and must pass, or
     the script stops. Its object files and test programs are saved.
  3. For each mutation: the header in the copy is patched, mqttbroker_tests is rebuilt
     incrementally (and mqttbroker_mt_tests when the header is under locking/ or the mutation's
     "also_run" names it; mqttbroker_websocket_tests alone for the WebSocket transport's headers,
     mqttbroker_tls_tests and then mqttbroker_websocket_tests for transport/tls.hpp;
     mqttbroker_sqlite_tests alone for storage/sqlite.hpp, and after the unit tests when "also_run"
     names it; mqttbroker_cluster_tests alone for cluster/nats.hpp) and run with a timeout and a fixed MQTTBROKER_SEED, stopping at the
     first failure. Then the header is restored with its old time stamp and the saved objects and
     programs are put back, so the build is the baseline's again without recompiling it (the next
     build checks that: it must find nothing to do).
  4. A mutation is caught when a test fails, crashes, or does not finish within the timeout (a
     hang is a failure too: the suite never hangs on the baseline); it survived when every test
     passed; build-failed when it does not compile, which is a defect of the list, reported and
     not counted. Mutations listed with "equivalent" (a change nothing can observe, with the
     reason) are run too, to check the claim, but not counted.
  Score = caught / (total - equivalent - build-failed).

Builds and tests run under `nice -n 19` with one job by default (the machines are shared).

Usage:
  scripts/mutate.py                  the whole round (slow: one incremental rebuild per mutation)
  scripts/mutate.py --only id1,id2   a subset
  scripts/mutate.py --list           the mutations, checked against the sources, nothing built
  scripts/mutate.py --check          only check the list (exit 1 if a snippet rotted)
  scripts/mutate.py --json out.json  also write the results
Options: --workdir DIR, --fresh (delete the scratch folder first), --jobs N, --nice N (0: none),
         --timeout S (default: 10 times the baseline's run, at least 60 s), --seed N.
Python 3 standard library only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "tests" / "mutations.json"
LIBRARY = Path("include") / "mqttbroker"

# What the unit tests' build needs, relative to the repository's root.
COPIED = ["include", "tests", "cmake", "CMakeLists.txt", "single_include", "README.md"]  # README: tests/readme reads it
NOT_COPIED = {Path("tests") / "integration", Path("tests") / "fuzz"}

UNIT_TESTS = "mqttbroker_tests"
MT_TESTS = "mqttbroker_mt_tests"
WS_TESTS = "mqttbroker_websocket_tests"  # the WebSocket transport's own program (mqttbroker::websocket)
TLS_TESTS = "mqttbroker_tls_tests"  # the TLS transport's (mqttbroker::tls)
SQLITE_TESTS = "mqttbroker_sqlite_tests"  # the durable storage's (mqttbroker::sqlite)
CLUSTER_TESTS = "mqttbroker_cluster_tests"  # cluster::nats against a real nats-server (mqttbroker::nats)
KNOWN_TARGETS = {UNIT_TESTS, MT_TESTS, WS_TESTS, TLS_TESTS, SQLITE_TESTS, CLUSTER_TESTS}

MUTATION_KEYS = {"id", "file", "find", "replace", "breaks", "equivalent", "also_run"}
REQUIRED_KEYS = {"id", "file", "find", "replace", "breaks"}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


# ---- the list


def load_list(path):
    """The mutations, each checked; exits naming every problem when one is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        sys.exit(f"mutate: cannot read {path}: {e}")
    problems = []
    mutations = data.get("mutations") if isinstance(data, dict) else None
    if not isinstance(mutations, list) or not mutations:
        sys.exit(f"mutate: {path}: expected an object with a non-empty list \"mutations\"")
    seen = set()
    sources = {}
    for i, m in enumerate(mutations):
        where = f"mutation #{i + 1}"
        if not isinstance(m, dict):
            problems.append(f"{where}: not an object")
            continue
        if isinstance(m.get("id"), str):
            where = f"mutation {m['id']}"
        unknown = set(m) - MUTATION_KEYS
        missing = REQUIRED_KEYS - set(m)
        if unknown:
            problems.append(f"{where}: unknown key(s) {sorted(unknown)}")
        if missing:
            problems.append(f"{where}: missing key(s) {sorted(missing)}")
            continue
        bad = [k for k in ("id", "file", "find", "replace", "breaks")
               if not isinstance(m[k], str) or (k != "replace" and not m[k].strip())]
        if bad:
            problems.append(f"{where}: {', '.join(bad)} must be non-empty strings")
            continue
        if not ID_RE.match(m["id"]):
            problems.append(f"{where}: id must be lower-case letters, digits and dashes")
        if m["id"] in seen:
            problems.append(f"{where}: id listed twice")
        seen.add(m["id"])
        if "equivalent" in m and (not isinstance(m["equivalent"], str) or not m["equivalent"].strip()):
            problems.append(f"{where}: \"equivalent\" must give the reason")
        also = m.get("also_run", [])
        if not isinstance(also, list) or any(t not in KNOWN_TARGETS for t in also):
            problems.append(f"{where}: \"also_run\" must list targets among {sorted(KNOWN_TARGETS)}")
        if m["find"] == m["replace"]:
            problems.append(f"{where}: the replacement is the snippet itself")
        rel = LIBRARY / m["file"]
        if rel not in sources:
            try:
                sources[rel] = (ROOT / rel).read_text(encoding="utf-8")
            except OSError:
                sources[rel] = None
        text = sources[rel]
        if text is None:
            problems.append(f"{where}: {rel} does not exist")
            continue
        n = text.count(m["find"])
        if n != 1:
            problems.append(f"{where}: the snippet occurs {n} times in {rel}, not once: {m['find']!r}")
    if problems:
        print(f"mutate: {path.relative_to(ROOT)} is out of date with the sources:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        sys.exit(1)
    return mutations


def targets_of(m):
    """The test programs a mutation's run builds and runs."""
    if m["file"].startswith("transport/websocket"):
        return [WS_TESTS]  # no other program includes those headers
    if m["file"] == "transport/tls.hpp":
        return [TLS_TESTS, WS_TESTS]  # wss runs over it too
    if m["file"] == "storage/sqlite.hpp":
        return [SQLITE_TESTS]  # no other program includes it
    if m["file"] == "cluster/nats.hpp":
        return [CLUSTER_TESTS]  # nor this one
    targets = [UNIT_TESTS]
    if m["file"].startswith("locking/") or MT_TESTS in m.get("also_run", []):
        targets.append(MT_TESTS)
    if SQLITE_TESTS in m.get("also_run", []):
        targets.append(SQLITE_TESTS)  # the engine's durable paths, through the real store
    return targets


# ---- the scratch tree


def copied_files(base):
    """Relative paths of the files under `base` that the scratch tree holds."""
    out = set()
    for top in COPIED:
        p = base / top
        if p.is_file():
            out.add(Path(top))
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                rel_dir = Path(dirpath).relative_to(base)
                dirnames[:] = [d for d in dirnames if rel_dir / d not in NOT_COPIED and d != "__pycache__"]
                for f in filenames:
                    out.add(rel_dir / f)
    return out


def sync_tree(src):
    """Makes `src` hold the repository's files: changed ones get a new time stamp (so they rebuild),
    unchanged ones keep theirs, files gone from the repository go."""
    wanted = copied_files(ROOT)
    changed = 0
    for rel in sorted(wanted):
        data = (ROOT / rel).read_bytes()
        dst = src / rel
        try:
            if dst.read_bytes() == data:
                continue
        except OSError:
            pass
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        changed += 1
    removed = 0
    for rel in copied_files(src) - wanted:
        (src / rel).unlink()
        removed += 1
    return changed, removed


# ---- building and running


class Runner:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.workdir).resolve()
        self.src = self.work / "src"
        self.build_dir = self.work / "build"
        self.saved = self.work / "baseline"
        self.snapshot = {}  # relative path -> (mtime_ns, size) of each saved build output

    def prefix(self):
        if self.args.nice and shutil.which("nice"):
            return ["nice", "-n", str(self.args.nice)]
        return []

    def configure(self):
        if (self.build_dir / "CMakeCache.txt").exists():
            return
        cmd = ["cmake", "-S", str(self.src), "-B", str(self.build_dir), "-DCMAKE_BUILD_TYPE=Debug",
               "-DMQTTBROKER_BUILD_TESTS=ON", "-DMQTTBROKER_BUILD_BENCH=OFF", "-DMQTTBROKER_BUILD_EXAMPLES=OFF",
               "-DMQTTBROKER_BUILD_FUZZ=OFF", "-DMQTTBROKER_INSTALL=OFF", "-DMQTTBROKER_HEADER_CHECK=OFF",
               "-DMQTTBROKER_WERROR=OFF", "-DMQTTBROKER_SANITIZE="]
        if shutil.which("ninja"):
            cmd += ["-G", "Ninja"]
        r = subprocess.run(self.prefix() + cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            print(r.stdout, file=sys.stderr)
            sys.exit("mutate: configuring the scratch build failed")

    def build(self, targets):
        """(ok, output) of an incremental build of `targets`."""
        cmd = ["cmake", "--build", str(self.build_dir), "--target", *targets, "--parallel", str(self.args.jobs)]
        r = subprocess.run(self.prefix() + cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return r.returncode == 0, r.stdout

    def program(self, target):
        return self.build_dir / "tests" / target

    def run_tests(self, target, timeout, stop_at_first):
        """('passed' | 'failed' | 'timeout' | 'crashed', detail, output)."""
        # Declaration order, for runs that repeat; each test case's time printed as it ends, so a
        # hang can be placed after the last test that finished.
        cmd = self.prefix() + [str(self.program(target)), "--order", "decl", "--durations", "yes"]
        if stop_at_first:
            cmd.append("--abort")
        env = dict(os.environ, MQTTBROKER_SEED=str(self.args.seed))
        p = subprocess.Popen(cmd, cwd=str(self.build_dir / "tests"), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            return "timeout", f"{target}: no end within {timeout:.0f} s (hang), {last_finished(out)}", out
        if p.returncode == 0:
            return "passed", "", out
        if p.returncode < 0:
            return "crashed", f"{target}: signal {-p.returncode}, {last_finished(out)}", out
        return "failed", f"{target}: {first_failure(out)}", out

    # The baseline's build outputs, saved once and put back after each mutation.

    def outputs(self):
        for path in self.build_dir.rglob("*"):
            if path.is_file() and (path.suffix == ".o" or path.name in KNOWN_TARGETS):
                yield path

    def save_baseline(self):
        if self.saved.exists():
            shutil.rmtree(self.saved)
        self.snapshot = {}
        for path in self.outputs():
            rel = path.relative_to(self.build_dir)
            dst = self.saved / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst)
            st = path.stat()
            self.snapshot[rel] = (st.st_mtime_ns, st.st_size)

    def restore_baseline(self):
        for rel, stamp in self.snapshot.items():
            path = self.build_dir / rel
            try:
                st = path.stat()
                if (st.st_mtime_ns, st.st_size) == stamp:
                    continue
            except OSError:
                pass
            shutil.copy2(self.saved / rel, path)  # bytes, mode and time stamps as they were


def first_failure(out):
    """The test case of the first failure in Catch2's console output, if it can be told."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if "FAILED:" in line or "due to unexpected exception" in line or "due to a fatal error" in line:
            return f"failed in {header_before(lines, i)}"
    m = re.search(r"test cases:.*", out)
    return m.group(0) if m else "failed"


def last_finished(out):
    """Where a run that hung or crashed stopped: after the last test case whose time was printed."""
    done = re.findall(r"^\d+\.\d+ s: (.*)$", out, re.MULTILINE)
    return f'after "{done[-1].strip()}"' if done else "in the first test case"


def header_before(lines, i):
    """Catch2 frames a test case's name (and sections) with lines of dashes; the nearest before i."""
    dashes = [k for k in range(min(i, len(lines))) if re.fullmatch(r"-{40,}", lines[k])]
    if len(dashes) >= 2:
        # The name, wrapped at 79 columns, then one line per section, each indented by two spaces.
        parts = []
        for s in lines[dashes[-2] + 1:dashes[-1]]:
            if not s.strip():
                continue
            if parts and not (s.startswith("  ") and not s.startswith("    ")):
                parts[-1] += " " + s.strip()  # a wrapped line
            else:
                parts.append(s.strip())
        if parts:
            return '"' + " / ".join(parts) + '"'
    return "an unnamed test"


def first_error(out):
    for line in out.splitlines():
        if "error:" in line:
            return line.strip()[:200]
    return "see the build output"


# ---- the round


def apply(text, m):
    assert text.count(m["find"]) == 1, m["id"]
    return text.replace(m["find"], m["replace"], 1)


def run_round(args, mutations):
    runner = Runner(args)
    started = time.monotonic()
    runner.work.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for sub in ("src", "build", "baseline"):
            shutil.rmtree(runner.work / sub, ignore_errors=True)
    changed, removed = sync_tree(runner.src)
    print(f"scratch tree: {runner.work} ({changed} file(s) copied, {removed} removed)", flush=True)
    runner.configure()

    needed = sorted({t for m in mutations for t in targets_of(m)})
    t0 = time.monotonic()
    ok, out = runner.build(needed)
    if not ok:
        print(out[-4000:], file=sys.stderr)
        sys.exit("mutate: the unmutated baseline does not build; nothing to measure")
    print(f"baseline built ({', '.join(needed)}) in {time.monotonic() - t0:.0f} s", flush=True)
    timeout = args.timeout
    slowest = 0.0
    for target in needed:
        t0 = time.monotonic()
        status, detail, out = runner.run_tests(target, args.timeout or 1800, stop_at_first=False)
        took = time.monotonic() - t0
        if status != "passed":
            print(out[-4000:], file=sys.stderr)
            sys.exit(f"mutate: the unmutated baseline fails ({detail}); fix that first")
        summary = re.findall(r"All tests passed.*", out)
        print(f"baseline {target}: {summary[-1] if summary else 'passed'} in {took:.1f} s", flush=True)
        slowest = max(slowest, took)
    if timeout is None:
        timeout = max(60.0, 10 * slowest)
    print(f"test timeout per program: {timeout:.0f} s; MQTTBROKER_SEED={args.seed}", flush=True)
    runner.save_baseline()

    results = []
    width = max(len(m["id"]) for m in mutations)
    for n, m in enumerate(mutations, 1):
        header = runner.src / LIBRARY / m["file"]
        original = header.read_bytes()
        st = header.stat()
        t0 = time.monotonic()
        result = {"id": m["id"], "file": m["file"], "breaks": m["breaks"]}
        if "equivalent" in m:
            result["equivalent"] = m["equivalent"]
        try:
            header.write_bytes(apply(original.decode("utf-8"), m).encode("utf-8"))
            targets = targets_of(m)
            ok, out = runner.build(targets)
            build_s = time.monotonic() - t0
            if not ok:
                result.update(status="build-failed", detail=first_error(out))
            else:
                result.update(status="survived", detail="every test passed")
                for target in targets:
                    status, detail, _ = runner.run_tests(target, timeout, stop_at_first=True)
                    if status != "passed":
                        result.update(status="caught", detail=detail, how=status)
                        break
            result["build_s"] = round(build_s, 1)
        finally:
            header.write_bytes(original)
            os.utime(header, ns=(st.st_atime_ns, st.st_mtime_ns))
            runner.restore_baseline()
        result["seconds"] = round(time.monotonic() - t0, 1)
        results.append(result)
        shown = result["status"]
        if "equivalent" in m:
            shown = "equivalent" if shown == "survived" else f"{shown} (listed as equivalent!)"
        print(f"[{n:>3}/{len(mutations)}] {m['id']:<{width}}  {shown:<12} {result['seconds']:>6.0f} s  {result['detail']}",
              flush=True)

    # The restored build must be the baseline's: a build now has nothing to compile.
    ok, out = runner.build(needed)
    if not ok or re.search(r"Building CXX|Linking CXX", out):
        print("mutate: warning: restoring the baseline's objects was not exact (the last build recompiled); "
              "the results stand, only the time was longer", file=sys.stderr)

    elapsed = time.monotonic() - started
    report(results, elapsed)
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": round(elapsed), "seed": args.seed, "results": results},
                                              indent=2) + "\n", encoding="utf-8")
    return results


def report(results, elapsed):
    equivalent = [r for r in results if "equivalent" in r]
    counted = [r for r in results if "equivalent" not in r]
    failed_build = [r for r in counted if r["status"] == "build-failed"]
    caught = [r for r in counted if r["status"] == "caught"]
    survived = [r for r in counted if r["status"] == "survived"]
    print()
    print(f"{'id':<34} {'file':<28} {'result':<12} detail")
    for r in results:
        status = r["status"]
        if "equivalent" in r:
            status = "equivalent" if status == "survived" else status + "!"
        print(f"{r['id']:<34} {r['file']:<28} {status:<12} {r['detail']}")
    print()
    if survived:
        print("survivors (no test noticed the bug):")
        for r in survived:
            print(f"  {r['id']} ({r['file']}): {r['breaks']}")
    if failed_build:
        print("mutations that do not compile (defects of the list, not counted):")
        for r in failed_build:
            print(f"  {r['id']}: {r['detail']}")
    wrong = [r for r in equivalent if r["status"] == "caught"]
    if wrong:
        print("listed as equivalent but caught (the claim is wrong; recheck them):")
        for r in wrong:
            print(f"  {r['id']}: {r['detail']}")
    denominator = len(results) - len(equivalent) - len(failed_build)
    score = 100.0 * len(caught) / denominator if denominator else 0.0
    print(f"score: {len(caught)}/{denominator} caught = {score:.1f}% "
          f"({len(results)} mutations, {len(equivalent)} equivalent, {len(failed_build)} failed to build); "
          f"{elapsed / 60:.1f} min")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated mutation ids")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--check", action="store_true", help="check the list against the sources and exit")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), f"mqttbroker-mutate-{os.getuid()}"))
    ap.add_argument("--fresh", action="store_true", help="start from an empty scratch folder")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--nice", type=int, default=19)
    ap.add_argument("--timeout", type=float, help="seconds per test program (default: 10x the baseline, >= 60)")
    ap.add_argument("--seed", type=int, default=1, help="MQTTBROKER_SEED for the randomised tests")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()

    mutations = load_list(LIST)
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        by_id = {m["id"]: m for m in mutations}
        unknown = [w for w in wanted if w not in by_id]
        if unknown:
            sys.exit(f"mutate: unknown mutation id(s): {', '.join(unknown)}")
        mutations = [by_id[w] for w in wanted]
    if args.check:
        files = sorted({m["file"] for m in mutations})
        eq = sum(1 for m in mutations if "equivalent" in m)
        print(f"mutate: {len(mutations)} mutations ({eq} listed as equivalent) over {len(files)} headers; "
              f"every snippet occurs exactly once")
        return
    if args.list:
        for m in mutations:
            extra = f"  [equivalent: {m['equivalent']}]" if "equivalent" in m else ""
            print(f"{m['id']:<34} {m['file']:<28} {m['breaks']}{extra}")
        print(f"{len(mutations)} mutations")
        return
    run_round(args, mutations)


if __name__ == "__main__":
    main()
