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

Safety: :meth:`DebugSession.close <ksinspect.live.debug_session.DebugSession.close>` (shared
with the Win32 backend) (called by ``with`` and at interpreter exit)
stops every thread, puts back every original byte, writes DR7 back first and
then the DR0-DR3 it found (so no slot is ever enabled with a foreign
address), gives every guarded page its rights back, and detaches. A program
started by the debugger runs on after the session unless ``kill_on_close``
was asked. Critical sections (register surgery, single-steps) hold the
ending signals so Ctrl-C can only land between them, and nothing interrupts
close() (:mod:`ksinspect.live.signals`).

It never attaches to anything but the process the caller names (or starts).
"""
import contextlib
import errno as _errno
import os
import signal
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import (DecodeError, KsinspectError, NoSuchProcessError, PtraceError,
                      UnsupportedError)
from ..x86.debugreg import DR6
from . import ptrace as pt
from . import process_state, signals
from .elf_symbols import ProcessSymbols
from .debug_events import (PROT_EXEC, PROT_READ, PROT_WRITE, Event, ExecEvent, ExitEvent,
                           GuardPage, HardwareHit, SignalEvent, prot_text)
from .debug_session import (DEBUG_REGISTERS, DR6_CLEAR, INT3, Address, Attempt, DebugSession,
                            check_attach, check_start, split_offset)

PAGE_SIZE = 4096
NR_MPROTECT = 10              # arch/x86/entry/syscalls/syscall_64.tbl
SYSCALL_INSN = b"\x0f\x05"
USER_SPACE_END = 1 << 56      # TASK_SIZE_MAX with LA57 (arch/x86/include/asm/page_64_types.h)
_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}
_STEP_TRIES = 8
# Job-control stops (absent on Windows, where this module only says "unsupported").
_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU")
                      if hasattr(signal, n))
_STOP_WAIT = 2.0              # seconds to wait for a thread to stop before giving up


def signal_name(sig: int) -> str:
    return _SIGNAL_NAMES.get(sig, "signal %d" % sig)


# -------------------------------------------------------------------- tracee

@dataclass
class _Thread:
    tid: int
    stopped: bool = True
    pending_signal: int = 0          # to deliver when resumed
    saved_debugregs: Optional[Dict[int, int]] = None
    listening: bool = False          # in group-stop under PTRACE_LISTEN
    group_stopped: bool = False      # stopped by SIGSTOP & co. (job control)


def _critical():
    """A section no ending signal may cut (register surgery, single-steps):
    see :mod:`ksinspect.live.signals`."""
    return signals.critical()


class Tracee:
    """A traced process: its threads, memory, registers and symbols.

    Made by :meth:`PtraceDebugger.start` or :meth:`PtraceDebugger.attach`, not directly.
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
        self.page_size = PAGE_SIZE

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
            if not 0 <= where < USER_SPACE_END:
                raise DecodeError("%#x is not a user-space address (x86-64 user space ends below "
                                  "2^47, or 2^56 with 5-level paging)" % where)
            return where, self.describe(where)
        name, offset = split_offset(where)
        return self.symbols.address(name) + offset, where

    def has_symbol(self, name: str) -> bool:
        """A name of the main executable's symbol tables (what resolve() takes)."""
        return name.partition("+")[0].strip() in self.symbols.elf

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


