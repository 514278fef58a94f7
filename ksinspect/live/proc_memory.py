"""Another Linux process's memory, read through ``/proc/PID/mem``, and its map.

:class:`ProcessMemory` is the ``memory`` object the Windows decoders take
(``read(address, size) -> bytes``, raising
:class:`ksinspect.errors.InvalidAddressError` where nothing is mapped), for a
live process: one ``pread`` per read, sizes bounded. :func:`read_maps` parses
``/proc/PID/maps``.

Reading another process's memory is a ptrace access check
(``PTRACE_MODE_ATTACH_FSCREDS``, proc(5) "/proc/pid/mem"): the same user and
a target that is not more privileged, subject to Yama's
``/proc/sys/kernel/yama/ptrace_scope``, or CAP_SYS_PTRACE. When the check
fails the error says which of those is missing, in one line.
"""
import errno
import os
from typing import List, NamedTuple, Optional

from ..errors import InvalidAddressError, LiveOSError

__all__ = ["MAX_READ", "ProcessMemory", "Mapping", "read_maps", "access_hint",
           "no_such_process", "proc_path", "read_proc_file"]

# The largest single read: the decoders read structures and strings, not
# whole regions; a bigger request is a bug or hostile data (a huge length).
MAX_READ = 16 << 20
# x86-64 user space ends below 2**47 (or 2**56 with 5-level paging); pread
# offsets are signed 64-bit, so anything from 2**63 cannot even be asked for.
_MAX_OFFSET = (1 << 63) - 1

YAMA_PTRACE_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"


def proc_path(pid: int, name: str) -> str:
    return "/proc/%d/%s" % (pid, name)


def no_such_process(pid: int) -> LiveOSError:
    return LiveOSError(errno.ESRCH, "no process with PID %d" % pid)


CAP_SYS_PTRACE = 19     # linux/capability.h


