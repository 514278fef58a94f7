"""The GS (or FS) base of each thread of another Linux x86-64 process, through ptrace.

A Windows thread running under Wine keeps its TEB address in the GS base, as
on Windows x64; a 32-bit Windows thread (a 32-bit Wine process) in the FS
base, as on 32-bit Windows (for a 32-bit tracee the kernel reports the base
of the segment FS selects as ``fs_base``).

Reading a register of another process needs it stopped; to leave it exactly
as it was, each thread is attached with ``PTRACE_SEIZE``
(which, unlike ``PTRACE_ATTACH``, sends no SIGSTOP), stopped with
``PTRACE_INTERRUPT``, read with ``PTRACE_GETREGS`` and let go with
``PTRACE_DETACH``, always, in a ``finally``. A signal that arrived while it
was stopped is handed back on detach. A thread interrupted inside a system
call restarts it (ptrace(2) "PTRACE_INTERRUPT", "Syscall-stops"); a stopped
(job-control) process stays stopped.

Sources: ptrace(2); ``struct user_regs_struct`` in
arch/x86/include/asm/user_64.h (gs_base is the 23rd of 27 unsigned longs).
"""
import errno
import os
from typing import Dict, Optional

from ..errors import LiveOSError, PtraceError, UnsupportedError
from . import ptrace
from .proc_memory import access_hint, no_such_process, proc_path
from .process_state import attach_obstacle

__all__ = ["read_gs_bases", "read_segment_bases", "unavailable_reason"]


def unavailable_reason() -> Optional[str]:
    return ptrace.unavailable_reason()


def _thread_base(pid: int, tid: int, register: str) -> Optional[int]:
    """Seize, interrupt, read and detach one thread; None if it exited meanwhile."""
    try:
        ptrace.seize(tid)
    except PtraceError as exc:
        if exc.errno == errno.ESRCH:
            return None
        if exc.errno == errno.EPERM:
            obstacle = attach_obstacle(pid, tid)
            if obstacle:
                raise LiveOSError(errno.EPERM, obstacle) from None
            tracer = _tracer_of(pid, tid)
            if tracer:
                raise LiveOSError(errno.EPERM, "thread %d of process %d is already traced by "
                                  "process %d (a debugger?)" % (tid, pid, tracer)) from None
            raise LiveOSError(errno.EPERM, access_hint(pid, "reading a thread's registers"))
        raise LiveOSError(exc.errno, "PTRACE_SEIZE of thread %d of process %d: %s"
                          % (tid, pid, os.strerror(exc.errno))) from None
    resume_signal = 0
    interrupted = stopped = False
    try:
        ptrace.interrupt(tid)
        interrupted = True
        while True:
            got = os.waitpid(tid, ptrace.WALL)
            status_value = got[1]
            if os.WIFEXITED(status_value) or os.WIFSIGNALED(status_value):
                return None
            if os.WIFSTOPPED(status_value):
                stopped = True
                if (status_value >> 16) != ptrace.PTRACE_EVENT_STOP:
                    # A signal-delivery stop came first: deliver it on detach.
                    resume_signal = os.WSTOPSIG(status_value)
                break
        return getattr(ptrace.get_regs(tid), register)
    except ChildProcessError:
        return None
    except PtraceError as exc:
        if exc.errno == errno.ESRCH:
            return None
        raise LiveOSError(exc.errno, "ptrace of thread %d of process %d: %s"
                          % (tid, pid, os.strerror(exc.errno))) from None
    finally:
        try:
            # Detach needs a stopped tracee; an interrupted one always stops,
            # so if no stop was seen yet (an error above), wait for it first.
            if interrupted and not stopped:
                try:
                    os.waitpid(tid, ptrace.WALL)
                except ChildProcessError:
                    pass
            ptrace.detach(tid, resume_signal)
        except PtraceError:
            pass    # the thread exited: nothing is left attached


def _tracer_of(pid: int, tid: int) -> int:
    try:
        with open(proc_path(pid, "task/%d/status" % tid)) as handle:
            for line in handle:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def read_gs_bases(pid: int) -> Dict[int, int]:
    """``{tid: gs_base}`` for every thread of process *pid* (x86-64 Linux)."""
    return read_segment_bases(pid, "gs_base")


def read_segment_bases(pid: int, register: str) -> Dict[int, int]:
    """``{tid: base}`` of *register* (``gs_base`` or ``fs_base``) for every thread
    of process *pid* (x86-64 Linux).

    The process keeps running: each thread is stopped only for the time of
    one PTRACE_GETREGS.

    Raises:
        UnsupportedError: not Linux on x86-64.
        LiveOSError: no such process; ptrace refused (the message says which
            access is missing, or which debugger already traces it).
    """
    reason = unavailable_reason()
    if reason:
        raise UnsupportedError(reason)
    try:
        tids = sorted(int(name) for name in os.listdir(proc_path(pid, "task")))
    except FileNotFoundError:
        raise no_such_process(pid) from None
    except OSError as exc:
        raise LiveOSError(exc.errno, "cannot list the threads of process %d: %s"
                          % (pid, exc.strerror)) from None
    if register not in ("gs_base", "fs_base"):
        raise ValueError("register must be gs_base or fs_base, not %r" % (register,))
    bases = {}
    for tid in tids:
        base = _thread_base(pid, tid, register)
        if base is not None:
            bases[tid] = base
    return bases