class PtraceDebugger(DebugSession):
    """A breakpoint session on one process, through ptrace.

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
        super().__init__(tracee, kill_on_close)
        self._pending_new: set = set()    # threads created but not yet seen stopping
        self._exit_reported = False

    # ---------------------------------------------------------- starting
    _OPTIONS = pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_TRACEEXEC

    @classmethod
    def start(cls, argv: Sequence[str], kill_on_close: bool = False, stdin=None, stdout=None,
              stderr=None) -> "PtraceDebugger":
        """Run a program under the debugger, stopped at its first instruction
        (after execve, before the dynamic loader runs).

        The child stops itself with SIGSTOP, the debugger seizes it with
        PTRACE_SEIZE (so PTRACE_INTERRUPT works later) and lets it execve;
        PTRACE_O_TRACEEXEC stops it right after. stdin/stdout/stderr may be
        file objects or descriptors for the program.
        """
        check_start(pt.unavailable_reason(), argv)
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
    def attach(cls, pid: int) -> "PtraceDebugger":
        """Seize and stop every thread of process pid (and only that process)."""
        check_attach(pt.unavailable_reason(), pid, os.getpid(), "trace")
        tgid = _tgid(pid)
        if tgid != pid:
            raise DecodeError("%d is a thread of process %d: give the process id" % (pid, tgid))
        tracee = Tracee(pid, False)
        dbg = cls(tracee)
        try:
            with _critical():
                dbg._seize_thread_set()
        except BaseException:
            dbg._abandon_attach()
            raise
        return dbg

    _SETTLE_ROUNDS = 200          # passes over /proc/PID/task before giving up

    def _seize_thread_set(self) -> None:
        """Seize every thread, then stop them all, until the set no longer
        changes (as gdb's linux-nat does): threads created meanwhile by a
        seized thread are already ours (PTRACE_O_TRACECLONE) and a thread
        that exits between the listing and the seize is simply gone."""
        tracee = self.tracee
        pid = tracee.pid
        for _ in range(self._SETTLE_ROUNDS):
            try:
                tids = _task_ids(pid)
            except NoSuchProcessError:
                if tracee.threads:
                    self._thread_gone(pid, None)
                raise
            new = [t for t in tids if t not in tracee.threads]
            for tid in new:
                try:
                    pt.seize(tid, self._OPTIONS)
                except NoSuchProcessError:
                    if tid == pid:
                        raise
                    continue                     # exited between listing and seize
                except PtraceError:
                    if _tracer_of(pid, tid) == os.getpid():
                        # Cloned by a thread we hold: auto-attached, it stops by itself.
                        tracee.threads[tid] = _Thread(tid, stopped=False)
                        continue
                    if tid != pid and not os.path.exists("/proc/%d/task/%d" % (pid, tid)):
                        continue                 # it exited while the seize was refused
                    raise
                tracee.threads[tid] = _Thread(tid, stopped=False)
                with contextlib.suppress(NoSuchProcessError):
                    pt.interrupt(tid)
            for thread in list(tracee.threads.values()):
                if not thread.stopped and thread.tid in tracee.threads:
                    self._wait_stopped(thread)
            if not tracee.alive:
                raise NoSuchProcessError("process %d exited while being attached" % pid,
                                         _errno.ESRCH)
            # Everything we hold is stopped: only threads cloned in flight can
            # still appear, and they are already ours. Stable when the listing
            # holds nothing new and every thread we hold is stopped.
            if not new and all(t.stopped for t in tracee.threads.values()):
                if set(_task_ids(pid)) <= set(tracee.threads):
                    return
        raise PtraceError("process %d: its threads kept changing over %d attempts to stop them "
                          "all" % (pid, self._SETTLE_ROUNDS), _errno.EAGAIN)

    def _abandon_attach(self) -> None:
        """Let go of the threads seized so far (nothing was written yet)."""
        for thread in list(self.tracee.threads.values()):
            if not thread.stopped:
                with contextlib.suppress(KsinspectError, OSError):
                    self._wait_stopped(thread)
            with contextlib.suppress(PtraceError):
                pt.detach(thread.tid, thread.pending_signal)
        self.tracee.threads.clear()
        self._forget_session()

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

    def wait(self, give_up=None) -> Optional[int]:
        """After close(), wait for a program the debugger started to end;
        returns its wait status (None when it was attached, not started, or
        when ``give_up()``, asked every 10 ms, said to stop waiting)."""
        if not self._closed:
            raise KsinspectError("close() the session before waiting for the program")
        if not self.tracee.started or self.tracee.exit is not None:
            return None
        try:
            if give_up is None:
                return os.waitpid(self.tracee.pid, 0)[1]
            while not give_up():
                got, status = os.waitpid(self.tracee.pid, os.WNOHANG)
                if got:
                    return status
                time.sleep(0.01)
        except ChildProcessError:
            pass
        return None

    def _exit_event(self, status: int) -> ExitEvent:
        return ExitEvent(self.tracee.pid, os.WEXITSTATUS(status) if os.WIFEXITED(status)
                         else None, signal_name(os.WTERMSIG(status))
                         if os.WIFSIGNALED(status) else None)

    # ============================================================ internals
    def _any_stopped_tid(self) -> int:
        for thread in self.tracee.threads.values():
            if thread.stopped:
                return thread.tid
        raise PtraceError("no stopped thread in process %d" % self.tracee.pid)

    # ------------------------------------------- the primitives of the shared session
    @contextlib.contextmanager
    def _still(self):
        self._stop_all()
        with _critical():
            yield

    def _read_debugregs(self, thread: _Thread) -> Dict[int, int]:
        return {n: pt.get_debugreg(thread.tid, n) for n in DEBUG_REGISTERS}

    def _write_debugregs(self, thread: _Thread, values: Dict[int, int]) -> None:
        for n, value in values.items():
            pt.set_debugreg(thread.tid, n, value)

    def _protect(self, page: int, prot: int) -> None:
        self._mprotect(self._any_stopped_tid(), page, prot)

    def _new_guard(self, address: int, page: int, access: str, once: bool,
                   symbol: Optional[str]) -> GuardPage:
        start, end, perms, name = self.tracee.mapping(address)
        if name in ("[vdso]", "[vvar]", "[vsyscall]", "[vvar_vclock]"):
            raise DecodeError("address %#x is in %s, which cannot be guarded" % (address, name))
        prot = sum(bit for c, bit in (("r", PROT_READ), ("w", PROT_WRITE), ("x", PROT_EXEC))
                   if c in perms)
        if access == "write" and not prot & PROT_WRITE:
            raise DecodeError("page %#x is not writable (%s): a write guard would never fire"
                              % (page, perms))
        return GuardPage(address, page, prot, access, once, symbol)


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
        hits = self._hardware_hits(thread.tid, regs.rip, dr6)
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
            events.append(self._software_hit(tid, bp))
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
        events.append(self._guard_hit(tid, regs.rip, info.si_addr, guard,
                                      pt.SI_CODE_NAMES["SIGSEGV"].get(info.si_code,
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
            try:
                got, status = os.waitpid(thread.tid, os.WNOHANG | pt.WALL)
            except ChildProcessError:            # gone, and its status already taken
                self._thread_gone(thread.tid, None)
                return
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

    def _quiesce(self, attempt: Attempt) -> None:
        tracee = self.tracee
        for thread in list(tracee.threads.values()):
            attempt("stopping thread %d" % thread.tid, lambda t=thread: self._interrupt(t))
        # Collect exits that happened meanwhile.
        for tid in list(tracee.threads):
            with contextlib.suppress(ChildProcessError):
                got, status = os.waitpid(tid, os.WNOHANG | pt.WALL)
                if got and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
                    self._thread_gone(tid, status)

    def _owes_registers(self, thread: _Thread) -> bool:
        return thread.saved_debugregs is not None and thread.stopped

    def _let_go(self, attempt: Attempt, kill: bool) -> int:
        tracee = self.tracee
        detached = 0
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
        return detached

    def _forget(self) -> None:
        self.tracee.forget_memory()


def _tracer_of(pid: int, tid: int) -> int:
    try:
        return int(process_state.read_status(pid, tid).get("TracerPid", "0"))
    except ValueError:
        return 0


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

