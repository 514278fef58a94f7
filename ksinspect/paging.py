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
import enum
import mmap
from array import array
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Callable, Iterator, List, Optional, Tuple

from ._native import walk as _w
from ._native.paging import PAGING_OPTION_NXE as _NXE
from ._native.paging import PAGING_OPTION_PSE as _PSE
from ._native.paging import PAGING_OPTION_WP as _WP
from ._native.paging import PAGING_MODES
from .errors import DecodeError, InvalidAddressError, NoCpuStateError, WalkLimitError
from .views.html import translation_html
from .views.walk_svg import walk_svg
from .x86 import DecodedBatch, flag_names
from .modes import LEVEL_NAMES, MAXPHYADDR_RANGE, PagingMode, size_text
from .x86.paging_entry import PAT_DEFAULT, PagingEntry, PteAnomaly, paging_mode

__all__ = ["AddressSpace", "Alias", "Mapping", "MappingStream", "MappingTable", "Translation",
           "TranslationBatch", "WalkLimitError", "WalkReason", "WalkStep", "DEFAULT_MAX_ENTRIES",
           "DEFAULT_MAX_RANGES", "DEFAULT_MAX_ALIASES", "UNMAPPED"]

# Entries an enumeration may read before it stops: the walk of the shipped
# Linux 6.1 guest reads 1.1 million; a process with 100 GiB resident in 4 KiB
# pages needs about 25 million. Tables that map themselves everywhere reach
# the cap in about 5 s (2^30 took 40 s on the CI machine).
DEFAULT_MAX_ENTRIES = 1 << 27
# One read holds its bytes in memory; a C output array holds chunk rows of
# 40 bytes: sizes past these are bugs or hostile, refused before allocating.
MAX_VIRTUAL_READ = 1 << 30
MAX_CHUNK = 1 << 22
# Results a gathering call may hold (memory stays bounded whatever the tables
# say: every entry read can add a range). A real Linux 6.1 guest has 65,774
# ranges; one physical page has a handful of aliases.
DEFAULT_MAX_RANGES = 1 << 22
DEFAULT_MAX_ALIASES = 1 << 17
# 4 KiB pages an AddressSpace remembers translations of (about 100 bytes
# each); when full it starts again. The walk is pure over an image, so a
# remembered page is exact for the life of the space.
PAGE_CACHE_PAGES = 1 << 17
# What physical_addresses() writes for an address that is not mapped.
UNMAPPED = (1 << 64) - 1
CR0_WP = 1 << 16


class WalkReason(str, enum.Enum):
    """Why a walk stopped (``Translation.reason``); the values are the C core's
    phrases, so a reason compares equal to its text (``"not present"``)."""

    MAPPED = _w.REASON_TEXT[_w.REASON_OK]
    NOT_PRESENT = _w.REASON_TEXT[_w.REASON_NOT_PRESENT]
    NOT_IN_IMAGE = _w.REASON_TEXT[_w.REASON_NOT_IN_IMAGE]
    RESERVED = _w.REASON_TEXT[_w.REASON_RESERVED]
    NON_CANONICAL = _w.REASON_TEXT[_w.REASON_NON_CANONICAL]
    TOO_WIDE = _w.REASON_TEXT[_w.REASON_TOO_WIDE]

    __str__ = str.__str__

    @property
    def invalid_address(self) -> bool:
        """The address itself cannot be translated in this mode (not canonical,
        or above 4 GiB in a 32-bit mode): no table was read."""
        return self in (WalkReason.NON_CANONICAL, WalkReason.TOO_WIDE)


_REASONS = {code: WalkReason(text) for code, text in _w.REASON_TEXT.items()}
# Reasons whose fail_level names the level where the walk stopped.
_LEVELLED = (_w.REASON_NOT_PRESENT, _w.REASON_NOT_IN_IMAGE, _w.REASON_RESERVED)

