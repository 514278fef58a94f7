"""Linear-to-physical translation through CR3 in every x86 paging mode.

:class:`AddressSpace` walks the page tables of a physical-memory image (a
:class:`ksinspect.memory.PhysicalMemory`, or anything with ``runs`` and
``buffer``, or with ``read(pa, n)``) the way the processor does, in the C
core:

* ``translate(va)``: the physical address, the page size, the effective
  rights and the whole walk (every entry read, decoded);
* ``translate_many(vas)``: one C call per batch;
* ``mappings(start, end)``: every mapped range, merged, streamed in
  resumable C chunks;
* ``read(va, n)`` and ``physical_to_virtual(pa)``.

Rules: Intel SDM vol. 3A §4.3 (32-bit paging, PSE, PSE-36), §4.4 (PAE),
§4.5 (4-level and 5-level paging, canonical addresses), §4.6 (access rights:
R/W and U/S are AND-ed over the levels, XD is OR-ed; CR0.WP decides whether
supervisor writes obey R/W) and §4.7 (reserved bits make the walk fault).
"""
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

from . import _native_walk as _w
from ._native import PAGING_OPTION_NXE as _NXE
from ._native import PAGING_OPTION_PSE as _PSE
from ._native import PAGING_OPTION_WP as _WP
from .errors import DecodeError, InvalidAddressError, WalkLimitError
from .x86._batch import DecodedBatch
from .x86._bits import flag_names
from .x86.paging_entry import (LEVEL_NAMES, PAT_DEFAULT, PagingEntry, PagingMode, PteAnomaly,
                               _MODE_CODE, paging_mode)

__all__ = ["AddressSpace", "Alias", "Mapping", "MappingStream", "MappingTable", "Translation",
           "TranslationBatch", "WalkLimitError", "WalkStep", "DEFAULT_MAX_ENTRIES",
           "DEFAULT_MAX_RANGES", "DEFAULT_MAX_ALIASES"]

# Entries an enumeration may read before it stops: the walk of the shipped
# Linux 6.1 guest reads 1.1 million; a process with 100 GiB resident in 4 KiB
# pages needs about 25 million. Tables that map themselves everywhere reach
# the cap in about 5 s (2^30 took 40 s on the CI machine).
DEFAULT_MAX_ENTRIES = 1 << 27
# Results a gathering call may hold (memory stays bounded whatever the tables
# say: every entry read can add a range). A real Linux 6.1 guest has 65,774
# ranges; one physical page has a handful of aliases.
DEFAULT_MAX_RANGES = 1 << 22
DEFAULT_MAX_ALIASES = 1 << 17
CR0_WP = 1 << 16

# Lowest linear-address bit each level indexes, and how many bits (§4.3-4.5).
_SHIFT = {1: 12, 2: 21, 3: 30, 4: 39, 5: 48}
_BITS = {
    PagingMode.BITS32: {2: (22, 10), 1: (12, 10)},
    PagingMode.PAE: {3: (30, 2), 2: (21, 9), 1: (12, 9)},
    PagingMode.LEVEL4: {lv: (_SHIFT[lv], 9) for lv in range(1, 5)},
    PagingMode.LEVEL5: {lv: (_SHIFT[lv], 9) for lv in range(1, 6)},
}
_VA_BITS = {PagingMode.BITS32: 32, PagingMode.PAE: 32, PagingMode.LEVEL4: 48,
            PagingMode.LEVEL5: 57}
_TABLE_NAMES = {"PML5E": "PML5 table", "PML4E": "PML4 table", "PDPTE": "page-directory-pointer "
                "table", "PDE": "page directory", "PTE": "page table"}

_T = {name: i for i, name in enumerate(_w.TRANSLATION_FIELDS)}
_T_ADDR = [_T["entry_address[%d]" % i] for i in range(5)]
_T_VALUE = [_T["entry_value[%d]" % i] for i in range(5)]
_T_INDEX = [_T["index[%d]" % i] for i in range(5)]
_T_VA, _T_PA, _T_SIZE = _T["va"], _T["pa"], _T["page_size"]
_T_REASON, _T_RIGHTS, _T_ANOM = _T["reason"], _T["rights"], _T["anomalies"]
_T_STEPS, _T_FAIL = _T["steps"], _T["fail_level"]
_M = {name: i for i, name in enumerate(_w.MAPPING_FIELDS)}


