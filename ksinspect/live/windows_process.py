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
import struct
import sys
from dataclasses import replace
from typing import Any, List, Tuple

from ..errors import DecodeError, UnsupportedError
from ..windows.checks import Check, pe_header_checks
from ..windows.layout import Layout, available_layouts, load_layout
from ..windows.peb import Peb, read_peb, read_peb32

__all__ = ["inspect_live_peb", "choose_layout", "read_os_version", "shared_offset"]

VERSION_FIELDS = ("OSMajorVersion", "OSMinorVersion", "OSBuildNumber")


def _layouts(arch: str) -> List[Layout]:
    return [load_layout(name) for name in available_layouts() if name.endswith("-" + arch)]


def shared_offset(arch: str, struct_name: str, field: str) -> int:
    """The offset of ``struct_name.field`` that every shipped *arch* layout agrees on.

    Raises:
        DecodeError: the layouts disagree (then it cannot be read before the
            build is known).
    """
    offsets = {layout.offset(struct_name, field) for layout in _layouts(arch)
               if layout.has_struct(struct_name) and field in layout.struct(struct_name).fields}
    if len(offsets) != 1:
        raise DecodeError("%s.%s is not at one offset in every %s layout (%s): give --layout" % (
            struct_name, field, arch, ", ".join("%#x" % o for o in sorted(offsets)) or "absent"))
    return offsets.pop()


def bootstrap_layout(arch: str) -> Layout:
    """A layout to find the TEB and PEB with before the build is known: any
    *arch* layout will do, because the members used (TEB NtTib.Self and
    ProcessEnvironmentBlock, the PEB's version fields) are checked to sit at
    the same offsets in all of them."""
    for struct_name, field in (("_NT_TIB", "Self"), ("_TEB", "NtTib"),
                               ("_TEB", "ProcessEnvironmentBlock")):
        shared_offset(arch, struct_name, field)
    return _layouts(arch)[-1]


def read_os_version(memory: Any, peb_address: int, arch: str) -> Tuple[int, int, int]:
    """(OSMajorVersion, OSMinorVersion, OSBuildNumber) from the PEB at *peb_address*.

    Raises:
        InvalidAddressError: the PEB cannot be read.
    """
    values = []
    for field, width in zip(VERSION_FIELDS, (4, 4, 2)):
        offset = shared_offset(arch, "_PEB", field)
        values.append(int.from_bytes(memory.read(peb_address + offset, width), "little"))
    return values[0], values[1], values[2]


def _build_of(name: str) -> Tuple[int, ...]:
    """(build, revision) from a layout file name ``<release>-<build>.<rev>-<arch>``."""
    return tuple(int(part) for part in name.split("-")[-2].split(".") if part.isdigit())


def _major_minor(layout: Layout) -> Tuple[int, ...]:
    return tuple(int(p) for p in (layout.nt_version or "0.0").split()[0].split(".")[:2]
                 if p.isdigit())


def choose_layout(major: int, minor: int, build: int, arch: str) -> Tuple[Layout, str]:
    """The shipped layout for Windows *major.minor.build* on *arch*, and a note saying why.

    The earliest revision of that build is taken when several exist; for a
    build that has no layout, the nearest earlier build of the same
    major.minor version (the user-mode structures read here rarely move
    within a version), else the nearest build of all.
    """
    wanted = "%d.%d.%d" % (major, minor, build)
    names = [n for n in available_layouts() if n.endswith("-" + arch)]
    if not names:
        raise DecodeError("no %s layouts are shipped" % arch)
    exact = [n for n in names if _build_of(n)[:1] == (build,)]
    if exact:
        chosen = exact[0]
        note = "layout %s chosen from the PEB's OS version %s" % (chosen, wanted)
        if len(exact) > 1:
            note += " (the earliest revision; also %s)" % ", ".join(exact[1:])
        return load_layout(chosen), note
    same_version = [n for n in names if _major_minor(load_layout(n)) == (major, minor)]
    pool = same_version or names
    earlier = [n for n in pool if _build_of(n)[:1] <= (build,)]
    chosen = max(earlier, key=_build_of) if earlier else \
        min(pool, key=lambda n: abs(_build_of(n)[0] - build))
    return load_layout(chosen), (
        "no layout for the PEB's OS version %s; using the nearest, %s%s: pass a layout "
        "to override" % (wanted, chosen,
                         "" if same_version else " (another Windows version)"))


def _resolve_layout(layout: Any, memory: Any, peb_address: int,
                    arch: str) -> Tuple[Layout, str]:
    if layout is not None:
        chosen = load_layout(layout)
        return chosen, "layout %s as given" % chosen.name
    major, minor, build = read_os_version(memory, peb_address, arch)
    return choose_layout(major, minor, build, arch)


def inspect_live_peb(pid: int, layout: Any = None) -> Peb:
    """The PEB of live process *pid*, decoded and cross-checked.

    On Windows, any process this user may read; on Linux, a Windows program
    running under Wine (x64).

    Args:
        pid: the process ID (on Linux, the Linux PID of the Wine process).
        layout: a :class:`Layout` or layout name; by default chosen from the
            PEB's own OS version fields (the note on the result says which).

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


def _inspect_wine(pid: int, layout: Any) -> Peb:
    from . import wine
    from .proc_memory import ProcessMemory, read_maps

    with ProcessMemory(pid) as memory:
        maps = read_maps(pid)
        given = load_layout(layout) if layout is not None else None
        if given is not None and given.arch != "x64":
            raise DecodeError("layout %s is for %s; Wine here runs x64 programs, whose PEB "
                              "needs an x64 layout" % (given.name, given.arch))
        location = wine.locate_teb(pid, memory, given or bootstrap_layout("x64"), maps)
        chosen, layout_note = _resolve_layout(given, memory, location.peb, "x64")
        peb = read_peb(memory, location.peb, chosen)
        how = ("TEB %#x of thread %d (its GS base, read with ptrace), TEB.ProcessEnvironmentBlock "
               "%#x" % (location.teb, location.tid, location.peb)) if location.tid is not None \
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
        return replace(peb, checks=tuple(checks),
                       notes=peb.notes + ("PEB found through " + how, layout_note))


def _inspect_windows(pid: int, layout: Any) -> Peb:
    from ..windows import live_windows

    arch = "x64" if struct.calcsize("P") == 8 else "x86"
    with live_windows.open_process(pid) as memory:
        chosen, layout_note = _resolve_layout(layout, memory, memory.peb_address, arch)
        notes = ["PEB %#x from NtQueryInformationProcess(ProcessBasicInformation)"
                 % memory.peb_address, layout_note]
        if memory.wow64_peb_address:
            # A 32-bit program on x64: its own PEB is the 32-bit one.
            peb = read_peb32(memory, memory.wow64_peb_address, chosen)
            notes.append("WoW64 process: the 32-bit PEB %#x from ProcessWow64Information is "
                         "shown" % memory.wow64_peb_address)
        else:
            peb = read_peb(memory, memory.peb_address, chosen)
        facts = live_windows.gather_facts(memory)
        main = next((m for m in peb.modules if m.base == peb.image_base), None)
        checks = live_windows.windows_checks(facts, peb.image_base, peb.image_path,
                                             peb.being_debugged, main)
        checks += pe_header_checks(memory, peb.modules, peb.image_base)
        notes += ["source failed: " + error for error in facts.errors]
        return replace(peb, checks=tuple(checks), notes=peb.notes + tuple(notes))
