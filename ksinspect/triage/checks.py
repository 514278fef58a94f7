"""The checks triage runs on one image, each from what the library already does.

Every function takes the opened image (and what earlier checks found) and
returns a JSON-ready section plus its :class:`~ksinspect.triage.record.TriageFinding`
list. Nothing here decodes: the descriptor tables come from
:mod:`ksinspect.tables` (their finding codes kept), the mappings from
:meth:`ksinspect.paging.AddressSpace.mapping_table`, the processes from
:mod:`ksinspect.windows.pslist` and :mod:`ksinspect.windows.psscan`, the
kernel image from :mod:`ksinspect.windows.kernel`.
"""
import functools
import hashlib
import os
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ImageFormatError, KsinspectError, UnknownLayoutError, WalkLimitError
from ..paging import AddressSpace
from ..symbols import SymbolTable
from ..table_source import read_table
from ..tables import decode_idt, decode_table
from ..x86 import PagingMode
from .record import MAX_LISTED_RANGES, Deadline, TriageFinding, TriageOptions

Section = Dict[str, Any]
Findings = List[TriageFinding]

HASH_BLOCK = 1 << 20
# The kernel's half of a 32-bit address space: Linux's default PAGE_OFFSET
# (3G/1G split), and Windows' 2G/2G split (without /3GB).
KERNEL_START_32 = {"linux": 0xC0000000, "windows": 0x80000000, None: 0xC0000000}
# Pieces the page-table walk is cut into, per half of the address space: the
# time limit is checked between pieces and each piece's ranges are dropped
# once counted, so memory stays bounded by one piece.
WALK_PIECES = 64
# The Windows kernel search reads two bytes of every page mapped in the
# system-image range (windows.kernel.SEARCH_RANGES) from Python; tables that
# alias one frame everywhere would make that millions of reads. A real
# system-image space maps tens of thousands of pages.
MAX_SEARCH_PAGES = 1 << 18
_COMPRESSED = (".xz", ".gz")
_IMAGE_SUFFIXES = (".elf", ".raw", ".lime", ".core", ".vmcore", ".mem", ".img", ".bin", ".dmp")
_SYMBOL_MARKS = ("kallsyms", "system.map", ".map", ".syms")


# -- the input ------------------------------------------------------------------------------

def sha256_of(path: str, deadline: Deadline) -> str:
    """The sha256 of the file as stored (before any decompression)."""
    digest = hashlib.sha256()
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ImageFormatError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None
    with fh:
        while True:
            try:
                block = fh.read(HASH_BLOCK)
            except OSError as exc:
                raise ImageFormatError("%s: cannot read: %s" % (
                    path, exc.strerror or exc)) from None
            if not block:
                return digest.hexdigest()
            digest.update(block)
            deadline.check()


def input_section(memory: Any, path: str) -> Tuple[Section, Findings]:
    """What the file is: size, format, compression, physical bytes and ranges."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise ImageFormatError("%s: cannot stat: %s" % (path, exc.strerror or exc)) from None
    section = {"size": size, "format": memory.format,
               "compression": memory.compression, "sha256": None,
               "memory": memory.size, "ranges": len(memory.runs),
               "description": memory.description, "warnings": list(memory.warnings)}
    findings = [TriageFinding("input", "image-warning", w) for w in memory.warnings]
    return section, findings


# -- symbols and the OS family ----------------------------------------------------------------

def _stems(path: str) -> List[str]:
    """Names an image's symbols may be filed under: its file name without the
    compression and image suffixes, then its folder's name."""
    name = os.path.basename(path)
    for suffixes in (_COMPRESSED, _IMAGE_SUFFIXES):
        for suffix in suffixes:
            if name.lower().endswith(suffix):
                name = name[:-len(suffix)]
                break
    folder = os.path.basename(os.path.dirname(path))
    return [n for n in dict.fromkeys((name, folder)) if n]


def _is_symbol_file(name: str) -> bool:
    lower = name.lower()
    return any(mark in lower for mark in _SYMBOL_MARKS)


