"""ksinspect.paging: page walks in every mode over images from the page-table
builder (tests/builders/pagetable_builder.py), whose bookkeeping is the expected value,
plus hostile tables (loops, self-maps, truncated images) and random images.

Rules: Intel SDM vol. 3A §4.3 (32-bit paging, PSE, PSE-36), §4.4 (PAE),
§4.5 (4-level, 5-level, canonical addresses), §4.6 (rights), §4.7 (reserved bits).
"""
import csv
import io
import pickle
from array import array
import json
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders.image_builder import build_elf_core, qemu_cpu_state
from ksinspect._native import walk
from ksinspect.cli import main
from ksinspect.errors import DecodeError, ImageFormatError, InvalidAddressError, KsinspectError
from ksinspect.memory import PhysicalMemory, Run, open_image_bytes
from ksinspect.paging import UNMAPPED, AddressSpace, Mapping, WalkLimitError, WalkReason
from builders.pagetable_builder import NX, PAGE, PS, P, RW, US, PageTableBuilder
from html_check import parse_view
from conftest import run_cli  # noqa: E402  (tests/conftest.py)

GIB, MIB = 1 << 30, 1 << 20
MODES = ("32", "pae", "4level", "5level")


def space_of(builder, **kwargs):
    return AddressSpace(builder.memory(kwargs.pop("limit", None)), cr3=builder.cr3,
                        mode=builder.mode, nxe=builder.nxe, **kwargs)


def check(space, expected, va):
    t = space.translate(va)
    assert t.pa == expected.pa_of(va), t.explain()
    assert (t.page_size, t.writable, t.user, t.nx) == (
        expected.page_size, expected.writable, expected.user, expected.nx), t.explain()
    assert [(s.level, s.address, s.value) for s in t.path] == list(expected.path)
    assert t.error is None and t.mapped
    return t


def sample_layout(mode):
    """A builder with every page size the mode has and varied rights."""
    b = PageTableBuilder(mode, pdpt_offset=0x40 if mode == "pae" else 0)
    nx = mode != "32"
    low = 0x08048000
    b.map(low, 0x0123_4000, writable=False)
    b.map(low + PAGE, 0x0123_5000, nx=nx)
    b.map(low + 2 * PAGE, 0x0777_7000, user=False, global_=True)
    if mode == "32":
        b.map(0xC0000000, 0x0040_0000, size=4 * MIB, user=False)
        b.map(0xC0400000, 0x0080_0000, size=4 * MIB, writable=False, user=False)
    else:
        b.map(0xC0000000, 0x0020_0000, size=2 * MIB, user=False, nx=True)
        b.map(0xC0200000, 0x0040_0000, size=2 * MIB, user=False)
    if mode in ("4level", "5level"):
        b.map(0xFFFF_8880_0000_0000 if mode == "4level" else 0xFF11_0000_0000_0000,
              0x4000_0000, size=GIB, user=False)
        b.map(0x7FFF_FFFF_F000 if mode == "4level" else 0x00FF_FFFF_FFFF_F000,
              0x0999_9000)
    return b


# -- translation in every mode ----------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_translate_every_placed_page(mode):
    b = sample_layout(mode)
    space = space_of(b)
    for e in b.all_expected():
        for va in (e.va, e.va + 0x123, e.va + e.page_size - 1):
            check(space, e, va)


@pytest.mark.parametrize("mode", MODES)
def test_translate_many_matches_translate(mode):
    b = sample_layout(mode)
    space = space_of(b)
    rng = random.Random(7)
    vas = []
    for e in b.all_expected():
        vas += [e.va, e.va + rng.randrange(e.page_size), e.va + e.page_size - 1]
    vas += [0, 0x1000, 0x7000_0000]    # unmapped
    batch = space.translate_many(vas)
    assert len(batch) == len(vas)
    singles = [space.translate(va) for va in vas]
    assert batch.pas() == [t.pa for t in singles]
    assert batch.page_sizes() == [t.page_size or 0 for t in singles]
    for i in (0, 4, len(vas) - 1):
        assert batch[i] == singles[i]
    assert batch.mapped_count() == sum(t.mapped for t in singles)


@pytest.mark.parametrize("mode", MODES)
def test_walk_path_names_levels(mode):
    b = sample_layout(mode)
    t = space_of(b).translate(0x08048000)
    names = [s.name for s in t.path]
    assert names == {"32": ["PDE", "PTE"], "pae": ["PDPTE", "PDE", "PTE"],
                     "4level": ["PML4E", "PDPTE", "PDE", "PTE"],
                     "5level": ["PML5E", "PML4E", "PDPTE", "PDE", "PTE"]}[mode]
    assert t.path[-1].entry.leaf and t.leaf == t.path[-1].entry
    assert [s.index for s in t.path] == [i for _, i in b.indices(0x08048000)]


def test_pae_pdpt_at_cr3_bits_31_5():
    # CR3[31:5] locate the 32-byte PDPT (SDM §4.4.1): not page aligned.
    b = PageTableBuilder("pae", pdpt_offset=0xE0)
    e = b.map(0xBFFF_F000, 0x0055_5000)
    assert b.cr3 & 0xFFF == 0xE0
    check(space_of(b), b.expected(e.va), 0xBFFF_F123)


def test_one_gib_and_two_mib_pages():
    b = PageTableBuilder("4level")
    b.map(0xFFFF_C000_0000_0000, 3 * GIB, size=GIB)
    b.map(0xFFFF_C000_4000_0000, 0x2_0000_0000 + 2 * MIB, size=2 * MIB)
    space = space_of(b)
    t = space.translate(0xFFFF_C000_3FFF_FFFF)
    assert (t.pa, t.page_size) == (4 * GIB - 1, GIB)
    assert t.path[-1].entry.level == 3 and t.path[-1].entry.large
    t = space.translate(0xFFFF_C000_4012_3456)
    assert (t.pa, t.page_size) == (0x2_0000_0000 + 2 * MIB + 0x12_3456, 2 * MIB)


def test_pse36_four_mib_page_above_4gib():
    # PSE-36: PDE bits 20:13 hold physical bits 39:32 (SDM Table 4-4).
    b = PageTableBuilder("32")
    b.map(0x8000_0000, 0x3_4540_0000, size=4 * MIB)
    space = space_of(b, maxphyaddr=40)
    t = check(space, b.expected(0x8000_0000), 0x803F_FFFF)
    assert t.pa == 0x3_457F_FFFF and t.path[-1].entry.frame == 0x3_4540_0000


def test_pse36_bits_above_maxphyaddr_are_reserved():
    b = PageTableBuilder("32")
    b.map(0x8000_0000, 0x3_4540_0000, size=4 * MIB)       # PA bit 33: above MAXPHYADDR 32
    space = space_of(b, maxphyaddr=32)
    t = space.translate(0x8000_0000)
    assert t.pa is None and t.reason == "reserved bits set" and t.level == 2
    assert "reserved" in t.error
    lenient = space_of(b, maxphyaddr=32, ignore_reserved=True).translate(0x8000_0000)
    assert lenient.mapped and lenient.anomalies


