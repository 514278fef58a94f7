"""psscan: find ``_EPROCESS`` structures in physical memory by their shape.

A process object that was unlinked from ActiveProcessLinks (DKOM), or that
exited but whose memory was not reused, is invisible to a list walk; a scan
of physical memory still finds it. The scan runs in C (``csrc/ksi_scan.c``)
over the mmapped image, chunk by chunk, with the constraints below built
from the build's layout. Each is a fact about every live process object:

* ``Pcb.Header.Type == 3`` (ProcessObject) and, when it fits in the byte,
  ``Pcb.Header.Size == sizeof(KPROCESS) / 4``: WRK ``ke/procobj.c``
  KeInitializeProcess; Volatility 2's psscan DispatchHeaderCheck tests the
  same two bytes. This is the anchor word tested at every position.
* the object starts on a pool-block boundary: 16 bytes on x64, 8 on x86
  (pool header, optional object headers and OBJECT_HEADER are all multiples
  of the block size);
* ``Pcb.DirectoryTableBase`` is non-zero and 32-byte aligned (a CR3 value;
  Volatility 2 psscan CheckDTBAligned) and below 2^52 (MAXPHYADDR);
* ``ActiveProcessLinks`` and both ``ThreadListHead`` Flink/Blink are kernel
  addresses: >= 0xFFFF800000000000 on x64 (the canonical upper half), >=
  0x80000000 on x86 (Volatility 2 psscan CheckThreadList);
* ``UniqueProcessId`` and ``InheritedFromUniqueProcessId`` are multiples of
  4 below 2^26 (handle values; 0 for Idle and for System's parent);
* ``ImageFileName`` is at least one printable ASCII byte followed by a NUL.

Pool tags (``Proc`` / ``Pro\\xe3``) are not used: they sit before the object
at a distance that depends on the optional headers, and Windows 10 can
allocate processes from segment heaps whose headers differ.
"""
import mmap
from dataclasses import dataclass, field as dataclass_field, replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .._native.scan import ALIGNED, CSTRING, MASKED_EQUAL, RANGE, ZERO_OK, ScanSpec
from ..errors import DecodeError, KsinspectError
from ..views.html import html_pre
from ..views.text import table
from .eprocess import (MAX_PID, PROCESS_OBJECT, Process, decode_eprocess, resolve_peb32,
                       wow64_finding)
from ..findings import Finding, finding_dicts
from .layout import Layout

DEFAULT_CHUNK = 64 << 20
KERNEL_MIN = {8: 0xFFFF800000000000, 4: 0x80000000}
POINTER_MAX = {8: (1 << 64) - 1, 4: (1 << 32) - 1}
POOL_ALIGN = {8: 16, 4: 8}
MAXPHYADDR_LIMIT = (1 << 52) - 1
# Candidates decoded at most (as pslist's MAX_PROCESSES): memory crafted to
# repeat an EPROCESS would otherwise give one per copy (about 850 000 per GiB
# of win7 x64 records, each decoded in Python).
MAX_CANDIDATES = 1 << 16

# The table (Volatility's psscan columns that the scan fills): the record key
# of each column and its header.
TABLE_COLUMNS = ("physical", "pid", "ppid", "name", "create_time", "exit_time", "in_list")
TABLE_HEADERS = ("Offset(P)", "PID", "PPID", "Name", "Create time", "Exit time", "In list")


def _path_offset(layout: Layout, struct_name: str, *path: str) -> Tuple[int, str]:
    """Offset of a nested member and its type string."""
    offset, current = 0, struct_name
    for part in path:
        f = layout.field(current, part)
        offset += f.offset
        current = f.type
    return offset, current


def _scalar_width(layout: Layout, type_name: str) -> int:
    info = layout.type_info(type_name)
    if info.kind == "array":
        return layout.type_info(info.element).size
    if type_name == "_LARGE_INTEGER":
        return 8
    return info.size