_T = {name: i for i, name in enumerate(_w.TRANSLATION_FIELDS)}
_T_ADDR = [_T["entry_address[%d]" % i] for i in range(5)]
_T_VALUE = [_T["entry_value[%d]" % i] for i in range(5)]
_T_INDEX = [_T["index[%d]" % i] for i in range(5)]
_T_VA, _T_PA, _T_SIZE = _T["va"], _T["pa"], _T["page_size"]
_T_REASON, _T_RIGHTS, _T_ANOM = _T["reason"], _T["rights"], _T["anomalies"]
_T_STEPS, _T_FAIL = _T["steps"], _T["fail_level"]
_P = {name: i for i, name in enumerate(_w.BRIEF_FIELDS + ("base_offset",))}
_P_PA, _P_OFFSET, _P_REASON = _P["pa"], _P["base_offset"], _P["reason"]
_P_SHIFT, _P_RIGHTS, _P_ANOM = _P["page_shift"], _P["rights"], _P["anomalies"]
_M = {name: i for i, name in enumerate(_w.MAPPING_FIELDS)}
_W, _U, _X = _w.RIGHT_WRITABLE, _w.RIGHT_USER, _w.RIGHT_NX

# A remembered 4 KiB page is one int, the C core's packed walk
# (ksi_translate_packed): bits 51:12 its physical address, 1:0 the page size
# (_PG_SIZES), 4:2 the rights, 8:5 the anomalies, 11:9 the reason (0 when
# mapped); and from bit 64 up where the page lies in the image buffer:
# 0 not known yet, 1 not wholly in it (read through C), else offset + 2.
_PG_FRAME = 0x000F_FFFF_FFFF_F000
_PG_SIZES = (1 << 12, 1 << 21, 1 << 22, 1 << 30)
_PG_CODE = {size: code for code, size in enumerate(_PG_SIZES)}
_PG_SHIFT_CODE = [_PG_CODE.get(1 << shift, 0) for shift in range(64)]
_REASON_OK = _w.REASON_OK
_PK_REASON = 7 << 9


def _page_record(pa: int, page_size: int, rights: int, anomalies: int, offset: int) -> int:
    return ((pa & _PG_FRAME) | _PG_CODE[page_size] | rights << 2 | (anomalies & 15) << 5
            | (offset + 2 if offset >= 0 else 1) << 64)


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

    def __repr__(self) -> str:
        return "WalkStep(%s[%d] at %#x = %#x)" % (self.name, self.index, self.address,
                                                  self.value)


_tuple_new = tuple.__new__


