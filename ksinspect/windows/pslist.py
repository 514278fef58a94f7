"""pslist: walk ``_EPROCESS.ActiveProcessLinks`` and read each process's PEB.

The kernel keeps every process on a circular doubly linked list of
``_LIST_ENTRY`` (``ActiveProcessLinks``) headed by the unexported
``PsActiveProcessHead``. The walk starts from a given EPROCESS or from the
exported ``PsInitialSystemProcess`` (the System process, found through the
kernel image: :mod:`ksinspect.windows.kernel`) and follows Flink; each link
points to the next process's ``ActiveProcessLinks``, so the EPROCESS starts
``offset(ActiveProcessLinks)`` bytes before it (CONTAINING_RECORD).

One node of the circle is the list head, not a process: it is recognised by
the Type byte of the would-be ``Pcb.Header`` (3 for a process) and skipped
once. The walk is bounded and ends with a finding, never an exception or a
hang, when a Flink loops back to a node other than the start, is null,
points to memory that is not mapped or not in the image, or leads to a
second node that is not a process; a Blink that does not point back is a
finding too (the list was edited, or is being edited).

Each process's PEB is read through its own address space: the
``DirectoryTableBase`` of its ``_KPROCESS`` as CR3 (the PEB is user memory,
mapped only there); a WoW64 process also has its 32-bit PEB read.
"""
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import DecodeError, InvalidAddressError, KsinspectError
from ..paging import AddressSpace
from ..views.text import table
from ..views.html import html_pre
from .eprocess import PROCESS_OBJECT, Process, decode_eprocess
from .kernel import KernelImage, find_kernel, initial_system_process, read_kernel_image
from ._api import address_and_layout
from ..findings import Finding, finding_dicts
from .layout import Layout
from .layout_files import load_layout

MAX_PROCESSES = 1 << 16     # entries before a walk stops (real systems: a few thousand)
COLUMNS = ("pid", "ppid", "name", "eprocess", "dtb", "peb", "create_time", "exit_time", "wow64")
# The JSON / CSV record: the columns, then every finding on that process.
RECORD_COLUMNS = COLUMNS + ("findings",)
HEX_COLUMNS = ("eprocess", "dtb", "peb", "wow64")


@dataclass
class ListedProcess:
    """A process reached by the walk, with what its own address space showed.

    Attributes:
        errors: what stopped its PEB from being read (findings
            ``dtb-unusable``, ``peb-unreadable``).
        findings: what the walk found at this process (a Flink from it that
            loops, breaks or leaves the image...); also in ProcessList.findings.
    """

    process: Process
    peb: Any = None               # ksinspect.windows.peb.Peb
    peb32: Any = None             # the 32-bit PEB of a WoW64 process
    errors: List[Finding] = dataclass_field(default_factory=list)
    findings: List[Finding] = dataclass_field(default_factory=list)

    @property
    def command_line(self) -> Optional[str]:
        for peb in (self.peb, self.peb32):
            if peb is not None and peb.command_line is not None:
                return peb.command_line
        return None

    @property
    def modules(self) -> tuple:
        return self.peb.modules if self.peb is not None else ()

    def to_dict(self) -> dict:
        """The process's record and ``findings``: its own anomalies, what the
        walk found at it, what stopped its PEB from being read."""
        return dict(self.process.to_dict(), findings=finding_dicts(
            list(self.process.anomalies) + self.findings + self.errors))


