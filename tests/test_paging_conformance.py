"""Conformance with QEMU: the page walker against QEMU 7.2's own ``info tlb``
and ``info mem`` for real Linux guests (tests/data/qemu, see its README).

QEMU's text is parsed by tests/qemu_monitor.py, independently of ksinspect.
What QEMU prints (target/i386/monitor.c):

* ``info tlb``: one line per present leaf entry, ``VA: PA XGPDACTUW`` where
  VA is canonical, PA is the leaf entry masked (4 KiB: bits 51:12 -- but
  under PAE ``~0xfff``, so XD (bit 63) shows inside the PA column; 2 MiB under
  PAE ``~0xfffff``; 4 MiB under 32-bit paging ``~0x1fffff``), and the flags
  are the leaf entry's own bits (P is PS; it is masked off for 4 KiB PTEs).
* ``info mem``: ranges merged while U/S and R/W, AND-ed over the levels,
  stay the same (PA contiguity, NX and page size are ignored): ksinspect's
  ``merge="rights"``. Absent for 5-level paging (QEMU 7.2's la57 version is
  broken).

Every page ``info tlb`` lists is translated in one ``translate_many`` batch.
"""
import os
from array import array

import pytest

from ksinspect.memory import open_image
from ksinspect.paging import AddressSpace
from conftest import PROFILES, QEMU
from qemu_monitor import parse_info_mem, parse_info_tlb, read_text

FLAG_BITS = {"X": 63, "G": 8, "P": 7, "D": 6, "A": 5, "C": 4, "T": 3, "U": 2, "W": 1}
U64 = (1 << 64) - 1


@pytest.fixture(scope="module", params=PROFILES)
def guest(request):
    profile = request.param
    memory = open_image(os.path.join(QEMU, profile, "core-trimmed.elf.xz"))
    space = AddressSpace(memory)      # CR3 and mode from QEMU's CPU-state note
    yield profile, space
    memory.close()


def test_mode_from_the_cpu_state(guest):
    profile, space = guest
    assert space.mode.value == {"x86_64-4level": "4level", "x86_64-5level": "5level",
                                "i386-pae": "pae", "i386-2level": "32"}[profile]


def expected_page_sizes(mode):
    return {"32": {4 << 20}, "pae": {2 << 20}}.get(mode, {2 << 20, 1 << 30})


def test_vtop_matches_info_tlb_for_every_page(guest):
    profile, space = guest
    rows = parse_info_tlb(read_text(profile, "info-tlb.txt"))
    assert len(rows) > 3000
    check_vtop_against_info_tlb(space, rows)


def check_vtop_against_info_tlb(space, rows):
    """Every page QEMU's `info tlb` lists translates as QEMU says (PA, size, flags).
    Shared with tests/test_kdump.py (the same check on compressed kdumps)."""
    batch = space.translate_many(array("Q", [va for va, _, _ in rows]))
    pas, sizes, leaves = batch.pas(), batch.page_sizes(), batch.column("leaf")
    mode = space.mode.value
    large = expected_page_sizes(mode)
    mismatches = []
    for i, (va, pa_column, flags) in enumerate(rows):
        size = sizes[i]
        if pas[i] is None:
            mismatches.append((hex(va), "not mapped: %s" % batch[i].error))
            continue
        if ("P" in flags) != (size > 4096) or (size > 4096 and size not in large):
            mismatches.append((hex(va), "page size %#x vs flags %s" % (size, flags)))
            continue
        if mode == "pae":
            # QEMU's PAE mask keeps bit 63: XD appears inside the PA column.
            assert bool(pa_column >> 63) == (flags[0] == "X")
        expected_pa = pa_column & ((1 << 52) - 1) & ~(size - 1)
        if pas[i] != expected_pa or va % size:
            mismatches.append((hex(va), "pa %#x vs QEMU %#x" % (pas[i], pa_column)))
            continue
        leaf = leaves[i]
        for letter, (name, bit) in zip(flags, FLAG_BITS.items()):
            if name == "P" and size == 4096:
                continue          # QEMU masks PS off a PTE (there it is the PAT bit)
            if (letter == name) != bool(leaf >> bit & 1):
                mismatches.append((hex(va), "flag %s: leaf %#x vs %s" % (name, leaf, flags)))
                break
    assert not mismatches, "%d of %d pages differ, e.g. %s" % (
        len(mismatches), len(rows), mismatches[:5])


def test_maps_cover_exactly_the_info_tlb_pages(guest):
    """The merged (PA-contiguous) ranges, cut back into pages, are QEMU's pages."""
    profile, space = guest
    check_mappings_against_info_tlb(space, parse_info_tlb(read_text(profile, "info-tlb.txt")))


def check_mappings_against_info_tlb(space, rows):
    qemu = {va: pa_column & ((1 << 52) - 1) for va, pa_column, _ in rows}
    ours = {}
    for m in space.mappings():
        for offset in range(0, m.size, m.page_size):
            ours[m.start + offset] = (m.pa + offset, m.page_size)
    assert ours.keys() == qemu.keys()
    bad = [va for va, (pa, size) in ours.items() if pa != qemu[va] & ~(size - 1)]
    assert not bad, [hex(v) for v in bad[:5]]


@pytest.mark.parametrize("profile", ["x86_64-4level", "i386-pae", "i386-2level"])
def test_maps_matches_info_mem(profile):
    text = read_text(profile, "info-mem.txt")
    assert text is not None
    expected = parse_info_mem(text)
    with open_image(os.path.join(QEMU, profile, "core-trimmed.elf.xz")) as memory:
        check_maps_against_info_mem(AddressSpace(memory), expected)


def check_maps_against_info_mem(space, expected):
    got = [(m.start, m.size, ("u" if m.user else "-") + "r" + ("w" if m.writable else "-"))
           for m in space.mappings(merge="rights")]
    assert len(got) == len(expected)
    assert got == expected


def test_no_info_mem_under_5level():
    # QEMU 7.2's `info mem` never finishes under LA57: nothing to compare.
    assert read_text("x86_64-5level", "info-mem.txt") is None
