"""QEMU's monitor text for a page walk: ``info mem`` and ``info tlb`` lines.

The formats are those of QEMU's ``target/i386/monitor.c`` (``mem_print``,
``print_pte``; read at QEMU 7.2, the version of the shipped guests in
tests/data/qemu, and unchanged since): every number is printed as 16 hex
digits (``TARGET_FMT_plx``), and

* ``info mem``: ``START-END SIZE urw``, one line per run of pages whose
  permissions (U/S and R/W, AND-ed over the levels) stay the same; ``u``
  or ``-``, then always ``r``, then ``w`` or ``-``. START, END and SIZE
  each pass through QEMU's sign extension (bit 47, or bit 56 under LA57),
  so a range that ends at the top of the lower half prints its end as
  ``ffff800000000000``.
* ``info tlb``: ``VA: PA XGPDACTUW``, one line per present leaf entry; VA
  sign-extended as above, PA the leaf entry AND-ed with QEMU's mask for the
  mode and page size (so PAE's bit 63 shows inside the PA column, and
  32-bit paging's 4 MiB pages keep bit 21 but lose PSE-36's bits 20:13), and
  the letters the leaf entry's own bits 63 (XD), 8 (G), 7 (PS; cleared for a
  4 KiB PTE, where bit 7 is PAT), 6 (D), 5 (A), 4 (PCD), 3 (PWT), 2 (U/S)
  and 1 (R/W), ``-`` when clear.

Only integers come in (positions in the walk order, entry values), so this
view needs nothing from the layers above it.
"""
from typing import Tuple

__all__ = ["info_mem_line", "info_tlb_line", "qemu_canonical", "tlb_flags"]

_U64 = (1 << 64) - 1
# (mode, page size) -> the mask QEMU's print_pte applies to the leaf entry.
_PA_MASK = {
    ("32", 1 << 12): 0xFFFF_F000,                 # pte & ~0xfff (a 32-bit entry)
    ("32", 1 << 22): 0xFFE0_0000,                 # pde & ~((1 << 21) - 1)
    ("pae", 1 << 12): _U64 & ~0xFFF,              # ~(hwaddr)0xfff: bit 63 stays
    ("pae", 1 << 21): _U64 & ~0xFFFFF,            # ~((hwaddr)(1 << 20) - 1)
}
for _mode in ("4level", "5level"):
    _PA_MASK[(_mode, 1 << 12)] = 0x3_FFFF_FFFF_F000
    _PA_MASK[(_mode, 1 << 21)] = 0x3_FFFF_FFE0_0000
    _PA_MASK[(_mode, 1 << 30)] = 0x3_FFFF_C000_0000

# print_pte's letters, most significant first, and the bit each reads.
_TLB_LETTERS: Tuple[Tuple[str, int], ...] = (
    ("X", 63), ("G", 8), ("P", 7), ("D", 6), ("A", 5), ("C", 4), ("T", 3), ("U", 2), ("W", 1))


def qemu_canonical(address: int, mode: str) -> int:
    """QEMU's ``addr_canonical``: bit 47 (bit 56 under 5-level paging) copied
    upwards. A 32-bit address never has that bit set, so it is unchanged."""
    sign = 56 if mode == "5level" else 47
    address &= _U64
    if address >> sign & 1:
        address |= _U64 & ~((1 << (sign + 1)) - 1)
    return address


def info_mem_line(start: int, end: int, user: bool, writable: bool, mode: str) -> str:
    """One ``info mem`` line for the range [start, end) given as positions in
    the walk order (linear addresses without sign extension)."""
    return "%016x-%016x %016x %sr%s" % (
        qemu_canonical(start, mode), qemu_canonical(end, mode),
        qemu_canonical(end - start, mode), "u" if user else "-", "w" if writable else "-")


def tlb_flags(entry: int, page_size: int) -> str:
    """The nine letters ``info tlb`` prints for a leaf entry."""
    if page_size == 1 << 12:
        entry &= ~0x80                    # a PTE's bit 7 is PAT: QEMU masks PS off
    return "".join(letter if entry >> bit & 1 else "-" for letter, bit in _TLB_LETTERS)


def info_tlb_line(position: int, entry: int, page_size: int, mode: str) -> str:
    """One ``info tlb`` line: the page at ``position`` (its linear address
    without sign extension) mapped by the leaf ``entry`` of ``page_size`` bytes.

    Raises:
        ValueError: a page size the mode does not have.
    """
    try:
        mask = _PA_MASK[(mode, page_size)]
    except KeyError:
        raise ValueError("%s paging has no %#x-byte pages" % (mode, page_size)) from None
    return "%016x: %016x %s" % (qemu_canonical(position, mode), entry & mask,
                                tlb_flags(entry, page_size))
