"""Windows programs running under Wine on Linux: find the TEB and PEB, cross-check them.

Wine runs a Windows x64 program as an ordinary Linux process whose memory
holds real Windows-layout structures: each Windows thread has a TEB, whose
address is the thread's GS base (as on Windows x64, where ``gs:[0x30]`` is
the TEB's own address), and the TEB points to the process's PEB.

* :func:`locate_teb` reads the GS base of every thread with ptrace
  (:mod:`ksinspect.live.thread_registers`: seize, interrupt, getregs,
  detach) and keeps those where TEB.NtTib.Self points to itself; when ptrace
  is refused (e.g. a debugger already traces the process) it scans the
  process's writable anonymous memory for a page whose NtTib.Self holds the
  page's own address.
* The ``*_check(s)`` functions compare the PEB with what Linux knows without
  reading the PEB: ``/proc/PID/maps`` (the file mapped at each module base,
  and at ImageBaseAddress), ``/proc/PID/cmdline`` (the arguments Wine was
  started with).

Memory is read through ``/proc/PID/mem`` (:mod:`ksinspect.live.proc_memory`).
Offsets come from the layout (``_TEB.NtTib``, ``_NT_TIB.Self``,
``_TEB.ProcessEnvironmentBlock``).
"""
import errno
import ntpath
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import InvalidAddressError, LiveOSError, NoTebError
from ..windows.checks import Check, loader_list_checks
from ..windows.layout import Layout
from .proc_memory import Mapping, proc_path, read_proc_file
from .thread_registers import read_segment_bases

__all__ = ["TebLocation", "locate_teb", "teb_offsets", "split_windows_command_line",
           "read_proc_cmdline", "command_line_check", "wine_prefix", "dos_to_unix",
           "image_path_check", "module_map_checks", "mapped_image_checks", "process_name"]

PAGE = 0x1000
# The fallback scan reads at most this much writable anonymous memory, one
# chunk at a time: TEBs sit in small regions, and a huge process must not
# make the tool read gigabytes.
SCAN_LIMIT = 512 << 20
SCAN_CHUNK = 1 << 20
# File names that the Windows loader maps as images.
IMAGE_SUFFIXES = (".dll", ".exe", ".drv", ".sys", ".ocx", ".cpl", ".acm", ".ax", ".ime")


@dataclass(frozen=True)
class TebLocation:
    """Where a thread's TEB was found, and how.

    Attributes:
        teb: the TEB address (of the main thread when it has one).
        peb: TEB.ProcessEnvironmentBlock.
        tid: the Linux thread it belongs to (None when found by scanning).
        method: ``ptrace gs_base`` or ``scan``.
        tebs: every TEB found, ``{tid or index: (teb, peb)}``.
        note: why the fallback was used, when it was.
    """

    teb: int
    peb: int
    tid: Optional[int]
    method: str
    tebs: Dict[int, Tuple[int, int]] = field(default_factory=dict)
    note: Optional[str] = None


def teb_offsets(layout: Layout) -> Tuple[int, int]:
    """(offset of NtTib.Self, offset of ProcessEnvironmentBlock) in the TEB."""
    tib = layout.offset("_TEB", "NtTib")
    return tib + layout.offset("_NT_TIB", "Self"), layout.offset("_TEB", "ProcessEnvironmentBlock")


def _pointer(memory: Any, address: int, size: int) -> Optional[int]:
    try:
        return int.from_bytes(memory.read(address, size), "little")
    except InvalidAddressError:
        return None


def _teb_at(memory: Any, address: int, layout: Layout,
            maps: Optional[Sequence[Mapping]] = None) -> Optional[int]:
    """The PEB address if a TEB is at *address*, else None.

    A word that points back at its own page is common (allocator headers,
    Python's heap pages), so every fact a real TEB/PEB pair shows is
    required: TEB.NtTib.Self holds the TEB's address; the TEB is
    page-aligned; TEB.ProcessEnvironmentBlock is a mapped, page-aligned
    address; the PEB's Ldr and ProcessParameters are mapped; and its
    ImageBaseAddress starts a mapping (when the map is known) holding a PE
    image (``MZ``, then ``PE\\0\\0`` at e_lfanew; PE/COFF spec §3).
    """
    self_offset, peb_offset = teb_offsets(layout)
    size = layout.pointer_size
    if address == 0 or address % PAGE or _pointer(memory, address + self_offset, size) != address:
        return None
    peb = _pointer(memory, address + peb_offset, size)
    if not peb or peb % PAGE or _pointer(memory, peb, size) is None:
        return None
    for member in ("Ldr", "ProcessParameters"):
        target = _pointer(memory, peb + layout.offset("_PEB", member), size)
        if not target or _pointer(memory, target, size) is None:
            return None
    base = _pointer(memory, peb + layout.offset("_PEB", "ImageBaseAddress"), size)
    if not base or base % PAGE:
        return None
    if maps is not None and not any(m.start == base for m in maps):
        return None
    try:
        if memory.read(base, 2) != b"MZ":
            return None
        e_lfanew = int.from_bytes(memory.read(base + 0x3C, 4), "little")
        if not 0x40 <= e_lfanew <= 0x1000 or memory.read(base + e_lfanew, 4) != b"PE\0\0":
            return None
    except InvalidAddressError:
        return None
    return peb


