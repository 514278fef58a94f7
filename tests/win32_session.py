"""The Windows side of tests/test_win32_debugger.py: run under the Windows
CPython of tools/winpython.py (under Wine), it drives
ksinspect.live.win32_debugger.Debugger against tests/programs/win_calls.c and
prints one JSON document: for each scenario the events (to_dict), what the
program printed about itself, the cleanup report, and what an independent
look afterwards found. The Linux side makes every assertion.

    python win32_session.py EXE WORKDIR [SCENARIO...]

The wow64_* scenarios run the 32-bit build of the same program,
win_calls32.exe beside EXE (absent: those scenarios say so and are skipped).
The cli_* ones run ``python -m ksinspect`` in a child interpreter and watch
the program through a handle of their own.
"""
import json
import os
import subprocess
import sys
import threading
import time
import traceback

from ksinspect.errors import DecodeError, EncodeError, KsinspectError
from ksinspect.live import win32_api as w
from ksinspect.live.win32_debugger import Debugger, thread_contexts

EXE, WORK = sys.argv[1], sys.argv[2]
EXE32 = os.path.join(os.path.dirname(EXE), "win_calls32.exe")


def lines_of(path):
    with open(path) as fh:
        return fh.read().splitlines()


def session(name, argv, setup, count=None, timeout=20.0, debug_events=False, midway=None,
            exe=EXE):
    out_path = os.path.join(WORK, name + ".out")
    result = {"argv": argv}
    with open(out_path, "w") as out:
        dbg = Debugger.start([exe] + argv, stdout=out, debug_events=debug_events)
        try:
            with dbg:
                result["armed"] = setup(dbg) or {}
                events = []
                for n, event in enumerate(dbg.events(count=count, timeout=timeout)):
                    events.append(event.to_dict())
                    if midway is not None and n == midway:
                        result["armed"]["pid"] = dbg.tracee.pid
                        raise RuntimeError("the notebook cell fails")
        except RuntimeError as exc:
            result["raised"] = str(exc)
        result["events"] = events
        result["report"] = dbg.report.to_dict()
        result["exit"] = dbg.wait()
        result["exit_while_traced"] = dbg.tracee.exit.status if dbg.tracee.exit else None
        result["wow64"] = dbg.tracee.wow64
    result["program"] = lines_of(out_path)
    return result


def untraced(argv, exe=EXE):
    path = os.path.join(WORK, "untraced-%d.out" % time.monotonic_ns())
    with open(path, "w") as out:
        code = subprocess.run([exe] + argv, stdout=out).returncode
    return {"program": lines_of(path), "exit": code}


def hw_write(dbg):
    bp = dbg.add_hardware("counter", "write", 4, slot=2)
    return {"address": bp.address, "dr7": dbg.dr7.raw,
            "dr7_read_back": dbg.tracee.debugreg(7), "dr2_read_back": dbg.tracee.debugreg(2)}


def sw(dbg):
    bp = dbg.add_software("bump")
    return {"address": bp.address, "original": bp.original,
            "in_memory": dbg.tracee.read(bp.address, 1)[0]}


def guard_any(dbg):
    g = dbg.add_guard("page")
    return {"page": g.page, "original": g.original_prot, "guarded": g.guarded_prot,
            "region": dbg.tracee.region(g.page).to_dict()}


def three(dbg):
    a = dbg.add_software("bump")
    dbg.add_hardware("counter", "w", 4)
    g = dbg.add_guard("page")
    return {"bump": a.address, "original": a.original, "page": g.page,
            "protect": g.original_prot}


