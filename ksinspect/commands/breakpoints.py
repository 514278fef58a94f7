"""``ksinspect break``: hardware, software and memory breakpoints on a live
Linux x86-64 process, reported as a stream of events."""
import argparse
import json
import os
import re
import signal
from typing import IO, List

from ..errors import DecodeError, EncodeError, KsinspectError, UnsupportedError
from ..live import ptrace
from ..live.debugger import Debugger, ExitEvent, prot_text
from ._args import UsageError, parse_int, split_breakpoint_spec

HW_FORM = "ADDR:CONDITION:LENGTH (e.g. counter:write:4 or 0x404028:rw:8)"
_SYMBOL = re.compile(r"^[A-Za-z_.$][A-Za-z0-9_.$@]*(\+(0x)?[0-9A-Fa-f]+)?$")
EXIT_INTERRUPTED = 130


def _address(dbg: Debugger, text: str, what: str):
    """A symbol of the program (``name`` or ``name+0x10``) or a hex address.
    ``0x``/``0n`` force a number; otherwise a symbol the program has wins
    over the same letters read as hex (``add``, ``beef``)."""
    cleaned = text.strip()
    if not cleaned.lower().startswith(("0x", "0n")) and _SYMBOL.match(cleaned):
        name = cleaned.partition("+")[0]
        try:
            known = name in dbg.tracee.symbols.elf
        except KsinspectError:
            known = False
        if known:
            return cleaned
    try:
        return parse_int(cleaned, what)
    except UsageError:
        raise UsageError("argument %s: %r is neither a symbol of the program (.symtab/.dynsym) "
                         "nor a hex address" % (what, text)) from None


def _parse_pid(text: str) -> int:
    try:
        pid = int(text, 10)
    except ValueError:
        raise UsageError("argument --pid: %r is not a decimal process id" % text) from None
    if pid <= 0:
        raise UsageError("argument --pid: %d is not a process id" % pid)
    return pid


class _Writer:
    """Events out as they come: a line of text each, or one JSON object per line."""

    def __init__(self, out: IO[str], fmt: str):
        self.out, self.fmt = out, fmt

    def write(self, record: dict, text: str) -> None:
        self.out.write((json.dumps(record) if self.fmt == "jsonl" else text) + "\n")
        self.out.flush()


def _arm(dbg: Debugger, args, writer: _Writer) -> None:
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
                     "armed  guard  page %#x%s: %s -> %s (mprotect injected)" % (
                         guard.page, " <%s>" % guard.symbol if guard.symbol else "",
                         prot_text(guard.original_prot), prot_text(guard.guarded_prot)))


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
    reason = ptrace.unavailable_reason()
    if reason:
        raise UnsupportedError("break: %s" % reason)
    pid = _parse_pid(args.pid) if args.pid is not None else None
    writer = _Writer(out, args.format)

    dbg = Debugger.attach(pid) if pid is not None else Debugger.start(program,
                                                                       kill_on_close=args.kill)
    status = 0
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
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    finally:
        report = dbg.close()
    writer.write(report.to_dict(), str(report))
    if status == EXIT_INTERRUPTED:
        os.write(2, b"ksinspect: interrupted: breakpoints removed, process detached\n")
    if dbg.tracee.started and not args.kill:
        try:
            wait_status = dbg.wait()
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        if wait_status is not None:
            end = ExitEvent(dbg.tracee.pid, os.WEXITSTATUS(wait_status)
                            if os.WIFEXITED(wait_status) else None,
                            signal.Signals(os.WTERMSIG(wait_status)).name
                            if os.WIFSIGNALED(wait_status) else None)
            writer.write(dict(end.to_dict(), after_detach=True), str(end) + " (after detach)")
    return status


def register(sub, output) -> None:
    p = sub.add_parser(
        "break", help="hardware, software and memory breakpoints on a live process (Linux x86-64)",
        description="Run PROGRAM (after --) or attach to --pid PID, set breakpoints, and print "
                    "one event per hit as it happens. ADDR is a symbol of the program's ELF "
                    "symbol table (name or name+0x10) or a hex address (0x forces hex). At the "
                    "end (--count, --timeout, Ctrl-C, the program exiting) every byte, debug "
                    "register and page protection is put back and the process is detached; a "
                    "program ksinspect started then runs on, and ksinspect waits for it.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--count", type=int, metavar="N", help="stop after N breakpoint hits")
    p.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--kill", action="store_true",
                   help="kill the program ksinspect started at the end instead of letting it "
                        "run on")
    p.add_argument("--format", choices=("table", "jsonl"), default="table",
                   help="one text line per event (default) or JSON lines")
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM ARGS")
    p.set_defaults(func=cmd_break)