def process_name(pid: int) -> str:
    try:
        with open(proc_path(pid, "comm"), "rb") as handle:
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def locate_teb(pid: int, memory: Any, layout: Layout,
               maps: Optional[Sequence[Mapping]] = None) -> TebLocation:
    """Find a TEB of Wine process *pid* (the main thread's when it has one).

    With an x86 *layout* (a 32-bit Wine process) the TEB is at the FS base.

    Raises:
        NoTebError: no thread has a TEB: not a Windows program under Wine.
        LiveOSError: the process does not exist, or it cannot be read.
    """
    try:
        register = "fs_base" if layout.pointer_size == 4 else "gs_base"
        bases = read_segment_bases(pid, register)
    except LiveOSError as exc:
        if exc.errno != errno.EPERM:
            raise
        note = "ptrace refused (%s); found by scanning writable anonymous memory" % exc.strerror
        return _scan(pid, memory, layout, maps, note)
    tebs = {}
    for tid, base in bases.items():
        peb = _teb_at(memory, base, layout, maps)
        if peb is not None:
            tebs[tid] = (base, peb)
    if not tebs:
        raise NoTebError(
            "process %d (%s) is not a Windows program running under Wine: none of its %d "
            "thread(s) has a TEB at its %s base (TEB.NtTib.Self holding the TEB's own "
            "address, and a PEB whose Ldr, ProcessParameters and PE image are mapped)"
            % (pid, process_name(pid), len(bases), register[:2].upper()), pid)
    tid = pid if pid in tebs else min(tebs)
    teb, peb = tebs[tid]
    return TebLocation(teb, peb, tid, "ptrace " + register, tebs)


def _scan(pid: int, memory: Any, layout: Layout, maps: Optional[Sequence[Mapping]],
          note: str) -> TebLocation:
    from .proc_memory import read_maps

    self_offset, _ = teb_offsets(layout)
    size = layout.pointer_size
    regions_all = list(maps if maps is not None else read_maps(pid))
    regions = [m for m in regions_all
               if m.readable and m.writable and m.private and m.anonymous]
    found: Dict[int, int] = {}
    scanned = 0
    for region in regions:
        start = region.start
        while start < region.end and scanned < SCAN_LIMIT:
            length = min(SCAN_CHUNK, region.end - start)
            try:
                chunk = memory.read(start, length)
            except InvalidAddressError:
                break
            scanned += length
            for page in range(0, length - self_offset - size + 1, PAGE):
                value = int.from_bytes(chunk[page + self_offset:page + self_offset + size],
                                       "little")
                if value == start + page:
                    peb = _teb_at(memory, value, layout, regions_all)
                    if peb is not None:
                        found[value] = peb
            start += length
    if not found:
        limit = "" if scanned < SCAN_LIMIT else " (stopped at the %d MiB limit)" % (
            SCAN_LIMIT >> 20)
        raise NoTebError(
            "no Windows TEB in process %d (%s): %s, and no page in %d MiB of its writable "
            "anonymous memory%s holds a TEB (NtTib.Self pointing to itself and a PEB with a mapped "
            "Ldr, ProcessParameters and PE image); it is not a Windows program running under Wine" % (pid, process_name(pid), note.split(";")[0],
                                            scanned >> 20, limit), pid)
    # All threads share one PEB: take the PEB most TEBs point to, and its lowest TEB.
    counts: Dict[int, int] = {}
    for peb in found.values():
        counts[peb] = counts.get(peb, 0) + 1
    peb = max(counts, key=lambda p: (counts[p], -p))
    teb = min(t for t, p in found.items() if p == peb)
    tebs = {index: (t, p) for index, (t, p) in enumerate(sorted(found.items()))}
    return TebLocation(teb, peb, None, "scan", tebs, note)


# -- command line ---------------------------------------------------------