def _capabilities(pid, field: str) -> Optional[int]:
    try:
        with open(proc_path(pid, "status") if pid != "self" else "/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return None


def access_hint(pid: int, what: str) -> str:
    """One line that says which access is missing to ptrace / read process *pid*.

    The kernel's rule (ptrace(2) "Ptrace access mode checking"): the same
    real/effective/saved uids and gids, a dumpable target whose permitted
    capabilities are a subset of the caller's, and Yama's ptrace_scope; or
    CAP_SYS_PTRACE.
    """
    try:
        with open(YAMA_PTRACE_SCOPE) as handle:
            scope = handle.read().strip()
    except OSError:
        scope = None
    try:
        owner = os.stat(proc_path(pid, "")).st_uid
    except OSError:
        owner = None
    ours = _capabilities("self", "CapEff")
    theirs = _capabilities(pid, "CapPrm")
    has_ptrace_cap = ours is not None and bool(ours >> CAP_SYS_PTRACE & 1)
    reasons = []
    if owner is not None and owner != os.geteuid():
        reasons.append("it belongs to uid %d and this is uid %d" % (owner, os.geteuid()))
    if ours is not None and theirs is not None and theirs & ~ours:
        reasons.append("it holds capabilities this process lacks (its CapPrm %#x, our CapEff "
                       "%#x)" % (theirs, ours))
    if scope not in (None, "0"):
        reasons.append("yama ptrace_scope is %s (%s), which allows only descendants or "
                       "CAP_SYS_PTRACE" % (scope, YAMA_PTRACE_SCOPE))
    if not reasons:
        reasons.append("it may be non-dumpable (setuid, or prctl PR_SET_DUMPABLE 0)")
    if has_ptrace_cap:
        remedy = ("this process has CAP_SYS_PTRACE, but it does not reach that process "
                  "(another user namespace, or a container or LSM policy)")
    else:
        remedy = "run as its user (with ptrace_scope 0), or with CAP_SYS_PTRACE"
    return "%s needs ptrace access to process %d: %s; %s" % (what, pid, "; ".join(reasons),
                                                            remedy)


class Mapping(NamedTuple):
    """One line of ``/proc/PID/maps`` (proc(5))."""

    start: int
    end: int
    perms: str          # e.g. "r-xp": read, write, execute, p(rivate) or s(hared)
    offset: int         # offset in the file
    device: str         # "major:minor" in hex, as maps shows it
    inode: int
    path: str           # "" for anonymous memory; "[heap]", "[stack]"...

    @property
    def readable(self) -> bool:
        return self.perms[0] == "r"

    @property
    def writable(self) -> bool:
        return self.perms[1] == "w"

    @property
    def private(self) -> bool:
        return self.perms[3] == "p"

    @property
    def anonymous(self) -> bool:
        return self.inode == 0 and not self.path


def read_proc_file(pid: int, name: str) -> bytes:
    """The bytes of ``/proc/PID/NAME``.

    Raises:
        LiveOSError: the process does not exist (ESRCH), the file may not be
            read (EACCES, with what would allow it), or another OS error.
    """
    path = proc_path(pid, name)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise no_such_process(pid) from None
    except PermissionError:
        raise LiveOSError(errno.EACCES, access_hint(pid, "reading " + path)) from None
    except OSError as exc:
        raise LiveOSError(exc.errno, "cannot read %s: %s" % (path, exc.strerror)) from None


def read_maps(pid: int) -> List[Mapping]:
    """The mappings of process *pid*, in address order.

    Raises:
        LiveOSError: the process does not exist or its map cannot be read.
    """
    text = read_proc_file(pid, "maps").decode("utf-8", "surrogateescape")
    mappings = []
    for line in text.splitlines():
        # start-end perms offset dev inode [path]; the path may hold spaces.
        fields = line.split(None, 5)
        if len(fields) < 5:
            continue
        start, _, end = fields[0].partition("-")
        path_field = fields[5] if len(fields) > 5 else ""
        mappings.append(Mapping(int(start, 16), int(end, 16), fields[1], int(fields[2], 16),
                                fields[3], int(fields[4]), path_field))
    return mappings


class ProcessMemory:
    """Reads the virtual memory of live process *pid* through ``/proc/PID/mem``.

    Use as a context manager (or call :meth:`close`). The file is opened once;
    each :meth:`read` is one ``pread``.

    Raises:
        LiveOSError: on opening, when the process does not exist or access is
            denied (the message says what access is missing).
    """

    def __init__(self, pid: int):
        self._fd: Optional[int] = None
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise LiveOSError(errno.EINVAL, "%r is not a process ID" % (pid,))
        self.pid = pid
        path = proc_path(pid, "mem")
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise no_such_process(pid) from None
        except PermissionError:
            raise LiveOSError(errno.EACCES, access_hint(pid, "reading " + path)) from None
        except OSError as exc:
            from .process_state import is_kernel_thread, process_name
            if exc.errno == errno.ESRCH and is_kernel_thread(pid):
                raise LiveOSError(exc.errno, "process %d (%s) is a kernel thread: it has no "
                                  "user memory to read" % (pid, process_name(pid))) from None
            raise LiveOSError(exc.errno, "cannot open %s: %s" % (path, exc.strerror)) from None

    def read(self, address: int, size: int) -> bytes:
        """*size* bytes at virtual *address*.

        Raises:
            InvalidAddressError: part of the range is not mapped (or not
                readable), or the range is out of bounds.
            LiveOSError: the process has gone, or the request is too big.
        """
        if self._fd is None:
            raise LiveOSError(errno.EBADF, "the memory of process %d is closed" % self.pid)
        if size < 0 or size > MAX_READ:
            raise LiveOSError(errno.EINVAL, "refusing to read %d bytes at %#x from process %d "
                              "(at most %d at a time)" % (size, address, self.pid, MAX_READ))
        if address < 0 or address + size - 1 > _MAX_OFFSET:
            raise InvalidAddressError("address %#x (+%#x) is outside the user address space of "
                                      "process %d" % (address, size, self.pid), address)
        if size == 0:
            return b""
        data = b""
        while len(data) < size:
            where = address + len(data)
            try:
                chunk = os.pread(self._fd, size - len(data), where)
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EFAULT):
                    raise InvalidAddressError("address %#x is not mapped in process %d"
                                              % (where, self.pid), where) from None
                if exc.errno == errno.ESRCH:
                    raise LiveOSError(errno.ESRCH, "process %d has exited" % self.pid) from None
                if exc.errno in (errno.EACCES, errno.EPERM):
                    raise LiveOSError(exc.errno, access_hint(self.pid, "reading memory")) from None
                raise LiveOSError(exc.errno, "reading %#x in process %d: %s"
                                  % (where, self.pid, exc.strerror)) from None
            if not chunk:
                # A read of 0 bytes: the process has no mm any more (exited).
                raise LiveOSError(errno.ESRCH, "process %d has exited" % self.pid)
            data += chunk
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ProcessMemory":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            self.close()

    def __repr__(self) -> str:
        return "ProcessMemory(pid=%d)" % self.pid