def _size_text(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return "%d %s" % (size >> shift, unit)
    return "%d B" % size


def _rights_text(writable: bool, user: bool, nx: bool) -> str:
    return "r%s%s %s" % ("w" if writable else "-", "-" if nx else "x",
                         "user" if user else "supervisor")


@dataclass(frozen=True)
class WalkStep:
    """One entry read during a walk: its level, its index in its table,
    its physical address and value, and the entry decoded."""

    level: int
    name: str
    index: int
    address: int
    value: int
    entry: PagingEntry

    def to_dict(self) -> dict:
        return {"level": self.level, "index": self.index, "address": self.address,
                "value": self.value}

    def __str__(self) -> str:
        return "%s[%d] at %#x = %#x: %s" % (self.name, self.index, self.address, self.value,
                                            self.entry)


@dataclass(frozen=True)
class Translation:
    """The walk of one linear address (SDM vol. 3A §4.3-4.6).

    ``pa`` is None when the address is not mapped; then ``error`` says why
    and at which level (``level``; 0 for the table CR3 names), and the
    rights and page size are None. ``writable``, ``user`` and ``nx`` are the
    effective rights, combined across the levels as the processor combines
    them; ``writable`` is what user-mode writes obey, and
    :attr:`supervisor_writable` applies CR0.WP.
    """

    va: int
    pa: Optional[int]
    page_size: Optional[int]
    writable: Optional[bool]
    user: Optional[bool]
    nx: Optional[bool]
    path: Tuple[WalkStep, ...]
    error: Optional[str]
    reason: str
    level: Optional[int]
    anomalies: PteAnomaly
    mode: PagingMode
    wp: bool = True
    cr3: Optional[int] = None

    @property
    def mapped(self) -> bool:
        return self.pa is not None

    @property
    def supervisor_writable(self) -> Optional[bool]:
        """Whether supervisor-mode writes succeed: R/W everywhere, or CR0.WP=0 (§4.6.1)."""
        if self.pa is None:
            return None
        return bool(self.writable) or not self.wp

    @property
    def leaf(self) -> Optional[PagingEntry]:
        """The entry that maps the page (None when not mapped)."""
        return self.path[-1].entry if self.pa is not None else None

    @property
    def failing_entry(self) -> Optional[int]:
        """The value of the entry at the level where the walk stopped, if one was read."""
        for step in self.path:
            if step.level == self.level:
                return step.value
        return None

    def check(self) -> "Translation":
        """Return self when mapped; else raise the InvalidAddressError that describes why."""
        if self.pa is None:
            raise InvalidAddressError("%#x: %s" % (self.va, self.error), address=self.va,
                                      level=self.level, entry=self.failing_entry)
        return self

    def to_dict(self) -> dict:
        return {"va": self.va, "pa": self.pa, "page_size": self.page_size,
                "writable": self.writable, "user": self.user, "nx": self.nx,
                "path": [step.to_dict() for step in self.path], "error": self.error}

    def __str__(self) -> str:
        if self.pa is None:
            return "%#x not mapped: %s" % (self.va, self.error)
        return "%#x -> %#x (%s page, %s)" % (self.va, self.pa, _size_text(self.page_size),
                                             _rights_text(self.writable, self.user, self.nx))

    def explain(self) -> str:
        """The walk step by step, with the linear-address fields that index each table."""
        mode = self.mode
        lines = [str(self), "Source: Intel SDM vol. 3A %s" % {
            PagingMode.BITS32: "§4.3 (32-bit paging), Figure 4-2/4-3",
            PagingMode.PAE: "§4.4 (PAE paging), Figure 4-5/4-6",
            PagingMode.LEVEL4: "§4.5 (4-level paging), Figure 4-8 to 4-10",
            PagingMode.LEVEL5: "§4.5 (5-level paging), Figure 4-8 to 4-10"}[mode], ""]
        for step in self.path:
            shift, bits = _BITS[mode][step.level]
            lines.append("  %-5s index = linear bits %d:%d = %d" % (
                step.name, shift + bits - 1, shift, step.index))
            lines.append("        entry at %#x = %#x" % (step.address, step.value))
            lines.append("        %s" % step.entry)
        if self.pa is not None:
            offset = self.va & (self.page_size - 1)
            lines += ["", "Physical address %#x = page %#x + offset %#x (linear bits %d:0)" % (
                self.pa, self.pa - offset, offset, self.page_size.bit_length() - 2),
                "Effective rights (§4.6): R/W and U/S AND-ed over every level, XD OR-ed: "
                "%s; supervisor writes %s (CR0.WP=%d)" % (
                    _rights_text(self.writable, self.user, self.nx),
                    "allowed" if self.supervisor_writable else "fault", 1 if self.wp else 0)]
        else:
            lines += ["", "Not mapped: %s" % self.error]
        if self.anomalies:
            lines.append("Anomalies along the walk: %s" % ", ".join(
                flag_names(self.anomalies, PteAnomaly)))
        return "\n".join(lines)

    def to_svg(self) -> str:
        """The walk diagram (CR3, each level, the page) as a standalone SVG document."""
        from .render.walk_svg import walk_svg
        return walk_svg(self)

    def _repr_html_(self) -> str:
        from .render.html import translation_html
        return translation_html(self)


@dataclass(frozen=True)
class Mapping:
    """A range of mapped linear addresses [start, end) (what QEMU's ``info mem``
    prints, plus NX, the physical address of ``start`` and the page size)."""

    start: int
    end: int
    size: int
    writable: bool
    user: bool
    nx: bool
    pa: int
    page_size: int
    pages: int = 1

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "size": self.size,
                "writable": self.writable, "user": self.user, "nx": self.nx, "pa": self.pa,
                "page_size": self.page_size}

    def __str__(self) -> str:
        return "%#x-%#x %#x %s -> %#x (%s pages)" % (
            self.start, self.end, self.size, _rights_text(self.writable, self.user, self.nx),
            self.pa, _size_text(self.page_size))


