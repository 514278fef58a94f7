"""``ksinspect break``: hardware, software and memory breakpoints on a live
process, reported as a stream of events: through ptrace on Linux x86-64, through
the Win32 debug API on Windows (or under Wine, with tools/winpython.py)."""
import argparse
import contextlib
import json
import os
import re
import signal
import sys
from typing import IO, List, Optional

from ..errors import DecodeError, EncodeError, KsinspectError, UnsupportedError
from ..live import ptrace, signals, win32_api
from ..safe_text import printable
from ..live.ptrace_debugger import PtraceDebugger
from ._args import (UsageError, count_argument, parse_int, seconds_argument,
                    split_breakpoint_spec)

HW_FORM = "ADDR:CONDITION:LENGTH (e.g. counter:write:4 or 0x404028:rw:8)"
_SYMBOL = re.compile(r"^([A-Za-z0-9_.$-]+!)?[A-Za-z_.$?][A-Za-z0-9_.$@?]*(\+(0x)?[0-9A-Fa-f]+)?$")
WINDOWS = sys.platform == "win32"
SYMBOL_SOURCE = ("its COFF symbol table, or module!export" if WINDOWS
                 else ".symtab/.dynsym")


def backend():
    """(the Debugger class of this system, why it cannot run here or None)."""
    if WINDOWS:
        from ..live.win32_debugger import Debugger as Win32Debugger
        return Win32Debugger, win32_api.unavailable_reason()
    return PtraceDebugger, ptrace.unavailable_reason()


def _address(dbg, text: str, what: str):
    """A symbol of the program (``name`` or ``name+0x10``) or a hex address.
    ``0x``/``0n`` force a number; otherwise a symbol the program has wins
    over the same letters read as hex (``add``, ``beef``)."""
    cleaned = text.strip()
    if not cleaned.lower().startswith(("0x", "0n")) and _SYMBOL.match(cleaned):
        name = cleaned.partition("+")[0]
        try:
            known = dbg.tracee.has_symbol(name)
        except KsinspectError:
            known = False
        if known:
            return cleaned
    try:
        return parse_int(cleaned, what)
    except UsageError:
        raise UsageError("argument %s: %r is neither a symbol of the program (%s) "
                         "nor a hex address" % (what, text, SYMBOL_SOURCE)) from None


def parse_pid(text: str) -> int:
    try:
        pid = int(text, 10)
    except ValueError:
        raise UsageError("argument --pid: %r is not a decimal process id" % text) from None
    if pid <= 0:
        raise UsageError("argument --pid: %d is not a process id" % pid)
    return pid


class EventWriter:
    """Events out as they come: a line of text each, or one JSON object per line."""

    def __init__(self, out: IO[str], fmt: str):
        self.out, self.fmt = out, fmt

    def write(self, record: dict, text: str) -> None:
        self.out.write((json.dumps(record) if self.fmt == "jsonl" else printable(text)) + "\n")
        self.out.flush()


def _arm(dbg, args, writer: EventWriter) -> None:
    for spec in args.hw or ():
        first, cond, length, extras = split_breakpoint_spec(spec, "--hw", HW_FORM)
        if extras:
            raise UsageError("argument --hw: %r is not %s" % (spec, HW_FORM))
        where = _address(dbg, first, "--hw")
        try:
            bp = dbg.add_hardware(where, cond, length)
        except (EncodeError, DecodeError) as exc:
            raise UsageError("argument --hw %s: %s" % (spec, exc)) from None
        writer.write(dict(event="armed", **bp.to_dict()),
                     "armed  hw     DR%d = %#x%s, %s/%d" % (
                         bp.slot, bp.address, " <%s>" % bp.symbol if bp.symbol else "",
                         bp.condition.label, bp.length))
    if dbg.hardware:
        dr7 = dbg.dr7
        writer.write({"event": "dr7", "dr7": dr7.to_dict()}, "armed  %s" % dr7)
    for spec in args.sw or ():
        where = _address(dbg, spec, "--sw")
        try:
            bp = dbg.add_software(where)
        except (EncodeError, DecodeError) as exc:
            raise UsageError("argument --sw %s: %s" % (spec, exc)) from None
        writer.write(dict(event="armed", **bp.to_dict()),
                     "armed  sw     %#x%s: byte %#04x saved, 0xcc written" % (
                         bp.address, " <%s>" % bp.symbol if bp.symbol else "", bp.original))
    for spec in args.guard or ():
        text, _, access = spec.partition(":")
        access = {"": "any", "any": "any", "rw": "any", "w": "write", "write": "write"}.get(
            access.lower())
        if access is None:
            raise UsageError("argument --guard: %r is not ADDR[:any|write]" % spec)
        where = _address(dbg, text, "--guard")
        try:
            guard = dbg.add_guard(where, access, once=args.once)
        except (EncodeError, DecodeError) as exc:
            raise UsageError("argument --guard %s: %s" % (spec, exc)) from None
        writer.write(dict(event="armed", **guard.to_dict()),
                     "armed  guard  page %#x%s: %s -> %s (%s)" % (
                         guard.page, " <%s>" % guard.symbol if guard.symbol else "",
                         guard.original_rights, guard.guarded_rights,
                         "VirtualProtectEx" if WINDOWS else "mprotect injected"))