def eprocess_constraints(layout: Layout) -> Tuple[ScanSpec, List[str]]:
    """The scan spec for one build, and one line per constraint saying what it tests.

    Raises:
        DecodeError: the layout lacks a member the scan needs.
    """
    ptr = layout.pointer_size
    kmin, pmax = KERNEL_MIN[ptr], POINTER_MAX[ptr]
    try:
        header, _ = _path_offset(layout, "_EPROCESS", "Pcb", "Header")
        type_off = layout.offset("_DISPATCHER_HEADER", "Type")
        size_off = layout.offset("_DISPATCHER_HEADER", "Size")
        kprocess = layout.sizeof("_KPROCESS") or 0
        checks: List[Tuple[int, int, int, int, int, int]] = []
        text: List[str] = []
        anchor_at = header + type_off
        mask, value = 0xFF, PROCESS_OBJECT
        text.append("+%#x Pcb.Header.Type == 3 (ProcessObject)" % anchor_at)
        if kprocess and kprocess // 4 <= 0xFF and 0 < size_off - type_off < 4:
            shift = 8 * (size_off - type_off)
            mask |= 0xFF << shift
            value |= (kprocess // 4) << shift
            text.append("+%#x Pcb.Header.Size == %#x (sizeof(KPROCESS) %#x / 4)" % (
                header + size_off, kprocess // 4, kprocess))
        else:
            text.append("Pcb.Header.Size not checked: sizeof(KPROCESS) / 4 = %#x does not fit "
                        "in its byte" % (kprocess // 4))
        dtb_off, dtb_type = _path_offset(layout, "_EPROCESS", "Pcb", "DirectoryTableBase")
        checks.append((dtb_off, _scalar_width(layout, dtb_type), ALIGNED, 0, 0x1F,
                       MAXPHYADDR_LIMIT))
        text.append("+%#x Pcb.DirectoryTableBase non-zero, 32-byte aligned, < 2^52" % dtb_off)
        for path in (("ActiveProcessLinks",), ("Pcb", "ThreadListHead"), ("ThreadListHead",)):
            base, _ = _path_offset(layout, "_EPROCESS", *path)
            for member in ("Flink", "Blink"):
                off = base + layout.offset("_LIST_ENTRY", member)
                checks.append((off, ptr, RANGE, 0, kmin, pmax))
            text.append("+%#x %s.Flink/Blink >= %#x (kernel addresses)" % (
                base, ".".join(path), kmin))
        for name in ("UniqueProcessId", "InheritedFromUniqueProcessId"):
            off = layout.offset("_EPROCESS", name)
            checks.append((off, ptr, ALIGNED, ZERO_OK, 3, MAX_PID - 1))
            text.append("+%#x %s a multiple of 4 below 2^26" % (off, name))
        name_field = layout.field("_EPROCESS", "ImageFileName")
        length = layout.type_info(name_field.type).count
        checks.append((name_field.offset, length, CSTRING, 0, 1, 0))
        text.append("+%#x ImageFileName: printable ASCII, NUL within %d bytes" % (
            name_field.offset, length))
    except KsinspectError as exc:
        raise DecodeError("layout %s cannot drive psscan: %s" % (layout.name, exc)) from None
    size = max([anchor_at + 4] + [c[0] + c[1] for c in checks])
    spec = ScanSpec(size, POOL_ALIGN[ptr], (anchor_at, mask, value), checks)
    text.insert(0, "candidates at %d-byte aligned physical addresses" % POOL_ALIGN[ptr])
    return spec, text


READ_CHUNK = 1 << 22     # bytes read at a time from memory without a flat buffer


def scan_memory(memory: Any, spec: ScanSpec, chunk: int = DEFAULT_CHUNK,
                progress: Optional[Callable[[float], None]] = None,
                max_hits: Optional[int] = None) -> Tuple[List[int], int]:
    """Physical addresses of every candidate in the image, and the anchor count.

    Runs are scanned in chunks that overlap by ``spec.size - 1`` bytes, so a
    structure across a chunk border is seen once; runs that are contiguous in
    physical memory are joined by a small copied window across the border.
    Nothing is read into Python memory but those windows. With ``max_hits``
    the scan stops after the chunk in which that many candidates were found
    (more may be returned: the caller cuts and says so). Memory without a flat
    buffer (a compressed kdump) is read through ``read(pa, n)`` in chunks of at
    most READ_CHUNK bytes, so what is held decompressed stays bounded.
    """
    if chunk < 4096:
        raise DecodeError("scan chunk %d is below 4096 bytes" % chunk)
    runs = list(memory.runs)
    total = sum(r.length for r in runs) or 1
    done = 0
    found: List[int] = []
    anchors = 0
    buffer = getattr(memory, "buffer", None)
    whole = memoryview(buffer).cast("B") if buffer is not None else None
    if whole is None:
        chunk = min(chunk, READ_CHUNK)
    overlap = spec.size - 1
    intact = getattr(memory, "check_intact", None)

    def piece(run, pos: int, n: int):
        if whole is None:
            return memory.read(run.start + pos, n)
        return whole[run.offset + pos:run.offset + pos + n]

    try:
        for i, run in enumerate(runs):
            pos = 0
            while pos < run.length:
                take = min(chunk, run.length - pos)
                window = piece(run, pos, min(take + overlap, run.length - pos))
                if intact is not None:
                    intact()               # a shrunk file would SIGBUS in the scan
                hits, seen = spec.scan(window, run.start + pos, take)
                if whole is not None:
                    window.release()
                    _release_pages(memory.buffer, run.offset + pos, take)
                found.extend(hits)
                anchors += seen
                pos += take
                done += take
                if progress is not None:
                    progress(done / total)
                if max_hits is not None and len(found) >= max_hits:
                    return found, anchors
            nxt = runs[i + 1] if i + 1 < len(runs) else None
            if nxt is not None and nxt.start == run.start + run.length and overlap:
                tail = min(overlap, run.length)
                head = min(overlap, nxt.length)
                joined = bytes(piece(run, run.length - tail, tail)) + bytes(piece(nxt, 0, head))
                hits, seen = spec.scan(joined, run.start + run.length - tail, tail)
                found.extend(hits)
                anchors += seen
    finally:
        if whole is not None:
            whole.release()
    return found, anchors


def _release_pages(buffer: Any, start: int, length: int) -> None:
    """Drop the scanned pages of a file mapping from this process's RSS
    (madvise MADV_DONTNEED: a read-only file mapping reads them back from
    the page cache if touched again), so a scan over a 64 GiB image keeps
    the footprint of one chunk, as the walks do."""
    advise = getattr(buffer, "madvise", None)
    flag = getattr(mmap, "MADV_DONTNEED", None)
    if advise is None or flag is None:
        return
    first = start - start % mmap.PAGESIZE
    end = start + length - (start + length) % mmap.PAGESIZE
    if end > first:
        try:
            advise(flag, first, end - first)
        except (OSError, ValueError):
            pass


@dataclass
class ScanHit:
    """One candidate: the decoded process and what the list walk says of it.

    Attributes:
        findings: what the cross-reference found (``process-unlinked``); the
            process's own anomalies are ``process.anomalies``.
    """

    process: Process
    in_list: Optional[bool] = None       # None: no list to compare with
    findings: List[Finding] = dataclass_field(default_factory=list)

    @property
    def status(self) -> str:
        if self.in_list is None:
            return "-"
        if self.in_list:
            return "listed"
        return "exited" if self.process.exited else "UNLINKED"

    def to_dict(self) -> dict:
        record = self.process.to_dict()
        record["physical"] = self.process.physical
        record["in_list"] = self.in_list
        record["status"] = self.status
        record["findings"] = finding_dicts(list(self.process.anomalies) + self.findings)
        return record

    def table_row(self) -> dict:
        """The table's cells: the status words where the JSON has in_list."""
        row = self.to_dict()
        row["in_list"] = {"-": "-", "listed": "yes"}.get(self.status, "no (%s)" % self.status)
        for key in ("create_time", "exit_time"):
            row[key] = row[key] or "-"
        return row


@dataclass
class ScanResult:
    """What psscan found: hits in physical-address order, plus the constraints used."""

    hits: List[ScanHit]
    constraints: List[str]
    anchors: int
    layout: str
    findings: List[Finding] = dataclass_field(default_factory=list)

    def __iter__(self) -> Iterator[ScanHit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    @property
    def unlinked(self) -> List[ScanHit]:
        """Live processes (no exit time) that the list walk did not reach."""
        return [h for h in self.hits if h.in_list is False and not h.process.exited]

    def to_dict(self) -> List[dict]:
        return [h.to_dict() for h in self.hits]

    def explain(self) -> str:
        lines = ["psscan with layout %s: %d candidates (%d positions passed the anchor "
                 "word)" % (self.layout, len(self.hits), self.anchors), "Constraints:"]
        lines += ["  " + c for c in self.constraints]
        lines.append("")
        lines.append(self.table())
        lines += ["Finding: " + f for f in self.findings]
        return "\n".join(lines)

    def table(self) -> str:
        """One row per candidate: Offset(P), PID, PPID, name, create and exit
        time, and whether the process list reaches it."""
        return table([h.table_row() for h in self.hits], TABLE_COLUMNS,
                     hex_columns=("physical",), headers=TABLE_HEADERS)

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


def _links_va(layout: Layout) -> int:
    return layout.offset("_EPROCESS", "ActiveProcessLinks")


def recover_address(process: Process, layout: Layout, space: Any) -> Optional[int]:
    """The kernel VA of a process found physically, from its own links: a
    neighbour's back link (or a self-pointing unlinked entry) names its
    ActiveProcessLinks; accepted only if that VA translates to the physical
    address where the process was found."""
    links = _links_va(layout)
    flink, blink = process.links
    guesses = [flink, blink]
    fmt_size = layout.pointer_size
    for node, member in ((flink, 1), (blink, 0)):
        try:
            raw = space.read(node, 2 * fmt_size)
        except KsinspectError:
            continue
        guesses.append(int.from_bytes(raw[member * fmt_size:(member + 1) * fmt_size], "little"))
    for guess in guesses:
        va = guess - links
        if va < 0:
            continue
        try:
            if space.vtop(va) == process.physical:
                return va
        except KsinspectError:
            continue
    return None


def _available(memory: Any, pa: int, size: int) -> int:
    """Bytes of [pa, pa + size) that the image holds contiguously from pa."""
    run = memory.run_at(pa)
    if run is None:
        return 0
    end = run.start + run.length
    runs = memory.runs
    i = runs.index(run) + 1
    while end - pa < size and i < len(runs) and runs[i].start == end:
        end = runs[i].start + runs[i].length
        i += 1
    return min(size, end - pa)


def psscan(memory: Any, layout: Layout, space: Any = None, chunk: int = DEFAULT_CHUNK,
           progress: Optional[Callable[[float], None]] = None,
           listed: Optional[Sequence[Process]] = None,
           max_candidates: int = MAX_CANDIDATES) -> ScanResult:
    """Scan physical memory for ``_EPROCESS`` candidates and decode each.

    Args:
        memory: a PhysicalMemory (runs + buffer).
        layout: the build's layout.
        space: the kernel AddressSpace, to recover each hit's virtual
            address and follow WoW64 pointers (optional; see also
            :func:`cross_reference`).
        listed: processes from a list walk: hits are marked listed or not
            (matched by the physical address of the EPROCESS).
        max_candidates: decode at most this many hits (the lowest physical
            addresses); a finding says when the scan stopped there.
    """
    if max_candidates < 1:
        raise DecodeError("max_candidates %d is not a positive number" % max_candidates)
    spec, constraints = eprocess_constraints(layout)
    addresses, anchors = scan_memory(memory, spec, chunk, progress, max_hits=max_candidates + 1)
    capped = None
    if len(addresses) > max_candidates:
        capped = Finding("scan-limit", "the scan stopped after %d candidates (max_candidates): "
                                       "candidates from physical %#x on are not listed" % (
                                           max_candidates, addresses[max_candidates]))
        del addresses[max_candidates:]
    size = layout.sizeof("_EPROCESS")
    hits: List[ScanHit] = []
    for pa in addresses:
        available = _available(memory, pa, size)
        data = memory.read(pa, available) + bytes(size - available)
        process = decode_eprocess(data, layout, None, pa)
        if available < size:
            process = replace(process, anomalies=process.anomalies + (Finding(
                "eprocess-truncated", "only %d of the %d EPROCESS bytes are in the image" % (
                    available, size)),))
        hits.append(ScanHit(process))
    result = ScanResult(hits, constraints, anchors, layout.name)
    if capped:
        result.findings.append(capped)
    if space is not None or listed is not None:
        cross_reference(result, layout, space, listed)
    return result


def cross_reference(result: ScanResult, layout: Layout, space: Any = None,
                    listed: Optional[Sequence[Process]] = None) -> ScanResult:
    """Complete the hits with the kernel address space (virtual address, WoW64
    PEB) and mark each listed or not; unlinked live processes become findings."""
    listed_pa = {p.physical for p in listed or () if p.physical is not None}
    for hit in result.hits:
        process = hit.process
        if space is not None:
            va = recover_address(process, layout, space)
            if va is not None:
                process = replace(process, address=va)
            if process.wow64_pointer and process.peb32 is None and process.struct is not None:
                peb32, why = resolve_peb32(layout, process.wow64_pointer, space.read)
                process = replace(process, peb32=peb32, anomalies=process.anomalies + (
                    (wow64_finding(why),) if why else ()))
        hit.process = process
        if listed is not None:
            hit.in_list = process.physical in listed_pa
    for h in result.unlinked:
        finding = Finding("process-unlinked", "process %d %s at physical %#x is not in the "
                                              "ActiveProcessLinks list and has no exit time: "
                                              "unlinked (DKOM) or the walk stopped early" % (
                                                  h.process.pid, h.process.name,
                                                  h.process.physical))
        result.findings.append(finding)
        h.findings.append(finding)
    return result


__all__ = ["DEFAULT_CHUNK", "MAX_CANDIDATES", "TABLE_COLUMNS", "TABLE_HEADERS", "ScanHit", "ScanResult", "cross_reference",
           "eprocess_constraints", "psscan", "recover_address", "scan_memory"]