def test_cr4_pse_off_makes_ps_a_table_pointer():
    # Without CR4.PSE, bit 7 of a 32-bit PDE is ignored (SDM §4.3).
    b = PageTableBuilder("32")
    b.map(0x0040_0000, 0x0000_5000)                        # a page table in PDE[1]
    pde = b.entry_address(b.root, 1)
    b.write_entry(pde, b.read_entry(pde) | PS)
    pse_on = space_of(b, pse=True).translate(0x0040_0000)
    pse_off = space_of(b, pse=False).translate(0x0040_0000)
    assert pse_on.page_size == 4 * MIB
    assert (pse_off.pa, pse_off.page_size) == (0x5000, PAGE)


@pytest.mark.parametrize("mode", MODES)
def test_rights_at_each_level(mode):
    levels = [lv for lv, _, _ in PageTableBuilder(mode).info["levels"]]
    for level in levels:
        for right in ("writable", "user", "nx"):
            if right == "nx" and mode == "32":
                continue
            b = PageTableBuilder(mode)
            va = 0x0804_8000
            if level == 1:
                kwargs = {right: right == "nx"}
                b.map(va, 0x1000_0000, **kwargs)
            else:
                b.map(va, 0x1000_0000, table_rights={level: {right: right == "nx"}})
            t = space_of(b).translate(va)
            pae_pdpte = mode == "pae" and level == 3      # PDPTEs carry no rights (Table 4-8)
            expected = {"writable": True, "user": True, "nx": False}
            if not pae_pdpte:
                expected[right] = right == "nx"
            assert (t.writable, t.user, t.nx) == (expected["writable"], expected["user"],
                                                  expected["nx"]), (mode, level, right)
            assert b.expected(va).writable == t.writable


def test_cr0_wp_decides_supervisor_writes():
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x2000, writable=False, user=False)
    assert space_of(b, wp=True).translate(0x1000).supervisor_writable is False
    assert space_of(b, wp=False).translate(0x1000).supervisor_writable is True


def test_nx_needs_efer_nxe():
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x2000, nx=True)
    assert space_of(b).translate(0x1000).nx is True
    b.nxe = False
    t = space_of(b).translate(0x1000)            # bit 63 is reserved with NXE=0 (§4.7)
    assert t.pa is None and t.reason == "reserved bits set" and t.level == 1


def test_pat_pcd_pwt_select_memory_type():
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x2000, pcd=True, pwt=True)             # PAT index 3: UC
    b.map(0x2000, 0x3000, pat=True, pwt=True)             # index 5: WT
    b.map(0x20_0000, 0x40_0000, size=2 * MIB, pat=True)   # index 4 (PAT bit 12): WB
    space = space_of(b)
    assert space.translate(0x1000).leaf.memory_type == "UC"
    assert space.translate(0x2000).leaf.memory_type == "WT"
    leaf = space.translate(0x20_0000).leaf
    assert leaf.pat and leaf.pat_index == 4 and leaf.memory_type == "WB"


def test_global_and_dirty_bits_are_in_the_leaf():
    b = PageTableBuilder("pae")
    b.map(0xC000_0000, 0x0, global_=True)
    leaf = space_of(b).translate(0xC000_0000).leaf
    assert leaf.global_ and leaf.dirty and leaf.accessed


# -- addresses that cannot be translated ------------------------------------------------

@pytest.mark.parametrize("mode,va", [("4level", 0x0000_8000_0000_0000),
                                     ("4level", 0xFFFF_7FFF_FFFF_FFFF),
                                     ("5level", 0x0100_0000_0000_0000),
                                     ("32", 1 << 32), ("pae", 0x1_0000_0000)])
def test_non_canonical_or_too_wide_is_a_result_in_single_and_batch_calls(mode, va):
    # One rule for both calls (issue 15): a Translation that says why; check() raises.
    space = space_of(sample_layout(mode))
    single = space.translate(va)
    assert single.pa is None and single.reason.invalid_address and not single.path
    assert single.reason in (WalkReason.NON_CANONICAL, WalkReason.TOO_WIDE)
    assert single.reason == ("above 4 GiB" if mode in ("32", "pae") else "not canonical")
    with pytest.raises(InvalidAddressError) as info:
        single.check()
    assert info.value.address == va and "linear address %#x is " % va in str(info.value)
    batch = space.translate_many([va])
    assert batch.pas() == [None] and batch[0] == single and batch[0].error == single.error
    assert list(space.physical_addresses([va])) == [UNMAPPED]


@pytest.mark.parametrize("va", [1 << 64, -1])
def test_an_address_beyond_64_bits_raises_the_same_in_single_and_batch_calls(va):
    # Not an address at all (a uint64 batch cannot hold it): both calls raise
    # the same InvalidAddressError, naming it in hex.
    space = space_of(sample_layout("4level"))
    for call in (space.translate, lambda v: space.translate_many([0x1000, v]),
                 lambda v: space.physical_addresses([v])):
        with pytest.raises(InvalidAddressError) as info:
            call(va)
        assert info.value.address == va
        assert str(info.value) == "linear address %#x does not fit in 64 bits" % va


def test_not_present_reports_level_and_entry():
    b = sample_layout("4level")
    t = space_of(b).translate(0x0804_8000 + 0x10 * PAGE)       # PT entry 0x58: empty
    assert t.pa is None and t.reason == "not present" and t.level == 1
    assert t.to_dict()["pa"] is None and "PTE" in t.error
    with pytest.raises(InvalidAddressError) as info:
        t.check()
    assert (info.value.level, info.value.entry) == (1, 0)
    t = space_of(b).translate(0x0000_1000_0000_0000)           # PML4E[32] empty
    assert (t.level, len(t.path)) == (4, 1)


def test_entry_pointing_past_the_image_is_not_in_image_at_its_level():
    b = PageTableBuilder("4level")
    b.map(0x40_0000, 0x1234_5000)
    # Point the PDE at a page table far outside the image.
    t0 = space_of(b).translate(0x40_0000)
    pde = t0.path[2].address
    b.write_entry(pde, 0x7FF0_0000 | P | RW | US)
    t = space_of(b).translate(0x40_0000)
    assert t.pa is None and t.reason == "not in image" and t.level == 2
    assert t.path[-1].address == pde and "not in the image" in t.error
    with pytest.raises(InvalidAddressError) as info:
        t.check()
    assert info.value.level == 2 and info.value.entry == 0x7FF0_0000 | P | RW | US
    stream = space_of(b).mappings()
    assert list(stream) == [] and stream.tables_missing == 1


