"""Where Linux puts things in a kernel's virtual address space.

The x86-64 layouts are the kernel's documented ones,
``Documentation/arch/x86/x86_64/mm.rst`` ("Complete virtual memory map
with 4-level page tables" and "... with 5-level page tables"). Three of
their regions move under KASLR (CONFIG_RANDOMIZE_MEMORY: "the direct
mapping of all physical memory, vmalloc/ioremap space and virtual memory
map are randomized. Their order is preserved"): their bases are the
kernel variables ``page_offset_base``, ``vmalloc_base`` and
``vmemmap_base``, read from the image when the symbols name them. With
symbols, the kernel image itself (``_text`` to ``_end``) is named too,
wherever KASLR put it.

i386 has no such table; its layout is computed at boot from a few
constants (``arch/x86/include/asm/pgtable_32_areas.h``):

* user space ends at ``PAGE_OFFSET`` (arch/x86/Kconfig: 0xC0000000 for the
  default VMSPLIT_3G; with symbols, the highest of the Kconfig choices at
  or below ``_text``);
* the direct map of low memory runs from ``PAGE_OFFSET`` to
  ``high_memory``: read from the variable when the symbols have it, else
  measured as the run of mappings from ``PAGE_OFFSET`` whose physical
  address is the virtual one minus ``PAGE_OFFSET``;
* vmalloc (and the modules: ``MODULES_VADDR = VMALLOC_START``) starts
  ``VMALLOC_OFFSET`` (8 MiB) above ``high_memory`` and ends two pages
  below ``PKMAP_BASE`` (CONFIG_HIGHMEM, as Debian's 686 kernels have it);
* the cpu_entry_area starts with the read-only IDT page ("The +1 is for
  the readonly IDT page"), so its base is IDTR's page rounded down to a
  PMD; the LDT remap is the PMD below it, the pkmap area (``LAST_PKMAP``
  pages: 512 with PAE, 1024 without) the PMD-aligned block below that;
* the fixmap ends at ``__FIXADDR_TOP`` = 0xfffff000
  (arch/x86/mm/pgtable.c) and begins just above the cpu_entry_area; where
  exactly depends on NR_CPUS and the fixmap's configured size, which an
  image does not say, so the two share one region here.
"""
import struct
from dataclasses import dataclass, replace
from typing import Any, Iterable, List, Optional, Tuple

from .errors import InvalidAddressError
from .modes import PagingMode

__all__ = ["KernelLayout", "KernelRegion", "linux_layout"]

MM_RST = "Linux Documentation/arch/x86/x86_64/mm.rst"
I386_SOURCE = ("Linux arch/x86/include/asm/pgtable_32_areas.h, arch/x86/Kconfig (PAGE_OFFSET), "
               "arch/x86/mm/pgtable.c (__FIXADDR_TOP)")

TB, PB = 1 << 40, 1 << 50


@dataclass(frozen=True)
class KernelRegion:
    """One named region [start, end) of the kernel's half."""

    name: str
    start: int
    end: int
    how: str          # the documented layout, or the symbol or register it came from

    def __contains__(self, va: int) -> bool:
        return self.start <= va < self.end


@dataclass(frozen=True)
class KernelLayout:
    """The user/kernel split and the kernel's named regions of one address space.

    Attributes:
        user_end: the first address above user space.
        kernel_start: the first kernel address (on x86-64 the other side of
            the non-canonical hole; on i386 the same as ``user_end``).
        regions: named regions, sorted, not overlapping.
        source: the documents the layout comes from.
        notes: what was read from the image, and what could not be.
    """

    mode: PagingMode
    user_end: int
    kernel_start: int
    regions: Tuple[KernelRegion, ...]
    source: str
    notes: Tuple[str, ...] = ()

    def region_of(self, va: int) -> Optional[KernelRegion]:
        for region in self.regions:
            if va in region:
                return region
        return None

    def name_of(self, va: int) -> str:
        """The region's name, ``user space``, or ``""`` where the layout names nothing."""
        if va < self.user_end:
            return "user space"
        region = self.region_of(va)
        return region.name if region else ""

    def boundaries(self) -> List[int]:
        """Every address where the name changes: where a map cuts its rows."""
        cuts = {self.user_end, self.kernel_start}
        for region in self.regions:
            cuts.update((region.start, region.end))
        return sorted(cuts)


