"""The four x86 paging modes as data: the one Python home of their facts.

Levels, the linear-address bits each level indexes, the entries per table,
the entry and table names, the linear-address width, the page sizes and the
manual sections: Intel SDM vol. 3A §4.1.1 (Table 4-1), §4.3 (32-bit paging,
Figures 4-2 and 4-3), §4.4 (PAE, Figures 4-5 and 4-6) and §4.5 (4-level and
5-level paging, Figures 4-8 to 4-10). Paging, the values and the pictures
read them from here; the C walker keeps its own table (``csrc/ksi_walk.c``)
and ``tests/test_modes.py`` checks that the two agree.
"""
import enum
from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = ["LEVEL_NAMES", "Level", "ModeFacts", "PagingMode", "facts", "size_text"]


class PagingMode(enum.Enum):
    """The four x86 paging modes; values are the CLI/JSON names."""

    BITS32 = "32"
    PAE = "pae"
    LEVEL4 = "4level"
    LEVEL5 = "5level"

    @property
    def levels(self) -> int:
        return MODES[self].levels

    @property
    def entry_size(self) -> int:
        return MODES[self].entry_size

    @property
    def facts(self) -> "ModeFacts":
        return MODES[self]


@dataclass(frozen=True)
class Level:
    """One level of a paging mode's tables.

    Attributes:
        number: 1 = the page table ... 5 = the PML5 table.
        entry_name: the manual's name of an entry (``PML4E``, ``PDE``).
        table_name: the table the entry lives in, in words.
        table_short: the same as the pictures label it (``PDPT``).
        shift: the lowest linear-address bit this level indexes.
        bits: how many linear-address bits index it.
        large_page: the page an entry with PS=1 maps here (0: PS is not a page size here).
    """

    number: int
    entry_name: str
    table_name: str
    table_short: str
    shift: int
    bits: int
    large_page: int = 0

    @property
    def entries(self) -> int:
        return 1 << self.bits


@dataclass(frozen=True)
class ModeFacts:
    """What a paging mode is (SDM vol. 3A Table 4-1 and the mode's section)."""

    mode: PagingMode
    title: str             # "4-level", as the manual says it
    va_bits: int           # linear-address width
    entry_size: int        # bytes per entry
    canonical: bool        # IA-32e: addresses are sign-extended from bit va_bits-1
    walk_source: str       # where the manual draws the walk
    entry_source: str      # where the manual lays out an entry
    table: Tuple[Level, ...]   # top level first

    @property
    def levels(self) -> int:
        return len(self.table)

    def level(self, number: int) -> Level:
        return self.table[self.levels - number]

    @property
    def level_names(self) -> Dict[int, str]:
        return {lv.number: lv.entry_name for lv in self.table}

    @property
    def page_sizes(self) -> Tuple[int, ...]:
        """Every page size the mode maps, smallest first (4 MiB needs CR4.PSE, 1 GiB 4/5-level)."""
        return (1 << 12,) + tuple(sorted(lv.large_page for lv in self.table if lv.large_page))


def _ia32e(top: int) -> Tuple[Level, ...]:
    names = {5: ("PML5E", "PML5 table", "PML5 table"), 4: ("PML4E", "PML4 table", "PML4 table"),
             3: ("PDPTE", "page-directory-pointer table", "PDPT"),
             2: ("PDE", "page directory", "page directory"), 1: ("PTE", "page table", "page table")}
    large = {3: 1 << 30, 2: 1 << 21}
    return tuple(Level(n, *names[n], shift=12 + 9 * (n - 1), bits=9, large_page=large.get(n, 0))
                 for n in range(top, 0, -1))


MODES: Dict[PagingMode, ModeFacts] = {
    PagingMode.BITS32: ModeFacts(
        PagingMode.BITS32, "32-bit", 32, 4, False,
        "Intel SDM vol. 3A §4.3 (32-bit paging), Figures 4-2 and 4-3",
        "Intel SDM vol. 3A §4.3 (32-bit paging), Figure 4-4, Tables 4-4 to 4-6",
        (Level(2, "PDE", "page directory", "page directory", 22, 10, 1 << 22),
         Level(1, "PTE", "page table", "page table", 12, 10))),
    PagingMode.PAE: ModeFacts(
        PagingMode.PAE, "PAE", 32, 8, False,
        "Intel SDM vol. 3A §4.4 (PAE paging), Figures 4-5 and 4-6",
        "Intel SDM vol. 3A §4.4.2 (PAE paging), Figure 4-7, Tables 4-8 to 4-11",
        (Level(3, "PDPTE", "page-directory-pointer table", "PDPT", 30, 2),
         Level(2, "PDE", "page directory", "page directory", 21, 9, 1 << 21),
         Level(1, "PTE", "page table", "page table", 12, 9))),
    PagingMode.LEVEL4: ModeFacts(
        PagingMode.LEVEL4, "4-level", 48, 8, True,
        "Intel SDM vol. 3A §4.5 (4-level paging), Figures 4-8 to 4-10",
        "Intel SDM vol. 3A §4.5 (4-level paging), Figure 4-11, Tables 4-14 to 4-20",
        _ia32e(4)),
    PagingMode.LEVEL5: ModeFacts(
        PagingMode.LEVEL5, "5-level", 57, 8, True,
        "Intel SDM vol. 3A §4.5 (5-level paging), Figures 4-8 to 4-10",
        "Intel SDM vol. 3A §4.5 (5-level paging), Figure 4-11, Tables 4-14 to 4-20",
        _ia32e(5)),
}

# The physical-address widths a walk accepts (CPUID 80000008H EAX[7:0]; the SDM's
# paging structures hold at most 52 address bits, §4.1.4).
MAXPHYADDR_RANGE = (32, 52)

LEVEL_NAMES: Dict[PagingMode, Dict[int, str]] = {m: f.level_names for m, f in MODES.items()}


def facts(mode: PagingMode) -> ModeFacts:
    return MODES[mode]


def size_text(size: int) -> str:
    """A size in the largest binary unit that divides it: ``4 KiB``, ``2 MiB``, ``1 GiB``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return "%d %s" % (size >> shift, unit)
    return "%d B" % size