@dataclass(frozen=True)
class Alias:
    """One linear address that maps a physical address (reverse lookup)."""

    va: int
    pa: int
    page_start: int
    page_size: int
    writable: bool
    user: bool
    nx: bool

    def to_dict(self) -> dict:
        return {"va": self.va, "pa": self.pa, "page_start": self.page_start,
                "page_size": self.page_size, "writable": self.writable, "user": self.user,
                "nx": self.nx}

    def __str__(self) -> str:
        return "%#x (in the %s page at %#x, %s)" % (
            self.va, _size_text(self.page_size), self.page_start,
            _rights_text(self.writable, self.user, self.nx))


_M_START, _M_SIZE, _M_PA = _M["start"], _M["size"], _M["pa"]
_M_PS, _M_RIGHTS, _M_PAGES = _M["page_size"], _M["rights"], _M["pages"]


def _mapping(d: Tuple[int, ...], _new=object.__new__, _set=object.__setattr__) -> Mapping:
    """A Mapping from one ksi_mapping record. The frozen dataclass is filled
    directly: its __init__ costs more than the C walk that found the range."""
    rights, begin, size = d[_M_RIGHTS], d[_M_START], d[_M_SIZE]
    m = _new(Mapping)
    _set(m, "__dict__", {
        "start": begin, "end": begin + size, "size": size,
        "writable": bool(rights & _w.RIGHT_WRITABLE), "user": bool(rights & _w.RIGHT_USER),
        "nx": bool(rights & _w.RIGHT_NX), "pa": d[_M_PA], "page_size": d[_M_PS],
        "pages": d[_M_PAGES]})
    return m


class MappingTable(DecodedBatch):
    """Every merged range of a walk, held as the C records
    (:meth:`AddressSpace.mapping_table`): a sequence of :class:`Mapping`
    built on access; ``column(name)`` reads ``start``, ``size``, ``pa``,
    ``page_size``, ``rights`` or ``pages`` without building any.
    Attributes ``entries_read``, ``tables_missing`` and ``reserved_skipped``
    are the walk's counters."""

    def __init__(self, rows: memoryview, entries_read: int, tables_missing: int,
                 reserved_skipped: int):
        super().__init__(rows, _w.MAPPING_FIELDS, _w.MAPPING_RECORD, lambda _i, d: _mapping(d))
        self.entries_read = entries_read
        self.tables_missing = tables_missing
        self.reserved_skipped = reserved_skipped