# mm.rst, from the top of each table: (start, end, name); holes left out.
# The part from fffffc0000000000 up is "Identical layout" in both tables.
_COMMON_TOP = (
    (0xFFFFFE0000000000, 0xFFFFFE8000000000, "cpu_entry_area"),
    (0xFFFFFF0000000000, 0xFFFFFF8000000000, "espfix"),           # "%esp fixup stacks"
    (0xFFFFFFEF00000000, 0xFFFFFFFF00000000, "EFI"),
    (0xFFFFFFFF80000000, 0xFFFFFFFFA0000000, "kernel text"),
    (0xFFFFFFFFA0000000, 0xFFFFFFFFFF000000, "modules"),
    # "FIXADDR_START ~-11 MB ... ffffffffff5fffff": the part below it is unused
    (0xFFFFFFFFFF000000, 0xFFFFFFFFFF600000, "fixmap"),
    (0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000, "vsyscall"),
)
_LEVEL4 = (
    (0xFFFF880000000000, 0xFFFF888000000000, "LDT remap (PTI)"),
    (0xFFFF888000000000, 0xFFFFC88000000000, "direct map"),
    (0xFFFFC90000000000, 0xFFFFE90000000000, "vmalloc"),
    (0xFFFFEA0000000000, 0xFFFFEB0000000000, "vmemmap"),
    (0xFFFFEC0000000000, 0xFFFFFC0000000000, "KASAN shadow"),
) + _COMMON_TOP
_LEVEL5 = (
    (0xFF10000000000000, 0xFF11000000000000, "LDT remap (PTI)"),
    (0xFF11000000000000, 0xFF91000000000000, "direct map"),
    (0xFFA0000000000000, 0xFFD2000000000000, "vmalloc"),
    (0xFFD4000000000000, 0xFFD6000000000000, "vmemmap"),
    (0xFFDF000000000000, 0xFFFFFC0000000000, "KASAN shadow"),
) + _COMMON_TOP
# The variables that hold the randomized bases (arch/x86/mm/kaslr.c).
_RANDOMIZED = (("direct map", "page_offset_base"), ("vmalloc", "vmalloc_base"),
               ("vmemmap", "vmemmap_base"))

# arch/x86/Kconfig, "config PAGE_OFFSET": VMSPLIT_3G, 3G_OPT, 2G, 2G_OPT, 1G.
_I386_PAGE_OFFSETS = (0xC0000000, 0xB0000000, 0x80000000, 0x78000000, 0x40000000)
_I386_VMALLOC_OFFSET = 8 << 20
_I386_FIXADDR_TOP = 0xFFFFF000
_PAGE = 4096


def linux_layout(space: Any, symbols: Any = None) -> KernelLayout:
    """The Linux layout of this address space, refined by what the image says.

    Args:
        space: an :class:`ksinspect.paging.AddressSpace` (its mode picks the
            layout; its memory's CPU state gives IDTR on i386).
        symbols: a :class:`ksinspect.symbols.SymbolTable` of the kernel
            (System.map or kallsyms), or None for the documented defaults.
    """
    mode = space.mode
    if mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        return _x86_64(space, symbols)
    return _i386(space, symbols)


def _address(symbols: Any, name: str) -> Optional[int]:
    return symbols.address_of(name) if symbols is not None else None


def _read_pointer(space: Any, va: int, size: int) -> Optional[int]:
    try:
        data = space.read(va, size)
    except InvalidAddressError:          # not mapped, or the page is not in the image
        return None
    return struct.unpack("<Q" if size == 8 else "<I", data)[0]


def _x86_64(space: Any, symbols: Any) -> KernelLayout:
    five = space.mode is PagingMode.LEVEL5
    table = _LEVEL5 if five else _LEVEL4
    regions = [KernelRegion(name, start, end, MM_RST) for start, end, name in table]
    notes: List[str] = []
    bases = {}
    for name, variable in _RANDOMIZED:
        at = _address(symbols, variable)
        value = _read_pointer(space, at, 8) if at is not None else None
        if at is not None and value is None:
            notes.append("%s at %#x is not readable in this image: the %s keeps its "
                         "documented base" % (variable, at, name))
        if value is not None:
            bases[name] = (value, variable)
    if bases:
        moved = []
        for region in regions:
            if region.name in bases:
                value, variable = bases[region.name]
                region = replace(region, start=value, end=value + (region.end - region.start),
                                 how="%s = %#x" % (variable, value))
            moved.append(region)
        # KASLR keeps the order and leaves gaps: a region never runs into the next.
        moved.sort(key=lambda r: r.start)
        regions = [replace(r, end=min(r.end, nxt.start)) for r, nxt in zip(moved, moved[1:])]
        regions.append(moved[-1])
        notes.append("randomized bases read from the image: " + ", ".join(
            "%s %#x" % (variable, value) for value, variable in bases.values()))
    text, end = _address(symbols, "_text"), _address(symbols, "_end")
    if text is not None and end is not None and text < end:
        regions = _overlay(regions, KernelRegion("kernel text", text, end, "_text.._end"))
    user_end = 1 << (56 if five else 47)
    return KernelLayout(space.mode, user_end, (1 << 64) - user_end, tuple(regions), MM_RST,
                        tuple(notes))


