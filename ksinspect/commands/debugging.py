"""``ksinspect events`` (every debug event of a program, decoded, as it happens)
and the live form of ``ksinspect threads --pid N`` (every thread's CONTEXT):
the Win32 debug API, on Windows or under Wine (tools/winpython.py)."""
import argparse
from typing import IO, List

from ..errors import UnsupportedError
from ..live import signals, win32_api
from ..render import emit, table
from ._args import UsageError, seconds_argument
from .breakpoints import WINDOWS, parse_pid, EventWriter, say

LIVE_THREAD_COLUMNS = ("thread_id", "rip", "rsp", "rbp", "eflags", "cs", "ss", "dr7", "dr6",
                       "wow64_eip")


def _require_windows(command: str) -> None:
    reason = win32_api.unavailable_reason()
    if reason:
        raise UnsupportedError("%s: %s" % (command, reason))


def cmd_events(args, out: IO[str]) -> int:
    from ..live.win32_debugger import Debugger
    program: List[str] = list(args.program or [])
    if program and program[0] == "--":
        program = program[1:]
    if (args.pid is None) == (not program):
        raise UsageError("give a program to run after -- (ksinspect events -- PROGRAM ARGS) "
                         "or --pid PID, not both")
    _require_windows("events")
    pid = parse_pid(args.pid) if args.pid is not None else None
    writer = EventWriter(out, args.format)
    ended_by = None
    with signals.shutdown_on_signals(exiting=True):
        with signals.critical():
            dbg = (Debugger.attach(pid, debug_events=True) if pid is not None else
                   Debugger.start(program, kill_on_close=args.kill, debug_events=True))
        try:
            for event in dbg.events(count=None, timeout=args.timeout):
                writer.write(event.to_dict(), str(event))
                if args.explain and hasattr(event, "explain"):
                    out.write(event.explain() + "\n\n")
        except KeyboardInterrupt as exc:
            ended_by = getattr(exc, "signum", 2)
        finally:
            report = dbg.close()
        writer.write(report.to_dict(), str(report))
    if ended_by is not None:
        say("ksinspect: interrupted: process detached\n")
        return 128 + ended_by
    return 0


def _live_row(tid: int, ctx, ctx32) -> dict:
    r = ctx.registers
    return {"thread_id": tid, "rip": r.get("Rip"), "rsp": r.get("Rsp"), "rbp": r.get("Rbp"),
            "eflags": r.get("EFlags"), "cs": r.get("SegCs"), "ss": r.get("SegSs"),
            "dr7": r.get("Dr7"), "dr6": r.get("Dr6"),
            "wow64_eip": ctx32.registers.get("Eip") if ctx32 is not None else None}


def live_threads(args, out: IO[str]) -> int:
    """``threads --pid N``: Toolhelp32's threads, each CONTEXT decoded."""
    from ..live.win32_debugger import thread_contexts
    _require_windows("threads --pid")
    pid = parse_pid(args.pid)
    threads = thread_contexts(pid)
    rows = [_live_row(*t) for t in threads]
    document = [{"thread_id": tid, "context": ctx.to_dict(),
                 "wow64_context": ctx32.to_dict() if ctx32 is not None else None}
                for tid, ctx, ctx32 in threads]
    text = None
    if args.format == "table":
        parts = [table(rows, LIVE_THREAD_COLUMNS,
                       hex_columns=("rip", "rsp", "rbp", "eflags", "cs", "ss", "dr7", "dr6",
                                    "wow64_eip"))]
        if args.explain:
            for tid, ctx, ctx32 in threads:
                parts += ["", "thread %d" % tid, ctx.explain()]
                if ctx32 is not None:
                    parts += ["", "thread %d, 32-bit (Wow64GetThreadContext)" % tid,
                              ctx32.explain()]
        text = "\n".join(parts)
    emit(out, args.format, rows, document=document, text=text, columns=LIVE_THREAD_COLUMNS)
    return 0


def register(sub, output) -> None:
    p = sub.add_parser(
        "events", help="every Win32 debug event of a program, decoded (Windows, or Wine)",
        description="Run PROGRAM (after --) or attach to --pid PID under the Win32 debug API "
                    "and print every DEBUG_EVENT as it happens, decoded: CREATE_PROCESS (image "
                    "base, start address, image name), CREATE_THREAD, EXIT_THREAD and "
                    "EXIT_PROCESS with the exit code, LOAD_DLL/UNLOAD_DLL, OUTPUT_DEBUG_STRING "
                    "with its text, exceptions with their code, address and chance, RIP. "
                    "Exceptions the program raises go back to it (DBG_EXCEPTION_NOT_HANDLED). "
                    "Under Wine, PIDs are Windows PIDs. %s" % (
                        "" if WINDOWS else "(Needs Windows: on Linux run it with "
                        "tools/winpython.py under Wine.)"))
    p.add_argument("--pid", metavar="PID", help="attach to this process instead of running one")
    p.add_argument("--timeout", type=seconds_argument("--timeout"), metavar="S",
                   help="stop after S seconds")
    p.add_argument("--kill", action="store_true",
                   help="terminate the program ksinspect started at the end")
    p.add_argument("--explain", action="store_true",
                   help="each event's DEBUG_EVENT member by member after its line")
    p.add_argument("--format", choices=("table", "jsonl"), default="table",
                   help="one text line per event (default) or JSON lines")
    p.add_argument("--json", dest="format", action="store_const", const="jsonl",
                   help="short for --format jsonl")
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM ARGS",
                   help="the program to run and its arguments, after --")
    p.set_defaults(func=cmd_events)
