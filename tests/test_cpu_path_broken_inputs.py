"""Hostile and broken images for ``access`` and ``tss``: crafted 64-bit cores
(tests/builders/image_builder.py writes the ELF and QEMU note from their specs,
tests/builders/pagetable_builder.py the page tables) with a GDT and TSS placed where a
test wants them. Every case ends in a result, a finding or one line naming
the input and the problem -- never a traceback, a hang or a silent guess."""
import struct

import pytest

from builders.image_builder import build_elf_core, qemu_cpu_state
from ksinspect.access import Fault, simulate_access
from ksinspect.errors import KsinspectError, TableNotFoundError
from ksinspect.memory import open_image_bytes
from ksinspect.task import read_tss
from builders.pagetable_builder import PageTableBuilder

GDT_VA, TSS_VA, TSS_PA, GDT_PA = 0xFFFFFE0000001000, 0xFFFFFE0000003000, 0x40000, 0x41000
CODE64 = 0x00AF9B000000FFFF       # Linux __KERNEL_CS
DATA = 0x00CF93000000FFFF         # Linux __KERNEL_DS


def tss_descriptor(base, limit, type_=0x9, g=0):
    lo = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | type_ << 40 | 1 << 47 \
        | ((limit >> 16) & 0xF) << 48 | g << 55 | ((base >> 24) & 0xFF) << 56
    return lo, base >> 32


def image(gdt_entries, tss=b"", tr=(0x40, 0x67), gdt_limit=None, map_tss=True):
    b = PageTableBuilder("4level")
    b.map(GDT_VA, GDT_PA, writable=False, user=False)
    if map_tss:
        b.map(TSS_VA, TSS_PA, user=False)
    gdt = b"".join(struct.pack("<Q", e) for e in gdt_entries)
    b.write_phys(GDT_PA, gdt)
    b.write_phys(TSS_PA, tss.ljust(0x1000, b"\0"))
    state = qemu_cpu_state()
    state["cr"] = [0x80050033, 0, 0, b.cr3, 0x750EF0]
    state["gdt"] = dict(selector=0, limit=gdt_limit if gdt_limit is not None else len(gdt) - 1,
                        flags=0, base=GDT_VA)
    state["idt"] = dict(selector=0, limit=0, flags=0, base=0)
    state["tr"] = dict(selector=tr[0], limit=tr[1], flags=0x8B00, base=TSS_VA)
    return open_image_bytes(build_elf_core(b.runs(), qemu_state=state), "crafted.elf")


def gdt_with(tss_lo_hi):
    return [0, 0, CODE64, DATA, 0, 0, 0, 0, tss_lo_hi[0], tss_lo_hi[1]]


def test_tss_limit_below_the_minimum_is_a_finding():
    memory = image(gdt_with(tss_descriptor(TSS_VA, 0x40, type_=0xB)), tr=(0x40, 0x40))
    report = read_tss(memory)
    assert report.tss.limit == 0x40
    assert any("below 0x67" in f.message for f in report.findings)


def test_io_bitmap_inside_the_limit_is_summarised():
    tss = bytearray(0x68 + 8 + 1)
    struct.pack_into("<H", tss, 0x66, 0x68)
    tss[0x68:0x70] = bytes([0xFF] * 7 + [0x7F])     # only port 63 permitted
    tss[0x70] = 0xFF
    memory = image(gdt_with(tss_descriptor(TSS_VA, len(tss) - 1, type_=0xB)),
                   tss=bytes(tss), tr=(0x40, len(tss) - 1))
    t = read_tss(memory).tss
    assert t.io_bitmap_inside_limit and t.allowed_port_ranges() == [(63, 63)]
    assert t.port_allowed(63) and not t.port_allowed(64) and not t.port_allowed(1000)


def test_a_huge_tss_limit_is_read_only_as_far_as_a_bitmap_can_reach():
    # G=1 with limit 0xFFFFF: 4 GiB. Only 64 KiB + 8 KiB can matter (16-bit map base).
    memory = image(gdt_with(tss_descriptor(TSS_VA, 0xFFFFF, type_=0xB, g=1)),
                   tr=(0x40, 0xFFFFFFFF))
    report = read_tss(memory)
    assert report.tss.limit == 0xFFFFFFFF
    assert any(f.code == "tss-partly-unmapped" for f in report.findings)