@dataclass
class ProcessList:
    """The processes on ActiveProcessLinks, in list order, and what the walk found."""

    entries: List[ListedProcess]
    findings: List[Finding]
    start: int
    started_from: str
    head: Optional[int] = None
    kernel: Optional[KernelImage] = None
    cr3: Optional[int] = None
    layout: str = ""
    cr3_source: Optional[str] = None

    def __iter__(self) -> Iterator[ListedProcess]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> ListedProcess:
        return self.entries[index]

    @property
    def processes(self) -> List[Process]:
        return [e.process for e in self.entries]

    def by_pid(self) -> Dict[int, ListedProcess]:
        return {e.process.pid: e for e in self.entries}

    def to_dict(self) -> List[dict]:
        """The pslist JSON: one {pid, ppid, name, eprocess, dtb, peb, create_time,
        exit_time, wow64, findings} per process (findings: ``{code, message}``)."""
        return [e.to_dict() for e in self.entries]

    def table(self) -> str:
        rows = []
        for e in self.entries:
            row = e.to_dict()
            row["command_line"] = e.command_line
            rows.append(row)
        return table(rows, COLUMNS + ("command_line",), HEX_COLUMNS)

    def explain_findings(self) -> List[str]:
        """The lines under the table: PEB read errors as notes, then findings."""
        lines = []
        for e in self.entries:
            for error in e.errors:
                lines.append("Note: process %d %s: %s" % (e.process.pid, e.process.name, error))
        return lines + ["Finding: " + f for f in self.findings]

    def explain(self) -> str:
        lines = ["%d processes on ActiveProcessLinks (layout %s), starting from %s at %#x" % (
            len(self.entries), self.layout, self.started_from, self.start)]
        if self.cr3 is not None:
            lines.append("Kernel CR3 %#x%s" % (self.cr3, " from " + self.cr3_source
                                               if self.cr3_source else ""))
        if self.kernel is not None:
            lines.append("Kernel: %s" % self.kernel)
        if self.head is not None:
            lines.append("List head (not a process) at %#x%s" % (self.head, self._head_where()))
        lines += ["", self.table()] + self.explain_findings()
        return "\n".join(lines)

    def _head_where(self) -> str:
        k = self.kernel
        if k is not None and k.base <= self.head < k.base + k.size:
            return " (inside %s at +%#x: PsActiveProcessHead)" % (k.name or "the kernel",
                                                                  self.head - k.base)
        return ""

    def __str__(self) -> str:
        return "%d processes (%d findings)" % (len(self.entries), len(self.findings))

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


def _links(space: Any, node: int, ptr: int) -> Tuple[int, int]:
    raw = space.read(node, 2 * ptr)
    return int.from_bytes(raw[:ptr], "little"), int.from_bytes(raw[ptr:], "little")


def _header_type(space: Any, layout: Layout, eprocess: int) -> Optional[int]:
    offset = layout.offset("_EPROCESS", "Pcb") + layout.offset("_KPROCESS", "Header") + \
        layout.offset("_DISPATCHER_HEADER", "Type")
    try:
        return space.read(eprocess + offset, 1)[0]
    except KsinspectError:
        return None


def process_space(space: AddressSpace, dtb: int) -> AddressSpace:
    """The address space a process's DirectoryTableBase describes (same mode)."""
    return AddressSpace(space.memory, cr3=dtb, mode=space.mode, maxphyaddr=space.maxphyaddr,
                        wp=space.wp, nxe=space.nxe, pse=space.pse)


def read_process_environment(entry: ListedProcess, space: AddressSpace, layout: Layout,
                             max_modules: int = 4096) -> None:
    """Read the PEB (and the WoW64 PEB) through the process's own DTB."""
    from .peb import read_peb, read_peb32

    p = entry.process
    if not p.peb and not p.peb32:
        return
    try:
        own = process_space(space, p.dtb)
    except KsinspectError as exc:
        entry.errors.append(Finding("dtb-unusable", "its DirectoryTableBase %#x is not usable: %s"
                                    % (p.dtb, exc)))
        return
    if p.peb:
        try:
            entry.peb = read_peb(own, p.peb, layout, max_modules)
        except KsinspectError as exc:
            entry.errors.append(Finding("peb-unreadable", "PEB at %#x: %s" % (p.peb, exc)))
    if p.peb32:
        try:
            entry.peb32 = read_peb32(own, p.peb32, layout, max_modules=max_modules)
        except KsinspectError as exc:
            entry.errors.append(Finding("peb-unreadable", "32-bit PEB at %#x: %s" % (p.peb32,
                                                                                     exc)))


