"""A breakpoint lab on Linux x86-64: hardware, software and memory breakpoints
set with ptrace, every hit reported as a value, everything put back at the end.

The three kinds a debugger has (the seed notes' 软件断点 / 硬件断点 / 内存断点):

* **Software breakpoint** (INT3): the first byte of the instruction is saved
  and replaced by 0xCC. Executing it raises #BP, a trap, so the kernel stops
  the thread with SIGTRAP (si_code SI_KERNEL) and RIP one byte *past* the
  0xCC. The debugger puts the original byte back, rewinds RIP by one,
  single-steps the real instruction (EFLAGS.TF, a #DB with DR6.BS) and writes
  0xCC again ("re-arms") so the next call stops too (Intel SDM vol. 2A
  "INT n/INTO/INT3/INT1"; vol. 3A §6.5 faults and traps).
* **Hardware breakpoint**: the address goes in DR0-DR3 and its condition and
  length in DR7, encoded by :func:`ksinspect.x86.debugreg.encode_dr7`, whose
  checks apply (a data breakpoint's address must be aligned to its length;
  an execute breakpoint has length 1). User space cannot execute MOV DRn, so
  they are written through ``PTRACE_POKEUSER`` at
  ``offsetof(struct user, u_debugreg[n])`` (:mod:`ksinspect.live.ptrace`),
  which the kernel turns into perf hw_breakpoint events. A hit is #DB: DR6
  says which slot fired (B0-B3) or that it was a single step (BS). Data
  breakpoints are *traps*, reported after the write, so the old value is the
  one read when the watchpoint was armed or last hit and the new one is read
  at the stop; execute breakpoints are faults, reported before the
  instruction (SDM vol. 3B §17.2.3-17.2.5, §17.3.1). The processor never
  clears DR6, so the debugger writes its "nothing happened" value
  0xFFFF0FF0 after each hit (§17.2.3; Linux keeps a per-thread virtual DR6
  that ptrace reads and writes, arch/x86/kernel/ptrace.c).
* **Memory breakpoint**: the page holding the address loses its access
  rights (PROT_NONE, or read-only to catch writes only). ptrace cannot call
  mprotect(2) for the tracee, so the debugger makes the *tracee* call it:
  it saves the registers, points RIP at a ``syscall`` instruction (two
  bytes 0F 05 found in the vDSO, so no code is modified), sets RAX=10
  (__NR_mprotect), RDI/RSI/RDX, single-steps, reads the result in RAX and
  puts the registers back. An access then faults (#PF), the kernel sends
  SIGSEGV with si_code SEGV_ACCERR and si_addr the faulting address; the
  debugger reports it with RIP (the faulting instruction, not yet executed),
  gives the page its rights back, single-steps the instruction, and takes
  the rights away again.

  This is the Linux form of a Windows guard page. On Windows,
  ``VirtualProtectEx(..., PAGE_GUARD | prot)`` makes the first access raise
  STATUS_GUARD_PAGE_VIOLATION (0x80000001) and the system *clears* PAGE_GUARD
  itself: a one-shot alarm the debugger must re-arm (Microsoft Learn, "Creating
  Guard Pages" and "Memory Protection Constants"). Linux has no such flag for
  user mappings, so ksinspect removes and restores the rights itself; with
  ``once=True`` it does not re-arm, which is exactly PAGE_GUARD's behaviour.
  An access made by the kernel on the process's behalf (``read(fd, buf, n)``
  into a guarded page) does not fault: the system call fails with EFAULT.

Threads: debug registers belong to a thread, so hardware breakpoints are
written into every thread of the tracee; new threads are followed
(PTRACE_O_TRACECLONE) and armed at their first stop, since Linux does not
copy ptrace breakpoints into a new thread. Software and memory breakpoints
live in the shared address space. While one thread single-steps over a
breakpoint the others keep running and may pass the spot unseen. Forked
children are not followed: a child that inherits a 0xCC and executes it dies
of SIGTRAP, so put breakpoints where children do not run.

Safety: :meth:`Debugger.close` (called by ``with`` and at interpreter exit)
stops every thread, puts back every original byte, writes DR7 back first and
then the DR0-DR3 it found (so no slot is ever enabled with a foreign
address), gives every guarded page its rights back, and detaches. A program
started by the debugger runs on after the session unless ``kill_on_close``
was asked. Critical sections (register surgery, single-steps) run with
SIGINT blocked so Ctrl-C can only land between them.

It never attaches to anything but the process the caller names (or starts).
"""
import atexit
import contextlib
import errno as _errno
import os
import signal
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ..errors import (DecodeError, EncodeError, KsinspectError, NoSuchProcessError,
                      PtraceError, UnsupportedError)
from ..x86._bits import html_pre
from ..x86.debugreg import DR6, DR7, Breakpoint, Condition, condition as parse_condition, encode_dr7
from . import ptrace as pt
from .elf_symbols import ProcessSymbols

PAGE_SIZE = 4096
INT3 = 0xCC
DR6_CLEAR = 0xFFFF0FF0        # DR6 with no condition recorded (SDM vol. 3B §17.2.3)
NR_MPROTECT = 10              # arch/x86/entry/syscalls/syscall_64.tbl
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
SYSCALL_INSN = b"\x0f\x05"
_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}
_STEP_TRIES = 8
# Job-control stops (absent on Windows, where this module only says "unsupported").
_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU")
                      if hasattr(signal, n))
_STOP_WAIT = 2.0              # seconds to wait for a thread to stop before giving up

Address = Union[int, str]


def signal_name(sig: int) -> str:
    return _SIGNAL_NAMES.get(sig, "signal %d" % sig)


# ---------------------------------------------------------------- breakpoints

@dataclass
class HardwareBreakpoint:
    """A DR0-DR3 slot: its address, condition (execute, write, readwrite) and length."""

    slot: int
    address: int
    condition: Condition
    length: int
    symbol: Optional[str] = None
    hits: int = 0
    last: Optional[bytes] = field(default=None, repr=False)   # bytes read at arm / last hit

    def to_dict(self) -> dict:
        return {"kind": "hw", "slot": self.slot, "address": self.address,
                "condition": self.condition.label, "length": self.length,
                "symbol": self.symbol, "hits": self.hits}


@dataclass
class SoftwareBreakpoint:
    """An INT3 (0xCC) written over the first byte of an instruction."""

    address: int
    original: int
    symbol: Optional[str] = None
    hits: int = 0
    armed: bool = False

    def to_dict(self) -> dict:
        return {"kind": "sw", "address": self.address, "original_byte": self.original,
                "symbol": self.symbol, "hits": self.hits}