def test_truncated_image():
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x10_0000)
    b.map(0x1000 + 400 * PAGE, 0x20_0000)            # PTE[401] in the second half of the PT
    pt = space_of(b).translate(0x1000).path[-1].address & ~(PAGE - 1)
    cut = pt + PAGE // 2                             # the image ends inside the page table
    space = space_of(b, limit=cut)
    assert space.translate(0x1000).pa == 0x10_0000
    t = space.translate(0x1000 + 400 * PAGE)
    assert t.reason == "not in image" and t.level == 2
    assert [m.start for m in space.mappings()] == [0x1000]


def test_cr3_outside_the_image():
    b = sample_layout("4level")
    with pytest.raises(InvalidAddressError) as info:
        AddressSpace(b.memory(), cr3=0x7000_0000, mode="4level")
    assert info.value.address == 0x7000_0000 and "not in the image" in str(info.value)


def test_cr3_zero():
    b = sample_layout("4level")
    with pytest.raises(InvalidAddressError):       # page 0 is not in the sparse image
        AddressSpace(b.memory(), cr3=0, mode="4level")
    flat = PhysicalMemory.from_bytes(b.flat())     # page 0 is zeros: nothing is mapped
    space = AddressSpace(flat, cr3=0, mode="4level")
    t = space.translate(0x1000)
    assert t.reason == "not present" and t.level == 4
    assert list(space.mappings()) == []


def test_reserved_bits_stop_the_walk_unless_ignored():
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x2000, extra=1 << 50)          # bit 50: above MAXPHYADDR 46
    strict = space_of(b, maxphyaddr=46)
    t = strict.translate(0x1000)
    assert t.reason == "reserved bits set" and t.level == 1 and t.anomalies
    stream = strict.mappings()
    assert list(stream) == [] and stream.reserved_skipped == 1
    lenient = space_of(b, maxphyaddr=46, ignore_reserved=True)
    assert lenient.translate(0x1000).pa == 0x2000 | 1 << 50
    assert space_of(b).translate(0x1000).mapped      # MAXPHYADDR 52: not reserved


def test_pae_pdpte_reserved_bits_are_anomalies_not_faults():
    # QEMU's TCG sets bit 5 (A) in PDPTEs, which Table 4-8 reserves; the CPU
    # accepted them when CR3 was loaded, so the walk goes on (anomaly kept).
    b = PageTableBuilder("pae")
    b.map(0x1000, 0x2000)
    pdpte = b.root
    b.write_entry(pdpte, b.read_entry(pdpte) | 0x20)
    t = space_of(b).translate(0x1000)
    assert t.pa == 0x2000 and t.path[0].entry.anomalies and t.anomalies


# -- loops and self-maps ------------------------------------------------------------------

def test_pml4_entry_pointing_at_itself_terminates_and_maps_the_table():
    b = PageTableBuilder("4level")
    b.write_entry(b.root, b.root | P | RW | US)
    space = space_of(b)
    t = space.translate(0x0)                      # PML4 -> PML4 -> PML4 -> PML4[0] as a PTE
    assert t.pa == b.root and len(t.path) == 4
    maps = list(space.mappings())
    assert [(m.start, m.pa, m.size) for m in maps] == [(0, b.root, PAGE)]


def test_windows_style_self_map():
    b = PageTableBuilder("4level")
    data = b.map(0xFFFF_F800_0000_0000, 0x5000)
    user = b.map(0x1_0000, 0x6000)
    slot = 0x1ED
    b.write_entry(b.entry_address(b.root, slot), b.root | P | RW | NX)
    space = space_of(b)
    pml4_self = b.va_of(slot, slot, slot, slot)
    assert space.translate(pml4_self).pa == b.root
    # PML4E[0] seen through the self-map is the PDPT page of the user mapping.
    pdpt0 = b.expected(user.va).path[1][1] & ~(PAGE - 1)
    assert space.translate(b.va_of(slot, slot, slot, 0)).pa == pdpt0
    # The self-map's pages are enumerated like any mapping, and the walk ends.
    maps = list(space.mappings())
    pas = {m.pa + i * PAGE for m in maps for i in range(m.size // PAGE)}
    assert set(b.tables) <= pas
    assert data.pa in pas and user.pa in pas
    in_window = [m for m in maps if b.va_of(slot, 0, 0, 0) <= m.start < b.va_of(slot + 1, 0, 0, 0)]
    assert all(not m.user and m.nx for m in in_window)
    assert space.physical_to_virtual(b.root)[0].va in {m.start for m in in_window}


def test_tables_pointing_at_each_other_terminate():
    b = PageTableBuilder("5level")
    b.map(0x1000, 0x2000)
    path = [s for s in space_of(b).translate(0x1000).path]
    # Every lower table's entry 1 points back to the root: a cycle through all levels.
    for step in path[1:]:
        table = step.address & ~(PAGE - 1)
        b.write_entry(table + 8, b.root | P | RW | US)
    space = space_of(b)
    for va in (b.va_of(0, 1, 1, 1, 1), b.va_of(0, 0, 1, 0, 1), b.va_of(0, 0, 0, 1, 1)):
        t = space.translate(va)
        assert len(t.path) <= 5 and (t.mapped or t.error)
    assert len(list(space.mappings())) > 1


def test_fully_self_referencing_root_hits_the_work_cap():
    # Every PML4 entry points at the PML4: 2^36 mappings of one page.
    b = PageTableBuilder("4level")
    for i in range(512):
        b.write_entry(b.entry_address(b.root, i), b.root | P | RW | US)
    space = space_of(b)
    stream = space.mappings(max_entries=200_000)
    got = []
    with pytest.raises(WalkLimitError) as info:
        for m in stream:
            got.append(m)
    assert info.value.entries_read >= 200_000 and got
    assert info.value.resume_at > got[-1].start
    # Resuming where it stopped goes on from there.
    more = space.mappings(start=info.value.resume_at, max_entries=1000)
    with pytest.raises(WalkLimitError):
        first = next(more)
        assert first.start >= info.value.resume_at
        list(more)
    # Rights merging collapses it all into few ranges but the work is the same.
    with pytest.raises(WalkLimitError):
        list(space.mappings(merge="rights", max_entries=100_000))


# -- enumeration ---------------------------------------------------------------------------

def merged(expected, rule="contiguous"):
    ranges = []
    for e in expected:
        if ranges:
            last = ranges[-1]
            adjacent = last["end"] == e.va
            if rule == "contiguous":
                same = (adjacent and last["pa"] + last["size"] == e.pa
                        and (last["writable"], last["user"], last["nx"], last["page_size"])
                        == (e.writable, e.user, e.nx, e.page_size))
            else:
                same = adjacent and (last["writable"], last["user"]) == (e.writable, e.user)
            if same:
                last["end"] += e.page_size
                last["size"] += e.page_size
                continue
        ranges.append({"start": e.va, "end": e.va + e.page_size, "size": e.page_size,
                       "writable": e.writable, "user": e.user, "nx": e.nx, "pa": e.pa,
                       "page_size": e.page_size})
    return ranges


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", ["contiguous", "rights"])
def test_mappings_match_the_builder(mode, rule):
    b = sample_layout(mode)
    # A run of contiguous pages that must merge, and one that must not.
    for i in range(6):
        b.map(0x1000_0000 + i * PAGE, 0x0200_0000 + i * PAGE)
        b.map(0x1100_0000 + i * PAGE, 0x0300_0000 - i * PAGE)
    space = space_of(b)
    got = [m.to_dict() for m in space.mappings(merge=rule)]
    assert got == merged(b.all_expected(), rule)


@pytest.mark.parametrize("chunk", [1, 2, 3, 1000])
def test_mappings_resume_across_chunks(chunk):
    b = sample_layout("5level")
    for i in range(10):
        b.map(0x2000_0000 + i * PAGE, 0x0200_0000 + i * PAGE, writable=i % 4 != 0)
    space = space_of(b)
    assert list(space.mappings(chunk=chunk)) == list(space.mappings())


def test_mappings_range_clips_pages():
    b = PageTableBuilder("pae")
    b.map(0xC000_0000, 0x0, size=2 * MIB)
    b.map(0xC020_0000, 0x20_0000, size=2 * MIB)
    space = space_of(b)
    (m,) = list(space.mappings(0xC010_0000, 0xC030_0000))
    assert (m.start, m.end, m.pa, m.page_size) == (0xC010_0000, 0xC030_0000, 0x10_0000, 2 * MIB)
    assert list(space.mappings(0, 0xC000_0000)) == []
    with pytest.raises(DecodeError):
        space.mappings(0x2000, 0x1000)
    with pytest.raises(DecodeError):
        space.mappings(0, 1 << 33)


def test_mappings_do_not_merge_across_the_canonical_hole():
    b = PageTableBuilder("4level")
    b.map(0x7FFF_FFFF_F000, 0x1000)
    b.map(0xFFFF_8000_0000_0000, 0x2000)
    maps = list(space_of(b).mappings(merge="rights"))
    assert [(m.start, m.end) for m in maps] == [(0x7FFF_FFFF_F000, 0x8000_0000_0000),
                                               (0xFFFF_8000_0000_0000, 0xFFFF_8000_0000_1000)]


def test_mapping_at_the_top_of_the_space():
    b = PageTableBuilder("4level")
    b.map(0xFFFF_FFFF_FFFF_F000, 0x3000)
    (m,) = list(space_of(b).mappings())
    assert (m.start, m.end, m.size) == (0xFFFF_FFFF_FFFF_F000, 1 << 64, PAGE)
    assert m.to_dict()["end"] == 1 << 64


def test_progress_reaches_one():
    b = sample_layout("4level")
    seen = []
    list(space_of(b).mappings(progress=seen.append, chunk=1))
    assert seen and seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)


def test_physical_to_virtual_finds_every_alias():
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x7000)
    b.map(0xFFFF_8880_0000_7000, 0x7000, writable=False)
    b.map(0xFFFF_C000_0000_0000, 0x0, size=2 * MIB)           # covers 0x7000 too
    aliases = space_of(b).physical_to_virtual(0x7123)
    assert [(a.va, a.page_size, a.writable) for a in aliases] == [
        (0x1123, PAGE, True), (0xFFFF_8880_0000_7123, PAGE, False),
        (0xFFFF_C000_0000_7123, 2 * MIB, True)]
    assert space_of(b).physical_to_virtual(0x9_0000_0000) == []