def attach_scenario():
    """A program started without a debugger, attached to, watched, let go."""
    out_path = os.path.join(WORK, "attach.out")
    with open(out_path, "w") as out:
        proc = subprocess.Popen([EXE, "40", "30", "wait"], stdout=out)
        deadline = time.monotonic() + 30
        while "ready" not in lines_of(out_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        dbg = Debugger.attach(proc.pid, debug_events=True)
        with dbg:
            bp = dbg.add_hardware("counter", "write", 4)
            try:
                Debugger.attach(proc.pid)
                again = None
            except KsinspectError as exc:
                again = str(exc)
            events = [e.to_dict() for e in dbg.events(count=3, timeout=20)]
        report = dbg.report.to_dict()
        code = proc.wait(60)
    return {"pid": proc.pid, "address": bp.address, "events": events, "report": report,
            "exit": code, "program": lines_of(out_path), "second_attach": again}


def restored_check(pid, bump, page):
    """An independent look after a session: a fresh attach reads Dr7 of every
    thread, the byte at bump and the page's protection."""
    with Debugger.attach(pid) as look:
        return {"dr7": [look.tracee.debugreg(7, tid) for tid in look.tracee.threads],
                "byte": look.tracee.read(bump, 1)[0],
                "protect": look.tracee.region(page).protect}


def midway_scenario(exe=EXE, name="midway"):
    out_path = os.path.join(WORK, name + ".out")
    with open(out_path, "w") as out:
        dbg = Debugger.start([exe, "60", "20"], stdout=out)
        try:
            with dbg:
                armed = three(dbg)
                for i, _ in enumerate(dbg.events(timeout=20)):
                    if i == 4:
                        raise RuntimeError("the notebook cell fails")
        except RuntimeError:
            pass
        look = restored_check(dbg.tracee.pid, armed["bump"], armed["page"])
        code = dbg.wait()
    return {"armed": armed, "report": dbg.report.to_dict(), "look": look, "exit": code,
            "program": lines_of(out_path)}


def timeout_scenario():
    out_path = os.path.join(WORK, "timeout.out")
    with open(out_path, "w") as out:
        with Debugger.start([EXE, "30", "30"], stdout=out) as dbg:
            three(dbg)
            started = time.monotonic()
            events = [e.to_dict() for e in dbg.events(timeout=0.5)]
            took = time.monotonic() - started
        code = dbg.wait()
    return {"events": events, "took": took, "report": dbg.report.to_dict(), "exit": code,
            "program": lines_of(out_path)}


def errors_scenario():
    found = {}
    try:
        Debugger.attach(999996)
    except KsinspectError as exc:
        found["no_such_pid"] = [type(exc).__name__, str(exc)]
    with open(os.path.join(WORK, "errors.out"), "w") as out:
        with Debugger.start([EXE, "1", "0"], stdout=out, kill_on_close=True) as dbg:
            for what, call in (("symbol", lambda: dbg.add_software("no_such_function")),
                               ("unmapped", lambda: dbg.add_software(0x10)),
                               ("unmapped_guard", lambda: dbg.add_guard(0x10)),
                               ("export", lambda: dbg.tracee.resolve("kernel32!NoSuchExport")),
                               ("module", lambda: dbg.tracee.resolve("nosuch!Sleep")),
                               ("misaligned", lambda: dbg.add_hardware("counter+2", "w", 4)),
                               ("exec_len", lambda: dbg.add_hardware("bump", "x", 4))):
                try:
                    call()
                    found[what] = None
                except (DecodeError, EncodeError) as exc:
                    found[what] = [type(exc).__name__, str(exc)]
            found["sleep"] = dbg.tracee.resolve("kernel32!Sleep")[0]
            found["own_sleep"] = w.own_proc_address("kernel32.dll", "Sleep")
            found["hardware_after_refusals"] = len(dbg.hardware)
    try:
        Debugger.start([os.path.join(WORK, "no-such-program.exe")])
    except KsinspectError as exc:
        found["missing_program"] = [type(exc).__name__, str(exc)]
    return found


def threads_scenario():
    out_path = os.path.join(WORK, "threads.out")
    with open(out_path, "w") as out:
        proc = subprocess.Popen([EXE, "40", "20", "wait"], stdout=out)
        deadline = time.monotonic() + 30
        while "ready" not in lines_of(out_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        threads = [(tid, ctx.registers) for tid, ctx, _ in thread_contexts(proc.pid)]
        proc.wait(60)
    return {"pid": proc.pid, "threads": threads, "program": lines_of(out_path)}


def cli_scenario(args, program_args):
    """``python -m ksinspect ARGS -- EXE PROGRAM_ARGS`` in a child interpreter.
    The program shares its stdout; a handle to the program, opened as soon as
    it prints its pid, tells whether it still ran when ksinspect had exited,
    and its exit code (GetExitCodeProcess) once it ends."""
    proc = subprocess.Popen([sys.executable, "-m", "ksinspect"] + args + ["--", EXE]
                            + program_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines, found = [], threading.Event()
    handle = []

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("pid ") and not handle:
                handle.append(w.open_process(int(line.split()[1])))
                found.set()
    errors = []
    # Both pipes are read by threads: the program holds them too (it inherits
    # ksinspect's handles), so they reach their end only when it exits.
    readers = [threading.Thread(target=read, daemon=True),
               threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)]
    for reader in readers:
        reader.start()
    status = proc.wait(120)
    result = {"status": status}
    if found.wait(5):
        result["running_after_ksinspect"] = not w.wait_process(handle[0], 0)
        result["ended_within_30s"] = w.wait_process(handle[0], 30000)
        result["program_exit"] = w.exit_code(handle[0])
        w.close_handle(handle[0])
    for reader in readers:
        reader.join(30)
    result["lines"] = lines
    result["stderr"] = "".join(errors)
    return result


def wow64(scenario):
    """A scenario of the 32-bit build, or why it cannot run."""
    if not os.path.exists(EXE32):
        return lambda: {"skipped": "no %s (a 32-bit mingw-w64 build)" % EXE32}
    return scenario


SCENARIOS = {
    "start": lambda: session("start", ["2", "0", "dll", "ods", "exit=5"], lambda d: None,
                             debug_events=True),
    "hw_write": lambda: session("hw_write", ["3", "0", "thread"], hw_write),
    "hw_exec": lambda: session("hw_exec", ["4", "0"],
                               lambda d: {"address": d.add_hardware("bump", "x", 1).address}),
    "sw": lambda: session("sw", ["5", "0"], sw),
    "guard": lambda: session("guard", ["2", "0", "read"], guard_any, count=2),
    "guard_write_once": lambda: session(
        "guard_write_once", ["0", "0", "read"],
        lambda d: {"page": d.add_guard("page", access="write", once=True).page}),
    "untraced_sw": lambda: untraced(["5", "0"]),
    "untraced_attach": lambda: untraced(["40", "0"]),
    "untraced_midway": lambda: untraced(["60", "0"]),
    "untraced_timeout": lambda: untraced(["30", "0"]),
    "untraced_guard": lambda: untraced(["2", "0", "read"]),
    "attach": attach_scenario,
    "midway": midway_scenario,
    "timeout": timeout_scenario,
    "errors": errors_scenario,
    "threads": threads_scenario,
    "wow64_hw_write": wow64(lambda: session("wow64_hw_write", ["3", "0", "thread"], hw_write,
                                            exe=EXE32)),
    "wow64_hw_exec": wow64(lambda: session(
        "wow64_hw_exec", ["4", "0"],
        lambda d: {"address": d.add_hardware("bump", "x", 1).address}, exe=EXE32)),
    "wow64_sw": wow64(lambda: session("wow64_sw", ["5", "0"], sw, exe=EXE32)),
    "wow64_guard": wow64(lambda: session("wow64_guard", ["2", "0", "read"], guard_any,
                                         count=2, exe=EXE32)),
    "wow64_midway": wow64(lambda: midway_scenario(EXE32, "wow64_midway")),
    "untraced32_sw": wow64(lambda: untraced(["5", "0"], EXE32)),
    "untraced32_guard": wow64(lambda: untraced(["2", "0", "read"], EXE32)),
    "untraced32_midway": wow64(lambda: untraced(["60", "0"], EXE32)),
    "cli_break_kill": lambda: cli_scenario(
        ["break", "--kill", "--timeout", "2", "--sw", "bump", "--format", "jsonl"],
        ["60", "100"]),
    "cli_break_detach": lambda: cli_scenario(
        ["break", "--timeout", "2", "--sw", "bump", "--format", "jsonl"], ["60", "100"]),
    "cli_events_kill": lambda: cli_scenario(
        ["events", "--kill", "--timeout", "2", "--format", "jsonl"], ["60", "100"]),
    "cli_events_detach": lambda: cli_scenario(
        ["events", "--timeout", "2", "--format", "jsonl"], ["60", "100"]),
}


def main():
    wanted = sys.argv[3:] or list(SCENARIOS)
    results = {}
    for name in wanted:
        started = time.monotonic()
        try:
            results[name] = SCENARIOS[name]()
        except Exception:
            results[name] = {"crashed": traceback.format_exc()}
        results[name]["seconds"] = time.monotonic() - started
    print(json.dumps(results))


if __name__ == "__main__":
    main()
