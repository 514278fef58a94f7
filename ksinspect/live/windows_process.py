"""The PEB of a live Windows process, cross-checked: on Windows, or under Wine on Linux.

:func:`inspect_live_peb` finds the process's PEB, decodes it with
:func:`ksinspect.windows.peb.read_peb` and attaches checks against sources
that do not read the PEB (see :mod:`ksinspect.windows.checks`):

* on Windows (:mod:`ksinspect.windows.live_windows`, untested on real
  Windows): NtQueryInformationProcess gives the PEB; Toolhelp32,
  QueryFullProcessImageNameW, CheckRemoteDebuggerPresent and the PE header
  are the other sources;
* on Linux, for a Windows program running under Wine
  (:mod:`ksinspect.live.wine`): the TEB at a thread's GS base gives the PEB;
  ``/proc/PID/maps``, ``/proc/PID/cmdline`` and the PE header are the other
  sources.

Without a layout, the build is read from the PEB itself: OSMajorVersion,
OSMinorVersion and OSBuildNumber sit at the same offsets in every shipped
layout of an architecture (checked when they are read), so they can be read
before the layout is known; the layout of that build is then used, and a
note on the result says which one and why.
"""
import contextlib
import errno
import struct
import sys
from dataclasses import replace
from typing import Any, Iterator, List, Optional, Tuple

from ..errors import DecodeError, KsinspectError, LiveOSError, UnsupportedError
from ..windows.checks import Check, pe_header_checks
from ..windows.layout import Layout
from ..windows.layout_files import available_layouts, choose_layout, load_layout
# The version fields' shared offsets and their reader have one home, in windows/peb.py
# (peb --flat chooses the layout with them too); re-exported here as before.
from ..windows.peb import (VERSION_FIELDS, Peb, Teb, read_os_version, read_peb, read_peb32,
                           read_teb, shared_offset)

__all__ = ["VERSION_FIELDS", "inspect_live_peb", "inspect_live_teb", "choose_layout",
           "read_os_version", "shared_offset"]


def _layouts(arch: str) -> List[Layout]:
    return [load_layout(name) for name in available_layouts() if name.endswith("-" + arch)]


def bootstrap_layout(arch: str) -> Layout:
    """A layout to find the TEB and PEB with before the build is known: any
    *arch* layout will do, because the members used (TEB NtTib.Self and
    ProcessEnvironmentBlock, the PEB's version fields) are checked to sit at
    the same offsets in all of them."""
    for struct_name, field in (("_NT_TIB", "Self"), ("_TEB", "NtTib"),
                               ("_TEB", "ProcessEnvironmentBlock")):
        shared_offset(arch, struct_name, field)
    return _layouts(arch)[-1]


def _resolve_layout(layout: Any, memory: Any, peb_address: int, arch: str,
                    peb_arch: Optional[str] = None) -> Tuple[Layout, str]:
    """The layout given, or the *arch* layout of the build the PEB at
    *peb_address* (a *peb_arch* PEB, default *arch*) names."""
    if layout is not None:
        chosen = load_layout(layout)
        return chosen, "layout %s as given" % chosen.name
    major, minor, build = read_os_version(memory, peb_address, peb_arch or arch)
    return choose_layout(major, minor, build, arch)


