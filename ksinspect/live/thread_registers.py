"""The GS base of each thread of another Linux x86-64 process, through ptrace.

A Windows thread running under Wine keeps its TEB address in the GS base, as
on Windows x64. Reading a register of another process needs it stopped; to
leave it exactly as it was, each thread is attached with ``PTRACE_SEIZE``
(which, unlike ``PTRACE_ATTACH``, sends no SIGSTOP), stopped with
``PTRACE_INTERRUPT``, read with ``PTRACE_GETREGS`` and let go with
``PTRACE_DETACH``, always, in a ``finally``. A signal that arrived while it
was stopped is handed back on detach. A thread interrupted inside a system
call restarts it (ptrace(2) "PTRACE_INTERRUPT", "Syscall-stops"); a stopped
(job-control) process stays stopped.

Sources: ptrace(2); ``struct user_regs_struct`` in
arch/x86/include/asm/user_64.h (gs_base is the 23rd of 27 unsigned longs).
"""
import ctypes
import ctypes.util
import errno
import os
import platform
import sys
from typing import Dict, Optional

from ..errors import LiveOSError, UnsupportedError
from .proc_memory import access_hint, no_such_process, proc_path

__all__ = ["read_gs_bases", "unavailable_reason"]

PTRACE_GETREGS = 12
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
__WALL = 0x40000000

_REG_NAMES = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
              "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
              "fs_base", "gs_base", "ds", "es", "fs", "gs")


class _UserRegs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in _REG_NAMES]


_libc = None


def unavailable_reason() -> Optional[str]:
    if not sys.platform.startswith("linux"):
        return "reading another process's registers with ptrace needs Linux (this is %s)" \
            % sys.platform
    if platform.machine() not in ("x86_64", "AMD64"):
        return "the GS base of a thread is read on x86-64 only (this is %s)" % platform.machine()
    return None


def _ptrace():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.ptrace.restype = ctypes.c_long
        _libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    return _libc.ptrace


def _call(request: int, tid: int, addr=None, data=None) -> None:
    if _ptrace()(request, tid, addr, data) == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _thread_gs_base(pid: int, tid: int) -> Optional[int]:
    """Seize, interrupt, read and detach one thread; None if it exited meanwhile."""
    try:
        _call(PTRACE_SEIZE, tid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return None
        if exc.errno == errno.EPERM:
            tracer = _tracer_of(pid, tid)
            if tracer:
                raise LiveOSError(errno.EPERM, "thread %d of process %d is already traced by "
                                  "process %d (a debugger?)" % (tid, pid, tracer)) from None
            raise LiveOSError(errno.EPERM, access_hint(pid, "reading a thread's registers"))
        raise LiveOSError(exc.errno, "PTRACE_SEIZE of thread %d of process %d: %s"
                          % (tid, pid, exc.strerror)) from None
    resume_signal = 0
    interrupted = stopped = False
    try:
        _call(PTRACE_INTERRUPT, tid)
        interrupted = True
        while True:
            got = os.waitpid(tid, __WALL)
            status_value = got[1]
            if os.WIFEXITED(status_value) or os.WIFSIGNALED(status_value):
                return None
            if os.WIFSTOPPED(status_value):
                stopped = True
                if (status_value >> 16) != PTRACE_EVENT_STOP:
                    # A signal-delivery stop came first: deliver it on detach.
                    resume_signal = os.WSTOPSIG(status_value)
                break
        regs = _UserRegs()
        _call(PTRACE_GETREGS, tid, None, ctypes.byref(regs))
        return regs.gs_base
    except ChildProcessError:
        return None
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return None
        raise LiveOSError(exc.errno, "ptrace of thread %d of process %d: %s"
                          % (tid, pid, exc.strerror)) from None
    finally:
        try:
            # Detach needs a stopped tracee; an interrupted one always stops,
            # so if no stop was seen yet (an error above), wait for it first.
            if interrupted and not stopped:
                try:
                    os.waitpid(tid, __WALL)
                except ChildProcessError:
                    pass
            _call(PTRACE_DETACH, tid, None, ctypes.c_void_p(resume_signal))
        except OSError:
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
    """``{tid: gs_base}`` for every thread of process *pid* (x86-64 Linux).

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
    bases = {}
    for tid in tids:
        base = _thread_gs_base(pid, tid)
        if base is not None:
            bases[tid] = base
    return bases
