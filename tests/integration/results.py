"""What an integration module counted: printed, and written where ctest says
(MQTTBROKER_IT_RESULTS) for scripts/test.sh's summary (summary.py). harness.py records each Python
module's counts through record(); run as a script it records a module that cannot run here as
skipped and exits 77, ctest's Skipped (tests/integration/CMakeLists.txt: test_mqttjs.mjs without
node). Standard library only, so it works where paho-mqtt is missing."""

import json
import os
import sys

SKIP_STATUS = 77  # ctest's SKIP_RETURN_CODE for the integration tests


def record(key, ran, passed, skipped, failed):
    """Prints the counts of module `key` (its ctest name) and writes them when ctest gives
    MQTTBROKER_IT_RESULTS. `skipped` is a list of (test, reason)."""
    print("\n== %s: %d ran, %d passed, %d skipped, %d failed" % (key, ran, passed, len(skipped), failed))
    for test, reason in skipped:
        print("SKIPPED: %s %s: %s" % (key, test, reason))
    sys.stdout.flush()
    folder = os.environ.get("MQTTBROKER_IT_RESULTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, key + ".json"), "w") as f:
            json.dump({"test": key, "ran": ran, "passed": passed, "failed": failed,
                       "skipped": [[t, r] for t, r in skipped]}, f)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: results.py MODULE_KEY REASON  (records MODULE_KEY as skipped for REASON)")
    record(sys.argv[1], 0, 0, [("*", sys.argv[2])], 0)
    sys.exit(SKIP_STATUS)