def cmd_break(args, out):
    program: List[str] = list(args.program or [])
    if program and program[0] == "--":
        program = program[1:]
    if (args.pid is None) == (not program):
        raise UsageError("give a program to run after -- (ksinspect break ... -- PROGRAM ARGS) "
                         "or --pid PID, not both")
    if not (args.hw or args.sw or args.guard):
        raise UsageError("give at least one breakpoint: --hw, --sw or --guard")
    if args.count is not None and args.count <= 0:
        raise UsageError("argument --count: %d is not a positive number" % args.count)
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("argument --timeout: %s is not a positive number of seconds" % args.timeout)
    debugger, reason = backend()
    if reason:
        raise UnsupportedError("break: %s" % reason)
    if args.events and not WINDOWS:
        raise UsageError("argument --events: debug events are the Win32 debug API's (run "
                         "ksinspect on Windows, or under Wine with tools/winpython.py)")
    pid = parse_pid(args.pid) if args.pid is not None else None
    writer = EventWriter(out, args.format)
    with signals.shutdown_on_signals(notice=_still_restoring, exiting=True) as session:
        return _session(debugger, args, pid, program, writer, session)


def say(text: str) -> None:
    """One line on stderr, which may be closed or a hung-up terminal."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "backslashreplace"))


_RESTORED = []        # set once the process is put back: a later signal needs no notice


def _still_restoring(signum: int, count: int) -> None:
    if _RESTORED:
        return
    say("ksinspect: %s: still putting the process back (only SIGKILL stops that, and "
         "would leave its breakpoints in place)\n" % signals.signal_label(signum))


def _session(Debugger, args, pid, program, writer, session) -> int:
    """Attach or start, arm, stream the events; whatever ends it (the count,
    the timeout, the program's end, an ending signal, a closed output), put
    everything back and detach before returning."""
    ended_by: Optional[int] = None          # the signal that ended the session
    output_closed = False
    try:
        with signals.critical():            # a signal now lands after the attach
            extra = {"debug_events": True} if getattr(args, "events", False) else {}
            dbg = Debugger.attach(pid, **extra) if pid is not None else Debugger.start(
                program, kill_on_close=args.kill, **extra)
    except KeyboardInterrupt as exc:
        # Nothing was written into the process yet: it is simply let go.
        signum = getattr(exc, "signum", signal.SIGINT)
        say("ksinspect: interrupted (%s) before any breakpoint was set\n"
             % signals.signal_label(signum))
        return 128 + signum
    try:
        try:
            _arm(dbg, args, writer)
        except BaseException:
            if dbg.tracee.started:
                dbg.kill_on_close = True        # never let it run without what was asked
            raise
        what = "program %s" % " ".join(program) if program else "process %d" % pid
        writer.write({"event": "start", "pid": dbg.tracee.pid, "started": dbg.tracee.started},
                     "run    pid %-7d %s" % (dbg.tracee.pid, what))
        for event in dbg.events(count=args.count, timeout=args.timeout):
            writer.write(event.to_dict(), str(event))
    except KeyboardInterrupt as exc:
        ended_by = getattr(exc, "signum", signal.SIGINT)
    except BrokenPipeError:
        output_closed = True
    finally:
        report = dbg.close()
        _RESTORED.append(True)
    # A signal during the restore ends the session too; a request to go away
    # (SIGTERM...) taken after a Ctrl-C still wins (signals.ending_signal).
    if session.received:
        ended_by = signals.ending_signal(session.received)
    if not output_closed:
        try:
            writer.write(report.to_dict(), str(report))
        except BrokenPipeError:
            output_closed = True
    if ended_by is not None:
        say("ksinspect: interrupted%s: breakpoints removed, process detached\n" % (
            "" if ended_by == signal.SIGINT else " by " + signals.signal_label(ended_by)))
        if ended_by != signal.SIGINT:
            return 128 + ended_by       # asked to go away: the program runs on without us
    status = 0 if ended_by is None else 128 + ended_by
    if dbg.tracee.started and not args.kill:
        # After Ctrl-C, as after the end of the session, ksinspect waits for
        # the program it started (a shell's job ends when its program does).
        # A second Ctrl-C (held, never raised) stops the waiting, also one
        # that came during the restore.
        taken = min(len(session.received), 1)
        try:
            end = dbg.wait_exit(give_up=lambda: len(session.received) > taken)
        except KeyboardInterrupt as exc:
            return 128 + getattr(exc, "signum", signal.SIGINT)
        if end is not None and not output_closed:
            with contextlib.suppress(BrokenPipeError):
                writer.write(dict(end.to_dict(), after_detach=True), str(end) + " (after detach)")
    if output_closed:
        raise BrokenPipeError                    # the CLI's rule: not an error, silent
    return status


def register(sub, output) -> None:
    p = sub.add_parser(
        "break", help="hardware, software and memory breakpoints on a live process (Linux "
                      "x86-64 through ptrace, Windows through the debug API)",
        description="Run PROGRAM (after --) or attach to --pid PID, set breakpoints, and print "
                    "one event per hit as it happens. ADDR is a symbol of the program (Linux: "
                    "its ELF symbol table; Windows: its COFF symbol table, or module!export "
                    "such as kernel32!Sleep), name or name+0x10, or a hex address (0x forces "
                    "hex). Under Wine, PIDs are Windows PIDs (GetCurrentProcessId). At the "
                    "end (--count, --timeout, Ctrl-C, the program exiting) every byte, debug "
                    "register and page protection is put back and the process is detached; a "
                    "program ksinspect started then runs on, and ksinspect waits for it.")
    p.add_argument("--hw", action="append", metavar="ADDR:CONDITION:LENGTH",
                   help="hardware breakpoint in the next free DR0-DR3: CONDITION execute, write "
                        "or readwrite (x, w, rw); LENGTH 1, 2, 4 or 8, the address aligned to it")
    p.add_argument("--sw", action="append", metavar="ADDR",
                   help="software breakpoint: INT3 (0xCC) over the byte at ADDR")
    p.add_argument("--guard", action="append", metavar="ADDR[:any|write]",
                   help="memory breakpoint: take the rights of ADDR's page away (any access, or "
                        "writes only)")
    p.add_argument("--once", action="store_true",
                   help="guards fire once and are not re-armed (like Windows PAGE_GUARD)")
    p.add_argument("--pid", metavar="PID", help="attach to this process instead of running one")
    p.add_argument("--count", type=count_argument("--count", 1, 1 << 62), metavar="N",
                   help="stop after N breakpoint hits")
    p.add_argument("--timeout", type=seconds_argument("--timeout"), metavar="S",
                   help="stop after S seconds (a positive, finite number)")
    p.add_argument("--kill", action="store_true",
                   help="kill the program ksinspect started at the end instead of letting it "
                        "run on")
    p.add_argument("--format", choices=("table", "jsonl"), default="table",
                   help="one text line per event (default) or JSON lines, written as each "
                        "event happens (a stream: no JSON array, no CSV)")
    p.add_argument("--json", dest="format", action="store_const", const="jsonl",
                   help="short for --format jsonl")
    p.add_argument("--events", action="store_true",
                   help="Windows: also print every debug event (CREATE_PROCESS, LOAD_DLL, "
                        "exceptions, OutputDebugString...), decoded")
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM ARGS",
                   help="the program to run and its arguments, after --")
    p.set_defaults(func=cmd_break)