def _overlay(regions: Iterable[KernelRegion], new: KernelRegion) -> List[KernelRegion]:
    """Put ``new`` over the regions it overlaps (they keep what is left)."""
    out = []
    for region in regions:
        if region.end <= new.start or region.start >= new.end:
            out.append(region)
            continue
        if region.name == new.name:
            continue                     # the image's own range replaces the documented one
        if region.start < new.start:
            out.append(replace(region, end=new.start))
        if region.end > new.end:
            out.append(replace(region, start=new.end))
    out.append(new)
    return sorted(out, key=lambda r: r.start)


def _i386(space: Any, symbols: Any) -> KernelLayout:
    notes: List[str] = []
    text = _address(symbols, "_text")
    page_offset = _I386_PAGE_OFFSETS[0]
    how_split = "PAGE_OFFSET %#x (VMSPLIT_3G, the default)" % page_offset
    if text is not None:
        fitting = [p for p in _I386_PAGE_OFFSETS if p <= text]
        if fitting:
            page_offset = fitting[0]
            how_split = "PAGE_OFFSET %#x (the Kconfig choice below _text %#x)" % (page_offset, text)
    notes.append(how_split)
    high = None
    at = _address(symbols, "high_memory")
    if at is not None:
        high = _read_pointer(space, at, 4)
        if high is not None:
            notes.append("high_memory = %#x (read from the image)" % high)
    if high is None:
        high = _linear_run_end(space, page_offset)
        if high is not None:
            notes.append("high_memory = %#x: the end of the run of mappings from PAGE_OFFSET "
                         "whose physical address is the virtual one minus PAGE_OFFSET" % high)
    regions: List[KernelRegion] = []
    if high is not None:
        regions.append(KernelRegion("direct map", page_offset, high, "PAGE_OFFSET..high_memory"))
    pmd = (2 << 20) if space.mode is PagingMode.PAE else (4 << 20)
    cpu = getattr(space.memory, "cpu", None)
    idtr = getattr(cpu, "idtr_base", None)
    vmalloc_end = None
    if idtr is not None and idtr >= page_offset:
        cea = idtr & ~(pmd - 1)
        ldt = (cea - _PAGE) & ~(pmd - 1)
        pkmap = (ldt - _PAGE) & ~(pmd - 1)
        pkmap_pages = 512 if space.mode is PagingMode.PAE else 1024
        vmalloc_end = pkmap - 2 * _PAGE
        regions += [
            KernelRegion("pkmap", pkmap, pkmap + pkmap_pages * _PAGE, "PKMAP_BASE below the LDT"),
            KernelRegion("LDT remap (PTI)", ldt, ldt + pmd, "the PMD below cpu_entry_area"),
            KernelRegion("cpu_entry_area, fixmap", cea, _I386_FIXADDR_TOP,
                         "IDTR %#x (the read-only IDT page) to __FIXADDR_TOP" % idtr),
        ]
    else:
        notes.append("no IDTR in this image: the cpu_entry_area, fixmap, pkmap and the end of "
                     "vmalloc are not located")
    if high is not None:
        start = high + _I386_VMALLOC_OFFSET
        regions.append(KernelRegion("vmalloc, modules", start,
                                    vmalloc_end if vmalloc_end is not None else start,
                                    "high_memory + VMALLOC_OFFSET"))
    if text is not None:
        end_name = "_end" if _address(symbols, "_end") is not None else "_etext"
        end = _address(symbols, end_name)
        if end is not None and end > text:
            regions = _overlay(regions, KernelRegion("kernel text", text, end,
                                                     "_text.." + end_name))
    regions = sorted((r for r in regions if r.end > r.start), key=lambda r: r.start)
    return KernelLayout(space.mode, page_offset, page_offset, tuple(regions), I386_SOURCE,
                        tuple(notes))


def _linear_run_end(space: Any, page_offset: int) -> Optional[int]:
    """The end of the direct map: mappings from PAGE_OFFSET that map
    PA = VA - PAGE_OFFSET, allowing holes smaller than VMALLOC_OFFSET."""
    end = None
    for m in space.mappings(page_offset, page_offset + 0x40000000):
        if m.pa != m.start - page_offset or (end is not None and m.start - end >=
                                            _I386_VMALLOC_OFFSET):
            break
        if end is None and m.start != page_offset:
            return None
        end = m.start + m.size
    return end
