"""Build physical memory holding page tables, for every x86 paging mode.

Pure Python and independent of ksinspect's walker: the builder places
tables and entries from the Intel SDM's formats (vol. 3A §4.3 32-bit paging
with PSE and PSE-36, Figure 4-4 / Table 4-4; §4.4 PAE, Figure 4-7; §4.5
4-level and 5-level, Figure 4-11) and records what it placed, so the
expected translation of every mapping comes from its own bookkeeping: the
entries it wrote on the way down, with R/W and U/S AND-ed and XD OR-ed as
§4.6 says.

Typical use::

    b = PageTableBuilder("4level")
    b.map(0xffff888000000000, 0x200000, size=2 << 20, writable=False)
    memory = b.memory()                     # a ksinspect PhysicalMemory
    space = AddressSpace(memory, cr3=b.cr3, mode="4level")
    expected = b.expected(0xffff888000001234)
"""
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

PAGE = 4096
P, RW, US, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 16, 32, 64, 128, 256
NX = 1 << 63

# Per mode: levels top-down as (level, shift, index bits), entry width, VA width.
MODES = {
    "32": {"levels": [(2, 22, 10), (1, 12, 10)], "width": 4, "va_bits": 32},
    "pae": {"levels": [(3, 30, 2), (2, 21, 9), (1, 12, 9)], "width": 8, "va_bits": 32},
    "4level": {"levels": [(4, 39, 9), (3, 30, 9), (2, 21, 9), (1, 12, 9)], "width": 8,
               "va_bits": 48},
    "5level": {"levels": [(5, 48, 9), (4, 39, 9), (3, 30, 9), (2, 21, 9), (1, 12, 9)],
               "width": 8, "va_bits": 57},
}
# Page sizes each mode can map, and the level of the entry that maps them.
LEAF_LEVEL = {
    "32": {4096: 1, 4 << 20: 2},
    "pae": {4096: 1, 2 << 20: 2},
    "4level": {4096: 1, 2 << 20: 2, 1 << 30: 3},
    "5level": {4096: 1, 2 << 20: 2, 1 << 30: 3},
}


@dataclass(frozen=True)
class Expected:
    """What the builder placed for one page: the answer a walker must give."""

    va: int           # the page's linear base (canonical)
    pa: int           # the page's physical base
    page_size: int
    writable: bool
    user: bool
    nx: bool
    path: Tuple[Tuple[int, int, int], ...]   # (level, entry address, entry value), top-down

    def pa_of(self, va: int) -> int:
        return self.pa + (va - self.va)


def canonical(va: int, bits: int) -> int:
    """Sign-extend an IA-32e linear address (48 or 57 bits); 32-bit ones stay."""
    if 32 < bits < 64 and va >> (bits - 1) & 1:
        return va | ((1 << 64) - (1 << bits))
    return va