def test_mapping_table_is_the_stream_gathered():
    b = sample_layout("4level")
    for i in range(40):
        b.map(0x3000_0000 + i * PAGE, 0x0500_0000 + (i % 7) * PAGE)
    space = space_of(b)
    for chunk in (1, 5, 1 << 16):
        table = space.mapping_table(chunk=chunk)
        assert list(table) == list(space.mappings())
    assert table.column("start") == [m.start for m in table]
    assert table[-1] == list(space.mappings())[-1] and table.entries_read > 0
    rights = space.mapping_table(merge="rights")
    assert list(rights) == list(space.mappings(merge="rights"))
    b2 = PageTableBuilder("4level")
    for i in range(512):
        b2.write_entry(b2.entry_address(b2.root, i), b2.root | P | RW | US)
    with pytest.raises(WalkLimitError):
        space_of(b2).mapping_table(max_entries=50_000)


def test_translate_many_inputs():
    from array import array
    b = sample_layout("4level")
    space = space_of(b)
    vas = array("Q", [0x0804_8000, 0xC000_0010])
    assert space.translate_many(vas).pas() == [0x0123_4000, 0x20_0010]
    assert space.translate_many(memoryview(vas)).pas() == [0x0123_4000, 0x20_0010]
    assert space.translate_many(iter([0x0804_8001])).pas() == [0x0123_4001]
    assert len(space.translate_many([])) == 0
    for bad in (["0x1000"], b"\x00" * 8):          # not integers, not a uint64 buffer
        with pytest.raises(DecodeError):
            space.translate_many(bad)
    with pytest.raises(DecodeError):
        space.translate("0x1000")
    for bad in (-1, 1 << 64):                     # integers, not 64-bit addresses: as translate()
        with pytest.raises(InvalidAddressError):
            space.translate_many([bad])
        with pytest.raises(InvalidAddressError):
            space.translate(bad)


# -- reading ---------------------------------------------------------------------------------

def test_read_across_pages_and_errors():
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x9000)
    b.map(0x2000, 0x5000)
    b.write_phys(0x9FF0, bytes(range(16)))
    b.write_phys(0x5000, b"ksinspect")
    b.map(0x3000, 0x7000_0000)                        # mapped, memory not in the image
    space = space_of(b)
    assert space.read(0x1FF0, 25) == bytes(range(16)) + b"ksinspect"
    assert space.read(0x1000, 0) == b""
    with pytest.raises(InvalidAddressError) as info:
        space.read(0x2FF0, 0x20)
    assert info.value.address == 0x3000 and "not in the image" in str(info.value)
    data, error = space.read_available(0x0FF8, 16)
    assert data == b"" and error.address == 0x0FF8 and error.level == 1
    with pytest.raises(InvalidAddressError):
        space.read(0xFFFF_FFFF_FFFF_FFF0, 0x20)


# -- where CR3 and the mode come from ---------------------------------------------------------

def cpu_core(b, cr0=0x80050033, cr4=0x750EF0):
    state = qemu_cpu_state()
    state["cr"] = [cr0, 0, 0, b.cr3, cr4]
    return open_image_bytes(build_elf_core(b.runs(), qemu_state=state))