@dataclass
class GuardPage:
    """A page whose access rights are taken away (a Linux guard page)."""

    address: int
    page: int
    original_prot: int
    access: str                  # "any" (PROT_NONE) or "write" (read-only)
    once: bool = False
    symbol: Optional[str] = None
    hits: int = 0
    armed: bool = False

    @property
    def guarded_prot(self) -> int:
        return 0 if self.access == "any" else self.original_prot & ~PROT_WRITE

    def to_dict(self) -> dict:
        return {"kind": "guard", "address": self.address, "page": self.page,
                "original_prot": prot_text(self.original_prot), "access": self.access,
                "once": self.once, "symbol": self.symbol, "hits": self.hits}


def prot_text(prot: int) -> str:
    return "".join(c if prot & bit else "-" for c, bit in (("r", PROT_READ), ("w", PROT_WRITE),
                                                          ("x", PROT_EXEC)))


# --------------------------------------------------------------------- events

def _hex(value: Optional[int]) -> str:
    return "-" if value is None else "%#x" % value


def _where(address: int, symbol: Optional[str]) -> str:
    return "%#x%s" % (address, " <%s>" % symbol if symbol else "")


class _Shown:
    """Notebook view of an event: its line, escaped (plus explain() when there is one)."""

    def explain(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


@dataclass(frozen=True)
class HardwareHit(_Shown):
    """A DR0-DR3 breakpoint fired (SIGTRAP, si_code TRAP_HWBKPT, DR6.Bn set)."""

    tid: int
    rip: int
    rip_symbol: Optional[str]
    slot: int
    address: int
    address_symbol: Optional[str]
    condition: str
    length: int
    dr6: DR6
    old: Optional[int] = None
    new: Optional[int] = None
    kind: str = "hw"

    def to_dict(self) -> dict:
        return {"event": self.kind, "tid": self.tid, "rip": self.rip,
                "rip_symbol": self.rip_symbol, "slot": self.slot, "address": self.address,
                "address_symbol": self.address_symbol, "condition": self.condition,
                "length": self.length, "old": self.old, "new": self.new,
                "dr6": self.dr6.to_dict()}

    def explain(self) -> str:
        """The event, then DR6 field by field (which slot, BS/BD/BT, the fixed bits)."""
        return str(self) + "\n\n" + self.dr6.explain()

    def __str__(self) -> str:
        text = "hw     tid %-7d rip %s  DR%d %s/%d at %s" % (
            self.tid, _where(self.rip, self.rip_symbol), self.slot, self.condition, self.length,
            _where(self.address, self.address_symbol))
        if self.condition != "execute":
            text += "  %s -> %s" % (_hex(self.old), _hex(self.new))
        dr6 = self.dr6
        text += "  DR6 %#x (slot %s fired%s)" % (
            dr6.raw, ",".join(str(n) for n in dr6.hits) or "none",
            "".join(", " + n.upper() for n in ("bs", "bd", "bt") if getattr(dr6, n)))
        return text


@dataclass(frozen=True)
class SoftwareHit(_Shown):
    """An INT3 breakpoint was reached (SIGTRAP, si_code SI_KERNEL, RIP = address + 1)."""

    tid: int
    rip: int
    rip_symbol: Optional[str]
    original_byte: int
    hits: int
    kind: str = "sw"

    def to_dict(self) -> dict:
        return {"event": self.kind, "tid": self.tid, "rip": self.rip,
                "rip_symbol": self.rip_symbol, "original_byte": self.original_byte,
                "hits": self.hits}

    def __str__(self) -> str:
        return "sw     tid %-7d rip %s  int3 over byte %#04x, hit %d" % (
            self.tid, _where(self.rip, self.rip_symbol), self.original_byte, self.hits)


@dataclass(frozen=True)
class GuardHit(_Shown):
    """An access to a guarded page faulted (SIGSEGV, si_code SEGV_ACCERR, si_addr)."""

    tid: int
    rip: int
    rip_symbol: Optional[str]
    address: int
    address_symbol: Optional[str]
    page: int
    access: str
    si_code: str
    rearmed: bool
    kind: str = "guard"

    def to_dict(self) -> dict:
        return {"event": self.kind, "tid": self.tid, "rip": self.rip,
                "rip_symbol": self.rip_symbol, "address": self.address,
                "address_symbol": self.address_symbol, "page": self.page,
                "access": self.access, "si_code": self.si_code, "rearmed": self.rearmed}

    def __str__(self) -> str:
        return "guard  tid %-7d rip %s  touched %s (page %#x, guard on %s access, %s)%s" % (
            self.tid, _where(self.rip, self.rip_symbol), _where(self.address, self.address_symbol),
            self.page, self.access, self.si_code, "" if self.rearmed else ", not re-armed")


@dataclass(frozen=True)
class SignalEvent(_Shown):
    """A signal the tracee received that is not a breakpoint; it is delivered."""

    tid: int
    rip: int
    rip_symbol: Optional[str]
    signal: str
    si_code: int
    kind: str = "signal"

    def to_dict(self) -> dict:
        return {"event": self.kind, "tid": self.tid, "rip": self.rip,
                "rip_symbol": self.rip_symbol, "signal": self.signal, "si_code": self.si_code}

    def __str__(self) -> str:
        return "signal tid %-7d rip %s  %s (si_code %#x), passed to the program" % (
            self.tid, _where(self.rip, self.rip_symbol), self.signal, self.si_code)


@dataclass(frozen=True)
class ExitEvent(_Shown):
    """The tracee exited (status) or was killed (signal)."""

    pid: int
    status: Optional[int]
    signal: Optional[str]
    kind: str = "exit"

    def to_dict(self) -> dict:
        return {"event": self.kind, "pid": self.pid, "status": self.status, "signal": self.signal}

    def __str__(self) -> str:
        how = "exited with status %d" % self.status if self.signal is None else \
            "killed by %s" % self.signal
        return "exit   pid %-7d %s" % (self.pid, how)


@dataclass(frozen=True)
class ExecEvent(_Shown):
    """The tracee called execve: a new image, without any of the session's
    breakpoints (its memory is new and Linux drops ptrace debug registers on
    exec). The session ends; close() detaches."""

    pid: int
    path: Optional[str]
    kind: str = "exec"

    def to_dict(self) -> dict:
        return {"event": self.kind, "pid": self.pid, "path": self.path}

    def __str__(self) -> str:
        return "exec   pid %-7d now runs %s: its breakpoints are gone, the session ends" % (
            self.pid, self.path or "another program")


Event = Union[HardwareHit, SoftwareHit, GuardHit, SignalEvent, ExitEvent, ExecEvent]
BREAKPOINT_EVENTS = (HardwareHit, SoftwareHit, GuardHit)


@dataclass(frozen=True)
class CleanupReport:
    """What :meth:`Debugger.close` put back."""

    pid: int
    bytes_restored: int
    threads_debugregs_restored: int
    pages_restored: int
    threads_detached: int
    outcome: str                 # "detached", "killed" or "exited"
    errors: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"event": "end", "pid": self.pid, "bytes_restored": self.bytes_restored,
                "threads_debugregs_restored": self.threads_debugregs_restored,
                "pages_restored": self.pages_restored, "threads_detached": self.threads_detached,
                "outcome": self.outcome, "errors": list(self.errors)}

    def __str__(self) -> str:
        text = ("end    pid %-7d %s; restored %d byte(s), debug registers of %d thread(s), "
                "%d page protection(s)" % (self.pid, self.outcome, self.bytes_restored,
                                           self.threads_debugregs_restored, self.pages_restored))
        if self.errors:
            text += "; problems: " + "; ".join(self.errors)
        return text


