"""Linux's regions of a kernel address space (ksinspect.linux_layout).

Expected values come from the kernel's documentation and the guests
themselves, never from ksinspect:

* x86-64: Documentation/arch/x86/x86_64/mm.rst, "Complete virtual memory
  map with 4-level page tables" / "... with 5-level page tables" (the lines
  are quoted below), and the kernel's own variables ``page_offset_base``,
  ``vmalloc_base``, ``vmemmap_base`` read from the full QEMU cores;
* i386: QEMU's ``info mem`` and ``info registers`` of the shipped guests
  and their console log ("127MB LOWMEM available"), against
  arch/x86/include/asm/pgtable_32_areas.h (VMALLOC_OFFSET 8 MiB).
"""
import os
import re

import pytest

from conftest import qemu_file
from ksinspect.linux_layout import linux_layout
from ksinspect.memory import open_image
from ksinspect.modes import PagingMode
from ksinspect.paging import AddressSpace
from ksinspect.symbols import SymbolTable
from qemu_monitor import read_text

CACHE = os.path.expanduser("~/.cache/ksinspect-fixtures/work")

# mm.rst, start/end addresses and descriptions as printed there ("%esp fixup
# stacks" is espfix; the module area and fixmap as their lines say).
MM_RST = {
    "4level": [
        (0xFFFF888000000000, 0xFFFFC87FFFFFFFFF, "direct map"),   # direct mapping of all physical memory
        (0xFFFFC90000000000, 0xFFFFE8FFFFFFFFFF, "vmalloc"),      # vmalloc/ioremap space
        (0xFFFFEA0000000000, 0xFFFFEAFFFFFFFFFF, "vmemmap"),      # virtual memory map
    ],
    "5level": [
        (0xFF11000000000000, 0xFF90FFFFFFFFFFFF, "direct map"),
        (0xFFA0000000000000, 0xFFD1FFFFFFFFFFFF, "vmalloc"),
        (0xFFD4000000000000, 0xFFD5FFFFFFFFFFFF, "vmemmap"),
    ],
    "both": [                                                     # "Identical layout ... from here on"
        (0xFFFFFE0000000000, 0xFFFFFE7FFFFFFFFF, "cpu_entry_area"),
        (0xFFFFFF0000000000, 0xFFFFFF7FFFFFFFFF, "espfix"),
        (0xFFFFFFFF80000000, 0xFFFFFFFF9FFFFFFF, "kernel text"),  # kernel text mapping
        (0xFFFFFFFFA0000000, 0xFFFFFFFFFEFFFFFF, "modules"),      # module mapping space
        (0xFFFFFFFFFF000000, 0xFFFFFFFFFF5FFFFF, "fixmap"),       # FIXADDR_START .. ffffffffff5fffff
    ],
}
ISSUE_NAMES = {"direct map", "vmalloc", "vmemmap", "cpu_entry_area", "espfix", "kernel text",
               "modules", "fixmap"}


def _documented(mode, va):
    for start, last, name in MM_RST[mode] + MM_RST["both"]:
        if start <= va <= last:
            return name
    return None


def _space(profile):
    return AddressSpace(open_image(qemu_file(profile)))


@pytest.mark.parametrize("profile", ["x86_64-4level", "x86_64-5level"])
@pytest.mark.parametrize("with_symbols", [False, True], ids=["documented", "symbols"])
def test_x86_64_guest_mappings_are_named_as_mm_rst(profile, with_symbols):
    space = _space(profile)
    symbols = SymbolTable.from_system_map(qemu_file(profile, "kallsyms.txt.xz")) \
        if with_symbols else None
    layout = linux_layout(space, symbols)
    mode = space.mode.value
    # mm.rst: user space ends at 00007fffffffffff (4-level) / 00ffffffffffffff (5-level)
    assert layout.user_end == {"4level": 0x0000800000000000, "5level": 0x0100000000000000}[mode]
    assert layout.kernel_start == {"4level": 0xFFFF800000000000, "5level": 0xFF00000000000000}[mode]
    seen = set()
    for m in space.mapping_table():
        name = layout.name_of(m.start)
        if m.start < layout.user_end:
            assert name == "user space"
            continue
        assert name == _documented(mode, m.start), hex(m.start)
        seen.add(name)
    assert seen == ISSUE_NAMES


