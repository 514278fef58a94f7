"""A small ctypes layer over Linux ptrace(2) on x86-64.

Only what a breakpoint debugger needs: seize / interrupt / continue /
single-step / detach a thread, read and write its registers
(``struct user_regs_struct``) and debug registers (``u_debugreg`` in
``struct user``, through PTRACE_PEEKUSER / PTRACE_POKEUSER), read and write
its memory (``/proc/PID/mem``, with PTRACE_PEEKDATA / PTRACE_POKEDATA as the
fallback), and read the siginfo of the signal that stopped it.

Every failure raises a :class:`ksinspect.errors.PtraceError` naming the
request, the thread and the reason; a refused attach raises
:class:`~ksinspect.errors.TracePermissionError` with one line saying what is
needed. On a host that is not Linux on x86-64 every entry point raises
:class:`~ksinspect.errors.UnsupportedError`.

Sources: ptrace(2) (Linux man-pages 6.x), the request numbers and event codes
of ``<sys/ptrace.h>`` / ``include/uapi/linux/ptrace.h``; the layouts of
``struct user_regs_struct`` and ``struct user`` from glibc
``sysdeps/unix/sysv/linux/x86/sys/user.h`` (the ``__x86_64__`` branch), which
mirror the kernel's ``arch/x86/include/asm/user_64.h``; siginfo_t from
``include/uapi/asm-generic/siginfo.h``.
"""
import ctypes
import errno as _errno
import os
import platform
import sys
from typing import Optional

from ..errors import (NoSuchProcessError, PtraceError, TracePermissionError,
                      UnsupportedError)
from .proc_memory import access_hint
from .process_state import attach_obstacle

# Requests (include/uapi/linux/ptrace.h; x86 ones in arch/x86/include/uapi/asm/ptrace-abi.h).
PTRACE_PEEKDATA = 2
PTRACE_PEEKUSER = 3
PTRACE_POKEDATA = 5
PTRACE_POKEUSER = 6
PTRACE_CONT = 7
PTRACE_SINGLESTEP = 9
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208

_REQUEST_NAMES = {v: k for k, v in list(globals().items()) if k.startswith("PTRACE_")}

# PTRACE_SEIZE options and the events they report (the ones the debugger uses).
PTRACE_O_TRACECLONE = 0x08
PTRACE_O_TRACEEXEC = 0x10

PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_STOP = 128

# waitpid(2): wait for every child, threads included (<linux/wait.h>).
WALL = 0x40000000

# siginfo si_code values (include/uapi/asm-generic/siginfo.h).
SI_KERNEL = 0x80          # int3 (#BP) is sent with SI_KERNEL on x86 (do_int3_user)
TRAP_BRKPT = 1
TRAP_TRACE = 2            # single step
TRAP_HWBKPT = 4           # a DR0-DR3 hit (get_si_code in arch/x86/kernel/traps.c)
SEGV_MAPERR = 1
SEGV_ACCERR = 2
SI_CODE_NAMES = {
    "SIGTRAP": {SI_KERNEL: "SI_KERNEL", TRAP_BRKPT: "TRAP_BRKPT", TRAP_TRACE: "TRAP_TRACE",
                TRAP_HWBKPT: "TRAP_HWBKPT"},
    "SIGSEGV": {SEGV_MAPERR: "SEGV_MAPERR", SEGV_ACCERR: "SEGV_ACCERR"},
}