def inspect_live_peb(pid: int, layout: Any = None) -> Peb:
    """The PEB of live process *pid*, decoded and cross-checked.

    On Windows, any process this user may read (a WoW64 process: its 32-bit
    PEB); on Linux, a Windows program running under Wine (x64, or a 32-bit
    one under a 32-bit Wine: its ``_PEB32``). Given the PID of Wine's
    ``start.exe`` launcher, the program it started is inspected instead, and
    a note says so.

    Args:
        pid: the process ID (on Linux, the Linux PID of the Wine process;
            under Wine's own Windows, the Windows PID).
        layout: a :class:`Layout` or layout name (x64: WoW64's ``_PEB32`` is
            in the x64 layouts); by default chosen from the PEB's own OS
            version fields (the note on the result says which).

    Returns:
        The :class:`Peb`, its ``checks`` filled and its ``notes`` saying how
        the PEB was found and which layout was used.

    Raises:
        UnsupportedError: neither Windows nor Linux on x86-64.
        NoTebError: (Linux) the process is not a Windows program under Wine.
        LiveOSError: no such process, or access denied (one line saying
            which access is missing).
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise DecodeError("%r is not a process ID" % (pid,))
    if sys.platform == "win32":
        return _inspect_windows(pid, layout)
    if sys.platform.startswith("linux"):
        return _inspect_wine(pid, layout)
    raise UnsupportedError("a live PEB is read on Windows, or on Linux under Wine (this is %s)"
                           % sys.platform)


def _elf_bits(pid: int) -> int:
    """32 or 64: the ELF class of the process's executable (a 32-bit Wine
    process runs the 32-bit loader); 64 when it cannot be read."""
    try:
        with open("/proc/%d/exe" % pid, "rb") as handle:
            ident = handle.read(5)
    except OSError:
        return 64
    return 32 if ident[:4] == b"\x7fELF" and ident[4] == 1 else 64


def _given_x64(layout: Any) -> Optional[Layout]:
    given = load_layout(layout) if layout is not None else None
    if given is not None and given.arch != "x64":
        raise DecodeError("layout %s is for %s; a live PEB needs an x64 layout (which holds "
                          "WoW64's _PEB32 too)" % (given.name, given.arch))
    return given


@contextlib.contextmanager
def _program_gone_is_one_line(given: int, followed: int) -> Iterator[None]:
    """A program followed from its start.exe that ends while it is read (or
    was already dying when start.exe was looked at) is said of both PIDs."""
    try:
        yield
    except LiveOSError as exc:
        if followed == given or exc.errno != errno.ESRCH:
            raise
        raise LiveOSError(errno.ESRCH, "PID %d is Wine's start.exe, and the program it "
                          "started, PID %d, has ended" % (given, followed)) from None


def _inspect_wine(pid: int, layout: Any) -> Peb:
    from . import wine
    from .proc_memory import ProcessMemory, read_maps
    from .wine_launcher import follow_launcher

    given_pid = pid
    pid, launcher_note = follow_launcher(pid)
    bits = _elf_bits(pid)
    with _program_gone_is_one_line(given_pid, pid), ProcessMemory(pid) as memory:
        maps = read_maps(pid)
        given = _given_x64(layout)
        if bits == 32:
            location = wine.locate_teb(pid, memory, bootstrap_layout("x86"), maps)
            chosen, layout_note = _resolve_layout(given, memory, location.peb, "x64", "x86")
            peb = read_peb32(memory, location.peb, chosen)
            register = "FS"
        else:
            location = wine.locate_teb(pid, memory, given or bootstrap_layout("x64"), maps)
            chosen, layout_note = _resolve_layout(given, memory, location.peb, "x64")
            peb = read_peb(memory, location.peb, chosen)
            register = "GS"
        how = ("TEB %#x of thread %d (its %s base, read with ptrace), "
               "TEB.ProcessEnvironmentBlock %#x" % (location.teb, location.tid, register,
                                                    location.peb)) \
            if location.tid is not None \
            else "TEB %#x found by scanning memory (%s), TEB.ProcessEnvironmentBlock %#x" % (
                location.teb, location.note, location.peb)
        checks: List[Check] = []
        pebs = sorted({p for _, p in location.tebs.values()})
        if len(location.tebs) > 1:
            checks.append(Check(
                "TEB.ProcessEnvironmentBlock of all %d threads" % len(location.tebs),
                location.peb, pebs[0] if len(pebs) == 1 else pebs, pebs == [location.peb],
                "every thread's TEB must point to the one PEB of the process"))
        checks.append(wine.command_line_check(pid, peb.command_line))
        checks.append(wine.image_path_check(pid, maps, peb.image_base, peb.image_path))
        checks += wine.module_map_checks(pid, maps, peb.modules)
        checks += wine.mapped_image_checks(pid, memory, maps, peb.modules, peb.image_base)
        checks += pe_header_checks(memory, peb.modules, peb.image_base)
        notes = (() if launcher_note is None else (launcher_note,)) + (
            ("32-bit Wine process: its TEB32 and _PEB32",) if bits == 32 else ()) + (
            "PEB found through " + how, layout_note)
        return replace(peb, checks=tuple(checks), notes=peb.notes + notes)


IMAGE_FILE_MACHINE_I386 = 0x14C


def _wow64_peb_through_teb(memory: Any) -> Tuple[int, str]:
    """The PEB32 of a WoW64 process whose ProcessWow64Information gave no address
    (Wine's answer): a 64-bit TEB's NtTib.ExceptionList holds the 32-bit TEB (as
    WoW64 keeps it, and Wine too), whose NtTib.Self must point to itself and
    whose ProcessEnvironmentBlock is the PEB32.

    Raises:
        LiveOSError: no thread leads to a 32-bit TEB.
    """
    from ..errors import InvalidAddressError, LiveOSError
    from ..windows import live_windows

    x64, x86 = bootstrap_layout("x64"), bootstrap_layout("x86")
    link = x64.offset("_TEB", "NtTib") + x64.offset("_NT_TIB", "ExceptionList")
    self_offset = x86.offset("_TEB", "NtTib") + x86.offset("_NT_TIB", "Self")
    peb_offset = x86.offset("_TEB", "ProcessEnvironmentBlock")

    def u32(address: int) -> int:
        return int.from_bytes(memory.read(address, 4), "little")

    for tid, teb64 in live_windows.thread_tebs(memory.pid):
        try:
            teb32 = u32(teb64 + link)
            if teb32 and u32(teb32 + self_offset) == teb32:
                peb32 = u32(teb32 + peb_offset)
                return peb32, ("ProcessWow64Information gave a flag, not the PEB32 address "
                               "(as Wine does): the PEB32 %#x is TEB32.ProcessEnvironmentBlock, "
                               "TEB32 %#x from TEB64.NtTib.ExceptionList of thread %d (TEB64 "
                               "%#x)" % (peb32, teb32, tid, teb64))
        except InvalidAddressError:
            continue
    raise LiveOSError(5, "process %d is a WoW64 process, but no thread's 64-bit TEB leads to "
                      "its 32-bit TEB (NtTib.ExceptionList), so its PEB32 cannot be found"
                      % memory.pid)


def _inspect_windows(pid: int, layout: Any) -> Peb:
    from ..windows import live_windows
    from ..windows.checks import read_pe_header

    arch = "x64" if struct.calcsize("P") == 8 else "x86"
    with live_windows.open_process(pid) as memory:
        notes = ["PEB %#x from NtQueryInformationProcess(ProcessBasicInformation)"
                 % memory.peb_address]
        if memory.wow64:
            # A 32-bit program on x64: its own PEB is the 32-bit one.
            if memory.wow64_peb_address:
                peb32 = memory.wow64_peb_address
                notes.append("WoW64 process: the 32-bit PEB %#x from ProcessWow64Information "
                             "is shown" % peb32)
            else:
                peb32, how = _wow64_peb_through_teb(memory)
                notes.append("WoW64 process: the 32-bit PEB is shown; " + how)
            chosen, layout_note = _resolve_layout(_given_x64(layout) if arch == "x64"
                                                  else layout, memory, peb32, arch, "x86")
            peb = read_peb32(memory, peb32, chosen)
        else:
            chosen, layout_note = _resolve_layout(layout, memory, memory.peb_address, arch)
            peb = read_peb(memory, memory.peb_address, chosen)
        notes.insert(1, layout_note)
        facts = live_windows.gather_facts(memory)
        if memory.wow64 and facts.images is not None:
            # The 64-bit images of WoW64 itself (ntdll, wow64*.dll) are on the
            # 64-bit loader lists, not on these 32-bit ones.
            kept = []
            for base, path in facts.images:
                try:
                    if read_pe_header(memory, base).machine == IMAGE_FILE_MACHINE_I386:
                        kept.append((base, path))
                except KsinspectError:
                    kept.append((base, path))
            facts = replace(facts, images=tuple(kept))
            notes.append("mapped images compared with the 32-bit loader lists: the 32-bit "
                         "(i386) ones")
        main = next((m for m in peb.modules if m.base == peb.image_base), None)
        checks = live_windows.windows_checks(facts, peb.image_base, peb.image_path,
                                             peb.being_debugged, main, peb.modules)
        checks += pe_header_checks(memory, peb.modules, peb.image_base)
        notes += ["source failed: " + error for error in facts.errors]
        return replace(peb, checks=tuple(checks), notes=peb.notes + tuple(notes))


def inspect_live_teb(pid: int, tid: Optional[int] = None, layout: Any = None) -> Teb:
    """The TEB of a thread of live process *pid* (default its main thread, else
    its first), decoded: on Linux for a Windows program under Wine (the TEB
    at the thread's GS base, FS for a 32-bit Wine process, read with ptrace;
    *tid* is a Linux thread ID), on Windows for any thread this user may query
    (Toolhelp32 and NtQueryInformationThread's TebBaseAddress; *tid* is a
    Windows thread ID; a WoW64 process: its 64-bit TEB). Without a layout,
    the build is read from the PEB the TEB points to; the notes say how the
    TEB was found and which layout was used.

    Raises:
        UnsupportedError: neither Windows nor Linux on x86-64.
        NoTebError: (Linux) the process is not a Windows program under Wine.
        LiveOSError: no such process or thread, or access denied.
    """
    from ..errors import LiveOSError
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise DecodeError("%r is not a process ID" % (pid,))

    def pick(tebs: dict, main: int, where: str) -> Tuple[int, int]:
        wanted = tid if tid is not None else (main if main in tebs else min(tebs))
        if wanted not in tebs:
            raise LiveOSError(3, "process %d has no thread %d with a TEB (%s: %s)" % (
                pid, wanted, where, ", ".join("%d" % t for t in sorted(tebs)) or "none"))
        return wanted, tebs[wanted]

    if sys.platform == "win32":
        from ..windows import live_windows
        arch = "x64" if struct.calcsize("P") == 8 else "x86"
        with live_windows.open_process(pid) as memory:
            chosen, layout_note = _resolve_layout(layout, memory, memory.peb_address, arch)
            listed = live_windows.thread_tebs(pid)    # in the snapshot's order: the main first
            tebs = dict(listed)
            thread, teb_address = pick(tebs, listed[0][0] if listed else -1,
                                       "threads with a TEB")
            teb = read_teb(memory, teb_address, chosen)
            how = ("TEB %#x of thread %d from NtQueryInformationThread (ThreadBasicInformation)"
                   % (teb_address, thread))
            return replace(teb, notes=teb.notes + (how, layout_note))
    if sys.platform.startswith("linux"):
        from . import wine
        from .proc_memory import ProcessMemory, read_maps
        from .wine_launcher import follow_launcher
        given_pid = pid
        pid, launcher_note = follow_launcher(pid)
        bits = _elf_bits(pid)
        with _program_gone_is_one_line(given_pid, pid), ProcessMemory(pid) as memory:
            maps = read_maps(pid)
            given = _given_x64(layout)
            find_with = bootstrap_layout("x86") if bits == 32 else given or bootstrap_layout("x64")
            location = wine.locate_teb(pid, memory, find_with, maps)
            tebs = {t: address for t, (address, _peb) in location.tebs.items()}
            thread, teb_address = pick(tebs, pid, "its threads with a TEB")
            peb_address = location.tebs[thread][1]
            if bits == 32:
                chosen, layout_note = _resolve_layout(given, memory, peb_address, "x64", "x86")
            else:
                chosen, layout_note = _resolve_layout(given, memory, peb_address, "x64")
            teb = read_teb(memory, teb_address, chosen, wow64=bits == 32)
            register = "FS" if bits == 32 else "GS"
            how = ("TEB %#x of thread %d (its %s base, read with ptrace)" % (
                teb_address, thread, register) if location.tid is not None else
                "TEB %#x found by scanning memory (%s)" % (teb_address, location.note))
            notes = (() if launcher_note is None else (launcher_note,)) + (how, layout_note)
            return replace(teb, notes=teb.notes + notes)
    raise UnsupportedError("a live TEB is read on Windows, or on Linux under Wine (this is %s)"
                           % sys.platform)