class Translation(tuple):
    """The walk of one linear address (SDM vol. 3A §4.3-4.6).

    ``pa`` is None when the address is not mapped; then ``error`` says why
    and ``reason`` names it (a :class:`WalkReason`), ``level`` is where the
    walk stopped (0 for the table CR3 names), and the rights and page size
    are None. ``writable``, ``user`` and ``nx`` are the effective rights,
    combined across the levels as the processor combines them; ``writable``
    is what user-mode writes obey, and :attr:`supervisor_writable` applies
    CR0.WP.

    Built cheaply, from the 4 KiB page the space remembers: ``va`` and ``pa``
    are stored, the rest is read from that page, and the walk path (every
    entry, decoded) is computed each time it is asked for (the walk is pure).
    """

    __slots__ = ()

    def __new__(cls, space: "AddressSpace", va: int, page: Optional[int],
                walk: Optional[tuple] = None) -> "Translation":
        pa = None if page is None else (page & _PG_FRAME) | (va & 0xFFF)
        return _tuple_new(cls, (va, pa, page, space, walk))

    va = property(itemgetter(0), doc="the linear address")
    pa = property(itemgetter(1), doc="its physical address; None when not mapped")
    _page = property(itemgetter(2))
    _space = property(itemgetter(3))

    # -- what the walk found --------------------------------------------------------

    def _fields(self) -> tuple:
        """The full ksi_translation record (walked again when not kept: the walk is pure)."""
        walk = self[4]
        return walk if walk is not None else self[3]._walker.translate(self[0])

    @property
    def page_size(self) -> Optional[int]:
        page = self[2]
        return None if page is None else _PG_SIZES[page & 3]

    @property
    def writable(self) -> Optional[bool]:
        page = self[2]
        return None if page is None else bool(page >> 2 & _W)

    @property
    def user(self) -> Optional[bool]:
        page = self[2]
        return None if page is None else bool(page >> 2 & _U)

    @property
    def nx(self) -> Optional[bool]:
        page = self[2]
        return None if page is None else bool(page >> 2 & _X)

    @property
    def anomalies(self) -> PteAnomaly:
        page = self[2]
        return PteAnomaly(page >> 5 & 15 if page is not None else self._fields()[_T_ANOM])

    @property
    def reason(self) -> WalkReason:
        if self._page is not None:
            return WalkReason.MAPPED
        return _REASONS.get(self._fields()[_T_REASON], WalkReason.NOT_PRESENT)

    @property
    def level(self) -> Optional[int]:
        """The level where the walk stopped (0: the table CR3 names); None when mapped."""
        if self._page is not None:
            return None
        d = self._fields()
        return d[_T_FAIL] if d[_T_REASON] in _LEVELLED else None

    @property
    def path(self) -> Tuple[WalkStep, ...]:
        """Every entry read, top level first, decoded."""
        return self[3]._steps(self._fields())

    @property
    def error(self) -> Optional[str]:
        if self._page is not None:
            return None
        d = self._fields()
        return self[3]._error_text(self[0], d[_T_REASON], d[_T_FAIL], self[3]._steps(d))

    mode = property(lambda self: self._space.mode)
    wp = property(lambda self: self._space.wp)
    cr3 = property(lambda self: self._space.cr3)

    @property
    def mapped(self) -> bool:
        return self._page is not None

    @property
    def supervisor_writable(self) -> Optional[bool]:
        """Whether supervisor-mode writes succeed: R/W everywhere, or CR0.WP=0 (§4.6.1)."""
        if self._page is None:
            return None
        return bool(self.writable) or not self.wp

    @property
    def leaf(self) -> Optional[PagingEntry]:
        """The entry that maps the page (None when not mapped)."""
        return self.path[-1].entry if self._page is not None else None

    @property
    def failing_entry(self) -> Optional[int]:
        """The value of the entry at the level where the walk stopped, if one was read."""
        level = self.level
        for step in self.path:
            if step.level == level:
                return step.value
        return None

    def check(self) -> "Translation":
        """Return self when mapped; else raise the InvalidAddressError that describes why."""
        if self._page is None:
            if self.reason.invalid_address:
                raise InvalidAddressError("linear address %#x is %s" % (self.va, self.error),
                                          address=self.va)
            raise InvalidAddressError("%#x: %s" % (self.va, self.error), address=self.va,
                                      level=self.level, entry=self.failing_entry)
        return self

    # -- comparison and display -----------------------------------------------------

    def _key(self) -> tuple:
        return (self.mode, self.cr3, self.wp, self.va, self.pa, self.page_size, self.writable,
                self.user, self.nx, self.reason, self.level, int(self.anomalies),
                tuple((s.level, s.index, s.address, s.value) for s in self.path))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Translation):
            return NotImplemented
        return self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self):
        raise TypeError("a Translation belongs to its AddressSpace: pickle to_dict() instead")

    def __repr__(self) -> str:
        if self._page is None:
            return "Translation(va=%#x, pa=None, reason=%r)" % (self.va, self.reason.value)
        return "Translation(va=%#x, pa=%#x, page_size=%#x, rights=%r)" % (
            self.va, self.pa, self.page_size, _rights_text(self.writable, self.user, self.nx))

    def to_dict(self) -> dict:
        return {"va": self.va, "pa": self.pa, "page_size": self.page_size,
                "writable": self.writable, "user": self.user, "nx": self.nx,
                "path": [step.to_dict() for step in self.path], "error": self.error}

    def __str__(self) -> str:
        if self._page is None:
            return "%#x not mapped: %s" % (self.va, self.error)
        return "%#x -> %#x (%s page, %s)" % (self.va, self.pa, size_text(self.page_size),
                                             _rights_text(self.writable, self.user, self.nx))

    def explain(self) -> str:
        """The walk step by step, with the linear-address fields that index each table."""
        facts = self.mode.facts
        lines = [str(self), "Source: %s" % facts.walk_source, ""]
        for step in self.path:
            level = facts.level(step.level)
            lines.append("  %-5s index = linear bits %d:%d = %d" % (
                step.name, level.shift + level.bits - 1, level.shift, step.index))
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
        return walk_svg(self)

    def _repr_html_(self) -> str:
        return translation_html(self)


