"""The Windows CPython under Wine (tools/winpython.py): preparing it, and one live PEB read.

    python bench/winpython.py [--runs 5] [--first]

* ``--first``: prepare from an empty cache (a temporary one): download the
  embeddable CPython, the headers and the Windows wheels, cross-compile and
  install this checkout, make the private Wine prefix. Network-bound.
* cached: ``winpython.py --prepare`` again with everything there (the
  checkout digest, the lock, and the checks that nothing is missing).
* ``peb --pid``: ``winpython.py -m ksinspect peb --pid N --json`` of
  tests/programs/peb_self.c running in the tool's prefix (python.exe start,
  import, NtQueryInformationProcess, ReadProcessMemory, Toolhelp32, the
  mapped-image walk, pefile), against the Linux-side reading of the same
  process in the same run (``ksinspect peb --pid`` under this Python:
  ptrace + /proc), and against ``python.exe -c pass`` (the interpreter's own
  start under Wine, the floor).

The last line is ``first-s=A cached-s=B peb-pid-s=C empty-python-s=D linux-peb-pid-s=E``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import wine_programs  # noqa: E402

TOOL = os.path.join(ROOT, "tools", "winpython.py")


def timed(argv, env=None):
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (" ".join(argv), result.stderr))
    return seconds, result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--first", action="store_true",
                        help="also prepare once from an empty cache (downloads ~50 MB)")
    args = parser.parse_args()
    reason = wine_programs.missing()
    if reason:
        raise SystemExit(reason)
    first = float("nan")
    if args.first:
        with tempfile.TemporaryDirectory(prefix="ksinspect-winpython-bench-") as cache:
            env = dict(os.environ)
            env.pop("WINEPREFIX", None)
            first, _ = timed([sys.executable, TOOL, "--quiet", "--cache", cache, "--prepare"],
                             env)
            subprocess.run(["wineserver", "-k"], env=dict(env, WINEPREFIX=os.path.join(
                cache, "prefix")))
            print("first prepare (empty cache): %.1f s" % first)
    info, reason = wine_programs.prepare_winpython()
    if info is None:
        raise SystemExit(reason)
    env = wine_programs.wine_environment(info["wine_prefix"])
    cached = statistics.median(timed([sys.executable, TOOL, "--quiet", "--prepare"], env)[0]
                               for _ in range(args.runs))
    print("cached prepare: %.2f s (median of %d)" % (cached, args.runs))
    with tempfile.TemporaryDirectory(prefix="ksinspect-winpython-bench-") as tmp:
        exe = wine_programs.build(tmp, 64)
        program = wine_programs.WineProgram(exe, env, tmp, "bench")
        try:
            empty = statistics.median(timed([sys.executable, TOOL, "--quiet", "-c", "pass"],
                                            env)[0] for _ in range(args.runs))
            runs = []
            for _ in range(args.runs):
                seconds, out = timed([sys.executable, TOOL, "--quiet", "-m", "ksinspect", "peb",
                                      "--pid", str(program.windows_pid), "--json"], env)
                assert json.loads(out)["address"] == program.hex("peb")
                runs.append(seconds)
            windows = statistics.median(runs)
            linux = statistics.median(
                timed([sys.executable, "-m", "ksinspect", "peb", "--pid", str(program.pid),
                       "--json"])[0] for _ in range(args.runs))
        finally:
            program.stop()
    print("peb --pid under the Windows CPython: %.2f s (python.exe -c pass: %.2f s); "
          "Linux side of the same process: %.2f s" % (windows, empty, linux))
    print("first-s=%.1f cached-s=%.2f peb-pid-s=%.2f empty-python-s=%.2f linux-peb-pid-s=%.2f"
          % (first, cached, windows, empty, linux))


if __name__ == "__main__":
    main()