def test_cr3_and_mode_from_the_cpu_state():
    b = sample_layout("4level")
    memory = cpu_core(b)
    space = AddressSpace(memory)
    assert (space.mode.value, space.cr3, space.wp, space.nxe) == ("4level", b.cr3, True, True)
    check(space, b.expected(0xC000_0000), 0xC000_0000)
    with pytest.raises(DecodeError, match="contradicts"):
        AddressSpace(memory, mode="pae")
    assert AddressSpace(memory, mode="4level").mode.value == "4level"


def test_no_cpu_state_needs_cr3_and_mode():
    b = sample_layout("pae")
    with pytest.raises(DecodeError):
        AddressSpace(b.memory())
    with pytest.raises(DecodeError):
        AddressSpace(b.memory(), mode="pae")
    with pytest.raises(DecodeError):
        AddressSpace(b.memory(), cr3=b.cr3, mode="pae", maxphyaddr=60)


class RunsOnly:
    """A stand-in source with only the attributes the walker reads."""

    def __init__(self, memory):
        self.runs = memory.runs
        self.buffer = memory.buffer


class ReadOnly:
    """A source that can only read (C calls back into Python)."""

    def __init__(self, memory):
        self._memory = memory
        self.calls = 0

    def read(self, pa, n):
        self.calls += 1
        return self._memory.read(pa, n)


@pytest.mark.parametrize("mode", MODES)
def test_duck_typed_and_callback_sources(mode):
    b = sample_layout(mode)
    memory = b.memory()
    reference = space_of(b)
    for source in (RunsOnly(memory), ReadOnly(memory)):
        space = AddressSpace(source, cr3=b.cr3, mode=mode)
        for e in b.all_expected():
            assert space.translate(e.va + 5).pa == e.pa + 5
        assert list(space.mappings()) == list(reference.mappings())
    assert source.calls > 0


def test_broken_run_table_is_an_image_error():
    class Broken:
        buffer = bytes(0x3000)
        runs = (Run(0x1000, 0x2000, 0), Run(0x2000, 0x1000, 0x1000))    # overlap

    with pytest.raises(ImageFormatError):
        AddressSpace(Broken(), cr3=0x1000, mode="4level")

    class Outside:
        buffer = bytes(0x1000)
        runs = (Run(0, 0x2000, 0),)

    with pytest.raises(ImageFormatError):
        AddressSpace(Outside(), cr3=0, mode="4level")


# -- presentation -------------------------------------------------------------------------------

def test_translation_to_dict_and_text():
    b = sample_layout("4level")
    space = space_of(b)
    t = space.translate(0xC000_0123)
    d = t.to_dict()
    assert list(d) == ["va", "pa", "page_size", "writable", "user", "nx", "path", "error"]
    assert all(list(s) == ["level", "index", "address", "value"] for s in d["path"])
    assert d["pa"] == 0x20_0123 and d["error"] is None
    json.dumps(d)
    assert "2 MiB page" in str(t) and "PDE" in t.explain()
    parse_view(t._repr_html_(), str(t))
    missing = space.translate(0x5000_0000)
    assert "not mapped" in str(missing) and missing.to_dict()["page_size"] is None
    m = next(iter(space.mappings()))
    assert list(m.to_dict()) == ["start", "end", "size", "writable", "user", "nx", "pa",
                                 "page_size"]
    assert isinstance(m, Mapping) and str(m)


# -- the command line -----------------------------------------------------------------------------

@pytest.fixture()
def core_file(tmp_path):
    b = sample_layout("4level")
    b.write_phys(0x0123_4000, b"hello, world\0")
    path = tmp_path / "core.elf"
    state = qemu_cpu_state()
    state["cr"] = [0x80050033, 0, 0, b.cr3, 0x750EF0]
    path.write_bytes(build_elf_core(b.runs(), qemu_state=state))
    raw = tmp_path / "raw.img"
    raw.write_bytes(b.flat())
    return b, str(path), str(raw)


run = run_cli


def test_cli_vtop_json(core_file):
    b, path, _ = core_file
    status, out, _ = run("vtop", path, "8048123", "C0000000", "0x5000000", "--json")
    assert status == 0
    docs = json.loads(out)
    assert [d["pa"] for d in docs] == [0x0123_4123, 0x20_0000, None]
    assert list(docs[0]) == ["va", "pa", "page_size", "writable", "user", "nx", "path", "error"]
    assert docs[2]["error"]
    status, out, _ = run("vtop", path, "8048123")
    assert status == 0 and "PTE" in out


def test_cli_vtop_from_file_and_formats(core_file, tmp_path):
    b, path, _ = core_file
    listing = tmp_path / "vas.txt"
    listing.write_text("# addresses\n8048000, 8049000\nc0200000\n")
    status, out, _ = run("vtop", path, "--from-file", str(listing), "--format", "jsonl")
    assert status == 0 and len(out.splitlines()) == 3
    status, out, _ = run("vtop", path, "--from-file", str(listing), "--format", "csv")
    assert status == 0 and out.splitlines()[0].startswith("va,pa,page_size")
    status, out, _ = run("vtop", path, "--from-file", str(listing))
    assert status == 0 and "0xc0200000" in out


def test_cli_errors(core_file):
    b, path, raw = core_file
    status, _, err = run("vtop", path, "800000000000")
    assert status == 1 and "canonical" in err and len(err.splitlines()) == 1
    assert run("vtop", path)[0] == 2
    status, _, err = run("vtop", raw, "1000")
    assert status == 2 and "--cr3" in err
    status, _, err = run("vtop", raw, "1000", "--cr3", "7f000000", "--mode", "4level")
    assert status == 1 and "not in the image" in err
    status, _, err = run("vtop", path, "1000", "--mode", "pae")
    assert status == 1 and "contradicts" in err
    assert run("maps", path, "--range", "zz")[0] == 2
    assert run("maps", path, "--range", "2000-1000")[0] == 2


def test_cli_maps_ptov_read(core_file):
    b, path, raw = core_file
    status, out, _ = run("maps", path, "--json")
    assert status == 0
    assert json.loads(out) == merged(b.all_expected())
    status, out, _ = run("maps", raw, "--cr3", hex(b.cr3), "--mode", "4level", "--range",
                         "c0000000-c0400000", "--merge", "rights", "--format", "csv")
    assert status == 0 and len(out.splitlines()) == 2
    status, out, _ = run("maps", path)
    assert status == 0 and "0xc0000000" in out
    status, out, _ = run("ptov", path, "1234567", "--json")
    assert status == 0 and [a["va"] for a in json.loads(out)] == [0x0804_8567]
    status, out, _ = run("ptov", path, "1234567")
    assert status == 0 and "0x8048567" in out
    status, out, _ = run("read", path, "8048000", "0n13")
    assert status == 0 and "hello, world" in out
    status, out, _ = run("read", path, "8048000", "d", "--json")
    assert json.loads(out)["data"] == b"hello, world\0".hex()
    status, out, err = run("read", path, "c0000000", "10")
    assert status == 1 and "not in the image" in err