class PageTableBuilder:
    """Page tables in a sparse physical memory of 4 KiB pages.

    Args:
        mode: "32", "pae", "4level" or "5level".
        table_base: where the first table page goes; later ones follow.
        pdpt_offset: PAE only: the 32-byte PDPT's offset in its page (CR3
            bits 11:5 select it, SDM §4.4.1).
        nxe: whether bit 63 is XD (the walker's EFER.NXE must agree).
    """

    def __init__(self, mode: str = "4level", table_base: int = 0x1000, pdpt_offset: int = 0,
                 nxe: bool = True):
        self.mode = mode
        self.info = MODES[mode]
        self.width = self.info["width"]
        self.nxe = nxe
        self.pages: Dict[int, bytearray] = {}
        self._next = table_base
        self.tables: Dict[int, int] = {}        # table pa -> level
        self.mappings: List[Expected] = []
        root_page = self.alloc()
        self.root = root_page + (pdpt_offset if mode == "pae" else 0)
        self.tables[self.root] = self.info["levels"][0][0]
        self.cr3 = self.root

    # -- physical memory -------------------------------------------------------------

    def alloc(self) -> int:
        """A new zeroed page (for a table); returns its physical address."""
        while self._next in self.pages:
            self._next += PAGE
        pa = self._next
        self.pages[pa] = bytearray(PAGE)
        self._next += PAGE
        return pa

    def write_phys(self, pa: int, data: bytes) -> None:
        """Store bytes at a physical address (pages are created as needed)."""
        for i, byte in enumerate(data):
            page = (pa + i) & ~(PAGE - 1)
            self.pages.setdefault(page, bytearray(PAGE))[(pa + i) - page] = byte

    def read_entry(self, address: int) -> int:
        page = address & ~(PAGE - 1)
        raw = self.pages[page][address - page:address - page + self.width]
        return int.from_bytes(raw, "little")

    def write_entry(self, address: int, value: int) -> None:
        page = address & ~(PAGE - 1)
        self.pages.setdefault(page, bytearray(PAGE))
        self.pages[page][address - page:address - page + self.width] = value.to_bytes(
            self.width, "little")

    def entry_address(self, table: int, index: int) -> int:
        return table + index * self.width

    # -- addresses ---------------------------------------------------------------------

    def indices(self, va: int) -> List[Tuple[int, int]]:
        """(level, index) top-down for a linear address."""
        return [(level, (va >> shift) & ((1 << bits) - 1))
                for level, shift, bits in self.info["levels"]]

    def canonical(self, va: int) -> int:
        return canonical(va, self.info["va_bits"])

    def va_of(self, *indices: int) -> int:
        """The canonical linear address with these indices, top level first."""
        va = 0
        for (level, shift, bits), index in zip(self.info["levels"], indices):
            va |= index << shift
        return self.canonical(va)

    # -- building ------------------------------------------------------------------------

    def _leaf_value(self, pa: int, size: int, level: int, writable: bool, user: bool, nx: bool,
                    pat: bool, pcd: bool, pwt: bool, global_: bool, extra: int) -> int:
        value = P | (RW if writable else 0) | (US if user else 0) | (PWT if pwt else 0) \
            | (PCD if pcd else 0) | A | D | (G if global_ else 0) | extra
        if level > 1:
            value |= PS
            if pat:
                value |= 1 << 12
        elif pat:
            value |= 1 << 7
        if self.mode == "32" and level == 2:
            # PSE-36: physical bits 39:32 go to entry bits 20:13 (SDM Table 4-4).
            value |= (pa & 0xFFC00000) | ((pa >> 32) & 0xFF) << 13
        else:
            value |= pa
        if nx:
            value |= NX
        return value

    def map(self, va: int, pa: int, size: int = PAGE, writable: bool = True, user: bool = True,
            nx: bool = False, pat: bool = False, pcd: bool = False, pwt: bool = False,
            global_: bool = False, table_rights: Optional[Dict[int, Dict[str, bool]]] = None,
            extra: int = 0) -> Expected:
        """Map one page of ``size`` bytes at va to pa.

        ``table_rights`` sets the R/W, U/S and XD bits of the table entries
        on the way down, e.g. ``{4: {"writable": False}}`` (entries are
        shared by every page beneath them: the last call wins). ``extra``
        ORs raw bits into the leaf entry.
        """
        level_of = LEAF_LEVEL[self.mode]
        if self.mode == "32" and (nx or any(r.get("nx") for r in (table_rights or {}).values())):
            raise ValueError("32-bit paging has no XD bit")
        if size not in level_of:
            raise ValueError("%s paging has no %#x-byte pages" % (self.mode, size))
        if va % size or pa % size:
            raise ValueError("va and pa must be aligned to the page size")
        leaf_level = level_of[size]
        va = self.canonical(va)
        table = self.root
        for level, index in self.indices(va):
            address = self.entry_address(table, index)
            if level == leaf_level:
                value = self._leaf_value(pa, size, level, writable, user, nx, pat, pcd, pwt,
                                         global_, extra)
                self.write_entry(address, value)
                break
            value = self.read_entry(address) if (address & ~(PAGE - 1)) in self.pages else 0
            if not value & P or value & PS and level in (2, 3):
                child = self.alloc()
                self.tables[child] = level - 1
                if self.mode == "pae" and level == 3:
                    value = child | P                   # PDPTE: no R/W, U/S, A (Table 4-8)
                else:
                    value = child | P | RW | US | A
            rights = (table_rights or {}).get(level)
            if rights and not (self.mode == "pae" and level == 3):
                value &= ~(RW | US | NX) & ((1 << (8 * self.width)) - 1)
                value |= (RW if rights.get("writable", True) else 0) \
                    | (US if rights.get("user", True) else 0) | (NX if rights.get("nx") else 0)
            self.write_entry(address, value)
            table = self._frame(value, level)
        expected = Expected(va, pa, size, writable, user, nx, ())
        self.mappings.append(expected)
        return expected

    def _frame(self, value: int, level: int) -> int:
        if self.mode == "32":
            return value & 0xFFFFF000
        return value & 0x000FFFFFFFFFF000

    def expected(self, va: int) -> Optional[Expected]:
        """The placed page holding va, with rights combined over the entries
        the builder wrote on its way (§4.6), or None when nothing maps it."""
        va = self.canonical(va)
        for m in reversed(self.mappings):
            if m.va <= va < m.va + m.page_size:
                return self._combine(m)
        return None

    def _combine(self, m: Expected) -> Expected:
        table, writable, user, nx, path = self.root, True, True, False, []
        for level, index in self.indices(m.va):
            address = self.entry_address(table, index)
            value = self.read_entry(address)
            path.append((level, address, value))
            if not (self.mode == "pae" and level == 3):
                writable &= bool(value & RW)
                user &= bool(value & US)
                nx |= bool(value & NX) and self.nxe and self.mode != "32"
            if level == LEAF_LEVEL[self.mode][m.page_size]:
                break
            table = self._frame(value, level)
        return Expected(m.va, m.pa, m.page_size, writable, user, nx, tuple(path))

    def all_expected(self) -> List[Expected]:
        """Every placed page (the last placement of a linear address wins)."""
        seen, result = set(), []
        for m in reversed(self.mappings):
            if m.va not in seen:
                seen.add(m.va)
                result.append(self._combine(m))
        return sorted(result, key=lambda e: e.va)

    # -- images ------------------------------------------------------------------------------

    def runs(self, limit: Optional[int] = None) -> List[Tuple[int, bytes]]:
        """Sorted (physical address, bytes) runs of adjacent pages; bytes at or
        above ``limit`` are dropped (a truncated image)."""
        runs: List[Tuple[int, bytearray]] = []
        for pa in sorted(self.pages):
            data = bytes(self.pages[pa])
            if limit is not None:
                if pa >= limit:
                    break
                data = data[:limit - pa]
            if runs and runs[-1][0] + len(runs[-1][1]) == pa:
                runs[-1][1].extend(data)
            else:
                runs.append((pa, bytearray(data)))
        return [(pa, bytes(data)) for pa, data in runs]

    def memory(self, limit: Optional[int] = None):
        """A ksinspect PhysicalMemory holding the pages (sparse: one run per
        group of adjacent pages)."""
        from ksinspect.memory import PhysicalMemory, Run
        buffer, runs = bytearray(), []
        for pa, data in self.runs(limit):
            runs.append(Run(pa, len(data), len(buffer)))
            buffer.extend(data)
        return PhysicalMemory(bytes(buffer), runs, "raw", description="page-table builder")

    def flat(self, size: Optional[int] = None) -> bytes:
        """A raw image from physical 0 (absent pages are zeros) of ``size`` bytes."""
        end = max(self.pages) + PAGE if self.pages else 0
        data = bytearray(end if size is None else size)
        for pa, page in self.pages.items():
            if pa < len(data):
                data[pa:pa + PAGE] = page[:len(data) - pa]
        return bytes(data)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)