def find_symbols(path: str, symbols_dir: Optional[str]) -> Optional[str]:
    """The System.map / kallsyms file for an image in ``symbols_dir``, or None.

    For each stem (the image's file name without suffixes, then the name of
    its folder), in that order: a file ``STEM.<...kallsyms|System.map|.map|.syms...>``
    (``.xz``/``.gz`` allowed), then a folder ``STEM/`` holding such a file.
    Several candidates: the first by name.
    """
    if not symbols_dir:
        return None
    try:
        entries = sorted(os.listdir(symbols_dir))
    except OSError:
        return None
    for stem in _stems(path):
        for name in entries:
            full = os.path.join(symbols_dir, name)
            if name.startswith(stem + ".") and _is_symbol_file(name[len(stem):]) and \
                    os.path.isfile(full):
                return full
        folder = os.path.join(symbols_dir, stem)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                full = os.path.join(folder, name)
                if _is_symbol_file(name) and os.path.isfile(full):
                    return full
    return None


@functools.lru_cache(maxsize=16)
def _symbols_cached(path: str, size: int, mtime: float) -> SymbolTable:
    return SymbolTable.from_system_map(path)


def load_symbols(path: str) -> SymbolTable:
    """A System.map / kallsyms, parsed once per process while the file is unchanged
    (a fleet shares a few kernel builds)."""
    info = os.stat(path)
    return _symbols_cached(path, info.st_size, info.st_mtime)


def linux_evidence(memory: Any, symbols: Optional[SymbolTable]) -> Optional[Section]:
    """The OS section when the image or its symbols say Linux, else None."""
    if memory.vmcoreinfo:
        release = None
        for line in memory.vmcoreinfo.splitlines():
            if line.startswith("OSRELEASE="):
                release = line.split("=", 1)[1]
        return {"family": "linux", "release": release,
                "evidence": "the image's VMCOREINFO note" + (
                    " (OSRELEASE=%s)" % release if release else "")}
    if symbols is not None:
        return {"family": "linux", "release": None,
                "evidence": "System.map / kallsyms %s" % symbols.source}
    return None


def dump_evidence(memory: Any) -> Optional[Section]:
    """The OS section of a Windows minidump, from its SystemInfo stream."""
    if memory.format != "minidump":
        return None
    info = getattr(getattr(memory, "container", None), "system_info", None)
    if info is None:
        return None
    return {"family": "windows", "release": info.version, "build": info.build_number,
            "evidence": "the minidump's SystemInfo stream: %s" % info}


# -- the CPU state and the address space ------------------------------------------------------

def cpu_space(memory: Any) -> Tuple[Optional[AddressSpace], Optional[Section]]:
    """The address space the image's CPU state gives, with how it was found."""
    cpu = memory.cpu
    if cpu is None:
        return None, None
    mode, reason = cpu.paging_decision()
    section = {"paging_mode": mode, "cr3": cpu.cr3, "cpus": len(memory.cpus),
               "how": "the image's CPU state (%s): %s" % (memory.description, reason)}
    if mode is None:
        section["error"] = "paging is disabled in the CPU state (CR0.PG=0)"
        return None, section
    try:
        return AddressSpace(memory), section
    except KsinspectError as exc:
        section["error"] = str(exc)
        return None, section


# -- GDT and IDT ----------------------------------------------------------------------------------

def gdt_check(memory: Any) -> Tuple[Section, Findings]:
    """The GDT at GDTR, with :func:`ksinspect.tables.decode_table`'s findings."""
    found = read_table(memory, "GDT")
    gdt = decode_table(found.data, "GDT", found.mode, found.base, found.limit, memory.cpu,
                       found.notes)
    findings = [TriageFinding("gdt", f.code, f.message, {"index": e.index,
                                                         "selector": e.selector})
                for e in gdt for f in e.findings]
    return {"base": gdt.base, "limit": gdt.limit, "mode": gdt.mode.value,
            "entries": len(gdt), "notes": list(gdt.notes)}, findings