def walk_processes(space: AddressSpace, start: int, layout: Any, started_from: str = "EPROCESS",
                   max_entries: int = MAX_PROCESSES, read_pebs: bool = True,
                   kernel: Optional[KernelImage] = None) -> ProcessList:
    """Walk ActiveProcessLinks from the EPROCESS at ``start``.

    The order before this release, ``walk_processes(space, layout, start)``,
    is still accepted for one release, with a DeprecationWarning.

    Raises:
        InvalidAddressError: the start EPROCESS itself cannot be read.
        DecodeError: the layout lacks what the walk needs.
    """
    start, layout = address_and_layout("walk_processes", start, layout, old_order=True)
    layout = load_layout(layout)
    ptr = layout.pointer_size
    links_off = layout.offset("_EPROCESS", "ActiveProcessLinks")
    size = layout.sizeof("_EPROCESS")
    if not size:
        raise DecodeError("layout %s does not give sizeof(_EPROCESS)" % layout.name)
    findings: List[Finding] = []

    def decode(va: int) -> Process:
        data = space.read(va, size)
        try:
            pa = space.vtop(va)
        except KsinspectError:
            pa = None
        return decode_eprocess(data, layout, va, pa, space.read)

    first = decode(start)
    entries = [ListedProcess(first)]

    def found(code: str, message: str) -> None:
        # each finding of the walk is made at the last process reached: the one
        # whose ActiveProcessLinks led to it (the list head is not a process)
        finding = Finding(code, message)
        findings.append(finding)
        entries[-1].findings.append(finding)

    if first.header_type != PROCESS_OBJECT:
        found("start-not-a-process", "the start %#x is not a process object (Pcb.Header.Type "
                                     "%d)" % (start, first.header_type))
    start_node = start + links_off
    visited = {start_node: first}
    node, owner = start_node, first
    head = None
    while True:
        flink = owner.links[0] if node != head else _links(space, node, ptr)[0]
        who = ("process %d %s (EPROCESS %#x)" % (owner.pid, owner.name, owner.address)
               if node != head else "the list head at %#x" % node)
        if flink == start_node:
            break
        if flink == 0:
            found("list-broken", "ActiveProcessLinks.Flink of %s is null: the list is broken; "
                                 "the walk stops" % who)
            break
        if flink in visited or flink == head:
            found("list-loop", "ActiveProcessLinks.Flink of %s goes back to %#x, which the walk "
                               "already visited but is not where it started: the list loops; "
                               "the walk stops" % (who, flink))
            break
        if len(entries) >= max_entries:
            found("list-limit", "the walk stopped after %d processes (max_entries)"
                  % max_entries)
            break
        try:
            next_flink, next_blink = _links(space, flink, ptr)
        except InvalidAddressError as exc:
            found("list-outside-memory", "ActiveProcessLinks.Flink of %s = %#x cannot be "
                                         "followed: %s; the walk stops" % (who, flink, exc))
            break
        if next_blink != node:
            found("list-blink-mismatch", "the entry at %#x (after %s) has Blink %#x, not %#x: "
                                         "the list's back links disagree (edited list?)" % (
                                             flink, who, next_blink, node))
        candidate = flink - links_off
        if _header_type(space, layout, candidate) != PROCESS_OBJECT:
            if head is None:
                head = flink            # PsActiveProcessHead: a bare LIST_ENTRY
                node = flink
                continue
            found("list-entry-not-a-process", "the entry at %#x (after %s) is not a process "
                                              "(Pcb.Header.Type is not 3) and the list head was "
                                              "already seen at %#x; the walk stops"
                  % (flink, who, head))
            break
        try:
            process = decode(candidate)
        except InvalidAddressError as exc:
            found("eprocess-unreadable", "the EPROCESS at %#x (after %s) cannot be read whole: "
                                         "%s; the walk stops" % (candidate, who, exc))
            break
        visited[flink] = process
        entries.append(ListedProcess(process))
        node, owner = flink, process
    if read_pebs:
        for entry in entries:
            read_process_environment(entry, space, layout)
    return ProcessList(entries, findings, start, started_from, head, kernel, space.cr3,
                       layout.name)


def default_mode(layout: Layout) -> str:
    """x64 kernels use 4-level paging; x86 ones PAE (the default since XP SP2
    on NX-capable machines, and required by Windows 8 and later)."""
    return "4level" if layout.pointer_size == 8 else "pae"