# -------------------------------------------------------------------- tracee

@dataclass
class _Thread:
    tid: int
    stopped: bool = True
    pending_signal: int = 0          # to deliver when resumed
    saved_debugregs: Optional[Dict[int, int]] = None
    listening: bool = False          # in group-stop under PTRACE_LISTEN
    group_stopped: bool = False      # stopped by SIGSTOP & co. (job control)


@contextlib.contextmanager
def _critical():
    """Block SIGINT/SIGTERM (main thread only) so Ctrl-C cannot cut register
    surgery in half; a blocked signal is handled as soon as this exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Tracee:
    """A traced process: its threads, memory, registers and symbols.

    Made by :meth:`Debugger.start` or :meth:`Debugger.attach`, not directly.
    """

    def __init__(self, pid: int, started: bool, argv: Optional[Sequence[str]] = None):
        self.pid = pid
        self.started = started
        self.argv = list(argv) if argv else None
        self.threads: Dict[int, _Thread] = {}
        self.alive = True
        self.exit: Optional[ExitEvent] = None
        self._symbols: Optional[ProcessSymbols] = None
        self._syscall_address: Optional[int] = None
        self._memory: Optional[pt.TraceeMemory] = None

    # memory and registers
    def read(self, address: int, size: int) -> bytes:
        if self._memory is None:
            self._memory = pt.TraceeMemory(self.pid)
        return self._memory.read(address, size)

    def write(self, address: int, data: bytes) -> None:
        if self._memory is None:
            self._memory = pt.TraceeMemory(self.pid)
        self._memory.write(address, data)

    def forget_memory(self) -> None:
        """Close the memory descriptor (after an execve, or at the end)."""
        if self._memory is not None:
            self._memory.close()
            self._memory = None

    def regs(self, tid: Optional[int] = None) -> pt.UserRegs:
        return pt.get_regs(tid or self.pid)

    def debugreg(self, n: int, tid: Optional[int] = None) -> int:
        return pt.get_debugreg(tid or self.pid, n)

    # symbols
    @property
    def symbols(self) -> ProcessSymbols:
        if self._symbols is None:
            self._symbols = ProcessSymbols(self.pid)
        return self._symbols

    def resolve(self, where: Address) -> Tuple[int, Optional[str]]:
        """An address, or a symbol of the main executable (plus the load bias)."""
        if isinstance(where, int):
            return where, self.describe(where)
        name, _, offset = where.partition("+")
        address = self.symbols.address(name.strip())
        if offset:
            digits = offset.strip()
            try:                                  # hex, like every number ksinspect reads
                address += int(digits[2:] if digits.lower().startswith("0x") else digits, 16)
            except ValueError:
                raise DecodeError("%r: the offset after '+' is not a hex number" % where) from None
        return address, where

    def describe(self, address: int) -> Optional[str]:
        try:
            return self.symbols.describe(address)
        except KsinspectError:
            return None

    def mapping(self, address: int) -> Tuple[int, int, str, str]:
        """(start, end, perms, name) of the /proc/PID/maps line holding address."""
        with open("/proc/%d/maps" % self.pid) as f:
            for line in f:
                parts = line.split(None, 5)
                start, end = (int(x, 16) for x in parts[0].split("-"))
                if start <= address < end:
                    return start, end, parts[1], parts[5].strip() if len(parts) == 6 else ""
        raise DecodeError("address %#x is not mapped in process %d" % (address, self.pid))

    def syscall_address(self) -> int:
        """Where a ``syscall`` instruction (0F 05) sits: in the vDSO, so the
        injection never writes code; else None."""
        if self._syscall_address is None:
            with open("/proc/%d/maps" % self.pid) as f:
                for line in f:
                    if line.rstrip().endswith("[vdso]"):
                        start, end = (int(x, 16) for x in line.split()[0].split("-"))
                        found = self.read(start, end - start).find(SYSCALL_INSN)
                        if found >= 0:
                            self._syscall_address = start + found
                        break
            if self._syscall_address is None:
                raise UnsupportedError("process %d has no vDSO with a syscall instruction to "
                                       "borrow for mprotect" % self.pid)
        return self._syscall_address


# ------------------------------------------------------------------ debugger

def _in_trace_stop(tid: int) -> bool:
    """The thread sits in a ptrace-stop (state 't' in /proc/TID/stat, proc(5))."""
    try:
        with open("/proc/%d/stat" % tid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "t"
    except (OSError, IndexError):
        return False


def _sigint_pending(tid: int) -> bool:
    """SIGINT pending for the thread or its process (proc(5) SigPnd/ShdPnd)."""
    bit = 1 << (signal.SIGINT - 1)
    try:
        with open("/proc/%d/status" % tid) as fh:
            return any(line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit
                       for line in fh)
    except (OSError, ValueError, IndexError):
        return False


_OPEN_SESSIONS: "weakref.WeakSet[Debugger]" = weakref.WeakSet()


@atexit.register
def _close_open_sessions() -> None:      # never leave 0xCC bytes behind at exit
    for dbg in list(_OPEN_SESSIONS):
        try:
            dbg.close()
        except Exception:
            pass


class Debugger:
    """A breakpoint session on one process.

    Example::

        with Debugger.start(["./calls", "5"]) as dbg:   # tests/programs/calls.c
            dbg.add_hardware("counter", "write", 4)
            dbg.add_software("bump")
            dbg.add_guard("page")
            for event in dbg.events(count=10, timeout=5):
                print(event)
        print(dbg.report)          # what close() put back

    Args (of the constructors):
        kill_on_close: for a program the debugger started, kill it at the
            end instead of letting it run on (the default).
    """

    def __init__(self, tracee: Tracee, kill_on_close: bool = False):
        self.tracee = tracee
        self.kill_on_close = kill_on_close
        self.hardware: Dict[int, HardwareBreakpoint] = {}
        self.software: Dict[int, SoftwareBreakpoint] = {}
        self.guards: Dict[int, GuardPage] = {}            # by page
        self.report: Optional[CleanupReport] = None
        self.hits = 0
        self._closed = False
        self._dr7 = 0
        self._pending_new: set = set()    # threads created but not yet seen stopping
        self._exit_reported = False
        self._ended: Optional[str] = None  # why the session cannot go on ("exec")
        _OPEN_SESSIONS.add(self)

    # ---------------------------------------------------------- starting
    _OPTIONS = pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_TRACEEXEC

    @classmethod
    def start(cls, argv: Sequence[str], kill_on_close: bool = False, stdin=None, stdout=None,
              stderr=None) -> "Debugger":
        """Run a program under the debugger, stopped at its first instruction
        (after execve, before the dynamic loader runs).

        The child stops itself with SIGSTOP, the debugger seizes it with
        PTRACE_SEIZE (so PTRACE_INTERRUPT works later) and lets it execve;
        PTRACE_O_TRACEEXEC stops it right after. stdin/stdout/stderr may be
        file objects or descriptors for the program.
        """
        reason = pt.unavailable_reason()
        if reason:
            raise UnsupportedError(reason)
        if not argv:
            raise DecodeError("no program to start")
        fds = [None if s is None else s if isinstance(s, int) else s.fileno()
               for s in (stdin, stdout, stderr)]
        if any(fd is not None and fd < 0 for fd in fds):
            raise DecodeError("stdin/stdout/stderr must be open files or descriptors (>= 0)")
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:                                        # the child
            try:
                os.close(err_r)
                for target, fd in enumerate(fds):
                    if fd is not None:
                        os.dup2(fd, target)
                os.kill(os.getpid(), signal.SIGSTOP)
                os.execvp(argv[0], list(argv))
            except OSError as exc:
                os.write(err_w, str(exc.errno or 0).encode())
            finally:
                os._exit(127)
        os.close(err_w)
        try:
            _, status = os.waitpid(pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):
                code = os.read(err_r, 32)
                raise PtraceError("the child for %s did not stop before execve%s" % (
                    argv[0], ": " + os.strerror(int(code)) if code else ""))
            pt.seize(pid, cls._OPTIONS)
            os.kill(pid, signal.SIGCONT)
            while True:
                _, status = os.waitpid(pid, pt.WALL)
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    code = os.read(err_r, 32)
                    why = os.strerror(int(code)) if code else "it exited before execve"
                    raise NoSuchProcessError("cannot run %s: %s" % (argv[0], why),
                                             int(code) if code else 0)
                if os.WIFSTOPPED(status) and status >> 16 == pt.PTRACE_EVENT_EXEC:
                    break
                pt.cont(pid, 0)                             # SIGSTOP/SIGCONT stops: swallow
        except BaseException:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            raise
        finally:
            os.close(err_r)
        tracee = Tracee(pid, True, argv)
        tracee.threads[pid] = _Thread(pid)
        return cls(tracee, kill_on_close)

    @classmethod
    def attach(cls, pid: int) -> "Debugger":
        """Seize and stop every thread of process pid (and only that process)."""
        reason = pt.unavailable_reason()
        if reason:
            raise UnsupportedError(reason)
        if pid <= 0:
            raise DecodeError("process id %d is not valid" % pid)
        if pid == os.getpid():
            raise DecodeError("process %d is ksinspect itself: a process cannot trace itself" % pid)
        tgid = _tgid(pid)
        if tgid != pid:
            raise DecodeError("%d is a thread of process %d: give the process id" % (pid, tgid))
        tracee = Tracee(pid, False)
        try:
            for _ in range(10):                 # threads may appear while we seize
                tids = _task_ids(pid)
                new = [t for t in tids if t not in tracee.threads]
                if not new:
                    break
                for tid in new:
                    try:
                        pt.seize(tid, cls._OPTIONS)
                    except NoSuchProcessError:
                        if tid == pid:
                            raise
                        continue
                    tracee.threads[tid] = _Thread(tid, stopped=False)
                    pt.interrupt(tid)
            dbg = cls(tracee)
        except BaseException:
            for tid in tracee.threads:
                with contextlib.suppress(PtraceError):
                    pt.detach(tid)
            raise
        for thread in list(tracee.threads.values()):
            dbg._wait_stopped(thread)
        return dbg

    @property
    def dr7(self) -> DR7:
        """The DR7 value written into every thread (decoded)."""
        return DR7(self._dr7)

    # ---------------------------------------------------------- adding
    def add_hardware(self, where: Address, condition: Union[str, Condition] = "execute",
                     length: int = 1, slot: Optional[int] = None) -> HardwareBreakpoint:
        """Program a DRn slot (the lowest free one unless slot is given).

        Raises:
            EncodeError: the DR7 encoder refused it (alignment, length, slot).
        """
        self._require_open()
        address, symbol = self.tracee.resolve(where)
        cond = parse_condition(condition)
        if slot is None:
            free = [n for n in range(4) if n not in self.hardware]
            if not free:
                raise EncodeError("all four debug address registers DR0-DR3 are in use")
            slot = free[0]
        if slot in self.hardware:
            raise EncodeError("slot %d (DR%d) is already in use" % (slot, slot), slot)
        bp = HardwareBreakpoint(slot, address, cond, length, symbol)
        wanted = list(self.hardware.values()) + [bp]
        dr7 = encode_dr7([Breakpoint(b.slot, b.condition, b.length, "local", b.address)
                          for b in wanted])
        if cond is not Condition.EXECUTE:
            try:
                bp.last = self.tracee.read(address, length)
            except PtraceError:
                bp.last = None             # not mapped yet: no old value for the first hit
        self._stop_all()
        with _critical():
            for thread in self.tracee.threads.values():
                self._save_debugregs(thread)
                pt.set_debugreg(thread.tid, slot, address)
                pt.set_debugreg(thread.tid, 7, dr7.raw)
        self.hardware[slot] = bp
        self._dr7 = dr7.raw
        return bp

    def add_software(self, where: Address) -> SoftwareBreakpoint:
        """Write 0xCC over the byte at the address (after saving it)."""
        self._require_open()
        address, symbol = self.tracee.resolve(where)
        if address in self.software:
            raise EncodeError("there is already a software breakpoint at %#x" % address)
        self._stop_all()
        with _critical():
            original = self.tracee.read(address, 1)[0]
            bp = SoftwareBreakpoint(address, original, symbol)
            self.tracee.write(address, bytes([INT3]))
            bp.armed = True
            self.software[address] = bp
        return bp

    def add_guard(self, where: Address, access: str = "any", once: bool = False) -> GuardPage:
        """Take away the rights of the page holding the address.

        Args:
            access: "any" (PROT_NONE: reads, writes and execution fault) or
                "write" (read-only: only writes fault).
            once: do not re-arm after the first hit (Windows PAGE_GUARD).
        """
        self._require_open()
        if access not in ("any", "write"):
            raise DecodeError("guard access %r must be 'any' or 'write'" % access)
        address, symbol = self.tracee.resolve(where)
        page = address & ~(PAGE_SIZE - 1)
        if page in self.guards:
            raise EncodeError("page %#x is already guarded" % page)
        start, end, perms, name = self.tracee.mapping(address)
        if name in ("[vdso]", "[vvar]", "[vsyscall]", "[vvar_vclock]"):
            raise DecodeError("address %#x is in %s, which cannot be guarded" % (address, name))
        prot = sum(bit for c, bit in (("r", PROT_READ), ("w", PROT_WRITE), ("x", PROT_EXEC))
                   if c in perms)
        guard = GuardPage(address, page, prot, access, once, symbol)
        if access == "write" and not prot & PROT_WRITE:
            raise DecodeError("page %#x is not writable (%s): a write guard would never fire"
                              % (page, perms))
        self._stop_all()
        with _critical():
            self._mprotect(self._any_stopped_tid(), page, guard.guarded_prot)
            guard.armed = True
            self.guards[page] = guard
        return guard

    # ---------------------------------------------------------- running
    def events(self, count: Optional[int] = None, timeout: Optional[float] = None) -> Iterator[Event]:
        """Run the tracee and yield events until count breakpoint hits, the
        timeout (seconds), or the end of the tracee. The threads are stopped
        again when the iteration ends, breakpoints still armed; close() puts
        everything back."""
        self._require_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        start_hits = self.hits
        try:
            self._resume_all()
            while self.tracee.alive and self._ended is None:
                if count is not None and self.hits - start_hits >= count:
                    return
                found = self._poll(deadline)
                if found is None:
                    return                                  # timeout
                tid, status = found
                with _critical():
                    produced = self._handle(tid, status)
                for event in produced:
                    if isinstance(event, ExitEvent):
                        self._exit_reported = True
                    yield event
                if self._ended is not None:
                    return
            if self.tracee.exit is not None and not self._exit_reported:
                self._exit_reported = True
                yield self.tracee.exit
        finally:
            if self.tracee.alive and not self._closed:
                self._stop_all()

    def run(self, count: Optional[int] = None, timeout: Optional[float] = None) -> List[Event]:
        return list(self.events(count, timeout))

    # ---------------------------------------------------------- closing
    def close(self) -> CleanupReport:
        """Put back every byte, debug register and page protection; detach."""
        if self._closed:
            return self.report
        with _critical():
            report = self._cleanup()
        self._closed = True
        self.report = report
        _OPEN_SESSIONS.discard(self)
        return report

    def wait(self) -> Optional[int]:
        """After close(), wait for a program the debugger started to end;
        returns its wait status (None when it was attached, not started)."""
        if not self._closed:
            raise KsinspectError("close() the session before waiting for the program")
        if not self.tracee.started or self.tracee.exit is not None:
            return None
        try:
            return os.waitpid(self.tracee.pid, 0)[1]
        except ChildProcessError:
            return None

    def __del__(self):
        # A session dropped without close() must not leave 0xCC bytes behind.
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass

    def __enter__(self) -> "Debugger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ============================================================ internals
    def _require_open(self) -> None:
        if self._closed:
            raise KsinspectError("this debugging session is closed")
        if self._ended is not None:
            raise KsinspectError("the session ended: the process called %s" % self._ended)
        if not self.tracee.alive:
            raise NoSuchProcessError("process %d has exited" % self.tracee.pid)

    def _any_stopped_tid(self) -> int:
        for thread in self.tracee.threads.values():
            if thread.stopped:
                return thread.tid
        raise PtraceError("no stopped thread in process %d" % self.tracee.pid)

    def _save_debugregs(self, thread: _Thread) -> None:
        if thread.saved_debugregs is None:
            thread.saved_debugregs = {n: pt.get_debugreg(thread.tid, n) for n in (0, 1, 2, 3, 6, 7)}

    def _arm_thread(self, thread: _Thread) -> None:
        """Give a (new) thread the hardware breakpoints."""
        if not self.hardware:
            return
        self._save_debugregs(thread)
        for bp in self.hardware.values():
            pt.set_debugreg(thread.tid, bp.slot, bp.address)
        pt.set_debugreg(thread.tid, 7, self._dr7)

    def _resume(self, thread: _Thread) -> None:
        sig, thread.pending_signal = thread.pending_signal, 0
        if thread.listening:
            return
        if thread.group_stopped:
            pt.listen(thread.tid)        # SIGCONT will wake it and be reported
            thread.listening = True
        else:
            pt.cont(thread.tid, sig)
        thread.stopped = False

    def _resume_all(self) -> None:
        with _critical():
            for thread in list(self.tracee.threads.values()):
                if thread.stopped:
                    try:
                        self._resume(thread)
                    except NoSuchProcessError:
                        pass

    def _poll(self, deadline: Optional[float]) -> Optional[Tuple[int, int]]:
        """The next (tid, status) of any thread, or None at the deadline."""
        delay, spins = 0.0, 0
        while True:
            with _critical():
                for tid in list(self.tracee.threads):
                    try:
                        got, status = os.waitpid(tid, os.WNOHANG | pt.WALL)
                    except ChildProcessError:
                        self._thread_gone(tid, None)
                        if not self.tracee.alive:
                            return tid, 0
                        continue
                    if got:
                        return got, status
            if deadline is not None and time.monotonic() >= deadline:
                return None
            # A hit usually comes back within microseconds: yield first,
            # then sleep longer and longer (at most 10 ms) while nothing happens.
            spins += 1
            if spins <= 50:
                os.sched_yield()
                continue
            time.sleep(delay)
            delay = min(0.01, delay * 2 or 0.00005)

    def _thread_gone(self, tid: int, status: Optional[int]) -> None:
        self.tracee.threads.pop(tid, None)
        if tid == self.tracee.pid or not self.tracee.threads:
            if status is not None and self.tracee.exit is None:
                self.tracee.exit = ExitEvent(
                    self.tracee.pid, os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                    signal_name(os.WTERMSIG(status)) if os.WIFSIGNALED(status) else None)
            if tid == self.tracee.pid:
                self.tracee.alive = False
                self.tracee.threads.clear()

    def _handle(self, tid: int, status: int) -> List[Event]:
        """Deal with one stop and resume the thread (unless it left)."""
        tracee = self.tracee
        if not tracee.alive:
            return [tracee.exit] if tracee.exit else []
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self._thread_gone(tid, status)
            if not tracee.alive and tracee.exit is not None:
                return [tracee.exit]
            return []
        thread = tracee.threads.get(tid)
        if thread is None:                 # a new thread whose clone event we have not seen
            thread = tracee.threads[tid] = _Thread(tid)
            self._arm_thread(thread)
        thread.stopped = True
        thread.listening = False
        thread.group_stopped = False       # set again below if this is a group-stop
        events: List[Event] = []
        try:
            events = self._classify(thread, status)
            if tid in tracee.threads and tracee.alive:
                self._resume(thread)
        except NoSuchProcessError:
            self._thread_gone(tid, None)   # it died under us; its exit status comes by waitpid
        return events

    def _classify(self, thread: _Thread, status: int) -> List[Event]:
        tid = thread.tid
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if event == pt.PTRACE_EVENT_CLONE:
            new_tid = pt.get_event_msg(tid)
            if new_tid not in self.tracee.threads:
                self.tracee.threads[new_tid] = _Thread(new_tid, stopped=False)
                self._pending_new.add(new_tid)
            return []
        if event == pt.PTRACE_EVENT_STOP:
            if sig in _STOP_SIGNALS:
                thread.group_stopped = True          # group-stop: stays stopped, still traced
            elif tid in self._pending_new:           # a new thread's first stop
                self._pending_new.discard(tid)
                self._arm_thread(thread)
            return []
        if event == pt.PTRACE_EVENT_EXEC:
            # A new program image: its memory and debug registers are new and
            # hold none of our breakpoints (flush_ptrace_hw_breakpoint on exec).
            self.software.clear()
            self.guards.clear()
            self.hardware.clear()
            self.tracee._symbols = None
            self.tracee._syscall_address = None
            self.tracee.forget_memory()
            for t in self.tracee.threads.values():
                t.saved_debugregs = None
            try:
                path: Optional[str] = os.readlink("/proc/%d/exe" % self.tracee.pid)
            except OSError:
                path = None
            self._ended = "exec"
            return [ExecEvent(self.tracee.pid, path)]
        if event:
            return []
        if sig == signal.SIGTRAP:
            return self._on_sigtrap(thread)
        if sig == signal.SIGSEGV:
            info = pt.get_siginfo(tid)
            guard = self.guards.get(info.si_addr & ~(PAGE_SIZE - 1))
            if guard is not None and guard.armed and info.si_code == pt.SEGV_ACCERR:
                return self._on_guard(thread, guard, info)
        if sig == signal.SIGINT and self.tracee.started:
            # Ctrl-C reaches the whole foreground process group: it is meant
            # for the session, not for the program (gdb does the same).
            raise KeyboardInterrupt
        regs = pt.get_regs(tid)
        info = pt.get_siginfo(tid)
        thread.pending_signal = sig
        return [SignalEvent(tid, regs.rip, self.tracee.describe(regs.rip), signal_name(sig),
                            info.si_code)]

    def _hw_hits(self, thread: _Thread, regs: pt.UserRegs) -> List[HardwareHit]:
        """Read DR6; report our slots that fired; clear DR6."""
        if not self.hardware:
            return []
        dr6 = DR6(pt.get_debugreg(thread.tid, 6))
        hits = []
        for slot in dr6.hits:
            bp = self.hardware.get(slot)
            if bp is None:
                continue
            bp.hits += 1
            self.hits += 1
            old = new = None
            if bp.condition is not Condition.EXECUTE:
                try:
                    now: Optional[bytes] = self.tracee.read(bp.address, bp.length)
                except PtraceError:
                    now = None             # unmapped right after the access (munmap)
                old = int.from_bytes(bp.last, "little") if bp.last is not None else None
                new = int.from_bytes(now, "little") if now is not None else None
                bp.last = now
            hits.append(HardwareHit(thread.tid, regs.rip, self.tracee.describe(regs.rip), slot,
                                    bp.address, bp.symbol, bp.condition.label, bp.length, dr6,
                                    old, new))
        if dr6.hits or dr6.bs:
            pt.set_debugreg(thread.tid, 6, DR6_CLEAR)
        return hits

    def _on_sigtrap(self, thread: _Thread) -> List[Event]:
        tid = thread.tid
        info = pt.get_siginfo(tid)
        regs = pt.get_regs(tid)
        events: List[Event] = list(self._hw_hits(thread, regs))
        bp = self.software.get(regs.rip - 1)
        if info.si_code == pt.SI_KERNEL and bp is not None:
            bp.hits += 1
            self.hits += 1
            events.append(SoftwareHit(tid, bp.address, bp.symbol or self.tracee.describe(bp.address),
                                      bp.original, bp.hits))
            # The classic cycle: restore the byte, rewind RIP, step, re-arm.
            self.tracee.write(bp.address, bytes([bp.original]))
            bp.armed = False
            regs.rip = bp.address
            pt.set_regs(tid, regs)
            events += self._step(thread)
            if bp.address in self.software and self.tracee.alive:
                self.tracee.write(bp.address, bytes([INT3]))
                bp.armed = True
            return events
        if not events:
            # Not ours (raise(SIGTRAP), the program's own int3...): deliver it.
            thread.pending_signal = signal.SIGTRAP
            events.append(SignalEvent(tid, regs.rip, self.tracee.describe(regs.rip), "SIGTRAP",
                                      info.si_code))
        return events

    def _on_guard(self, thread: _Thread, guard: GuardPage, info: pt.SigInfo) -> List[Event]:
        tid = thread.tid
        regs = pt.get_regs(tid)
        guard.hits += 1
        self.hits += 1
        self._mprotect(tid, guard.page, guard.original_prot)
        guard.armed = False
        events: List[Event] = []
        stepped = self._step(thread)
        rearm = not guard.once and self.tracee.alive and guard.page in self.guards
        if rearm:
            self._mprotect(tid, guard.page, guard.guarded_prot)
            guard.armed = True
        elif guard.once:
            del self.guards[guard.page]
        events.append(GuardHit(tid, regs.rip, self.tracee.describe(regs.rip), info.si_addr,
                               self.tracee.describe(info.si_addr) or guard.symbol, guard.page,
                               guard.access, pt.SI_CODE_NAMES["SIGSEGV"].get(info.si_code,
                                                                           str(info.si_code)),
                               rearm))
        return events + stepped

    def _step(self, thread: _Thread) -> List[Event]:
        """Single-step one instruction of a stopped thread; report the
        hardware hits the step itself caused (a data breakpoint on the
        stepped write sets its Bn beside BS in DR6)."""
        tid = thread.tid
        start = pt.get_regs(tid).rip
        events: List[Event] = []
        for _ in range(_STEP_TRIES):
            pt.singlestep(tid, 0)
            _, status = os.waitpid(tid, pt.WALL)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self._thread_gone(tid, status)
                return events
            sig = os.WSTOPSIG(status)
            if status >> 16:
                continue                           # an interrupt or event stop: step again
            if sig != signal.SIGTRAP:
                if sig == signal.SIGSEGV:
                    # The stepped instruction touched a guarded page: that is
                    # a guard hit of its own (which steps with rights back).
                    info = pt.get_siginfo(tid)
                    guard = self.guards.get(info.si_addr & ~(PAGE_SIZE - 1))
                    if guard is not None and guard.armed and info.si_code == pt.SEGV_ACCERR:
                        return events + self._on_guard(thread, guard, info)
                self._defer_signal(thread, sig)    # arrived meanwhile: keep it for later
                continue
            regs = pt.get_regs(tid)
            events += self._hw_hits(thread, regs)
            if regs.rip != start:
                return events
        return events

    def _mprotect(self, tid: int, page: int, prot: int) -> None:
        """Make thread tid call mprotect(page, PAGE_SIZE, prot) (see the module
        docstring); its registers are put back whatever happens."""
        saved = pt.get_regs(tid)
        regs = saved.copy()
        insn = self.tracee.syscall_address()
        regs.rip = insn
        regs.rax = NR_MPROTECT
        regs.rdi, regs.rsi, regs.rdx = page, PAGE_SIZE, prot
        regs.orig_rax = 0xFFFFFFFFFFFFFFFF    # not in a syscall: no restart fix-up on resume
        try:
            pt.set_regs(tid, regs)
            result = None
            for _ in range(_STEP_TRIES):
                pt.singlestep(tid, 0)
                _, status = os.waitpid(tid, pt.WALL)
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    self._thread_gone(tid, status)
                    raise NoSuchProcessError("process %d died during mprotect" % self.tracee.pid)
                after = pt.get_regs(tid)
                if after.rip == insn + len(SYSCALL_INSN):
                    result = after.rax
                    break
                sig = os.WSTOPSIG(status)
                if sig != signal.SIGTRAP and not status >> 16:
                    # A signal came first (Ctrl-C's SIGINT, a timer...): keep
                    # it for later, as any stop seen while stopping a thread.
                    self._defer_signal(self.tracee.threads.get(tid) or _Thread(tid), sig)
                # Stopped before the instruction ran (a signal, or the step
                # trap of the syscall the thread was in, e.g. execve): again.
                pt.set_regs(tid, regs)
        finally:
            with contextlib.suppress(NoSuchProcessError):
                pt.set_regs(tid, saved)
        if result is None:
            raise PtraceError("process %d: the injected mprotect did not run" % self.tracee.pid)
        if result >= 1 << 63:
            err = (1 << 64) - result
            raise PtraceError("mprotect(%#x, %d, %s) in process %d failed: %s" % (
                page, PAGE_SIZE, prot_text(prot), self.tracee.pid, os.strerror(err)), err)

    def _interrupt(self, thread: _Thread) -> None:
        """Stop a running thread and wait for it (handling what it reports)."""
        if thread.stopped:
            return
        was_listening, thread.listening = thread.listening, False
        pt.interrupt(thread.tid)
        self._wait_stopped(thread, was_listening)

    def _wait_stopped(self, thread: _Thread, was_listening: bool = False) -> None:
        """Wait until a thread we interrupted reports a stop; a breakpoint
        trap or guard fault it was about to report is undone so that it
        repeats after we resume it (or after detaching, without breakpoints)."""
        started = time.monotonic()
        deadline = started + _STOP_WAIT
        while True:
            got, status = os.waitpid(thread.tid, os.WNOHANG | pt.WALL)
            # After a grace period, and not for a thread that was in
            # PTRACE_LISTEN (it reads 't' until our interrupt re-stops it).
            if (not got and not was_listening and time.monotonic() - started > 0.5
                    and _in_trace_stop(thread.tid)):
                # It may have just stopped: take that status if there is one.
                got, status = os.waitpid(thread.tid, os.WNOHANG | pt.WALL)
                if not got:
                    # In a ptrace-stop whose wait status was already taken (a
                    # Ctrl-C landed between waitpid and our bookkeeping).
                    thread.stopped = True
                    return
            if not got:
                if time.monotonic() > deadline:
                    raise PtraceError("thread %d did not stop within %.0f s" % (
                        thread.tid, _STOP_WAIT), _errno.ETIMEDOUT)
                time.sleep(0.001)
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self._thread_gone(thread.tid, status)
                return
            thread.stopped = True
            event, sig = status >> 16, os.WSTOPSIG(status)
            if event == pt.PTRACE_EVENT_STOP:
                # Interrupted while in group-stop (kill -STOP): resuming must
                # not wake it, so it will be put back to PTRACE_LISTEN.
                thread.group_stopped = sig in _STOP_SIGNALS
                if thread.tid in self._pending_new:
                    self._pending_new.discard(thread.tid)
                    self._arm_thread(thread)
                return
            if event == pt.PTRACE_EVENT_CLONE:
                new_tid = pt.get_event_msg(thread.tid)
                if new_tid not in self.tracee.threads:
                    self.tracee.threads[new_tid] = _Thread(new_tid, stopped=False)
                    self._pending_new.add(new_tid)
            elif not event:
                self._defer_signal(thread, sig)
            # Another stop came first. Any ptrace-stop clears a pending
            # INTERRUPT trap (kernel/signal.c ptrace_stop: "any trap clears
            # pending STOP trap"), so ask again before letting it go on.
            pt.interrupt(thread.tid)
            pt.cont(thread.tid, thread.pending_signal)
            thread.pending_signal = 0
            thread.stopped = False

    def _defer_signal(self, thread: _Thread, sig: int) -> None:
        """A signal-delivery stop seen while stopping a thread: swallow our
        own traps (rewinding an INT3), keep the others for later."""
        if sig == signal.SIGTRAP:
            regs = pt.get_regs(thread.tid)
            info = pt.get_siginfo(thread.tid)
            bp = self.software.get(regs.rip - 1)
            if info.si_code == pt.SI_KERNEL and bp is not None:
                regs.rip = bp.address             # re-executes once the byte is back
                pt.set_regs(thread.tid, regs)
                return
            if info.si_code == pt.TRAP_HWBKPT and self.hardware:
                pt.set_debugreg(thread.tid, 6, DR6_CLEAR)
                return
        if sig == signal.SIGSEGV:
            info = pt.get_siginfo(thread.tid)
            if (info.si_addr & ~(PAGE_SIZE - 1)) in self.guards and info.si_code == pt.SEGV_ACCERR:
                return                            # the access repeats once rights are back
        if sig == signal.SIGINT and self.tracee.started:
            return
        thread.pending_signal = sig

    def _swallow_pending_sigint(self, thread: _Thread) -> None:
        """A Ctrl-C sent to the whole process group may still be pending in
        the program when we detach; it would then kill the program. Let the
        thread take it as a signal-delivery stop (before it runs any user
        code) and drop it, as _defer_signal does for one seen earlier."""
        for _ in range(4):
            if not _sigint_pending(thread.tid):
                return
            pt.cont(thread.tid, 0)
            thread.stopped = False
            _, status = os.waitpid(thread.tid, pt.WALL)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self._thread_gone(thread.tid, status)
                return
            thread.stopped = True
            if (status >> 16) == 0 and os.WSTOPSIG(status) != signal.SIGINT:
                thread.pending_signal = os.WSTOPSIG(status)   # delivered on detach
                return

    def _stop_all(self) -> None:
        with _critical():
            for thread in list(self.tracee.threads.values()):
                try:
                    self._interrupt(thread)
                except NoSuchProcessError:
                    self._thread_gone(thread.tid, None)

    def _cleanup(self) -> CleanupReport:
        tracee = self.tracee
        errors: List[str] = []
        restored_bytes = restored_threads = restored_pages = detached = 0

        def attempt(what: str, action) -> bool:
            try:
                action()
                return True
            except NoSuchProcessError:
                return False
            except (KsinspectError, OSError) as exc:
                errors.append("%s: %s" % (what, exc))
                return False

        if tracee.alive:
            for thread in list(tracee.threads.values()):
                attempt("stopping thread %d" % thread.tid, lambda t=thread: self._interrupt(t))
            # Collect exits that happened meanwhile.
            for tid in list(tracee.threads):
                with contextlib.suppress(ChildProcessError):
                    got, status = os.waitpid(tid, os.WNOHANG | pt.WALL)
                    if got and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
                        self._thread_gone(tid, status)
        if tracee.alive and self.tracee.threads:
            # Debug registers: DR7 first (disables our slots), then DR0-DR3, DR6.
            for thread in list(tracee.threads.values()):
                saved = thread.saved_debugregs
                if saved is None or not thread.stopped:
                    continue

                def put_back(t=thread, s=saved):
                    pt.set_debugreg(t.tid, 7, s[7])
                    for n in (0, 1, 2, 3):
                        pt.set_debugreg(t.tid, n, s[n])
                    pt.set_debugreg(t.tid, 6, s[6] if s[6] else DR6_CLEAR)
                if attempt("debug registers of thread %d" % thread.tid, put_back):
                    restored_threads += 1
            for bp in list(self.software.values()):
                if attempt("byte at %#x" % bp.address,
                           lambda b=bp: tracee.write(b.address, bytes([b.original]))):
                    restored_bytes += 1
            for guard in list(self.guards.values()):
                if not guard.armed:
                    continue
                if attempt("protection of page %#x" % guard.page,
                           lambda g=guard: self._mprotect(self._any_stopped_tid(), g.page,
                                                          g.original_prot)):
                    restored_pages += 1
            kill = tracee.started and self.kill_on_close
            for thread in list(tracee.threads.values()):
                if not thread.stopped:
                    continue
                if tracee.started and not kill:
                    attempt("a Ctrl-C still pending in thread %d" % thread.tid,
                            lambda t=thread: self._swallow_pending_sigint(t))
                sig = thread.pending_signal
                if attempt("detaching thread %d" % thread.tid,
                           lambda t=thread, s=sig: pt.detach(t.tid, s)):
                    detached += 1
            if kill:
                with contextlib.suppress(OSError):
                    os.kill(tracee.pid, signal.SIGKILL)
                    os.waitpid(tracee.pid, 0)
                outcome = "killed"
            else:
                outcome = "detached, %s runs on" % ("the program" if tracee.started
                                                    else "process %d" % tracee.pid)
        else:
            outcome = "the process has exited"
        self.software.clear()
        self.guards.clear()
        self.hardware.clear()
        tracee.threads.clear()
        tracee.forget_memory()
        return CleanupReport(tracee.pid, restored_bytes, restored_threads, restored_pages,
                             detached, outcome, tuple(errors))


def _tgid(pid: int) -> int:
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        raise NoSuchProcessError("process %d does not exist" % pid, _errno.ESRCH) from None
    except OSError as exc:
        raise PtraceError("process %d: %s" % (pid, exc.strerror), exc.errno or 0) from None
    return pid


def _task_ids(pid: int) -> List[int]:
    try:
        return sorted(int(t) for t in os.listdir("/proc/%d/task" % pid))
    except FileNotFoundError:
        raise NoSuchProcessError("process %d does not exist" % pid, _errno.ESRCH) from None