def split_windows_command_line(text: str) -> List[str]:
    """Split a Windows command line into arguments, as CommandLineToArgvW and
    the Microsoft C runtime do ("Parsing C command-line arguments").

    The program name ends at the first whitespace, or at the closing quote if
    it starts with one (no escapes in it). Then: whitespace separates
    arguments outside quotes; 2n backslashes before a quote give n
    backslashes and the quote opens or closes quoting; 2n+1 give n and a
    literal quote; other backslashes are literal; ``""`` inside quotes is a
    literal quote.
    """
    args: List[str] = []
    i, n = 0, len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i >= n:
        return args
    if text[i] == '"':
        end = text.find('"', i + 1)
        end = n if end < 0 else end
        args.append(text[i + 1:end])
        i = end + 1
    else:
        end = i
        while end < n and text[end] not in " \t":
            end += 1
        args.append(text[i:end])
        i = end
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return args
        current: List[str] = []
        quoted = False
        while i < n and (quoted or text[i] not in " \t"):
            char = text[i]
            if char == "\\":
                run = i
                while run < n and text[run] == "\\":
                    run += 1
                count = run - i
                if run < n and text[run] == '"':
                    current.append("\\" * (count // 2))
                    if count % 2:
                        current.append('"')
                        i = run + 1
                    else:
                        i = run     # the quote opens or closes quoting on the next turn
                else:
                    current.append("\\" * count)
                    i = run
            elif char == '"':
                quoted, i = _quote(text, i, quoted, current)
            else:
                current.append(char)
                i += 1
        args.append("".join(current))


def _quote(text: str, i: int, quoted: bool, current: List[str]) -> Tuple[bool, int]:
    if quoted and i + 1 < len(text) and text[i + 1] == '"':
        current.append('"')      # "" inside quotes: a literal quote
        return True, i + 2
    return not quoted, i + 1


def read_proc_cmdline(pid: int) -> List[str]:
    """``/proc/PID/cmdline`` as a list of arguments.

    Raises:
        LiveOSError: the process does not exist or the file cannot be read.
    """
    raw = read_proc_file(pid, "cmdline")
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0")]


def _trim(args: List[str]) -> List[str]:
    args = list(args)
    while args and args[-1] == "":
        args.pop()
    return args


def _program_name(path: str) -> str:
    return ntpath.basename(path).lower()


COMMAND_LINE_RULE = (
    "the PEB command line is split with the Windows rules (CommandLineToArgvW); Wine "
    "rewrites its Linux argv to the program name and the arguments it was started with, "
    "padded with empty strings, so trailing empty arguments are ignored on both sides, "
    "the program names are compared by file name ignoring case, and every other argument "
    "must be equal")


def command_line_check(pid: int, command_line: Optional[str],
                       proc_args: Optional[List[str]] = None) -> Check:
    """PEB ProcessParameters.CommandLine against ``/proc/PID/cmdline``."""
    if proc_args is None:
        proc_args = read_proc_cmdline(pid)
    theirs = _trim(proc_args)
    ours = _trim(split_windows_command_line(command_line)) if command_line is not None else None
    agree = (ours is not None and len(ours) == len(theirs) and len(ours) > 0
             and _program_name(ours[0]) == _program_name(theirs[0].replace("/", "\\"))
             and ours[1:] == theirs[1:])
    return Check("command line vs /proc/%d/cmdline" % pid, command_line,
                 " ".join(_show_arg(a) for a in theirs), agree, COMMAND_LINE_RULE)


def _show_arg(arg: str) -> str:
    return arg if arg and not any(c in arg for c in " \t\"'\\") else repr(arg)


# -- image path -------------------------------------------------------------

def wine_prefix(pid: int) -> Optional[str]:
    """The WINEPREFIX process *pid* runs in: from its environment, else ~/.wine
    of its HOME; None when the environment cannot be read."""
    try:
        with open(proc_path(pid, "environ"), "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8",
                                                                       "surrogateescape")
    if env.get("WINEPREFIX"):
        return env["WINEPREFIX"]
    if env.get("HOME"):
        return os.path.join(env["HOME"], ".wine")
    return None


def _find_case_insensitive(directory: str, parts: Iterable[str]) -> Optional[str]:
    path = directory
    for part in parts:
        if part in ("", "."):
            continue
        candidate = os.path.join(path, part)
        if os.path.lexists(candidate):
            path = candidate
            continue
        try:
            names = os.listdir(path)
        except OSError:
            return None
        lowered = part.lower()
        match = next((name for name in names if name.lower() == lowered), None)
        if match is None:
            return None
        path = os.path.join(path, match)
    return path


def dos_to_unix(path: str, prefix: Optional[str]) -> Optional[str]:
    """The Unix path Wine gives to a DOS path (``X:\\...`` through
    ``$WINEPREFIX/dosdevices/x:``), or None when it cannot be resolved."""
    for lead in ("\\??\\", "\\\\?\\"):
        if path.startswith(lead):
            path = path[len(lead):]
    if prefix is None or len(path) < 3 or path[1] != ":" or path[2] != "\\":
        return None
    drive = os.path.join(prefix, "dosdevices", path[0].lower() + ":")
    if not os.path.exists(drive):
        return None
    return _find_case_insensitive(drive, path[3:].split("\\"))


def _mapping_at(maps: Sequence[Mapping], address: int) -> Optional[Mapping]:
    return next((m for m in maps if m.start == address), None)


def _device(stat_result: os.stat_result) -> str:
    return "%02x:%02x" % (os.major(stat_result.st_dev), os.minor(stat_result.st_dev))


def image_path_check(pid: int, maps: Sequence[Mapping], image_base: int,
                     image_path: Optional[str]) -> Check:
    """PEB ProcessParameters.ImagePathName against the file mapped at ImageBaseAddress."""
    mapping = _mapping_at(maps, image_base)
    name = "image path vs the file mapped at ImageBaseAddress %#x (/proc/%d/maps)" % (
        image_base, pid)
    if mapping is None or not mapping.path.startswith("/"):
        return Check(name, image_path, "no file mapping starts at %#x" % image_base, False,
                     "a file must be mapped at ImageBaseAddress")
    unix = dos_to_unix(image_path, wine_prefix(pid)) if image_path else None
    if unix is not None:
        try:
            info = os.stat(unix)
            same = info.st_ino == mapping.inode and _device(info) == mapping.device
        except OSError:
            same = False
        return Check(name, image_path, mapping.path, same,
                     "ImagePathName, translated to a Unix path through the Wine prefix's "
                     "dosdevices (%s), must be the same file (device and inode) as the one "
                     "mapped at ImageBaseAddress" % unix)
    agree = image_path is not None and \
        _program_name(image_path) == os.path.basename(mapping.path).lower()
    return Check(name, image_path, mapping.path, agree,
                 "the Wine prefix's drive for ImagePathName cannot be resolved here, so the "
                 "file names are compared, ignoring case")


# -- modules ------------------------------------------------------------------

def module_map_checks(pid: int, maps: Sequence[Mapping], modules: Iterable[Any]) -> List[Check]:
    """Each loader entry's DllBase must start a mapping of a file with its name."""
    checks = []
    for module in modules:
        mapping = _mapping_at(maps, module.base)
        if mapping is None or not mapping.path:
            theirs = "no file mapping starts at %#x" % module.base
        elif mapping.offset != 0:
            theirs = "%s from file offset %#x" % (mapping.path, mapping.offset)
        else:
            theirs = mapping.path
        name = module.name or _program_name(module.path or "")
        agree = theirs == getattr(mapping, "path", None) and \
            os.path.basename(mapping.path).lower() == (name or "").lower()
        checks.append(Check(
            "module %s at %#x vs /proc/%d/maps" % (name or "?", module.base, pid),
            module.path or name, theirs, agree,
            "DllBase must be the start of a mapping, from file offset 0 (the headers), of a "
            "file with the module's name (ignoring case; Wine maps its builtin DLLs from "
            "its own library directory)"))
    return checks


def mapped_image_checks(pid: int, memory: Any, maps: Sequence[Mapping], modules: Sequence[Any],
                        image_base: int) -> List[Check]:
    """PE images mapped in the process (``/proc/PID/maps``) against the loader lists.

    An image is a private mapping, at file offset 0, of a file named like a
    Windows image (``.dll``, ``.exe``...), whose first bytes in memory are
    ``MZ``. Each must be a module on all three loader lists (the main image
    is not on the initialisation-order list). One summary check, and one
    failing check per image missing from a list: a module unlinked to hide
    it from tools that walk one list (EnumProcessModules, Toolhelp32), or
    mapped without the loader.

    Args:
        modules: the PEB's modules, with ``base``, ``name`` and ``lists``
            (``load``, ``memory``, ``init``: the lists that hold it).
    """
    images = []
    for mapping in maps:
        if mapping.offset != 0 or not mapping.private or not mapping.readable:
            continue
        if not mapping.path.lower().endswith(IMAGE_SUFFIXES):
            continue
        try:
            if memory.read(mapping.start, 2) != b"MZ":
                continue
        except InvalidAddressError:
            continue
        images.append((mapping.start, os.path.basename(mapping.path), mapping.path))
    return loader_list_checks(images, modules, image_base, "/proc/%d/maps" % pid,
                              "every private mapping at offset 0 of a Windows image file that "
                              "starts with MZ")