# -- random images always terminate ---------------------------------------------------

@st.composite
def random_image(draw):
    mode = draw(st.sampled_from(MODES))
    pages = draw(st.integers(1, 6))
    width = 4 if mode == "32" else 8
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    data = bytearray(pages * PAGE)
    for i in range(0, len(data), width):
        kind = rng.random()
        if kind < 0.5:
            continue
        if kind < 0.9:                 # present, pointing inside (or just past) the image
            value = rng.randrange(pages + 1) * PAGE | rng.getrandbits(9) | P
            if width == 8 and rng.random() < 0.2:
                value |= rng.getrandbits(64) & (0xFFF << 52)
        else:
            value = rng.getrandbits(8 * width)
        data[i:i + width] = value.to_bytes(width, "little")
    cr3 = draw(st.one_of(st.integers(0, pages).map(lambda n: n * PAGE),
                         st.integers(0, (1 << 40) - 1)))
    return mode, bytes(data), cr3, rng


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_image())
def test_random_images_terminate_with_a_result_or_the_library_error(case):
    mode, data, cr3, rng = case
    memory = PhysicalMemory.from_bytes(data)
    try:
        space = AddressSpace(memory, cr3=cr3, mode=mode, nxe=rng.random() < 0.5,
                             ignore_reserved=rng.random() < 0.3)
    except KsinspectError:
        return
    bits = space.va_bits
    vas = [rng.getrandbits(bits) & ~0xFFF for _ in range(40)] + [0]
    if bits > 32:               # sign-extend: canonical addresses (SDM §4.5)
        vas = [va | ((1 << 64) - (1 << bits)) if va >> (bits - 1) else va for va in vas]
    vas += [va ^ (PAGE << rng.randrange(0, 30, 9)) for va in vas[:20]]   # shared prefixes
    vas.append(rng.getrandbits(64))        # usually not canonical: reported, not raised
    batch = space.translate_many(vas)
    for i, va in enumerate(vas):
        t = batch[i]
        assert space.translate(va) == t        # the remembered page == a full walk
        assert space.translate(va) == t        # and again, from the page cache
        if t.reason.invalid_address:
            with pytest.raises(InvalidAddressError):
                t.check()
            continue
        assert len(t.path) <= space.levels
        if t.mapped:
            leaf = t.path[-1].entry
            assert t.pa == leaf.frame + (va & (t.page_size - 1))
            entries = [s.entry for s in t.path
                       if not (mode == "pae" and s.level == 3)]
            assert t.writable == all(e.writable for e in entries)
            assert t.user == all(e.user for e in entries)
            assert t.nx == any(e.nx for e in entries)
        else:
            assert t.error
    pas, sizes, leaves = batch.pas(), batch.page_sizes(), batch.column("leaf")
    for i, va in enumerate(vas):
        t = batch[i]
        # The memoized batch walk agrees with the one-address walk.
        assert (pas[i], sizes[i]) == (t.pa, t.page_size or 0)
        assert leaves[i] == (t.path[-1].value if t.path else 0)
    try:
        for count, m in enumerate(space.mappings(max_entries=20_000, chunk=64)):
            assert m.size > 0 and m.end > m.start
            probe = space.translate(m.start)
            assert probe.pa == m.pa and probe.page_size == m.page_size
            if count > 30:
                break
    except WalkLimitError:
        pass


def test_maps_progress_bar_only_on_a_terminal(monkeypatch):
    from ksinspect.commands import paging as commands

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(commands, "PROGRESS_AFTER", 0.0)
    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        bar = commands._Progress(stream)
        bar(0.5)
        bar(1.0)
        bar.close()
    assert "maps: [" in tty.getvalue() and "100%" in tty.getvalue()
    assert pipe.getvalue() == ""


# -- the per-call paths: remembered pages, the fast read, bare physical addresses ---------

class _CallbackMemory:
    """Physical memory read through a callback, whose bytes may change (a live source)."""

    def __init__(self, data: bytes):
        self.data = bytearray(data)

    def read(self, pa, n):
        if pa + n > len(self.data):
            raise InvalidAddressError("not here", address=pa)
        return bytes(self.data[pa:pa + n])


@pytest.mark.parametrize("mode", MODES)
def test_remembered_pages_agree_with_a_full_walk_everywhere(mode):
    b = sample_layout(mode)
    for e in b.all_expected():
        b.write_phys(e.pa_of(e.va), bytes(range(7, 7 + 64)))
    space = space_of(b)
    memory = space.memory
    rng = random.Random(5)
    vas = []
    for e in b.all_expected():
        vas += [e.va, e.va + rng.randrange(e.page_size), e.va + e.page_size - 1]
    vas += [0, 0x1000, 0x7000_0000]
    full = space.translate_many(vas)             # each row: its own uncached full walk
    for _ in range(2):                           # the first pass walks, the second remembers
        for i, va in enumerate(vas):
            t = space.translate(va)
            assert t == full[i] and t.to_dict() == full[i].to_dict()
            assert str(t) == str(full[i]) and t.explain() == full[i].explain()
            if t.mapped:
                for n in (1, 8, 64):
                    want = (memory.read(t.pa, n) if memory.contains(t.pa, n)
                            and (t.pa & 0xFFF) + n <= 0x1000 else None)
                    if want is not None:
                        assert space.read(va, n) == want
    assert space.remembered_pages, "mapped pages are remembered over an immutable image"


def test_fast_read_keeps_the_precise_error_across_a_page_boundary():
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x9000)
    b.write_phys(0x9FF8, b"ABCDEFGH")
    space = space_of(b)
    assert space.read(0x1FF8, 8) == b"ABCDEFGH"        # remembered now
    assert space.read(0x1FF8, 8) == b"ABCDEFGH"
    with pytest.raises(InvalidAddressError) as info:
        space.read(0x1FF8, 9)                          # one byte into the unmapped page
    assert info.value.address == 0x2000 and info.value.level == 1
    with pytest.raises(InvalidAddressError):
        space.read(0x2000, 1)
    for bad in (-1, 1 << 64):
        with pytest.raises(InvalidAddressError):
            space.read(bad, 1)
    with pytest.raises(DecodeError):
        space.read(0x1FF8, -1)
    with pytest.raises(DecodeError):
        space.read(True, 1)


def test_a_page_partly_outside_the_image_is_read_through_c():
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x9000)
    b.write_phys(0x9000, b"x" * 0x1000)
    data = b.flat()[:0x9800]                       # the page's second half is missing
    space = AddressSpace(PhysicalMemory.from_bytes(data), cr3=b.cr3, mode="4level")
    assert space.read(0x1000, 16) == b"x" * 16
    with pytest.raises(InvalidAddressError) as info:
        space.read(0x17F8, 16)
    assert info.value.address == 0x1800 and "not in the image" in str(info.value)


