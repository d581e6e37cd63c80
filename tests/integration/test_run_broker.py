"""scripts/run-broker.sh as the README runs it, against the build tree under test
(MQTTBROKER_BUILD_DIR, which ctest sets): the user's flags reach the server unchanged, so
`--port N` serves on N (not on the default 1883, nor fails on a second --port); a client connects
and exchanges a message; SIGTERM stops it with status 0. Also: --help and --version answer without
starting a broker, and every flag the script's comments or the README's run section mention
exists."""

import os
import pathlib
import re
import subprocess

import harness as h
from test_examples import ExampleTestCase

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "run-broker.sh"
# The script builds the server target first; in a current build tree that is a check, but a bound
# on a hang must leave room for a relink.
STARTS_WITHIN = 90.0


def build_dir():
    d = os.environ.get("MQTTBROKER_BUILD_DIR")
    if not d:
        raise RuntimeError("MQTTBROKER_BUILD_DIR is not set (ctest sets it to the build tree under test)")
    return d


class RunBroker(ExampleTestCase):
    def run_script(self, *args):
        env = dict(os.environ, MQTTBROKER_BUILD_DIR=build_dir())
        r = subprocess.run(["bash", str(SCRIPT), *args], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=STARTS_WITHIN, env=env)
        h.assert_no_sanitizer_report(self, r.stderr, "run-broker.sh " + " ".join(args))
        return r

    def test_port_given_by_the_user_wins(self):
        ports = []

        def args():
            ports[:] = [h.free_port()]
            return ["bash", str(SCRIPT), "--bind", h.HOST, "--port", ports[0]]

        program, m = self.start(args, r"listening on ([0-9.]+):(\d+)", timeout=STARTS_WITHIN)
        self.assertEqual((m.group(1), int(m.group(2))), (h.HOST, ports[0]), "the server serves where --port said")

        sub = self.paho(ports[0], "run-broker-sub")
        sub.subscribe("run/broker", 1)
        pub = self.paho(ports[0], "run-broker-pub")
        pub.publish("run/broker", b"through run-broker.sh", 1)
        got = sub.get()
        self.assertEqual((got.topic, got.payload), ("run/broker", b"through run-broker.sh"))
        self.assert_stops(program)

    def test_help_and_version_start_nothing(self):
        r = self.run_script("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--port", r.stdout)
        self.assertNotIn("listening on", r.stdout + r.stderr)
        version = os.environ.get("MQTTBROKER_VERSION")
        self.assertTrue(version, "MQTTBROKER_VERSION is not set (ctest sets it to the project's version)")
        r = self.run_script("--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "mqttbroker " + version)

    def test_every_flag_mentioned_exists(self):
        """The script's comments and the README's "Run the broker" section name only flags that
        `--help` lists."""
        comments = "\n".join(line for line in SCRIPT.read_text().splitlines() if line.startswith("#"))
        readme = (ROOT / "README.md").read_text()
        section = re.search(r"^## Run the broker\n(.*?)^#+ ", readme, re.S | re.M)  # to the next heading
        self.assertIsNotNone(section, "README.md has no '## Run the broker' section")
        # Flags of other programs (`cmake --build`, `install-deps.sh --run`) are not the server's.
        text = re.sub(r"(cmake|install-deps\.sh) --[a-z-]+", "", comments + "\n" + section.group(1))
        mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))
        self.assertIn("--port", mentioned)
        r = self.run_script("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", r.stdout))
        self.assertEqual(sorted(mentioned - listed), [], "flags mentioned that the server does not have")


if __name__ == "__main__":
    h.main()
