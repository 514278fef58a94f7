"""Why a Linux process cannot be traced, from what /proc says about it.

A refused ``PTRACE_SEIZE`` only returns EPERM (or ESRCH), the same errno for
very different situations. Before blaming permissions, these facts are
read from ``/proc/PID/status`` and ``/proc/PID/stat`` (proc(5)):

* ``State: Z`` (zombie) or ``X`` (dead): the process has exited, its parent
  has not reaped it; there is nothing left to trace;
* the ``PF_KTHREAD`` flag (0x00200000, include/linux/sched.h) in the flags
  field of ``stat``: a kernel thread, which has no user memory and which
  ptrace refuses (``__ptrace_may_access`` checks ``PF_KTHREAD``);
* ``TracerPid`` not 0: another tracer (strace, gdb) holds it, and a thread
  has only one tracer (ptrace(2) "EPERM ... already being traced").
"""
import os
from typing import Dict, Optional

__all__ = ["read_status", "is_kernel_thread", "attach_obstacle", "process_name"]

PF_KTHREAD = 0x00200000


def _task_dir(pid: int, tid: Optional[int]) -> str:
    if tid is None or tid == pid:
        return "/proc/%d" % pid
    return "/proc/%d/task/%d" % (pid, tid)


def read_status(pid: int, tid: Optional[int] = None) -> Dict[str, str]:
    """The ``Name: value`` lines of /proc/PID[/task/TID]/status ({} if gone)."""
    fields: Dict[str, str] = {}
    try:
        with open(_task_dir(pid, tid) + "/status", "rb") as handle:
            for raw in handle.read(1 << 16).decode("utf-8", "replace").splitlines():
                key, sep, value = raw.partition(":")
                if sep:
                    fields[key] = value.strip()
    except OSError:
        pass
    return fields


def is_kernel_thread(pid: int) -> bool:
    """PF_KTHREAD is set in the flags field (the 9th) of /proc/PID/stat."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            text = handle.read(4096).decode("ascii", "replace")
        return bool(int(text.rsplit(")", 1)[1].split()[6]) & PF_KTHREAD)
    except (OSError, IndexError, ValueError):
        return False


def process_name(pid: int) -> str:
    """The comm of a process, printable (control characters escaped)."""
    name = read_status(pid).get("Name", "?")
    return name.encode("unicode_escape").decode("ascii")


def attach_obstacle(pid: int, tid: Optional[int] = None) -> Optional[str]:
    """A sentence saying why thread *tid* of *pid* cannot be traced, when
    /proc shows a reason other than permissions (None otherwise)."""
    who = "process %d" % pid if tid is None or tid == pid else "thread %d of process %d" % (
        tid, pid)
    if pid == os.getpid():
        return ("process %d is ksinspect itself: a process cannot trace its own threads" % pid)
    if is_kernel_thread(pid):
        return "process %d (%s) is a kernel thread: it has no user space to trace" % (
            pid, process_name(pid))
    status = read_status(pid, tid)
    state = status.get("State", "")
    if state[:1] in ("Z", "X"):
        parent = status.get("PPid", "?")
        return ("%s is a zombie: it has exited and its parent (PID %s) has not reaped it yet"
                % (who, parent))
    try:
        tracer = int(status.get("TracerPid", "0"))
    except ValueError:
        tracer = 0
    if tracer and tracer != os.getpid():
        return "%s is already traced by PID %d (%s); a thread has only one tracer" % (
            who, tracer, process_name(tracer))
    return None