def test_bools_and_other_types_are_refused_on_the_fast_path_too():
    b = PageTableBuilder("4level")
    b.map(0, 0x9000)
    space = space_of(b)
    assert space.translate(0).mapped and space.translate(0).mapped
    for bad in (True, 1.0, "0"):
        with pytest.raises(DecodeError):
            space.translate(bad)
    assert space.translate(1 << 64 - 1).reason is WalkReason.NON_CANONICAL
    with pytest.raises(InvalidAddressError):
        space.translate(1 << 64)


def test_a_source_read_through_a_callback_is_walked_afresh_every_time():
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x9000)
    memory = _CallbackMemory(b.flat())
    space = AddressSpace(memory, cr3=b.cr3, mode="4level")
    assert space.translate(0x1000).pa == 0x9000
    pte = space.translate(0x1000).path[-1]
    memory.data[pte.address] &= ~1                 # the process unmaps the page
    t = space.translate(0x1000)
    assert t.pa is None and t.reason is WalkReason.NOT_PRESENT
    assert not space.remembered_pages


def test_physical_addresses_in_and_out_of_uint64_buffers():
    b = sample_layout("4level")
    space = space_of(b)
    vas = [e.va + 5 for e in b.all_expected()] + [0, 0x8000_0000_0000_0000]
    want = [UNMAPPED if p is None else p for p in space.translate_many(vas).pas()]
    assert list(space.physical_addresses(vas)) == want
    buf = array("Q", vas)
    assert space.physical_addresses(buf, buf) is buf and list(buf) == want     # in place
    with pytest.raises(DecodeError):
        space.physical_addresses(vas, array("Q", [0]))          # too short
    with pytest.raises(DecodeError):
        space.physical_addresses(vas, bytes(8 * len(vas)))     # not writable
    with pytest.raises(DecodeError):
        space.physical_addresses(vas, array("I", [0] * 2 * len(vas)))
    numpy = pytest.importorskip("numpy")
    arr = numpy.array(vas, dtype=numpy.uint64)
    out = numpy.empty_like(arr)
    assert space.physical_addresses(arr, out) is out and out.tolist() == want


def test_translation_and_mapping_reprs_are_hex():
    b = sample_layout("4level")
    space = space_of(b)
    assert repr(space.translate(0x08048000)) == (
        "Translation(va=0x8048000, pa=0x1234000, page_size=0x1000, rights='r-x user')")
    assert "reason='not present'" in repr(space.translate(0x1000))
    m = next(iter(space.mappings()))
    assert repr(m).startswith("Mapping(start=0x8048000, end=0x8049000, size=0x1000,")
    assert Mapping(m.start, m.end, m.size, m.writable, m.user, m.nx, m.pa, m.page_size,
                   m.pages) == m
    assert pickle.loads(pickle.dumps(m)) == m


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table", "json"])
def test_cli_vtop_from_file_one_bad_address_gives_every_row(core_file, tmp_path, fmt):
    """10,000 addresses with one non-canonical (bit 47 set, bits 63:48 clear:
    SDM vol. 1 §3.3.7.1) give 10,000 rows; that row says why, the others
    translate, and stderr carries one note naming it."""
    b, path, _ = core_file
    vas = [0x0804_8000 + (i % 16) * 0x1000 for i in range(10_000)]
    vas[5000] = 0x8000_0000_0000
    listing = tmp_path / "vas.txt"
    listing.write_text("\n".join("%x" % va for va in vas) + "\n")
    status, out, err = run("vtop", path, "--from-file", str(listing), "--format", fmt)
    assert status == 0, err
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.splitlines()]
    elif fmt == "json":
        rows = json.loads(out)
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
    else:
        rows = out.splitlines()[2:]
    assert len(rows) == 10_000
    if fmt in ("json", "jsonl"):
        assert rows[5000]["pa"] is None and "canonical" in rows[5000]["error"]
        # 0x8048000 maps physical 0x1234000 in the sample tables (read prints its text)
        assert rows[0]["pa"] == rows[5008]["pa"] == 0x0123_4000
    elif fmt == "csv":
        assert rows[5000]["pa"] == "" and "canonical" in rows[5000]["error"]
    else:
        assert "canonical" in rows[5000] and "0x800000000000" in rows[5000]
    # One note names the bad address (json/jsonl/csv add the CR3 read through).
    bad = [line for line in err.splitlines() if "read through CR3" not in line]
    assert len(bad) == 1 and "1 of 10000" in bad[0] and "0x800000000000" in bad[0]


def test_cli_vtop_without_cpu_state_names_only_what_is_missing(core_file):
    """A raw image has no CPU state: the hint names the one option not given
    (it said "give --cr3 and --mode" with --cr3 given); both missing, both named."""
    b, _, raw = core_file
    status, out, err = run("vtop", raw, "8048000", "--cr3", hex(b.cr3))
    assert status == 2 and out == "" and len(err.splitlines()) == 1
    assert "give --paging-mode" in err and "--cr3" not in err
    status, _, err = run("vtop", raw, "8048000", "--paging-mode", "4level")
    assert status == 2 and "give --cr3" in err and "--paging-mode" not in err
    status, _, err = run("vtop", raw, "8048000")
    assert status == 2 and "give --cr3 and --paging-mode" in err
    status, out, err = run("vtop", raw, "8048000", "--cr3", hex(b.cr3), "--paging-mode",
                           "4level", "--json")
    assert status == 0 and json.loads(out)[0]["pa"] == 0x0123_4000


def test_cli_csv_writes_addresses_in_hex_and_booleans_as_json_does(core_file):
    """One CSV convention for every listing: addresses hex (as the table, and
    as vtop's path column already was), booleans true/false (as JSON). The
    values are the sample tables': 0xc0000000 is a 2 MiB kernel page, R/W, NX,
    backed by 0x200000; 0x8048000 a read-only user 4 KiB page at 0x1234000."""
    b, path, _ = core_file
    status, out, err = run("maps", path, "--format", "csv")
    assert status == 0, err
    rows = {r["start"]: r for r in csv.DictReader(io.StringIO(out))}
    kernel = rows["0xc0000000"]
    assert (kernel["pa"], kernel["page_size"]) == ("0x200000", "0x200000")
    assert (kernel["writable"], kernel["user"], kernel["nx"]) == ("true", "false", "true")
    user = rows["0x8048000"]
    assert (user["pa"], user["writable"], user["user"]) == ("0x1234000", "false", "true")
    for fmt_args in (["8048123"], ["8048123", "c0000000"]):
        status, out, err = run("vtop", path, *fmt_args, "--format", "csv")
        row = next(csv.DictReader(io.StringIO(out)))
        assert status == 0 and row["va"] == "0x8048123" and row["pa"] == "0x1234123", err
        assert (row["page_size"], row["writable"], row["user"]) == ("0x1000", "false", "true")
    status, out, _ = run("ptov", path, "1234567", "--format", "csv")
    assert next(csv.DictReader(io.StringIO(out)))["va"] == "0x8048567"
    status, out, _ = run("read", path, "8048000", "d", "--format", "csv")
    assert out.splitlines()[1].startswith("0x8048000,13,")


