#!/usr/bin/env python3
"""Run the portable part of the test suite under the Windows CPython, and compare with Linux.

    python tools/windows_suite.py              # both sides at once, then compare
    python tools/windows_suite.py --out DIR    # keep the two JUnit reports in DIR
    python tools/windows_suite.py --quick      # CI: without the hostile-input corpora

The selection is every test file but those that need Linux (LEFT_OUT, each
with its reason): the decoders and their reference model, table walks and
paging over the shipped images, the Windows structures over the shipped
samples, the CLI over files and the broken-input corpora; tests in them that
need Linux skip themselves there, saying why. They run under the official Windows CPython under Wine
with this checkout's win_amd64 build (tools/winpython.py, which prepares it
the first time), and, at the same time, under this Python on Linux. Each
test's outcome on Windows must be the Linux one: a test that fails or
errors on Windows only, or passes there while it fails on Linux, is a
mismatch (exit status 1). Tests that skip on Windows only are listed with
their reason (they are written to skip off Linux).

Left out, and why: see LEFT_OUT (Linux-only live features, tools that run
Wine or compilers themselves, notebooks that need a Jupyter kernel).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINPYTHON = os.path.join(ROOT, "tools", "winpython.py")

TESTS = os.path.join(ROOT, "tests")
LEFT_OUT = {
    "test_breakpoints.py": "the ptrace breakpoint lab: Linux only (os.geteuid, ptrace, gcc)",
    "test_live_linux.py": "this Linux machine's segments and LDT",
    "test_live_wine.py": "runs Wine programs from Linux and reads them with ptrace",
    "test_wine.py": "the Wine back-end's /proc and ptrace readers",
    "test_winpython.py": "runs tools/winpython.py (Wine) itself",
    "test_win32_debugger.py": "drives the Win32 debugger under tools/winpython.py from Linux",
    "test_fuzz.py": "builds libFuzzer harnesses with clang",
    "test_notebooks.py": "executes the notebooks through a Jupyter kernel (not installed "
                         "in the Windows interpreter)",
    "test_signals.py": "POSIX signals (SIGHUP, SIGQUIT) to the command",
    "test_break_signals.py": "POSIX signals to the ptrace breakpoint lab",
    "test_kdump.py": "imports cramjam when collected; cramjam's Windows wheel needs "
                     "bcryptprimitives.dll (ProcessPrng), which Wine 8 does not have",
}


def selection(quick=False):
    """Every tests/test_*.py but those LEFT_OUT (and, quick, QUICK_LEFT_OUT): a
    new test file runs on Windows too unless it is put there, with its reason."""
    out = dict(LEFT_OUT, **(QUICK_LEFT_OUT if quick else {}))
    return sorted(name for name in os.listdir(TESTS)
                  if name.startswith("test_") and name.endswith(".py") and name not in out)
# --quick (CI) leaves these out too: the hostile-input corpora, about 1,100 cases
# of the same library code, which take most of the Windows-side time under Wine.
QUICK_LEFT_OUT = {
    "test_broken_inputs.py": "broken images through every command (575 cases)",
    "test_hostile_round2.py": "hostile inputs, second round",
    "test_cpu_path_broken_inputs.py": "broken inputs of the logical-to-physical path",
    "test_broken_windows_inputs.py": "broken Windows structures and layouts",
    "test_walker_random.py": "random page-table images through every walker",
}
# Outcomes that differ for a reason outside ksinspect: listed, not counted as mismatches.
KNOWN_DIFFERENCES = {
    "tests.test_breakpoints_unsupported::test_unsupported_hosts[darwin-arm64-needs Linux]":
        "the test fakes sys.platform, but on a real Windows host the Win32 debugger "
        "(issue 13) answers with its own message",
    "tests.test_breakpoints_unsupported::test_unsupported_hosts[linux-aarch64-needs an "
    "x86-64 CPU]": "as above: the faked platform meets the real Win32 debugger",
    "tests.test_breakpoints_unsupported::test_unsupported_hosts[win32-AMD64-needs Linux]":
        "on Windows the Win32 debugger (issue 13) runs for real instead of refusing "
        "(IsWow64Process of the faked PID's handle fails)",
}
PYTEST_ARGS = ["-q", "-p", "no:cacheprovider"]


def _outcomes(path):
    """{test id: (outcome, message)} from a JUnit XML report."""
    results = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = "%s::%s" % (case.get("classname"), case.get("name"))
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error"}.get(child.tag, "skipped")
                message = (child.get("message") or "").strip()
                break
        if outcome == "passed" or test_id not in results:
            results[test_id] = (outcome, message)
    return results


def _module_skips(results):
    """{module: reason} of the files skipped whole when collected (pytest
    reports them as one case: no class name, the module as its name)."""
    return {test_id[2:]: message for test_id, (outcome, message) in results.items()
            if test_id.startswith("::") and outcome == "skipped"}


def compare(linux, windows):
    """(mismatches, skipped on Windows only, known differences) between two outcome maps."""
    mismatches, windows_skips, known = [], [], []
    skipped_modules = _module_skips(windows)
    for test_id in sorted(set(linux) | set(windows)):
        if test_id.startswith("::") and test_id[2:] in skipped_modules:
            continue
        ours = windows.get(test_id, ("absent", ""))
        theirs = linux.get(test_id, ("absent", ""))
        module = test_id.split("::", 1)[0]
        if ours[0] == "absent" and module in skipped_modules:
            ours = ("skipped", skipped_modules[module])
        if ours[0] == theirs[0]:
            continue
        if test_id in KNOWN_DIFFERENCES:
            known.append((test_id, theirs, ours, KNOWN_DIFFERENCES[test_id]))
        elif ours[0] == "skipped" and theirs[0] in ("passed", "failed", "error"):
            # Written to skip off Linux; a Linux failure is the Linux run's to report.
            windows_skips.append((test_id, ours[1]))
        else:
            mismatches.append((test_id, theirs, ours))
    return mismatches, windows_skips, known


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="keep linux.xml and windows.xml here")
    parser.add_argument("--windows-only", action="store_true",
                        help="run the Windows side only (no comparison)")
    parser.add_argument("--quick", action="store_true",
                        help="leave out the hostile-input corpora too (QUICK_LEFT_OUT; CI)")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="ksinspect-winsuite-")
    os.makedirs(out, exist_ok=True)
    tests = [os.path.join("tests", name) for name in selection(args.quick)]
    # Prepare first, so its time is not the suite's (and a missing tool is one line).
    prepared = subprocess.run([sys.executable, WINPYTHON, "--quiet", "--prepare"], cwd=ROOT,
                              stdout=subprocess.DEVNULL)
    if prepared.returncode != 0:
        return prepared.returncode
    started = time.monotonic()
    windows_run = subprocess.Popen(
        [sys.executable, WINPYTHON, "--quiet", "-m", "pytest", *PYTEST_ARGS,
         "--junitxml", os.path.join(out, "windows.xml"), *tests], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    linux_run = None
    if not args.windows_only:
        linux_run = subprocess.Popen(
            [sys.executable, "-m", "pytest", *PYTEST_ARGS, "--junitxml",
             os.path.join(out, "linux.xml"), *tests], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    windows_log, _ = windows_run.communicate()
    windows_seconds = time.monotonic() - started
    linux_log = linux_run.communicate()[0] if linux_run else ""
    windows_xml = os.path.join(out, "windows.xml")
    if not os.path.exists(windows_xml):
        print(windows_log)
        print("windows-suite: the Windows run wrote no report (exit %d)"
              % windows_run.returncode, file=sys.stderr)
        return 1
    windows = _outcomes(windows_xml)
    counts = {k: sum(1 for o, _ in windows.values() if o == k)
              for k in ("passed", "skipped", "failed", "error")}
    print("windows-suite: %d tests of %d files under the Windows CPython (Wine) in %.0f s: "
          "%d passed, %d skipped, %d failed, %d errors" % (
              len(windows), len(tests), windows_seconds, counts["passed"], counts["skipped"],
              counts["failed"], counts["error"]))
    left_out = dict(LEFT_OUT, **(QUICK_LEFT_OUT if args.quick else {}))
    print("windows-suite: left out: " + "; ".join("%s (%s)" % item for item in left_out.items()))
    if linux_run is None:
        bad = counts["failed"] + counts["error"]
        if bad:
            print(windows_log)
        return 1 if bad else 0
    linux_xml = os.path.join(out, "linux.xml")
    if not os.path.exists(linux_xml):
        print(linux_log)
        print("windows-suite: the Linux run wrote no report", file=sys.stderr)
        return 1
    mismatches, skips, known = compare(_outcomes(linux_xml), windows)
    for test_id, reason in skips:
        print("windows-suite: skipped on Windows only: %s (%s)" % (test_id, reason))
    for test_id, theirs, ours, why in known:
        print("windows-suite: known difference: %s: Linux %s, Windows %s: %s" % (
            test_id, theirs[0], ours[0], why))
    if mismatches:
        # The logs first, the mismatches last: CI shows the end of what ran.
        print(windows_log[-12000:])
        if any(theirs[0] in ("failed", "error") for _, theirs, _ in mismatches):
            print(linux_log[-8000:])
    for test_id, theirs, ours in mismatches:
        print("windows-suite: MISMATCH %s: Linux %s %s, Windows %s %s" % (
            test_id, theirs[0], theirs[1][:200], ours[0], ours[1][:200]))
    print("windows-suite: %d passed, %d failed, %d skipped" % (
        counts["passed"] - sum(1 for _, _, ours, _ in known if ours[0] == "passed"),
        len(mismatches), counts["skipped"]))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