class UserRegs(ctypes.Structure):
    """``struct user_regs_struct`` (x86-64), the PTRACE_GETREGS buffer."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
        "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
        "gs_base", "ds", "es", "fs", "gs")]

    def copy(self) -> "UserRegs":
        clone = UserRegs()
        ctypes.memmove(ctypes.byref(clone), ctypes.byref(self), ctypes.sizeof(UserRegs))
        return clone


class _UserFpregs(ctypes.Structure):
    _fields_ = [("cwd", ctypes.c_ushort), ("swd", ctypes.c_ushort), ("ftw", ctypes.c_ushort),
                ("fop", ctypes.c_ushort), ("rip", ctypes.c_ulonglong),
                ("rdp", ctypes.c_ulonglong), ("mxcsr", ctypes.c_uint),
                ("mxcr_mask", ctypes.c_uint), ("st_space", ctypes.c_uint * 32),
                ("xmm_space", ctypes.c_uint * 64), ("padding", ctypes.c_uint * 24)]


class User(ctypes.Structure):
    """``struct user`` (x86-64): PTRACE_PEEKUSER / POKEUSER take offsets into it.

    Only ``u_debugreg`` is used; the members before it are declared so that
    its offset is computed by the same C layout rules as the header's.
    """

    _fields_ = [("regs", UserRegs), ("u_fpvalid", ctypes.c_int), ("i387", _UserFpregs),
                ("u_tsize", ctypes.c_ulonglong), ("u_dsize", ctypes.c_ulonglong),
                ("u_ssize", ctypes.c_ulonglong), ("start_code", ctypes.c_ulonglong),
                ("start_stack", ctypes.c_ulonglong), ("signal", ctypes.c_longlong),
                ("reserved", ctypes.c_int), ("u_ar0", ctypes.c_ulonglong),
                ("u_fpstate", ctypes.c_ulonglong), ("magic", ctypes.c_ulonglong),
                ("u_comm", ctypes.c_char * 32), ("u_debugreg", ctypes.c_ulonglong * 8)]


#: offsetof(struct user, u_debugreg): 848 on x86-64 (the test suite checks it
#: against a C program's offsetof).
U_DEBUGREG_OFFSET = User.u_debugreg.offset


def debugreg_offset(n: int) -> int:
    """The PEEKUSER/POKEUSER offset of DRn: offsetof(struct user, u_debugreg[n])."""
    if not 0 <= n <= 7 or n in (4, 5):
        raise ValueError("DR%d is not accessible (DR0-DR3, DR6, DR7)" % n)
    return U_DEBUGREG_OFFSET + 8 * n


class SigInfo(ctypes.Structure):
    """The head of ``siginfo_t`` (128 bytes on x86-64): si_signo, si_errno,
    si_code, then the union at offset 16, whose first word is si_addr for
    SIGSEGV / SIGBUS / SIGTRAP faults."""

    _fields_ = [("si_signo", ctypes.c_int), ("si_errno", ctypes.c_int),
                ("si_code", ctypes.c_int), ("_pad0", ctypes.c_int),
                ("si_addr", ctypes.c_ulonglong), ("_rest", ctypes.c_byte * 104)]


def unavailable_reason() -> Optional[str]:
    """Why this module cannot work here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "ptrace here needs Linux (this is %s)" % sys.platform
    machine = platform.machine()
    if machine not in ("x86_64", "AMD64"):
        return "ptrace here needs an x86-64 CPU (this machine is %s)" % (machine or "unknown")
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return "ptrace support here needs a 64-bit Python (this one is 32-bit)"
    return None


_libc = None


def _lib():
    global _libc
    reason = unavailable_reason()
    if reason:
        raise UnsupportedError(reason)
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.ptrace.restype = ctypes.c_long
        lib.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        _libc = lib
    return _libc


def _error(request: int, pid: int, err: int, what: str = "") -> PtraceError:
    name = _REQUEST_NAMES.get(request, "ptrace request %#x" % request)
    text = "%s on %d%s: %s" % (name, pid, " (%s)" % what if what else "", os.strerror(err))
    if err == _errno.ESRCH:
        if request in (PTRACE_SEIZE, PTRACE_ATTACH):
            obstacle = attach_obstacle(pid)
            if obstacle:
                return NoSuchProcessError(obstacle, err, name, pid)
            return NoSuchProcessError("process %d does not exist" % pid, err, name, pid)
        return NoSuchProcessError(text + ": the thread has exited or is not stopped", err,
                                  name, pid)
    if err == _errno.EPERM and request in (PTRACE_SEIZE, PTRACE_ATTACH):
        # EPERM says nothing of why: a zombie, a kernel thread and a thread
        # another debugger holds are told apart from permissions first.
        obstacle = attach_obstacle(pid)
        if obstacle:
            return TracePermissionError(obstacle, err, name, pid)
        return TracePermissionError("not allowed to trace process %d: %s" % (
            pid, access_hint(pid, "tracing").split(": ", 1)[1]), err, name, pid)
    return PtraceError(text, err, name, pid)


def ptrace(request: int, pid: int, addr: int = 0, data=0, what: str = "") -> int:
    """Call ptrace(2); raise a PtraceError on failure. Returns the result
    (the word read, for the PEEK requests)."""
    lib = _lib()
    ctypes.set_errno(0)
    if isinstance(data, int):
        data = ctypes.c_void_p(data & 0xFFFFFFFFFFFFFFFF)
    result = lib.ptrace(request, pid, ctypes.c_void_p(addr), data)
    err = ctypes.get_errno()
    if result == -1 and err:
        raise _error(request, pid, err, what)
    return result


def seize(pid: int, options: int = 0) -> None:
    """PTRACE_SEIZE: trace without stopping (options set at once)."""
    ptrace(PTRACE_SEIZE, pid, 0, options)


def interrupt(tid: int) -> None:
    """PTRACE_INTERRUPT: stop a seized thread (reported as PTRACE_EVENT_STOP)."""
    ptrace(PTRACE_INTERRUPT, tid)


def cont(tid: int, sig: int = 0) -> None:
    ptrace(PTRACE_CONT, tid, 0, sig)


def listen(tid: int) -> None:
    """PTRACE_LISTEN: leave a thread in group-stop (SIGSTOP) while still traced."""
    ptrace(PTRACE_LISTEN, tid)


def singlestep(tid: int, sig: int = 0) -> None:
    ptrace(PTRACE_SINGLESTEP, tid, 0, sig)