@pytest.mark.parametrize("profile", ["x86_64-4level", "x86_64-5level"])
def test_kernel_variables_in_the_full_core_agree_with_mm_rst(profile):
    # The guests boot with nokaslr: the randomized bases are then mm.rst's.
    core = os.path.join(CACHE, profile, "core.elf.xz")
    if not os.path.exists(core):
        pytest.skip("the full QEMU core is not in %s (tools/make_qemu_fixture.py)" % CACHE)
    space = AddressSpace(open_image(core))
    symbols = SymbolTable.from_system_map(os.path.join(CACHE, profile, "kallsyms.raw"))
    layout = linux_layout(space, symbols)
    mode = space.mode.value
    starts = {name: start for start, _last, name in MM_RST[mode]}
    for region in layout.regions:
        if region.name in starts:
            assert region.start == starts[region.name], region
            assert region.how.split()[0] in ("page_offset_base", "vmalloc_base", "vmemmap_base")
    assert any("randomized bases read" in n for n in layout.notes)
    # the kernel image from the symbols: _text of the guest's kallsyms
    text = layout.region_of(symbols.address_of("_text"))
    assert text.name == "kernel text" and text.start == symbols.address_of("_text")


class _RandomizedSpace:
    """A 4-level space whose kernel variables hold KASLR-moved bases."""
    mode = PagingMode.LEVEL4
    memory = None

    def __init__(self, values):
        self.values = values

    def read(self, va, n):
        return self.values[va].to_bytes(n, "little")


def test_kaslr_bases_move_the_three_randomized_regions():
    # mm.rst: with CONFIG_RANDOMIZE_MEMORY the direct map, vmalloc and vmemmap
    # are randomized, "Their order is preserved but their base will be offset".
    symbols = SymbolTable.parse_system_map([
        "ffffffff9a000000 T _text", "ffffffff9c000000 B _end",
        "ffffffff9b000000 D page_offset_base", "ffffffff9b000008 D vmalloc_base",
        "ffffffff9b000010 D vmemmap_base"])
    space = _RandomizedSpace({0xFFFFFFFF9B000000: 0xFFFF9D8000000000,
                              0xFFFFFFFF9B000008: 0xFFFFB9C000000000,
                              0xFFFFFFFF9B000010: 0xFFFFE3C000000000})
    layout = linux_layout(space, symbols)
    assert layout.name_of(0xFFFF9D8000000000) == "direct map"
    assert layout.name_of(0xFFFF888000000000) == ""          # the documented base is empty now
    assert layout.name_of(0xFFFFB9C000000000) == "vmalloc"
    assert layout.name_of(0xFFFFB9BFFFFFFFFF) == "direct map"  # it runs up to the next one
    assert layout.name_of(0xFFFFE3C000000000) == "vmemmap"
    assert layout.name_of(0xFFFFFFFF9A000000) == "kernel text"
    assert layout.name_of(0xFFFFFFFF9C000000) == ""            # past _end: nothing there
    assert layout.name_of(0xFFFFFFFFA0000000) == "modules"     # mm.rst's module mapping space


def _info_mem(profile):
    rows = []
    for line in read_text(profile, "info-mem.txt").splitlines():
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) [0-9a-f]+ (\S+)", line.strip())
        if m:
            rows.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
    return rows


@pytest.mark.parametrize("profile", ["i386-pae", "i386-2level"])
def test_i386_guest_regions_from_qemu(profile):
    space = _space(profile)
    layout = linux_layout(space)
    assert layout.user_end == layout.kernel_start == 0xC0000000
    rows = _info_mem(profile)
    # info mem: user pages ("u") below the split, supervisor pages above it
    assert all(r[2].startswith("u") for r in rows if r[0] < 0xC0000000)
    assert all(not r[2].startswith("u") for r in rows if r[0] >= 0xC0000000)
    # lowmem: the run of info mem ranges from 0xc0000000 (127 MB, "127MB LOWMEM
    # available" in the console log); vmalloc starts 8 MiB (VMALLOC_OFFSET) above
    end = 0xC0000000
    for start, stop, _ in rows:
        if start == end:
            end = stop
    assert 127 << 20 <= end - 0xC0000000 < 128 << 20
    console = read_text(profile, "console.log")
    assert "%dMB LOWMEM available" % ((end - 0xC0000000) >> 20) in console
    direct = layout.region_of(0xC0000000)
    assert (direct.name, direct.start, direct.end) == ("direct map", 0xC0000000, end)
    after = sorted(r[0] for r in rows if end <= r[0] < 0xFF000000)
    assert after[0] == end + (8 << 20)
    assert all(layout.name_of(va) == "vmalloc, modules" for va in after)
    # the cpu_entry_area begins with the read-only IDT page; the GDT follows
    registers = read_text(profile, "info-registers.txt")
    idt = int(re.search(r"IDT=\s+([0-9a-f]+)", registers).group(1), 16)
    gdt = int(re.search(r"GDT=\s+([0-9a-f]+)", registers).group(1), 16)
    assert layout.name_of(idt) == layout.name_of(gdt) == "cpu_entry_area, fixmap"
    assert all(layout.name_of(r[0]) == "cpu_entry_area, fixmap" for r in rows if r[0] >= idt)