class TranslationBatch(DecodedBatch):
    """The result of :meth:`AddressSpace.translate_many`.

    One C call filled a short record per address (``pa``, ``leaf``: the
    entry that maps the page or the last one read, ``rights``, ``reason``,
    ``fail_level``, ``page_shift``, ``anomalies``); indexing builds the full
    :class:`Translation` (with its decoded path) on demand. :meth:`pas`,
    :meth:`page_sizes` and ``column(name)`` read whole columns without
    building any.
    """

    def __init__(self, rows: memoryview, vas: Any, make: Callable[[int, Tuple[int, ...]], Any]):
        super().__init__(rows, _w.BRIEF_FIELDS, _w.BRIEF_RECORD, make)
        self.vas = vas

    def column(self, name: str) -> List[int]:
        """One field of every record; ``"page_size"`` is derived from ``page_shift``."""
        if name == "page_size":
            return [1 << shift if shift else 0 for shift in super().column("page_shift")]
        return super().column(name)

    def pas(self) -> List[Optional[int]]:
        """The physical address of every input (None when not mapped)."""
        i_pa, i_shift = self._fields.index("pa"), self._fields.index("page_shift")
        return [row[i_pa] if row[i_shift] else None
                for row in self._record.iter_unpack(self._rows)]

    def page_sizes(self) -> List[int]:
        return self.column("page_size")

    def mapped_count(self) -> int:
        return sum(1 for shift in super().column("page_shift") if shift)


class MappingStream(Iterator[Mapping]):
    """The iterator :meth:`AddressSpace.mappings` returns, with the walk's
    counters: ``entries_read``, ``tables_missing`` (tables that present
    entries name but the image lacks: their ranges are unknown, not
    unmapped), ``reserved_skipped`` (present entries skipped because the
    processor would fault on their reserved bits) and ``done``."""

    def __init__(self, cursor: "_w.Cursor", iterator: Iterator[Mapping]):
        self._cursor = cursor
        self._iterator = iterator

    def __iter__(self) -> "MappingStream":
        return self

    def __next__(self) -> Mapping:
        return next(self._iterator)

    entries_read = property(lambda self: self._cursor.entries_read)
    tables_missing = property(lambda self: self._cursor.tables_missing)
    reserved_skipped = property(lambda self: self._cursor.reserved_skipped)
    done = property(lambda self: self._cursor.done)
    next_va = property(lambda self: self._cursor.next_va)