def _mode_for(memory: Any, layout: Layout, mode: Optional[str]) -> Optional[str]:
    """The mode given, else the image's (None: AddressSpace reads it), else the
    layout's usual one when the image says nothing about paging."""
    cpu = getattr(memory, "cpu", None)
    if mode is not None or (cpu is not None and cpu.paging_mode()):
        return mode
    return default_mode(layout)


def layout_space(memory: Any, layout: Layout, cr3: Optional[int] = None,
                 mode: Optional[str] = None) -> AddressSpace:
    """An address space in an image of *layout*'s build: ``cr3`` (its
    DirectoryTableBase; default the image's CR3) in ``mode`` (default the
    image's paging mode, else the layout's usual one, :func:`default_mode`).

    Raises:
        NoCpuStateError: no CPU state and no ``cr3``.
    """
    return AddressSpace(memory, cr3=cr3, mode=_mode_for(memory, layout, mode))


def kernel_space(memory: Any, layout: Layout, cr3: Optional[int] = None,
                 mode: Optional[str] = None, scan: Any = None) -> Tuple[AddressSpace, str]:
    """The kernel address space and how its CR3 was chosen.

    ``cr3`` given, else the image's CPU state, else the DirectoryTableBase of
    the System process (PID 4) found by psscan (``scan``: a psscan result
    already made, to avoid scanning twice).

    Raises:
        DecodeError: no CR3 could be found.
    """
    cpu = getattr(memory, "cpu", None)
    if cr3 is not None:
        return layout_space(memory, layout, cr3, mode), "--cr3"
    if cpu is not None and cpu.paging_mode() is not None:
        return AddressSpace(memory, mode=mode), "the image's CPU state"
    if scan is None:
        from .psscan import psscan
        scan = psscan(memory, layout)
    systems = [h.process for h in scan.hits if h.process.pid == 4 and
               h.process.name == "System" and not h.process.exited]
    for system in systems:
        try:
            return (AddressSpace(memory, cr3=system.dtb, mode=mode or default_mode(layout)),
                    "the DirectoryTableBase of the System process found by psscan at "
                    "physical %#x" % system.physical)
        except KsinspectError:
            continue
    raise DecodeError("no CR3: %s carries no CPU state and psscan found no usable "
                      "System process (PID 4); give --cr3" % (
                          getattr(memory, "path", None) or "the image"))


def pslist(memory: Any, layout: Layout, start: Optional[int] = None, cr3: Optional[int] = None,
           mode: Optional[str] = None, kernel_base: Optional[int] = None,
           max_entries: int = MAX_PROCESSES, read_pebs: bool = True,
           space: Optional[AddressSpace] = None) -> ProcessList:
    """List the processes of a Windows memory image.

    Args:
        memory: a PhysicalMemory.
        layout: the build's layout.
        start: an EPROCESS virtual address to start from; default
            PsInitialSystemProcess, read from the kernel image.
        cr3, mode: the kernel address space (see :func:`kernel_space`).
        kernel_base: the kernel image's base (default: searched for).

    Raises:
        KernelNotFoundError: no start given and no kernel image found.
        InvalidAddressError: the start EPROCESS cannot be read.
    """
    how = None
    if space is None:
        space, how = kernel_space(memory, layout, cr3, mode)
    kernel = None
    if start is None:
        if kernel_base is not None:
            kernel = read_kernel_image(space, kernel_base)
        else:
            kernel = find_kernel(space, layout.pointer_size)
        start = initial_system_process(space, kernel, layout.pointer_size)
        started_from = "PsInitialSystemProcess (%s at %#x)" % (kernel.name or "kernel",
                                                                kernel.base)
    else:
        started_from = "the EPROCESS given"
    result = walk_processes(space, start, layout, started_from, max_entries, read_pebs, kernel)
    result.cr3_source = how
    return result


__all__ = ["COLUMNS", "RECORD_COLUMNS", "ListedProcess", "MAX_PROCESSES", "ProcessList", "kernel_space",
           "layout_space", "pslist", "process_space", "read_process_environment", "walk_processes"]