# -- the C hot path (ksinspect._percall) against the Python path ----------------------------

_SHRINK_LIVE = r"""
import sys
from ksinspect._native import walk
from ksinspect.errors import ImageFormatError
from ksinspect.memory import open_image
from ksinspect.paging import AddressSpace
path, cr3, fast = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "fast"
if not fast:
    walk.PERCALL = None
space = AddressSpace(open_image(path), cr3=cr3, mode="4level")
assert (space._fast is not None) == fast
print(space.read(0x1000, 8).hex(), space.translate(0x2000).pa is not None)   # remembered
with open(path, "r+b") as fh:
    fh.truncate(0x80000)             # the page tables stay, the data pages go
for call in (lambda: space.read(0x1000, 8), lambda: space.translate(0x3000)):
    try:
        call()
        print("no error")
    except ImageFormatError as exc:
        print("ImageFormatError", exc)
print("remembered", hex(space.translate(0x1000).pa))   # a remembered page reads no file
"""


@pytest.mark.skipif(sys.platform == "win32", reason="Windows refuses to truncate a file "
                    "while it is mapped (ERROR_USER_MAPPED_FILE), so there is no SIGBUS to catch")
@pytest.mark.parametrize("fast", ["fast", "python"])
def test_a_file_shrinking_under_a_live_space_is_an_image_error_not_sigbus(fast, tmp_path):
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x80000)
    b.map(0x2000, 0x81000)
    b.map(0x3000, 0x82000)
    b.write_phys(0x80000, b"ABCDEFGH")
    image = bytearray(b.flat())
    assert max(b.tables) < 0x80000
    image += bytes(0x100000 - len(image))
    path = tmp_path / "shrinking.raw"
    path.write_bytes(bytes(image))
    if fast == "fast" and walk.PERCALL is None:
        pytest.skip("ksinspect._percall is not built here")
    run = subprocess.run([sys.executable, "-c", _SHRINK_LIVE, str(path), str(b.cr3), fast],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, (run.returncode, run.stderr[-800:])   # -7 would be SIGBUS
    lines = run.stdout.splitlines()
    assert lines[0] == "4142434445464748 True"
    message = "ImageFormatError %s: the image file shrank from %d to %d bytes" % (
        path, 0x100000, 0x80000)
    assert lines[1].startswith(message) and lines[2].startswith(message), lines
    assert lines[3] == "remembered 0x80000"


def test_the_c_hot_path_answers_as_the_python_path_does(monkeypatch):
    if walk.PERCALL is None:
        pytest.skip("ksinspect._percall is not built here")
    for mode in MODES:
        b = sample_layout(mode)
        for e in b.all_expected():
            b.write_phys(e.pa_of(e.va), bytes(range(11, 11 + 64)))
        fast = space_of(b)
        monkeypatch.setattr(walk, "PERCALL", None)
        slow = space_of(b)
        monkeypatch.undo()
        assert fast._fast is not None and slow._fast is None
        rng = random.Random(9)
        vas = [0, 0x1000, 0x7000_0000, (1 << 64) - 1, 1 << 47]
        for e in b.all_expected():
            vas += [e.va, e.va + rng.randrange(e.page_size), e.va + e.page_size - 1]
        for _ in range(2):
            for va in vas:
                a, z = fast.translate(va), slow.translate(va)
                assert type(a) is type(z) and a == z and a.explain() == z.explain()
                for n in (0, 1, 8, 64, 0x1000, 0x1001):
                    outcomes = []
                    for space in (fast, slow):
                        try:
                            outcomes.append(space.read(va, n))
                        except KsinspectError as exc:
                            outcomes.append((type(exc), str(exc), exc.address))
                    assert outcomes[0] == outcomes[1], (hex(va), n)
        for bad in (True, 1.5, "1", -1, 1 << 64, 1 << 80):
            outcomes = []
            for space in (fast, slow):
                for call in (lambda: space.translate(bad), lambda: space.read(bad, 1),
                             lambda: space.read(0x1000, bad)):
                    try:
                        outcomes.append(call())
                    except KsinspectError as exc:
                        outcomes.append((type(exc), str(exc)))
            assert outcomes[:3] == outcomes[3:], bad
        assert fast.remembered_pages > 0 and slow.remembered_pages > 0


def test_the_page_cache_grows_and_starts_again_when_full(monkeypatch):
    if walk.PERCALL is None:
        pytest.skip("ksinspect._percall is not built here")
    import ksinspect.paging as paging
    monkeypatch.setattr(paging, "PAGE_CACHE_PAGES", 1024)
    b = PageTableBuilder("4level")
    for i in range(3000):
        b.map(0x400000 + i * PAGE, 0x100000 + i * PAGE)
    space = space_of(b)
    seen = []
    for i in range(3000):
        assert space.translate(0x400000 + i * PAGE + 5).pa == 0x100000 + i * PAGE + 5
        seen.append(space.remembered_pages)
    assert max(seen) == 1024 and seen[-1] < 1024      # filled to the cap, then again
    assert space.translate(0x400000 + 5).pa == 0x100005


def test_mappings_built_in_c_equal_the_python_ones_and_outlive_their_walk(monkeypatch):
    if walk.PERCALL is None:
        pytest.skip("ksinspect._percall is not built here")
    import gc
    for mode in MODES:
        space = space_of(sample_layout(mode))
        fast = list(space.mappings(chunk=3))          # several C chunks, several slices
        table = list(space.mapping_table())
        monkeypatch.setattr(walk, "PERCALL", None)
        slow = list(space.mappings(chunk=3))
        monkeypatch.undo()
        assert len(fast) > 3 and fast == slow == table
        assert [m.to_dict() for m in fast] == [m.to_dict() for m in slow]
        assert [repr(m) for m in fast] == [repr(m) for m in slow]
        assert not any(gc.is_tracked(m) for m in fast)     # no cycle can hold them
    rows = memoryview(b"".join(walk.MAPPING_RECORD.pack(i << 12, 0x1000, i << 20, 0x1000, 7, 1)
                               for i in range(600)))
    views = walk.record_views(Mapping, rows, walk.MAPPING_RECORD.size)
    del rows
    gc.collect()
    assert [(m.start, m.pa, m.nx) for m in views] == [(i << 12, i << 20, True)
                                                      for i in range(600)]
    for bad in ((int, memoryview(b""), 40), (Mapping, b"", 40), (Mapping, memoryview(b""), 0)):
        with pytest.raises((TypeError, ValueError)):
            walk.record_views(*bad)