def idt_check(memory: Any, symbols: Optional[SymbolTable],
              text_range: Optional[Tuple[int, int]], text_source: Optional[str]
              ) -> Tuple[Section, Findings]:
    """The IDT at IDTR, handlers checked against the kernel text when known."""
    found = read_table(memory, "IDT")
    idt = decode_idt(found.data, found.mode, found.base, found.limit, symbols, text_range,
                     found.notes)
    findings = []
    for e in idt:
        for f in e.findings:
            where = {"vector": e.vector, "handler": getattr(e.gate, "offset", None)}
            if e.symbol is not None:
                where["symbol"] = e.symbol
            findings.append(TriageFinding("idt", f.code, f.message, where))
    present = sum(1 for e in idt if e.gate.present)
    return {"base": idt.base, "limit": idt.limit, "mode": idt.mode.value, "gates": len(idt),
            "present": present, "text_range": list(text_range) if text_range else None,
            "text_range_from": text_source if text_range else None,
            "notes": list(idt.notes)}, findings


# -- page tables ------------------------------------------------------------------------------------

def _size_name(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return "%d %s" % (size >> shift, unit)
    return "%d B" % size


def _pieces(space: AddressSpace) -> List[Tuple[int, int]]:
    """[start, end) pieces covering the canonical address space, in walk order."""
    if space.va_bits == 32:
        halves = [(0, 1 << 32)]
    else:
        half = 1 << (space.va_bits - 1)
        halves = [(0, half), ((1 << 64) - half, 1 << 64)]
    pieces = []
    for start, end in halves:
        step = (end - start) // WALK_PIECES
        pieces += [(start + i * step, start + (i + 1) * step) for i in range(WALK_PIECES)]
    return pieces


class _Ranges:
    """Pages of one kind, and the first few ranges that hold them."""

    def __init__(self) -> None:
        self.pages = 0
        self.ranges = 0
        self.listed: List[List[int]] = []

    def add(self, mapping: Any) -> None:
        self.pages += mapping.size // mapping.page_size
        self.ranges += 1
        if len(self.listed) < MAX_LISTED_RANGES:
            self.listed.append([mapping.start, mapping.end])

    def where(self) -> dict:
        return {"pages": self.pages, "ranges": self.ranges, "listed": self.listed}


def page_table_check(space: AddressSpace, family: Optional[str], options: TriageOptions,
                     deadline: Deadline) -> Tuple[Section, Findings]:
    """Counts per page size, W+X supervisor pages, user pages in the kernel half,
    entries skipped for reserved bits: the whole space, walked in pieces.

    The kernel half is the upper canonical half under IA-32e paging, and above
    :data:`KERNEL_START_32` under 32-bit and PAE paging. Writable means R/W=1 at
    every level (what CR0.WP=1 enforces on the kernel too).
    """
    from ..windows.kernel import SEARCH_RANGES
    kernel_start = (1 << 63) if space.va_bits > 32 else KERNEL_START_32.get(family, 0xC0000000)
    (search_lo, search_hi), = SEARCH_RANGES[8 if space.va_bits > 32 else 4]
    search_pages = 0
    sizes: Counter = Counter()
    wx, user_kernel = _Ranges(), _Ranges()
    totals = {"ranges": 0, "entries_read": 0, "tables_missing": 0, "reserved_skipped": 0}
    findings: Findings = []
    complete = True
    for start, end in _pieces(space):
        deadline.check()
        budget = options.max_entries - totals["entries_read"]
        try:
            if budget <= 0:
                raise WalkLimitError("the walk stopped after reading %d paging entries "
                                     "(max_entries) at linear address %#x" % (
                                         totals["entries_read"], start),
                                     resume_at=start, entries_read=totals["entries_read"])
            table = space.mapping_table(start, end, max_entries=budget,
                                        max_ranges=options.max_ranges)
        except WalkLimitError as exc:
            findings.append(TriageFinding("paging", "walk-limit", str(exc),
                                          {"resume_at": exc.resume_at}))
            complete = False
            break
        totals["ranges"] += len(table)
        totals["entries_read"] += table.entries_read
        totals["tables_missing"] += table.tables_missing
        totals["reserved_skipped"] += table.reserved_skipped
        for m in table:
            pages = m.size // m.page_size
            sizes[m.page_size] += pages
            if m.user and m.start >= kernel_start:
                user_kernel.add(m)
            if search_lo <= m.start < search_hi:
                search_pages += pages
            if not m.user and m.writable and not m.nx:
                wx.add(m)
    if not space.nxe:
        findings.append(TriageFinding("paging", "no-execute-disable", (
            "%s paging has no execute-disable bit%s: every writable page is executable "
            "(%d writable supervisor pages)" % (
                space.mode.value, "" if space.mode is PagingMode.BITS32 else
                " enabled (EFER.NXE=0)", wx.pages)), wx.where()))
    elif wx.pages:
        findings.append(TriageFinding("paging", "kernel-wx-pages", (
            "%d supervisor pages in %d ranges are both writable and executable" % (
                wx.pages, wx.ranges)), wx.where()))
    if user_kernel.pages:
        findings.append(TriageFinding("paging", "user-kernel-mapping", (
            "%d user-accessible pages in %d ranges above %#x, in the kernel half" % (
                user_kernel.pages, user_kernel.ranges, kernel_start)), user_kernel.where()))
    if totals["reserved_skipped"]:
        findings.append(TriageFinding("paging", "reserved-bits", (
            "%d present paging entries have reserved bits set; the processor faults on them "
            "and the walk skipped what they map" % totals["reserved_skipped"]),
            {"entries": totals["reserved_skipped"]}))
    section = dict(totals, mode=space.mode.value, cr3=space.cr3, complete=complete,
                   kernel_start=kernel_start, nxe=space.nxe, wp=space.wp,
                   pages={_size_name(size): count for size, count in sorted(sizes.items())},
                   wx_pages=wx.pages, user_kernel_pages=user_kernel.pages,
                   kernel_search_pages=search_pages)
    return section, findings


def kernel_search_allowed(paging: Optional[Section]) -> bool:
    """Whether the Windows kernel search is bounded: the walk finished, and the
    system-image range maps at most :data:`MAX_SEARCH_PAGES` pages."""
    return bool(paging) and bool(paging.get("complete")) and \
        paging.get("kernel_search_pages", 0) <= MAX_SEARCH_PAGES


# -- Windows: the kernel image, pslist against psscan ------------------------------------------

def windows_kernel(space: AddressSpace) -> Optional[Any]:
    """The Windows kernel image mapped in the space's kernel half, or None."""
    from ..windows.kernel import find_kernel
    try:
        return find_kernel(space, 8 if space.va_bits > 32 else 4)
    except KsinspectError:
        return None


def kernel_build(space: AddressSpace, kernel: Any) -> Optional[int]:
    """NtBuildNumber (the build in its low 16 bits; 0xF in the top nibble for a
    free build), read through the kernel's export; None when unreadable."""
    try:
        va = kernel.export_va("NtBuildNumber")
        return int.from_bytes(space.read(va, 4), "little") & 0xFFFF
    except KsinspectError:
        return None


def windows_os(space: AddressSpace, kernel: Any) -> Section:
    build = kernel_build(space, kernel)
    return {"family": "windows", "release": None if build is None else "build %d" % build,
            "build": build, "evidence": "%s found in kernel memory at %#x%s" % (
                kernel.name or "a kernel image", kernel.base,
                "" if build is None else " (NtBuildNumber %d)" % build)}


def windows_layout(options: TriageOptions, build: Optional[int], arch: str) -> Tuple[Any, str]:
    """The layout for the run's option, else for the kernel's build.

    Raises:
        UnknownLayoutError: no layout fits (the message lists the closest).
    """
    from ..windows.layout_files import load_layout
    if options.layout:
        layout = load_layout(options.layout)
        return layout, "layout %s as given" % layout.name
    if build is None:
        raise UnknownLayoutError("the kernel's NtBuildNumber cannot be read, so no layout can "
                                 "be chosen: give --layout", requested="")
    layout = load_layout(str(build), arch)
    return layout, "layout %s from the kernel's NtBuildNumber %d" % (layout.name, build)


def raw_windows_space(memory: Any, options: TriageOptions,
                      deadline: Deadline) -> Tuple[AddressSpace, Any, str]:
    """For an image with no CPU state and a given layout: the kernel space from the
    System process's DirectoryTableBase, as :func:`ksinspect.windows.pslist.kernel_space`
    finds it, and the psscan result it made.

    Raises:
        KsinspectError: no System process, or its DTB is unusable.
    """
    from ..windows.layout_files import load_layout
    from ..windows.psscan import psscan
    from ..windows.pslist import kernel_space
    layout = load_layout(options.layout)
    scan = psscan(memory, layout, progress=deadline.check, max_candidates=options.max_candidates)
    space, how = kernel_space(memory, layout, scan=scan)
    return space, scan, how


def windows_check(memory: Any, space: AddressSpace, kernel: Any, build: Optional[int],
                  options: TriageOptions, deadline: Deadline,
                  scan: Any = None) -> Tuple[Section, Findings]:
    """pslist from PsInitialSystemProcess against psscan: processes only the scan finds."""
    from ..windows.psscan import cross_reference, psscan
    from ..windows.pslist import pslist
    arch = "x64" if space.va_bits > 32 else "x86"
    layout, how = windows_layout(options, build, arch)
    section: Section = {"layout": layout.name, "layout_from": how,
                        "kernel": {"name": kernel.name, "base": kernel.base, "size": kernel.size,
                                   "timestamp": kernel.timestamp, "build": build}}
    deadline.enter("walking the process list")
    listed = pslist(memory, layout, space=space, kernel_base=kernel.base,
                    max_entries=options.max_processes, read_pebs=False)
    deadline.enter("scanning physical memory for processes (psscan)")
    if scan is None or scan.layout != layout.name:
        scan = psscan(memory, layout, progress=deadline.check,
                      max_candidates=options.max_candidates)
    cross_reference(scan, layout, space, listed.processes)
    findings = [TriageFinding("windows", "process-list", f) for f in listed.findings]
    # psscan's own findings: the cap (when it stopped early) first, then one line per
    # unlinked process (cross_reference), which are reported below with their data.
    for message in scan.findings[:len(scan.findings) - len(scan.unlinked)]:
        findings.append(TriageFinding("windows", "scan-limit", message))
    unlinked = []
    for hit in scan.unlinked:
        p = hit.process
        unlinked.append({"pid": p.pid, "name": p.name, "physical": p.physical})
        findings.append(TriageFinding("windows", "process-unlinked", (
            "process %d %s at physical %#x: psscan finds it, ActiveProcessLinks does not "
            "reach it, and it has no exit time (unlinked: DKOM?)" % (p.pid, p.name, p.physical)),
            {"pid": p.pid, "physical": p.physical}))
    section.update(listed=len(listed), scanned=len(scan.hits),
                   exited=sum(1 for h in scan.hits if h.status == "exited"),
                   unlinked=unlinked, list_findings=len(listed.findings))
    return section, findings


# -- a process dump (minidump): the PEB checks -----------------------------------------------

def process_dump_check(memory: Any) -> Optional[Tuple[Section, Findings]]:
    """For a Windows minidump (``memory.format == "minidump"``): the PEB read from
    the first thread's TEB and its checks against the dump's own streams
    (:func:`ksinspect.windows.dump.dump_peb`). None for every other format."""
    if memory.format != "minidump":
        return None
    from ..windows.dump import dump_peb
    peb = dump_peb(memory)
    findings = [TriageFinding("process_dump", "peb-check", str(c), {"check": c.name})
                for c in peb.checks if not c.agree]
    findings += [TriageFinding("process_dump", "peb-finding", f) for f in peb.findings]
    section = {"layout": peb.layout.name, "notes": list(peb.notes), "peb": peb.address, "image_path": peb.image_path,
               "command_line": peb.command_line, "modules": len(peb.modules),
               "checks": len(peb.checks),
               "disagreements": sum(1 for c in peb.checks if not c.agree)}
    return section, findings