def test_unmapped_ist_and_rsp0_are_findings():
    tss = bytearray(0x68)
    struct.pack_into("<Q", tss, 0x04, 0xFFFF800000100000)        # RSP0: not mapped
    struct.pack_into("<Q", tss, 0x24, TSS_VA + 0x1000)           # IST1: top of the TSS page
    memory = image(gdt_with(tss_descriptor(TSS_VA, 0x67, type_=0xB)), tss=bytes(tss))
    codes = {f.message.split(" ")[0]: f.code for f in read_tss(memory).findings}
    assert codes.get("RSP0") == "pointer-unmapped" and "IST1" not in codes


@pytest.mark.parametrize("case, problem", [
    (dict(gdt_entries=[0, 0, CODE64, DATA, 0, 0, 0, 0], tr=(0x40, 0x67)), "does not name"),
    (dict(gdt_entries=gdt_with((DATA, 0)), tr=(0x40, 0x67)), "not a TSS descriptor"),
    (dict(gdt_entries=gdt_with(tss_descriptor(TSS_VA, 0x67)), tr=(0, 0)), "null selector"),
    (dict(gdt_entries=gdt_with(tss_descriptor(TSS_VA, 0x67)), map_tss=False), "not mapped"),
])
def test_tss_refusals_are_one_line_naming_the_image(case, problem):
    memory = image(**case)
    with pytest.raises(KsinspectError) as info:
        read_tss(memory)
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_access_through_a_gdt_that_is_too_short():
    memory = image(gdt_with(tss_descriptor(TSS_VA, 0x67)), gdt_limit=0x17)
    r = simulate_access(memory, 0x18, 0, cpl=0)                  # index 3 past limit 0x17
    assert (r.fault, r.error_code) == (Fault.GP, 0x18)
    assert "beyond the GDT limit" in r.steps[0].detail
    r = simulate_access(memory, 0x10, 0, "execute", cpl=0, register=None)
    assert r.fault is Fault.PF                                   # loads fine; page 0 unmapped


def test_access_with_ldtr_null_and_a_tss_selector_in_ds():
    memory = image(gdt_with(tss_descriptor(TSS_VA, 0x67)))
    r = simulate_access(memory, 0x04, 0, cpl=0)                  # LDT index 0, LDTR null
    assert (r.fault, r.error_code) == (Fault.GP, 0x04)
    r = simulate_access(memory, 0x40, 0, cpl=0)                  # a TSS is no data segment
    assert (r.fault, r.error_code) == (Fault.GP, 0x40)


def test_no_cpu_state_at_all():
    from builders.image_builder import build_raw
    memory = open_image_bytes(build_raw([(0, b"\0" * 4096)]), "plain.raw")
    for call in (lambda: simulate_access(memory, "ds", 0), lambda: read_tss(memory)):
        with pytest.raises(TableNotFoundError) as info:
            call()
        assert "plain.raw" in str(info.value)


def test_the_access_command_never_crashes_on_odd_arguments():
    # Random logical addresses, selectors, sizes and CPLs on a real guest:
    # exit 0, 1 or 2, one line on stderr when not 0, never a traceback.
    import os
    from hypothesis import given, settings, strategies as st
    from conftest import run_cli as run
    image = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "qemu",
                         "i386-pae", "core-trimmed.elf.xz")
    selectors = st.one_of(st.sampled_from(["cs", "ds", "es", "fs", "gs", "ss", "DS", "xx", ""]),
                          st.integers(0, 0x1FFFF).map(lambda v: "%x" % v))
    offsets = st.one_of(st.integers(0, 2 ** 65).map(lambda v: "%x" % v),
                        st.sampled_from(["", "-1", "0n12", "zz", "ffffffff"]))

    @settings(max_examples=60, deadline=None, database=None)
    @given(selectors, offsets, st.sampled_from(["--read", "--write", "--execute"]),
           st.integers(-1, 70), st.integers(-1, 5))
    def check(sel, off, kind, size, cpl):
        status, out, err = run("access", image, "%s:%s" % (sel, off), kind, "--size", str(size),
                               "--cpl", str(cpl))
        assert status in (0, 1, 2)
        if status:
            assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    check()