def detach(tid: int, sig: int = 0) -> None:
    ptrace(PTRACE_DETACH, tid, 0, sig)


def get_event_msg(tid: int) -> int:
    value = ctypes.c_ulong()
    ptrace(PTRACE_GETEVENTMSG, tid, 0, ctypes.cast(ctypes.byref(value), ctypes.c_void_p))
    return value.value


def get_regs(tid: int) -> UserRegs:
    regs = UserRegs()
    ptrace(PTRACE_GETREGS, tid, 0, ctypes.cast(ctypes.byref(regs), ctypes.c_void_p))
    return regs


def set_regs(tid: int, regs: UserRegs) -> None:
    ptrace(PTRACE_SETREGS, tid, 0, ctypes.cast(ctypes.byref(regs), ctypes.c_void_p))


def get_siginfo(tid: int) -> SigInfo:
    info = SigInfo()
    ptrace(PTRACE_GETSIGINFO, tid, 0, ctypes.cast(ctypes.byref(info), ctypes.c_void_p))
    return info


def peek_user(tid: int, offset: int) -> int:
    return ptrace(PTRACE_PEEKUSER, tid, offset, 0) & 0xFFFFFFFFFFFFFFFF


def poke_user(tid: int, offset: int, value: int, what: str = "") -> None:
    ptrace(PTRACE_POKEUSER, tid, offset, value & 0xFFFFFFFFFFFFFFFF, what)


def get_debugreg(tid: int, n: int) -> int:
    """Read DRn of a stopped thread (the kernel's virtual copy)."""
    return peek_user(tid, debugreg_offset(n))


def set_debugreg(tid: int, n: int, value: int) -> None:
    """Write DRn of a stopped thread. The kernel validates it
    (arch/x86/kernel/ptrace.c ptrace_set_debugreg): DR0-DR3 must be user
    addresses, DR7 must describe breakpoints the hardware can hold."""
    poke_user(tid, debugreg_offset(n), value, "DR%d = %#x" % (n, value))


def peek_data(tid: int, address: int) -> int:
    return ptrace(PTRACE_PEEKDATA, tid, address, 0, "read at %#x" % address) & 0xFFFFFFFFFFFFFFFF


def poke_data(tid: int, address: int, word: int) -> None:
    ptrace(PTRACE_POKEDATA, tid, address, word & 0xFFFFFFFFFFFFFFFF, "write at %#x" % address)


def _mem_error(pid: int, address: int, size: int, verb: str, exc: OSError) -> PtraceError:
    err = exc.errno or _errno.EIO
    return PtraceError("cannot %s %d byte(s) at %#x in process %d: %s"
                       % (verb, size, address, pid, os.strerror(err)), err, "/proc/PID/mem", pid)


class TraceeMemory:
    """A traced process's memory through one open /proc/PID/mem descriptor
    (PEEKDATA / POKEDATA when it cannot be opened). Writes reach read-only
    code pages too: the kernel writes /proc/PID/mem with FOLL_FORCE for a
    tracer, as PTRACE_POKEDATA does. The descriptor belongs to the address
    space it was opened on: reopen it after an execve."""

    def __init__(self, pid: int):
        self.pid = pid
        try:
            self._fd: Optional[int] = os.open("/proc/%d/mem" % pid, os.O_RDWR)
        except OSError:
            self._fd = None

    def read(self, address: int, size: int) -> bytes:
        if self._fd is None:
            return _peek_bytes(self.pid, address, size)
        try:
            data = os.pread(self._fd, size, address)
        except OSError as exc:
            raise _mem_error(self.pid, address, size, "read", exc) from None
        if len(data) != size:
            raise PtraceError("cannot read %d byte(s) at %#x in process %d: only %d readable"
                              % (size, address, self.pid, len(data)), _errno.EIO,
                              "/proc/PID/mem", self.pid)
        return data

    def write(self, address: int, data: bytes) -> None:
        if self._fd is None:
            _poke_bytes(self.pid, address, data)
            return
        try:
            written = os.pwrite(self._fd, data, address)
        except OSError as exc:
            raise _mem_error(self.pid, address, len(data), "write", exc) from None
        if written != len(data):
            raise PtraceError("cannot write %d byte(s) at %#x in process %d" % (
                len(data), address, self.pid), _errno.EIO, "/proc/PID/mem", self.pid)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _peek_bytes(pid: int, address: int, size: int) -> bytes:
    start = address & ~7
    out = bytearray()
    for word_address in range(start, address + size, 8):
        out += peek_data(pid, word_address).to_bytes(8, "little")
    return bytes(out[address - start:address - start + size])


def _poke_bytes(pid: int, address: int, data: bytes) -> None:
    start = address & ~7
    end = (address + len(data) + 7) & ~7
    buf = bytearray(_peek_bytes(pid, start, end - start))
    buf[address - start:address - start + len(data)] = data
    for i in range(0, len(buf), 8):
        poke_data(pid, start + i, int.from_bytes(buf[i:i + 8], "little"))
