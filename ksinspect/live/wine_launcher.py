"""Wine's ``start.exe`` launcher: which Linux process is the program it started.

Where a 32-bit Wine is installed (Debian's ``wine32:i386``, the default on
most desktops), ``wine`` is the 32-bit loader, and ``wine prog.exe`` of a
64-bit program runs ``start.exe /exec prog.exe ARGS``: start.exe creates the
program's process and waits for it. ``$!`` and ``Popen.pid`` are then
start.exe's PID. Wine creates a process with a double fork, so the program
is not a Linux child of start.exe: it is reparented to init, but it keeps
start.exe's process group and session and inherits its environment.

:func:`launched_programs` finds it: the processes of the same process group,
session and WINEPREFIX, started no earlier than start.exe, whose program
file name is the one after ``/exec`` (ignoring case, as Windows does) and
whose arguments begin with those start.exe still shows (Wine rewrites
start.exe's argv in place, in the room the original one had, so its tail
may be cut off).
"""
import errno
import ntpath
import os
from typing import List, Optional, Tuple

from ..errors import LiveOSError
from .proc_memory import proc_path
from .wine import process_name, read_proc_cmdline, wine_prefix

__all__ = ["LAUNCHER", "is_launcher", "launched_programs", "follow_launcher"]

LAUNCHER = "start.exe"


def is_launcher(pid: int) -> bool:
    return process_name(pid).lower() == LAUNCHER


def _stat(pid: int) -> Optional[Tuple[int, int, int]]:
    """(process group, session, start time in clock ticks), None if it is gone
    (or a zombie: it has exited, only its exit status is left)."""
    try:
        with open(proc_path(pid, "stat"), "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    # After "(comm)": state ppid pgrp session ... starttime is field 22 of stat(5).
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[2]), int(fields[3]), int(fields[19])


def _trimmed(args: List[str]) -> List[str]:
    while args and args[-1] == "":
        args = args[:-1]
    return args


def _arguments_match(shown: List[str], program_args: List[str]) -> bool:
    """start.exe's visible arguments are a prefix of the program's (the last
    visible one may itself be cut short)."""
    if len(shown) > len(program_args):
        return False
    for index, arg in enumerate(shown):
        last = index == len(shown) - 1
        if arg != program_args[index] and not (last and program_args[index].startswith(arg)):
            return False
    return True


def launched_programs(pid: int) -> List[int]:
    """The PIDs of the programs start.exe *pid* started (normally one)."""
    argv = _trimmed(read_proc_cmdline(pid))
    if len(argv) < 3 or argv[1].lower() != "/exec":
        return []
    wanted = ntpath.basename(argv[2].replace("/", "\\")).lower()
    shown = argv[3:]
    own = _stat(pid)
    prefix = wine_prefix(pid)
    if own is None:
        return []
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == pid:
            continue
        other = int(name)
        info = _stat(other)
        if info is None or info[:2] != own[:2] or info[2] < own[2]:
            continue
        try:
            args = _trimmed(read_proc_cmdline(other))
        except LiveOSError:
            continue
        if not args or ntpath.basename(args[0].replace("/", "\\")).lower() != wanted:
            continue
        if wine_prefix(other) != prefix or not _arguments_match(shown, args[1:]):
            continue
        found.append(other)
    return sorted(found)


MAX_LAUNCHERS = 4


def follow_launcher(pid: int) -> Tuple[int, Optional[str]]:
    """*pid*, or the program that start.exe *pid* started, and a note saying so.

    A start.exe may start another (``wine start.exe /exec prog.exe`` under a
    32-bit Wine runs the 32-bit start.exe, which starts the 64-bit one): the
    chain is followed, at most MAX_LAUNCHERS deep.

    Raises:
        LiveOSError: *pid* is start.exe and runs no program that can be told
            apart (none, or several: the message names them).
    """
    if not is_launcher(pid):
        return pid, None
    chain = [pid]
    why = ("PID %d is Wine's start.exe (with a 32-bit Wine installed, 'wine prog.exe' runs a "
           "64-bit program under 'start.exe /exec')" % pid)
    while is_launcher(chain[-1]) and len(chain) <= MAX_LAUNCHERS:
        current = chain[-1]
        programs = launched_programs(current)
        if len(programs) != 1:
            argv = _trimmed(read_proc_cmdline(current))
            target = argv[2] if len(argv) > 2 else "?"
            via = "" if current == pid else " (through start.exe PID %d)" % current
            if not programs:
                raise LiveOSError(errno.ESRCH, "%s, and the program it started%s, %s, is not "
                                  "running: it has ended, or has not started yet"
                                  % (why, via, target))
            raise LiveOSError(errno.ESRCH, "%s; it started %s%s, and %d processes match it: "
                              "PIDs %s (give one; pgrep -x NAME finds them)"
                              % (why, target, via, len(programs),
                                 ", ".join(map(str, programs))))
        chain.append(programs[0])
    program = chain[-1]
    through = "" if len(chain) == 2 else " through start.exe PID%s %s" % (
        "s" if len(chain) > 3 else "", ", ".join(map(str, chain[1:-1])))
    return program, "%s; followed to the program it started%s, PID %d (%s)" % (
        why, through, program, process_name(program))
