"""Cost of one breakpoint hit: ksinspect's Debugger against peers, same run.

tests/programs/calls.c calls bump(), writes `counter` and touches `page` N
times. For each kind (software INT3 on bump, hardware write watchpoint on
counter, guard page on page) the script times a whole session of N hits
and prints microseconds per hit. Peers, measured in the same run:

* a minimal C tracer (bench/hw_loop.c): PTRACE_POKEUSER DR0/DR7, then per hit
  waitpid + GETREGS + PEEKDATA + PEEKUSER(DR6) + POKEUSER(DR6) + CONT: the
  floor for a hardware hit through ptrace;
* gdb, when installed: ``break bump`` / ``watch counter`` with an ignore
  count, so it stops and resumes internally on every hit without printing
  (its start-up time is included, once per session).

    python bench/breakpoints.py [--count 2000]

The last line is ``sw-us=A hw-us=B guard-us=C hw-vs-c=R``.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

from ksinspect.live.debugger import Debugger

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(HERE, "..", "tests", "programs")


def build(tmp: str):
    calls = os.path.join(tmp, "calls")
    loop = os.path.join(tmp, "hw_loop")
    subprocess.run(["gcc", "-O1", "-o", calls, os.path.join(PROGRAMS, "calls.c")], check=True)
    subprocess.run(["gcc", "-O2", "-o", loop, os.path.join(HERE, "hw_loop.c")], check=True)
    return calls, loop


def ksinspect_session(calls: str, kind: str, n: int) -> float:
    with open(os.devnull, "w") as devnull, Debugger.start([calls, str(n)], stdout=devnull) as dbg:
        if kind == "sw":
            dbg.add_software("bump")
        elif kind == "hw":
            dbg.add_hardware("counter", "write", 4)
        else:
            dbg.add_guard("page")
        start = time.perf_counter()
        hits = sum(1 for e in dbg.events(count=n, timeout=120) if e.kind == kind)
        elapsed = time.perf_counter() - start
    assert hits == n, (kind, hits)
    return elapsed / n * 1e6


def timed(argv) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    n = parser.parse_args().count
    with tempfile.TemporaryDirectory() as tmp:
        calls, loop = build(tmp)
        result = {kind: ksinspect_session(calls, kind, n) for kind in ("sw", "hw", "guard")}
        c_us = timed([loop, str(n)]) / n * 1e6
        for kind in ("sw", "hw", "guard"):
            print("ksinspect %-5s %8.1f us per hit" % (kind, result[kind]))
        print("C hw loop       %8.1f us per hit (floor)" % c_us)
        gdb = shutil.which("gdb")
        if gdb:
            sw = timed([gdb, "-q", "-batch", "-ex", "break bump", "-ex", "run", "-ex",
                        "ignore 1 %d" % (n + 1), "-ex", "continue", "--args", calls, str(n)])
            hw = timed([gdb, "-q", "-batch", "-ex", "break main", "-ex", "run", "-ex",
                        "watch counter", "-ex", "ignore 2 %d" % (n + 1), "-ex", "continue",
                        "--args", calls, str(n)])
            print("gdb sw          %8.1f us per hit (start-up included)" % (sw / n * 1e6))
            print("gdb hw watch    %8.1f us per hit (start-up included)" % (hw / n * 1e6))
        else:
            print("gdb             not installed")
        print("sw-us=%.0f hw-us=%.0f guard-us=%.0f hw-vs-c=%.1f" % (
            result["sw"], result["hw"], result["guard"], result["hw"] / c_us))


if __name__ == "__main__":
    main()