_unpack_mapping = _w.MAPPING_RECORD.unpack_from
_M_SIZE = _w.MAPPING_RECORD.size


def _field(index: int) -> property:
    return property(lambda self: _unpack_mapping(self[0], self[1] * _M_SIZE)[index])


class Mapping(tuple):
    """A range of mapped linear addresses [start, end) (what QEMU's ``info mem``
    prints, plus NX, the physical address of ``start`` and the page size).

    A view of one C ``ksi_mapping`` record (a view of the walk's output
    array and the record's row in it): a whole walk's ranges are built in C
    without running Python code per range, and a field is read from the
    record when asked for. Build one by hand with ``Mapping(start, end, size, writable, user,
    nx, pa, page_size, pages=1)``.
    """

    __slots__ = ()

    def __new__(cls, start: int, end: int, size: int, writable: bool, user: bool, nx: bool,
                pa: int, page_size: int, pages: int = 1) -> "Mapping":
        if end != start + size:
            raise DecodeError("mapping %#x-%#x: size %#x does not match" % (start, end, size))
        rights = (_W if writable else 0) | (_U if user else 0) | (_X if nx else 0)
        record = _w.MAPPING_RECORD.pack(start, size, pa, page_size, rights, pages)
        return _tuple_new(cls, (memoryview(record), 0))

    start = _field(_M["start"])
    size = _field(_M["size"])
    pa = _field(_M["pa"])
    page_size = _field(_M["page_size"])
    rights = _field(_M["rights"])
    pages = _field(_M["pages"])

    @property
    def end(self) -> int:
        d = _unpack_mapping(self[0], self[1] * _M_SIZE)
        return d[_M_START] + d[_M_LENGTH]

    writable = property(lambda self: bool(self.rights & _W))
    user = property(lambda self: bool(self.rights & _U))
    nx = property(lambda self: bool(self.rights & _X))

    def _record(self) -> tuple:
        return _unpack_mapping(self[0], self[1] * _M_SIZE)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self._record() == other._record()

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self._record())

    def __reduce__(self):
        return (Mapping, (self.start, self.end, self.size, self.writable, self.user, self.nx,
                          self.pa, self.page_size, self.pages))

    def to_dict(self) -> dict:
        start, size, pa, page_size, rights, _pages = _unpack_mapping(self[0], self[1] * _M_SIZE)
        return {"start": start, "end": start + size, "size": size,
                "writable": bool(rights & _W), "user": bool(rights & _U),
                "nx": bool(rights & _X), "pa": pa, "page_size": page_size}

    def __str__(self) -> str:
        return "%#x-%#x %#x %s -> %#x (%s pages)" % (
            self.start, self.end, self.size, _rights_text(self.writable, self.user, self.nx),
            self.pa, size_text(self.page_size))

    def __repr__(self) -> str:
        return ("Mapping(start=%#x, end=%#x, size=%#x, writable=%s, user=%s, nx=%s, pa=%#x, "
                "page_size=%#x, pages=%d)" % (self.start, self.end, self.size, self.writable,
                                              self.user, self.nx, self.pa, self.page_size,
                                              self.pages))


