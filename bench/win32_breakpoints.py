"""Cost of one breakpoint hit through the Win32 backend under Wine, against the
ptrace backend on Linux and a minimal C debug loop built with mingw, same run.

tests/programs/win_calls.c (mingw) calls bump(), writes `counter` and one
byte of `page` N times; tests/programs/calls.c (gcc) does the same on Linux.
For each kind (software INT3 on bump, hardware write watchpoint on counter,
guard page on page) a whole session of N hits is timed and divided by N:

* win32: ksinspect.live.win32_debugger.Debugger inside the Windows CPython of
  tools/winpython.py (this script runs itself there), in the prefix of
  $WINEPREFIX or the tool's own;
* ptrace: ksinspect.live.debugger.Debugger on Linux (bench/breakpoints.py's
  session);
* C: bench/win32_loop.c, the same three breakpoints with nothing but the
  debug API calls each needs (WaitForDebugEvent, Get/SetThreadContext,
  Read/WriteProcessMemory, FlushInstructionCache, VirtualProtectEx,
  ContinueDebugEvent), under the same Wine: the floor of the Win32 API there.

    python bench/win32_breakpoints.py [--count 500] [--rounds 3]

Each figure is the best of ``--rounds`` alternating rounds (one hit costs a few
round trips through wineserver, whose scheduling on a shared machine makes
single sessions vary by up to 10x).

The last line is ``win32-sw-us=.. win32-hw-us=.. win32-guard-us=.. ptrace-sw-us=..
ptrace-hw-us=.. ptrace-guard-us=.. c-sw-us=.. c-hw-us=.. c-guard-us=..``.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROGRAMS = os.path.join(ROOT, "tests", "programs")


def windows_side(exe: str, n: int) -> None:
    """Run under the Windows CPython: bench/breakpoints.py's own session, whose
    ``ksinspect.live.debugger.Debugger`` is the Win32 backend there; JSON out."""
    sys.path.insert(0, HERE)
    from breakpoints import ksinspect_session
    print(json.dumps({kind: ksinspect_session(exe, kind, n) for kind in ("sw", "hw", "guard")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds; the best of each figure is kept (default 3)")
    args = parser.parse_args()
    n = args.count
    sys.path.insert(0, HERE)
    from breakpoints import build, ksinspect_session     # the ptrace bench's session
    kinds = ("sw", "hw", "guard")
    best = {who: {} for who in ("win32", "ptrace", "c")}

    def keep(who, kind, value):
        best[who][kind] = min(value, best[who].get(kind, value))

    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "win_calls.exe")
        loop = os.path.join(tmp, "win32_loop.exe")
        for source, out in ((os.path.join(PROGRAMS, "win_calls.c"), exe),
                            (os.path.join(HERE, "win32_loop.c"), loop)):
            subprocess.run(["x86_64-w64-mingw32-gcc", "-O1", "-o", out, source], check=True)
        symbols = subprocess.run(["x86_64-w64-mingw32-nm", exe], capture_output=True, text=True,
                                 check=True).stdout.split()
        address = {kind: symbols[symbols.index(name) - 2]
                   for kind, name in (("sw", "bump"), ("hw", "counter"), ("guard", "page"))}
        winpython = [sys.executable, os.path.join(ROOT, "tools", "winpython.py"), "--quiet"]
        info = json.loads(subprocess.run(winpython + ["--info"], capture_output=True, text=True,
                                         check=True).stdout)
        env = dict(os.environ, WINEDEBUG="-all")
        env.setdefault("WINEPREFIX", info["wine_prefix"])
        calls, _ = build(tmp)
        for _ in range(args.rounds):
            got = subprocess.run(winpython + [os.path.abspath(__file__), "--windows-side",
                                              "Z:" + exe, str(n)], capture_output=True, text=True)
            if got.returncode:
                sys.exit(got.stderr)
            for kind, value in json.loads(got.stdout.splitlines()[-1]).items():
                keep("win32", kind, value)
            for kind in kinds:
                c_out = subprocess.run(["wine", loop, kind, "Z:" + exe, str(n), address[kind]],
                                       env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                       text=True, check=True).stdout.split()
                assert int(c_out[0]) == n, (kind, c_out)
                keep("c", kind, float(c_out[1]) / n * 1e6)
                keep("ptrace", kind, ksinspect_session(calls, kind, n))
    for kind in kinds:
        print("%-5s win32 (Wine) %8.1f us per hit   C loop (Wine, the floor) %8.1f   "
              "ptrace (Linux) %8.1f" % (kind, best["win32"][kind], best["c"][kind],
                                        best["ptrace"][kind]))
    print(" ".join("%s-%s-us=%.0f" % (who, kind, best[who][kind])
                   for who in ("win32", "ptrace", "c") for kind in kinds))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--windows-side":
        windows_side(sys.argv[2], int(sys.argv[3]))
    else:
        main()
