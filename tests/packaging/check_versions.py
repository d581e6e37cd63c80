#!/usr/bin/env python3
"""Every place that states the library's version states the same one (ctest: check_versions).

The source of truth is include/mqttbroker/version.hpp. Compared with it: the committed single
header, the CMake project version and the files CMake generated from it (the package version file,
mqttbroker.pc), the vcpkg port's vcpkg.json, the Conan recipe (which reads version.hpp itself and
must pin no other version), and the newest release in CHANGELOG.md.

    check_versions.py --root SRC --project-version X.Y.Z [--generated FILE ...]
"""

import argparse
import json
import pathlib
import re
import sys

HEADER_PARTS = re.compile(r"^#define MQTTBROKER_VERSION_(MAJOR|MINOR|PATCH) +(\d+)", re.M)


def header_version(path):
    parts = dict(HEADER_PARTS.findall(path.read_text(encoding="utf-8")))
    if set(parts) != {"MAJOR", "MINOR", "PATCH"}:
        raise SystemExit("%s: MQTTBROKER_VERSION_MAJOR/MINOR/PATCH not all found" % path)
    return "%s.%s.%s" % (parts["MAJOR"], parts["MINOR"], parts["PATCH"])


def generated_version(path):
    """The version a file CMake generated states: mqttbroker.pc or mqttbrokerConfigVersion.cmake."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r"^Version: *(\S+)$", text, re.M) or re.search(r'^set\(PACKAGE_VERSION "([^"]+)"\)', text, re.M)
    return m.group(1) if m else None


def changelog_version(path):
    """The newest release: the first '## [X.Y.Z]' heading ('## [Unreleased]' is not one)."""
    for m in re.finditer(r"^## \[([^\]]+)\]", path.read_text(encoding="utf-8"), re.M):
        if m.group(1).lower() != "unreleased":
            return m.group(1)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=pathlib.Path, required=True)
    parser.add_argument("--project-version", required=True)
    parser.add_argument("--generated", type=pathlib.Path, nargs="*", default=[])
    args = parser.parse_args()
    root = args.root

    truth = header_version(root / "include/mqttbroker/version.hpp")
    stated = {
        "single_include/mqttbroker/mqttbroker.hpp": header_version(root / "single_include/mqttbroker/mqttbroker.hpp"),
        "CMake project(VERSION)": args.project_version,
        "packaging/vcpkg/ports/mqttbroker/vcpkg.json":
            json.loads((root / "packaging/vcpkg/ports/mqttbroker/vcpkg.json").read_text(encoding="utf-8")).get("version"),
        "CHANGELOG.md (newest release)": changelog_version(root / "CHANGELOG.md"),
    }
    for path in args.generated:
        stated[str(path)] = generated_version(path)

    recipe = (root / "packaging/conan/conanfile.py").read_text(encoding="utf-8")
    pinned = re.search(r'^\s*version\s*=\s*"([^"]+)"', recipe, re.M)
    if pinned:
        stated["packaging/conan/conanfile.py (version =)"] = pinned.group(1)
    elif "version.hpp" not in recipe:
        stated["packaging/conan/conanfile.py"] = "neither a version nor a read of version.hpp"

    wrong = {where: v for where, v in stated.items() if v != truth}
    for where, v in stated.items():
        print("%-60s %s%s" % (where, v, "" if v == truth else "   <- differs"))
    if wrong:
        print("FAILED: include/mqttbroker/version.hpp says %s" % truth)
        return 1
    print("all state %s, as include/mqttbroker/version.hpp does" % truth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