class AddressSpace:
    """The linear address space that a CR3 describes in a physical-memory image.

    Args:
        memory: a :class:`ksinspect.memory.PhysicalMemory` (or any object with
            ``runs`` and ``buffer``, or with ``read(pa, n)``).
        cr3: the page-table root; default the image's CPU state's CR3.
        mode: ``"32"``, ``"pae"``, ``"4level"`` or ``"5level"``; default the
            mode CR0 / CR4 / EFER imply.
        maxphyaddr: the physical-address width (32..52).
        pat: IA32_PAT (for memory types); default the power-on value.
        wp: CR0.WP; default from the image's CR0, else True.
        nxe: IA32_EFER.NXE; default from the image, else True outside 32-bit paging.
        pse: CR4.PSE; default from the image's CR4, else True.
        ignore_reserved: follow entries with reserved bits set (the processor
            faults on them; by default the walk stops there, as it does).

    Raises:
        DecodeError: no CPU state and no cr3 / mode, a mode that contradicts
            the CPU state, or a value out of range.
        InvalidAddressError: the table CR3 names is not in the image.
        ImageFormatError: the memory's run table is broken.
    """

    def __init__(self, memory: Any, cr3: Optional[int] = None, mode: Any = None,
                 maxphyaddr: int = 52, pat: Optional[int] = None, wp: Optional[bool] = None,
                 nxe: Optional[bool] = None, pse: Optional[bool] = None,
                 ignore_reserved: bool = False):
        cpu = getattr(memory, "cpu", None)
        cpu_mode = cpu.paging_mode() if cpu is not None else None
        if mode is None:
            if cpu is None:
                raise DecodeError("the image carries no CPU state: give the paging mode "
                                  "(32, pae, 4level or 5level) and CR3")
            if cpu_mode is None:
                raise DecodeError("the CPU state says paging is disabled (CR0.PG=0): give "
                                  "the paging mode to walk anyway")
            mode = cpu_mode
        mode = paging_mode(mode)
        if cpu_mode is not None and mode.value != cpu_mode:
            decision = cpu.paging_decision()[1] if hasattr(cpu, "paging_decision") else ""
            raise DecodeError("paging mode %s contradicts the CPU state, which implies %s%s"
                              % (mode.value, cpu_mode, " (%s)" % decision if decision else ""))
        if cr3 is None:
            if cpu is None:
                raise DecodeError("the image carries no CPU state: give CR3")
            cr3 = cpu.cr3
        if not isinstance(maxphyaddr, int) or not 32 <= maxphyaddr <= 52:
            raise DecodeError("MAXPHYADDR %r is outside 32..52" % (maxphyaddr,))
        if wp is None:
            wp = bool(cpu.cr0 & CR0_WP) if cpu is not None else True
        if nxe is None:
            efer = getattr(cpu, "efer", None) if cpu is not None else None
            if efer is not None:
                nxe = bool(efer & (1 << 11))
            elif cpu is not None and cpu_mode is not None:
                nxe = cpu.nxe()
            else:
                nxe = mode is not PagingMode.BITS32
        if pse is None:
            pse = bool(cpu.pse) if cpu is not None else True
        self.memory = memory
        self.mode = mode
        self.cr3 = cr3
        self.maxphyaddr = maxphyaddr
        self.pat = PAT_DEFAULT if pat is None else pat
        self.wp, self.nxe, self.pse = bool(wp), bool(nxe), bool(pse)
        self.ignore_reserved = bool(ignore_reserved)
        self.levels = mode.levels
        self.va_bits = _VA_BITS[mode]
        options = ((_PSE if self.pse else 0) | (_NXE if self.nxe else 0)
                   | (_WP if self.wp else 0)
                   | (_w.OPTION_IGNORE_RESERVED if self.ignore_reserved else 0))
        missing = (InvalidAddressError,)
        self._walker = _w.Walker(memory, cr3, _MODE_CODE[mode], maxphyaddr, self.pat, options,
                                 missing)
        self.root = _w.table_root(cr3, _MODE_CODE[mode])
        table = 32 if mode is PagingMode.PAE else 4096
        if self._walker.phys_read(self.root, table)[1] != table:
            raise InvalidAddressError(
                "CR3 %#x names a %s at physical %#x that is not in the image%s" % (
                    cr3, "page-directory-pointer table" if mode is PagingMode.PAE else
                    _TABLE_NAMES[LEVEL_NAMES[mode][self.levels]], self.root,
                    " " + memory.name if isinstance(getattr(memory, "name", None), str)
                    else ""),
                address=self.root, level=self.levels)

    def __repr__(self) -> str:
        return "<AddressSpace %s CR3=%#x over %r>" % (self.mode.value, self.cr3, self.memory)

    # -- addresses ----------------------------------------------------------------------

    @property
    def top(self) -> int:
        """The first linear address past the space (2**32, or 2**64 for IA-32e)."""
        return 1 << (32 if self.va_bits == 32 else 64)

    def is_canonical(self, va: int) -> bool:
        if self.va_bits == 32:
            return 0 <= va < 1 << 32
        sign = va >> (self.va_bits - 1)
        return sign == 0 or sign == (1 << (65 - self.va_bits)) - 1

    def _check_address(self, va: Any) -> int:
        if not isinstance(va, int) or isinstance(va, bool):
            raise DecodeError("linear address %r is not an integer" % (va,))
        if not 0 <= va < 1 << 64:
            raise InvalidAddressError("linear address %#x does not fit in 64 bits" % va,
                                      address=va)
        return va

    # -- translation ----------------------------------------------------------------------

    def _translation(self, va: int) -> Translation:
        return self._build(self._walker.translate(va))

    def _build(self, d: Tuple[int, ...]) -> Translation:
        mode, names = self.mode, LEVEL_NAMES[self.mode]
        steps = []
        for i in range(d[_T_STEPS]):
            level = self.levels - i
            value, address = d[_T_VALUE[i]], d[_T_ADDR[i]]
            entry = PagingEntry.decode(value, mode, level, self.maxphyaddr, self.pat,
                                       self.pse, self.nxe, address)
            steps.append(WalkStep(level, names[level], d[_T_INDEX[i]], address, value, entry))
        reason = d[_T_REASON]
        va = d[_T_VA]
        fail = d[_T_FAIL]
        if reason == _w.REASON_OK:
            rights = d[_T_RIGHTS]
            return Translation(va, d[_T_PA], d[_T_SIZE], bool(rights & _w.RIGHT_WRITABLE),
                               bool(rights & _w.RIGHT_USER), bool(rights & _w.RIGHT_NX),
                               tuple(steps), None, _w.REASON_TEXT[reason], None,
                               PteAnomaly(d[_T_ANOM]), mode, self.wp, self.cr3)
        error = self._error_text(va, reason, fail, steps)
        return Translation(va, None, None, None, None, None, tuple(steps), error,
                           _w.REASON_TEXT.get(reason, "unknown"),
                           fail if reason in (_w.REASON_NOT_PRESENT, _w.REASON_NOT_IN_IMAGE,
                                              _w.REASON_RESERVED) else None,
                           PteAnomaly(d[_T_ANOM]), mode, self.wp, self.cr3)

    def _error_text(self, va: int, reason: int, level: int, steps: List[WalkStep]) -> str:
        names = LEVEL_NAMES[self.mode]
        if reason == _w.REASON_NON_CANONICAL:
            return ("not canonical: under %s paging bits 63:%d must all equal bit %d"
                    % (self.mode.value, self.va_bits - 1, self.va_bits - 1))
        if reason == _w.REASON_TOO_WIDE:
            return ("above 4 GiB: %s paging translates 32-bit linear addresses"
                    % self.mode.value)
        if reason == _w.REASON_NOT_IN_IMAGE:
            if level == 0 or not steps:
                return "not in image: the table CR3 names (physical %#x) is not in the image" % (
                    self.root)
            step = steps[-1]
            return ("not in image: %s[%d] = %#x (level %d) points to a %s at physical %#x "
                    "that is not in the image" % (
                        step.name, step.index, step.value, level,
                        _TABLE_NAMES[names[level - 1]], step.entry.frame))
        step = steps[-1]
        if reason == _w.REASON_NOT_PRESENT:
            return "not present: %s[%d] at %#x = %#x (level %d)" % (
                step.name, step.index, step.address, step.value, level)
        if reason == _w.REASON_RESERVED:
            return ("reserved bits set: %s[%d] = %#x (level %d) has reserved bits %#x; the "
                    "processor faults (#PF with RSVD)" % (
                        step.name, step.index, step.value, level, step.entry.reserved_bits))
        return "not mapped (reason %d)" % reason

    def translate(self, va: int) -> Translation:
        """Walk the page tables for one linear address.

        An address that is simply not mapped gives a Translation whose ``pa``
        is None and ``error`` says why (:meth:`Translation.check` raises).

        Raises:
            InvalidAddressError: the address is not canonical (IA-32e paging)
                or is above 4 GiB (32-bit and PAE paging).
        """
        va = self._check_address(va)
        t = self._translation(va)
        if t.reason in (_w.REASON_TEXT[_w.REASON_NON_CANONICAL],
                        _w.REASON_TEXT[_w.REASON_TOO_WIDE]):
            raise InvalidAddressError("linear address %#x is %s" % (va, t.error), address=va)
        return t

    def translate_many(self, vas: Any) -> TranslationBatch:
        """Translate many addresses in one C call.

        Args:
            vas: an iterable of ints, or a buffer of native uint64 (``array('Q')``,
                read without a copy).

        Returns:
            a lazy sequence of :class:`Translation` (non-canonical addresses
            give a Translation whose error says so; nothing is raised).
        """
        rows, source = self._walker.translate_many(vas)
        return TranslationBatch(rows, source, lambda i, _row: self._translation(source[i]))

    def vtop(self, va: int) -> int:
        """The physical address of va. Raises InvalidAddressError when not mapped."""
        return self.translate(va).check().pa

    # -- memory ----------------------------------------------------------------------------

    def read_available(self, va: int, n: int) -> Tuple[bytes, Optional[InvalidAddressError]]:
        """Read up to n bytes; return them and, when some are missing, the error
        that stopped the read (not raised)."""
        va = self._check_address(va)
        if not isinstance(n, int) or n < 0:
            raise DecodeError("read: length %r is not a non-negative integer" % (n,))
        if n and va + n > self.top:
            raise InvalidAddressError("reading %d bytes at %#x runs past the top of the %s "
                                      "linear address space" % (n, va, self.mode.value),
                                      address=va)
        data, failure = self._walker.read_virtual(va, n)
        if failure is None:
            return data, None
        t = self._build(failure)
        at = va + len(data)
        if t.pa is None:
            return data, InvalidAddressError("%#x: %s" % (at, t.error), address=at,
                                             level=t.level, entry=t.failing_entry)
        return data, InvalidAddressError(
            "%#x maps physical %#x, which is not in the image" % (at, t.pa), address=at,
            level=None, entry=t.path[-1].value if t.path else None)

    def read(self, va: int, n: int) -> bytes:
        """n bytes of linear memory at va.

        Raises:
            InvalidAddressError: some byte is not mapped, or its physical memory
                is not in the image; ``address`` is the first such byte.
        """
        data, error = self.read_available(va, n)
        if error is not None:
            raise error
        return data

    # -- enumeration -----------------------------------------------------------------------

    def _bounds(self, start: int, end: Optional[int]) -> Tuple[int, int]:
        top = self.top
        end = top if end is None else end
        for value, what in ((start, "start"), (end, "end")):
            if not isinstance(value, int) or not 0 <= value <= top:
                raise DecodeError("range %s %r is outside 0..%#x" % (what, value, top))
        if start >= end:
            raise DecodeError("empty range %#x-%#x" % (start, end))
        return start, end - 1

    def _position(self, va: int) -> int:
        """Where va lies in the walk order (the address without sign extension)."""
        return va & ((1 << self.va_bits) - 1)

    def mappings(self, start: int = 0, end: Optional[int] = None, chunk: int = 16384,
                 merge: str = "contiguous", max_entries: int = DEFAULT_MAX_ENTRIES,
                 progress: Optional[Callable[[float], None]] = None) -> "MappingStream":
        """Every mapped range in [start, end), merged, in address order.

        Args:
            start, end: the linear range (end exclusive; None: the top of the space).
            chunk: ranges per C call (the walk resumes where the last one stopped).
            merge: ``"contiguous"``: adjacent pages merge when their physical
                addresses follow each other and rights and page size are equal;
                ``"rights"``: when R/W and U/S are equal (QEMU's ``info mem``;
                ``pa``, ``nx`` and ``page_size`` are then those of the first page).
            max_entries: stop (with :class:`WalkLimitError`) after reading this
                many entries: tables that alias each other can describe more
                mappings than any walk should visit.
            progress: called after each chunk with the fraction of the range walked.

        Raises:
            DecodeError: a bad range or merge rule (raised at once).
            WalkLimitError: max_entries was reached (raised by the iterator,
                after every range found so far).
        """
        if merge not in ("contiguous", "rights"):
            raise DecodeError("merge rule %r is neither 'contiguous' nor 'rights'" % (merge,))
        if not isinstance(chunk, int) or chunk < 1:
            raise DecodeError("chunk %r is not a positive integer" % (chunk,))
        first, last = self._bounds(start, end)
        cursor = self._walker.cursor(first, last, max_entries)
        return MappingStream(cursor, self._stream(cursor, chunk, merge == "rights", progress))

    def _stream(self, cursor: "_w.Cursor", chunk: int, merge_rights: bool,
                progress: Optional[Callable[[float], None]]) -> Iterator[Mapping]:
        lo = self._position(cursor.first)
        span = max(self._position(cursor.last) - lo + 1, 1)
        record = _w.MAPPING_RECORD
        while True:
            # Unpack the chunk at once: the walker reuses its output array.
            rows = list(record.iter_unpack(self._walker.mappings(cursor, chunk, merge_rights)))
            for d in rows:
                yield _mapping(d)
            if progress is not None:
                progress(1.0 if cursor.done else
                         min(max(self._position(cursor.next_va) - lo, 0) / span, 1.0))
            if cursor.done:
                return
            if cursor.capped and not cursor.pending:
                raise WalkLimitError(
                    "the walk stopped after reading %d paging entries (max_entries) at "
                    "linear address %#x: raise the limit to go on" % (
                        cursor.entries_read, cursor.next_va),
                    resume_at=cursor.next_va, entries_read=cursor.entries_read)

    def mapping_table(self, start: int = 0, end: Optional[int] = None,
                      merge: str = "contiguous", max_entries: int = DEFAULT_MAX_ENTRIES,
                      chunk: int = 1 << 16, max_ranges: int = DEFAULT_MAX_RANGES
                      ) -> MappingTable:
        """Every mapped range in [start, end), merged, as one table.

        What :meth:`mappings` streams, gathered in C records: the fast path
        for whole address spaces (a Mapping is built only for the rows a
        caller touches).

        Raises:
            DecodeError: a bad range or merge rule.
            WalkLimitError: max_entries was reached, or more than max_ranges
                ranges were found (40 bytes each).
        """
        if merge not in ("contiguous", "rights"):
            raise DecodeError("merge rule %r is neither 'contiguous' nor 'rights'" % (merge,))
        first, last = self._bounds(start, end)
        cursor = self._walker.cursor(first, last, max_entries)
        parts = []
        held = 0
        capacity = min(chunk, 4096)        # small spaces need no big output array
        while True:
            parts.append(self._walker.mappings(cursor, capacity, merge == "rights", fresh=True))
            held += len(parts[-1]) // _w.MAPPING_RECORD.size
            capacity = chunk
            if cursor.done:
                break
            if held > max_ranges:
                raise WalkLimitError(
                    "the walk found more than %d ranges (max_ranges) before linear address "
                    "%#x: raise the limit, or walk a smaller range" % (max_ranges,
                                                                        cursor.next_va),
                    resume_at=cursor.next_va, entries_read=cursor.entries_read)
            if cursor.capped and not cursor.pending:
                raise WalkLimitError(
                    "the walk stopped after reading %d paging entries (max_entries) at "
                    "linear address %#x: raise the limit to go on" % (
                        cursor.entries_read, cursor.next_va),
                    resume_at=cursor.next_va, entries_read=cursor.entries_read)
        rows = parts[0] if len(parts) == 1 else memoryview(b"".join(parts))
        return MappingTable(rows, cursor.entries_read, cursor.tables_missing,
                            cursor.reserved_skipped)

    def physical_to_virtual(self, pa: int, max_entries: int = DEFAULT_MAX_ENTRIES,
                            max_aliases: int = DEFAULT_MAX_ALIASES) -> List[Alias]:
        """Every linear address that maps physical address pa, in address order.

        Raises:
            WalkLimitError: max_entries was reached, or more than max_aliases
                addresses map pa (tables that alias themselves).
        """
        if not isinstance(pa, int) or not 0 <= pa < 1 << 64:
            raise DecodeError("physical address %r does not fit in 64 bits" % (pa,))
        cursor = self._walker.cursor(0, (1 << 64) - 1, max_entries)
        result: List[Alias] = []
        i_start, i_pa, i_ps, i_rights = _M["start"], _M["pa"], _M["page_size"], _M["rights"]
        while True:
            rows = self._walker.physical_to_virtual(pa, cursor, 4096)
            for d in _w.MAPPING_RECORD.iter_unpack(rows):
                rights = d[i_rights]
                result.append(Alias(d[i_start] + (pa - d[i_pa]), pa, d[i_start], d[i_ps],
                                    bool(rights & _w.RIGHT_WRITABLE),
                                    bool(rights & _w.RIGHT_USER), bool(rights & _w.RIGHT_NX)))
            if cursor.done:
                return result
            if len(result) > max_aliases:
                raise WalkLimitError(
                    "more than %d linear addresses map physical %#x (max_aliases); the "
                    "lookup stopped at linear address %#x" % (max_aliases, pa, cursor.next_va),
                    resume_at=cursor.next_va, entries_read=cursor.entries_read)
            if cursor.capped:
                raise WalkLimitError(
                    "the reverse lookup stopped after reading %d paging entries at linear "
                    "address %#x (max_entries)" % (cursor.entries_read, cursor.next_va),
                    resume_at=cursor.next_va, entries_read=cursor.entries_read)