_M_START, _M_LENGTH = _M["start"], _M["size"]
assert tuple(_w.MAPPING_FIELDS[:2]) == ("start", "size")


def _mappings_of(rows: memoryview) -> Iterator[Mapping]:
    """A Mapping per ksi_mapping record of rows, built in C (rows must stay
    unchanged while a Mapping of it lives)."""
    views = _w.record_views(Mapping, rows, _M_SIZE)
    if views is not None:
        return iter(views)
    return map(_tuple_new, repeat(Mapping), zip(repeat(rows), range(len(rows) // _M_SIZE)))


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
            self.va, size_text(self.page_size), self.page_start,
            _rights_text(self.writable, self.user, self.nx))

    def __repr__(self) -> str:
        return ("Alias(va=%#x, pa=%#x, page_start=%#x, page_size=%#x, writable=%s, user=%s, "
                "nx=%s)" % (self.va, self.pa, self.page_start, self.page_size, self.writable,
                            self.user, self.nx))


def _check_intact(memory) -> None:
    """A mapped image file that shrank would kill the process with SIGBUS
    inside the C walk: PhysicalMemory.check_intact raises first."""
    check = getattr(memory, "check_intact", None)
    if check is not None:
        check()


class MappingTable(DecodedBatch):
    """Every merged range of a walk, held as the C records
    (:meth:`AddressSpace.mapping_table`): a sequence of :class:`Mapping`
    built on access; ``column(name)`` reads ``start``, ``size``, ``pa``,
    ``page_size``, ``rights`` or ``pages`` without building any.
    Attributes ``entries_read``, ``tables_missing`` and ``reserved_skipped``
    are the walk's counters."""

    def __init__(self, rows: memoryview, entries_read: int, tables_missing: int,
                 reserved_skipped: int):
        super().__init__(rows, _w.MAPPING_FIELDS, _w.MAPPING_RECORD,
                         lambda i, _d: _tuple_new(Mapping, (rows, i)))
        self.entries_read = entries_read
        self.tables_missing = tables_missing
        self.reserved_skipped = reserved_skipped

    def __iter__(self) -> Iterator[Mapping]:
        return _mappings_of(self._rows)


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
    processor would fault on their reserved bits) and ``done``.

    ``iter()`` of it is the C-level chain of the walk's chunks, so a loop
    over it runs no Python code per range."""

    def __init__(self, cursor: "_w.Cursor", iterator: Iterator[Mapping]):
        self._cursor = cursor
        self._iterator = iterator

    def __iter__(self) -> Iterator[Mapping]:
        return self._iterator

    def __next__(self) -> Mapping:
        return next(self._iterator)

    entries_read = property(lambda self: self._cursor.entries_read)
    tables_missing = property(lambda self: self._cursor.tables_missing)
    reserved_skipped = property(lambda self: self._cursor.reserved_skipped)
    done = property(lambda self: self._cursor.done)
    next_va = property(lambda self: self._cursor.next_va)


# What an image without CPU state needs instead, by AddressSpace's keyword.
_WHAT_TO_GIVE = {"cr3": "CR3", "mode": "the paging mode (32, pae, 4level or 5level)"}


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
        NoCpuStateError: no CPU state and no cr3 / mode (``missing`` names them).
        DecodeError: a mode that contradicts the CPU state, or a value out of range.
        InvalidAddressError: the table CR3 names is not in the image.
        ImageFormatError: the memory's run table is broken.
    """

    def __init__(self, memory: Any, cr3: Optional[int] = None, mode: Any = None,
                 maxphyaddr: int = 52, pat: Optional[int] = None, wp: Optional[bool] = None,
                 nxe: Optional[bool] = None, pse: Optional[bool] = None,
                 ignore_reserved: bool = False):
        cpu = getattr(memory, "cpu", None)
        cpu_mode = cpu.paging_mode() if cpu is not None else None
        if cpu is None and (mode is None or cr3 is None):
            missing = [n for n, v in (("cr3", cr3), ("mode", mode)) if v is None]
            raise NoCpuStateError("the image carries no CPU state: give %s" % " and ".join(
                _WHAT_TO_GIVE[n] for n in missing), missing)
        if mode is None:
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
            cr3 = cpu.cr3
        low, high = MAXPHYADDR_RANGE
        if not isinstance(maxphyaddr, int) or not low <= maxphyaddr <= high:
            raise DecodeError("MAXPHYADDR %r is outside %d..%d" % (maxphyaddr, low, high))
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
        self.va_bits = mode.facts.va_bits
        options = ((_PSE if self.pse else 0) | (_NXE if self.nxe else 0)
                   | (_WP if self.wp else 0)
                   | (_w.OPTION_IGNORE_RESERVED if self.ignore_reserved else 0))
        missing = (InvalidAddressError,)
        code = PAGING_MODES[mode.value]
        self._walker = _w.Walker(memory, cr3, code, maxphyaddr, self.pat, options, missing)
        self.root = _w.table_root(cr3, code)
        table = 32 if mode is PagingMode.PAE else 4096
        if self._walker.phys_read(self.root, table)[1] != table:
            raise InvalidAddressError(
                "CR3 %#x names a %s at physical %#x that is not in the image%s" % (
                    cr3, mode.facts.level(self.levels).table_name, self.root,
                    " " + memory.name if isinstance(getattr(memory, "name", None), str)
                    else ""),
                address=self.root, level=self.levels)
        # Translations are remembered by 4 KiB page only over a mapped image
        # (its bytes cannot change); a source read through a callback (a live
        # process) is walked afresh on every call.
        self._cacheable = self._walker.mapped_image
        self._pages: dict = {}
        self._page_of = self._pages.get      # bound once: the hit path's only lookup
        self._page_lookup = self._walker.page_lookup()
        self._packed = self._walker.packed_lookup()
        # The fast read slices the buffer itself: only types whose slices are bytes.
        buffer = memory.buffer if self._cacheable else None
        self._buffer = buffer if isinstance(buffer, (bytes, mmap.mmap)) else None
        # The hot path in C (ksinspect._percall), when built: its translate and
        # read shadow the Python methods below, which give the same results.
        self._fast = None
        watched = getattr(memory, "watched_file", None)
        if self._cacheable and (watched is not None or
                                getattr(memory, "check_intact", None) is None):
            self._fast = self._walker.page_cache(
                PAGE_CACHE_PAGES, watched() if watched is not None else None, Translation,
                self, self._translate_walked, self._read_checked)
        if self._fast is not None:
            self.translate = self._fast.translate
            self.read = self._fast.read

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

    def _steps(self, d: Tuple[int, ...]) -> Tuple[WalkStep, ...]:
        """The decoded walk path of one ksi_translation record."""
        mode, names = self.mode, LEVEL_NAMES[self.mode]
        steps = []
        for i in range(d[_T_STEPS]):
            level = self.levels - i
            value, address = d[_T_VALUE[i]], d[_T_ADDR[i]]
            entry = PagingEntry.decode(value, mode, level, self.maxphyaddr, self.pat,
                                       self.pse, self.nxe, address)
            steps.append(WalkStep(level, names[level], d[_T_INDEX[i]], address, value, entry))
        return tuple(steps)

    def _from_walk(self, d: Tuple[int, ...]) -> Translation:
        """A Translation from a full ksi_translation record (kept: it is the path)."""
        page = None
        if d[_T_REASON] == _w.REASON_OK:
            page = _page_record(d[_T_PA], d[_T_SIZE], d[_T_RIGHTS], d[_T_ANOM], -1)
        return Translation(self, d[_T_VA], page, d)

    def _error_text(self, va: int, reason: int, level: int, steps: Tuple[WalkStep, ...]) -> str:
        facts = self.mode.facts
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
                        facts.level(level - 1).table_name, step.entry.frame))
        step = steps[-1]
        if reason == _w.REASON_NOT_PRESENT:
            return "not present: %s[%d] at %#x = %#x (level %d)" % (
                step.name, step.index, step.address, step.value, level)
        if reason == _w.REASON_RESERVED:
            return ("reserved bits set: %s[%d] = %#x (level %d) has reserved bits %#x; the "
                    "processor faults (#PF with RSVD)" % (
                        step.name, step.index, step.value, level, step.entry.reserved_bits))
        return "not mapped (reason %d)" % reason

    def _remember(self, va: int) -> Optional[int]:
        """Walk va once and remember its 4 KiB page with where it lies in the
        image buffer (the read path); None when va is not mapped."""
        _check_intact(self.memory)        # the walk touches the mapped file
        d = self._page_lookup(va)
        if d[_P_REASON] != _REASON_OK:
            return None
        offset = d[_P_OFFSET]
        where = 1 if offset == UNMAPPED or self._buffer is None else offset + 2
        page = ((d[_P_PA] & _PG_FRAME) | _PG_SHIFT_CODE[d[_P_SHIFT]] | d[_P_RIGHTS] << 2
                | (d[_P_ANOM] & 15) << 5 | where << 64)
        pages = self._pages
        if len(pages) >= PAGE_CACHE_PAGES:
            pages.clear()
        pages[va >> 12] = page
        return page

    def translate(self, va: int) -> Translation:
        """Walk the page tables for one linear address.

        An address that is not mapped, not canonical (IA-32e paging) or above
        4 GiB (32-bit and PAE paging) gives a Translation whose ``pa`` is None,
        whose ``reason`` says which and ``error`` why; :meth:`Translation.check`
        raises the matching :class:`InvalidAddressError`.

        Raises:
            DecodeError: va is not an integer.
            InvalidAddressError: va does not fit in 64 bits.
        """
        # The hit path: a page walked before (va.__class__ keeps bools and
        # int subclasses on the checked path below).
        page = self._page_of(va >> 12) if va.__class__ is int else None
        if page is not None:
            return _tuple_new(Translation, (va, (page & _PG_FRAME) | (va & 0xFFF), page, self,
                                            None))
        if va.__class__ is not int or not 0 <= va <= UNMAPPED:
            va = self._check_address(va)
        if self._cacheable:
            # One C call returning the walk packed in an int (no struct to unpack).
            _check_intact(self.memory)    # the walk touches the mapped file
            page = self._packed(va)
            if not page & _PK_REASON:
                pages = self._pages
                if len(pages) >= PAGE_CACHE_PAGES:
                    pages.clear()
                pages[va >> 12] = page
                return _tuple_new(Translation, (va, (page & _PG_FRAME) | (va & 0xFFF), page,
                                                self, None))
        # Not mapped (or a live source): the full walk, which says why.
        return self._from_walk(self._walker.translate(va))

    def _translate_walked(self, va: Any) -> Translation:
        """translate() where no remembered page answers (the C hot path's
        fallback): the checks, then the full walk, which says why."""
        if va.__class__ is not int or not 0 <= va <= UNMAPPED:
            va = self._check_address(va)
        if self._cacheable:
            _check_intact(self.memory)    # the walk touches the mapped file
        return self._from_walk(self._walker.translate(va))

    @property
    def remembered_pages(self) -> int:
        """How many 4 KiB pages the space remembers the translation of."""
        return self._fast.pages if self._fast is not None else len(self._pages)

    def translate_many(self, vas: Any) -> TranslationBatch:
        """Translate many addresses in one C call.

        Args:
            vas: an iterable of ints, or a buffer of native uint64 (``array('Q')``,
                a numpy uint64 array: read without a copy).

        Returns:
            a lazy sequence of :class:`Translation` (an address that cannot be
            translated -- not mapped, not canonical, above 4 GiB in a 32-bit
            mode -- gives a Translation that says why, as :meth:`translate`).

        Raises:
            DecodeError: an item is not an integer.
            InvalidAddressError: an integer does not fit in 64 bits (as
                :meth:`translate` raises for it).
        """
        rows, source = self._walker.translate_many(vas)
        walk = self._walker.translate
        # A row's Translation comes from its own full walk (not the page cache).
        return TranslationBatch(rows, source,
                                lambda i, _row: self._from_walk(walk(int(source[i]))))

    def physical_addresses(self, vas: Any, out: Any = None) -> Any:
        """The physical address of every linear address, as bare integers in a
        uint64 buffer, in one C call: the zero-copy path for numpy.

        Args:
            vas: a buffer of native uint64 (``array('Q')``, a numpy uint64
                array: read in place) or an iterable of ints.
            out: a writable uint64 buffer at least as long (may be vas
                itself); default a new ``array('Q')``.

        Returns:
            out, holding each address's physical address, or :data:`UNMAPPED`
            (2**64 - 1) where it is not mapped for any reason.
        """
        if out is None:
            count = len(vas) if hasattr(vas, "__len__") else None
            if count is None:
                vas = array("Q", vas)
                count = len(vas)
            out = array("Q", bytes(8 * count))
        return self._walker.translate_pas(vas, out, UNMAPPED)

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
        if n > MAX_VIRTUAL_READ:
            raise DecodeError("read: %d bytes at once is more than the %d one read may take "
                              "(read in pieces)" % (n, MAX_VIRTUAL_READ))
        if n and va + n > self.top:
            raise InvalidAddressError("reading %d bytes at %#x runs past the top of the %s "
                                      "linear address space" % (n, va, self.mode.value),
                                      address=va)
        _check_intact(self.memory)
        data, failure = self._walker.read_virtual(va, n)
        if failure is None:
            return data, None
        t = self._from_walk(failure)
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
        # The hit path: the bytes lie in one remembered 4 KiB page that is in
        # the image; everything else (a miss, a page boundary, a failure) goes
        # through the C read, which says exactly where it stopped.
        if va.__class__ is int and n.__class__ is int:
            page = self._page_of(va >> 12)
            if (page is None or page >> 64 == 0) and self._cacheable and 0 <= n <= 0x1000 \
                    and 0 <= va < self.top:
                page = self._remember(va)
            if page is not None:
                offset = (page >> 64) - 2                  # -1: not wholly in the buffer
                into = va & 0xFFF
                if offset >= 0 and 0 <= n <= 0x1000 - into:
                    _check_intact(self.memory)     # a shrunk file would SIGBUS here
                    return self._buffer[offset + into:offset + into + n]
        return self._read_checked(va, n)

    def _read_checked(self, va: Any, n: Any) -> bytes:
        """read() through C, with every check (and the C hot path's fallback)."""
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
        if not isinstance(chunk, int) or not 1 <= chunk <= MAX_CHUNK:
            raise DecodeError("chunk %r is not a number of ranges in 1..%d" % (chunk, MAX_CHUNK))
        first, last = self._bounds(start, end)
        cursor = self._walker.cursor(first, last, max_entries)
        return MappingStream(cursor, chain.from_iterable(
            self._stream(cursor, chunk, merge == "rights", progress)))

    def _stream(self, cursor: "_w.Cursor", chunk: int, merge_rights: bool,
                progress: Optional[Callable[[float], None]]) -> Iterator[Iterator[Mapping]]:
        """The walk's chunks, each an iterator of Mappings (chained by the caller)."""
        lo = self._position(cursor.first)
        span = max(self._position(cursor.last) - lo + 1, 1)
        size = min(chunk, 256)       # a first chunk soon, so output starts at once
        while True:
            _check_intact(self.memory)
            # A fresh output array per chunk: each Mapping is a view into it.
            yield _mappings_of(self._walker.mappings(cursor, size, merge_rights, fresh=True))
            size = chunk
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
        if not isinstance(chunk, int) or not 1 <= chunk <= MAX_CHUNK:
            raise DecodeError("chunk %r is not a number of ranges in 1..%d" % (chunk, MAX_CHUNK))
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

