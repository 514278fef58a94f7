"""The whole path of one access: segmentation (SDM vol. 3A §3.4-3.5, §5.3-5.8),
paging rights (§4.6) and the fault with its error code (§4.7, §6.13).

Descriptors are built from the SDM's bit layout (§3.4.5, Figure 3-8) by
``desc()`` below; the shipped QEMU guests give real GDTs and page tables
(their selectors as Linux defines them: i386 __USER_DS = 0x7b, __KERNEL_DS =
0x68, the PnP BIOS data segments 0xa8/0xb0 with limit 0; x86-64 kernel text
at 0xffffffff81000000, supervisor-only).
"""
import json
import os

import pytest

from ksinspect.access import (Fault, PageRights, PagingState,
                              check_page_access, check_segment_access, simulate_access)
from ksinspect.errors import DecodeError
from ksinspect.memory import open_image
from ksinspect.paging import AddressSpace
from ksinspect.x86.control import CpuMode
from ksinspect.x86.descriptor import SegmentDescriptor
from ksinspect.x86.selector import Selector

from builders.descriptors import segment_qword
from conftest import DATA, HERE, QEMU, run_cli as run


def desc(base=0, limit=0xFFFFF, type_=0x3, s=1, dpl=3, p=1, db=1, g=1, l=0):
    """An 8-byte descriptor from its fields (SDM Figure 3-8)."""
    return SegmentDescriptor.decode(segment_qword(base, limit, type_, s, dpl, p, l=l, db=db, g=g),
                                    None, "legacy")


SEL = Selector.decode(0x0F)     # LDT index 1, RPL 3


def seg(d, offset, access="read", size=1, cpl=3, register="ds", selector=SEL, loaded=False,
        mode=CpuMode.PROTECTED, **kw):
    return check_segment_access(d, offset, access, size, cpl, mode, register, selector,
                                loaded, **kw)


# ----------------------------------------------------------------- segmentation rules

def test_flat_data_segment_gives_base_plus_offset():
    r = seg(desc(base=0x10000000), 0x1234)
    assert r.ok and r.linear == 0x10001234


def test_write_to_read_only_data_is_gp0_and_ss_based_is_ss0():
    # §5.4.1: writing a read-only data segment raises #GP(0); through SS, #SS(0).
    ro = desc(type_=0x1)
    r = seg(ro, 0, "write", loaded=True)
    assert (r.fault, r.error_code) == (Fault.GP, 0)
    assert seg(ro, 0, "read", loaded=True).ok


def test_read_of_execute_only_code_and_loading_it_into_ds():
    xo = desc(type_=0x8)           # code, execute-only
    r = seg(xo, 0, "read")         # MOV DS: only data or readable code (§5.6)
    assert (r.fault, r.error_code) == (Fault.GP, 0x0C)
    r = seg(xo, 0, "read", register="cs", loaded=True)   # a CS: override read
    assert (r.fault, r.error_code) == (Fault.GP, 0)
    assert seg(desc(type_=0xA), 0, "read", register="cs", loaded=True).ok


def test_execute_of_a_data_segment():
    r = seg(desc(type_=0x3), 0, "execute", register="cs", selector=Selector.decode(0x7B))
    assert r.fault is Fault.GP and r.error_code == 0x78


def test_privilege_check_on_load_names_the_selector():
    # §5.6: max(CPL, RPL) <= DPL; the error code is the selector with RPL cleared.
    r = seg(desc(dpl=0), 0, cpl=3, selector=Selector.decode(0x6B))
    assert (r.fault, r.error_code) == (Fault.GP, 0x68)
    assert seg(desc(dpl=0), 0, cpl=0, selector=Selector.decode(0x68)).ok
    # RPL 3 at CPL 0 is refused too: max(0, 3) = 3 > DPL 0.
    assert seg(desc(dpl=0), 0, cpl=0, selector=Selector.decode(0x6B)).fault is Fault.GP
    # Conforming readable code is readable at any CPL (§5.6.1).
    assert seg(desc(type_=0xE, dpl=0), 0, cpl=3, selector=Selector.decode(0x63)).ok


def test_not_present_segment_is_np_and_ss_is_ss():
    r = seg(desc(p=0), 0)
    assert (r.fault, r.error_code) == (Fault.NP, 0x0C)
    r = seg(desc(p=0, dpl=3), 0, register="ss", selector=Selector.decode(0x0F))
    assert (r.fault, r.error_code) == (Fault.SS, 0x0C)


def test_null_selector_loads_but_faults_on_use():
    r = seg(None, 0, selector=Selector.decode(0))
    assert (r.fault, r.error_code) == (Fault.GP, 0)
    assert [s.check for s in r.steps] == ["load DS", "use"]


def test_limit_check_counts_the_size_of_the_access():
    small = desc(limit=0xFFF, g=0)
    assert seg(small, 0xFFF).ok
    r = seg(small, 0xFFF, size=2)
    assert (r.fault, r.error_code) == (Fault.GP, 0)
    assert seg(small, 0xFFE, size=2).ok
    assert seg(small, 0x1000, register="ss", selector=Selector.decode(0x0F)).fault is Fault.SS


def test_expand_down_segment_valid_offsets_are_above_the_limit():
    # §3.4.5.1: expand-down with B=1: offsets limit+1 .. 0xFFFFFFFF; with B=0 .. 0xFFFF.
    down = desc(type_=0x7, limit=0xFFF, g=0, db=1)
    assert seg(down, 0xFFF).fault is Fault.GP
    assert seg(down, 0x1000).ok and seg(down, 0xFFFFFFFF).ok
    assert seg(down, 0xFFFFFFFF, size=2).fault is Fault.GP
    down16 = desc(type_=0x7, limit=0xFFF, g=0, db=0)
    assert seg(down16, 0xFFFF).ok and seg(down16, 0x10000).fault is Fault.GP


def test_64_bit_mode_ignores_ds_base_applies_fs_base_and_checks_canonical():
    flat = desc(base=0x1000, l=0)
    m = CpuMode.LONG_64BIT
    assert seg(flat, 0x5000, mode=m, loaded=True, base=0x1000).linear == 0x5000
    assert seg(flat, 0x5000, mode=m, loaded=True, register="fs", base=0x7F0000).linear == \
        0x7F5000
    r = seg(flat, 0x0000800000000000, mode=m, loaded=True)
    assert (r.fault, r.error_code) == (Fault.GP, 0)
    r = seg(flat, 0x0000800000000000, mode=m, loaded=True, register="ss")
    assert (r.fault, r.error_code) == (Fault.SS, 0)
    assert seg(flat, 0x0000800000000000, mode=m, loaded=True, address_bits=57).ok
    # The last byte counts: 8 bytes at 0x7ffffffffffc cross the canonical boundary.
    assert seg(flat, 0x7FFFFFFFFFFC, size=8, mode=m, loaded=True).fault is Fault.GP


def test_real_mode_is_selector_times_16_plus_offset():
    r = seg(None, 0x10, mode=CpuMode.REAL, selector=Selector.decode(0xF000), loaded=True)
    assert r.ok and r.linear == 0xF0010
    assert seg(None, 0xFFFF, size=2, mode=CpuMode.REAL, selector=Selector.decode(0xF000),
               loaded=True).fault is Fault.GP


@pytest.mark.parametrize("kwargs", [dict(size=0), dict(size=65), dict(cpl=4), dict(cpl=-1),
                                    dict(register="xs")])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(DecodeError):
        seg(desc(), 0, **kwargs)
    with pytest.raises(DecodeError):
        seg(desc(), 1 << 32)            # a 32-bit effective address


# ----------------------------------------------------------------- paging rules

USER_RW = PageRights(True, writable=True, user=True)
USER_RO = PageRights(True, writable=False, user=True)
USER_NX = PageRights(True, writable=True, user=True, nx=True)
KERNEL_RO = PageRights(True, writable=False, user=False)


def page(rights, access="read", user_mode=True, **state):
    return check_page_access(rights, 0x1000, access, user_mode, PagingState(**state))


@pytest.mark.parametrize("rights,access,user_mode,state,code", [
    # Linux's classic user faults: read/write not present, write to read-only, NX fetch.
    (PageRights(False), "read", True, {}, 0x4),
    (PageRights(False), "write", True, {}, 0x6),
    (USER_RO, "write", True, {}, 0x7),
    (USER_NX, "execute", True, {}, 0x15),
    (KERNEL_RO, "read", True, {}, 0x5),
    (PageRights(False, reserved=True), "read", True, {}, 0xD),
    # I/D is reported only with NXE (under PAE/IA-32e) or SMEP (§4.7).
    (PageRights(False), "execute", True, dict(nxe=False, smep=False), 0x4),
    (PageRights(False), "execute", True, dict(nxe=False, smep=True), 0x14),
    # Supervisor: WP, SMEP, SMAP (§4.6.1).
    (KERNEL_RO, "write", False, dict(wp=True), 0x3),
    (USER_RW, "execute", False, dict(smep=True), 0x11),
    (USER_RW, "read", False, dict(smap=True, ac=False), 0x1),
    (USER_RW, "write", False, dict(smap=True, ac=False), 0x3),
    # Protection keys: key 1 with AD (bit 2) or WD (bit 3) set in PKRU (§4.6.2).
    (PageRights(True, True, True, pkey=1), "read", True, dict(pke=True, pkru=0x4), 0x25),
    (PageRights(True, True, True, pkey=1), "write", True, dict(pke=True, pkru=0x8), 0x27),
])
def test_page_faults(rights, access, user_mode, state, code):
    r = page(rights, access, user_mode, **state)
    assert r.fault is Fault.PF and r.error_code.raw == code and r.cr2 == 0x1000


@pytest.mark.parametrize("rights,access,user_mode,state", [
    (USER_RW, "write", True, {}),
    (USER_NX, "execute", True, dict(nxe=False)),       # XD ignored without NXE
    (KERNEL_RO, "write", False, dict(wp=False)),       # WP=0: supervisor writes anything
    (USER_RW, "read", False, dict(smap=True, ac=True)),
    (USER_RW, "execute", False, dict(smep=False)),
    (PageRights(True, True, True, pkey=1), "execute", True, dict(pke=True, pkru=0xC)),
    (PageRights(True, True, True, pkey=1), "read", True, dict(pke=True, pkru=0x8)),
    (PageRights(True, True, True, pkey=1), "write", False, dict(pke=True, pkru=0x8, wp=False)),
])
def test_page_accesses_allowed(rights, access, user_mode, state):
    assert page(rights, access, user_mode, **state).ok


def test_implicit_supervisor_access_ignores_ac():
    r = check_page_access(USER_RW, 0x1000, "read", True, PagingState(smap=True, ac=True),
                          implicit=True)
    assert r.fault is Fault.PF and r.error_code.raw == 0x1


# ----------------------------------------------------------------- the shipped guests

def guest(profile):
    return open_image(os.path.join(QEMU, profile, "core-trimmed.elf.xz"))


@pytest.mark.parametrize("profile,address", [
    ("x86_64-4level", 0xFFFFFFFF81000000), ("x86_64-5level", 0xFFFFFFFF81000000),
    ("i386-pae", 0xC1000000), ("i386-2level", 0xC1000000)])
def test_kernel_address_at_cpl3_is_a_protection_fault_with_us(profile, address):
    # The kernel text is mapped supervisor-only: a user read is #PF with
    # P=1 (present) and U/S=1 (user access): error code 5.
    with guest(profile) as memory:
        sel = "ds" if profile.startswith("x86_64") else 0x7B
        r = simulate_access(memory, sel, address, "read", cpl=3)
        assert r.fault is Fault.PF and r.error_code == 0x5 and r.cr2 == address
        ok = simulate_access(memory, sel, address, "read", cpl=0)
        assert ok.fault is None and ok.physical == AddressSpace(memory).translate(address).pa


def _user_page(memory, executable):
    for m in AddressSpace(memory).mappings(0, 0x80000000):
        if m.user and not m.writable and (not m.nx) == executable:
            return m.start
    raise AssertionError("no such user page")


@pytest.mark.parametrize("profile", ["x86_64-4level", "x86_64-5level", "i386-pae", "i386-2level"])
def test_user_code_page_read_ok_write_faults(profile):
    # The CR3 in the snapshot is the last user process's (busybox): its text
    # pages are user, read-only and executable.
    with guest(profile) as memory:
        va = _user_page(memory, executable=True)
        sel = "ds" if profile.startswith("x86_64") else 0x7B
        assert simulate_access(memory, sel, va, "read", cpl=3).fault is None
        w = simulate_access(memory, sel, va, "write", cpl=3)
        assert w.fault is Fault.PF and w.error_code == 0x7
        # At CPL 0 the write faults as well (CR0.WP=1) but without U/S.
        w0 = simulate_access(memory, sel, va, "write", cpl=0)
        assert w0.fault is Fault.PF and w0.error_code == 0x3


def test_i386_guest_segments():
    with guest("i386-pae") as memory:
        # __KERNEL_DS (0x68, DPL 0) into DS at CPL 3: #GP(0x68).
        r = simulate_access(memory, 0x6B, 0, "read", cpl=3)
        assert (r.fault, r.error_code) == (Fault.GP, 0x68)
        # The PnP BIOS data segment 0xa8 has limit 0: one byte (G=0).
        assert simulate_access(memory, 0xA8, 1, "read", cpl=0).fault is Fault.GP
        # A selector beyond the GDT limit (0xff): #GP(selector).
        r = simulate_access(memory, 0x100, 0, "read", cpl=0)
        assert (r.fault, r.error_code) == (Fault.GP, 0x100)
        # An LDT selector with LDTR null: #GP(selector).
        r = simulate_access(memory, 0x0F, 0, "read", cpl=3)
        assert (r.fault, r.error_code) == (Fault.GP, 0x0C)
        # A write through CS (kernel code, 0x60): code is never writable, #GP(0).
        assert simulate_access(memory, "cs", 0xC1000000, "write", cpl=0).fault is Fault.GP


def test_cli_access_json_and_bad_input():
    image = os.path.join(QEMU, "x86_64-4level", "core-trimmed.elf.xz")
    status, out, _ = run("access", image, "ds:ffffffff81000000", "--cpl", "3", "--json")
    d = json.loads(out)
    assert status == 0 and d["fault"] == "#PF" and d["error_code"] == 5 and d["vector"] == 14
    for argv, code in ((("zz:0",), 2), (("10000:0",), 2), (("ds:1" + "0" * 16,), 2),
                       (("ds:0", "--cpl", "4"), 2), (("ds:0", "--size", "0"), 2),
                       (("ds:0", "--size", "65"), 2), (("ds", ), 2), (("xs:0",), 2)):
        status, out, err = run("access", image, *argv)
        assert status == code and len(err.splitlines()) == 1, (argv, err)
    status, _, err = run("access", os.path.join(HERE, "test_access.py"), "ds:0")
    assert status == 1 and len(err.splitlines()) == 1


# ----------------------------------------------------------------- the PTI guest

PTI = os.path.join(DATA, "qemu-pti", "x86_64-pti")


def test_pti_user_cr3_lacks_the_kernel_but_keeps_the_entry_area():
    # Linux PTI: the user PGD is the page after the kernel PGD (PTI_USER_PGTABLE_BIT).
    with open_image(os.path.join(PTI, "core-trimmed.elf.xz")) as memory:
        kernel_cr3 = memory.cpu.cr3 & ~0x1FFF
        user_cr3 = kernel_cr3 | 0x1000
        text = 0xFFFFFFFF81000000
        # Kernel CR3: kernel text present, supervisor-only: P=1.
        r = simulate_access(memory, "ds", text, "read", cpl=3, cr3=kernel_cr3)
        assert (r.fault, r.error_code) == (Fault.PF, 0x5)
        # User CR3: the kernel text is not mapped at all: P=0.
        r = simulate_access(memory, "ds", text, "read", cpl=3, cr3=user_cr3)
        assert (r.fault, r.error_code) == (Fault.PF, 0x4)
        # ... but the GDT (cpu_entry_area) is, supervisor-only, in both.
        for cr3 in (kernel_cr3, user_cr3):
            r = simulate_access(memory, "ds", memory.cpu.gdtr_base, "read", cpl=3, cr3=cr3)
            assert (r.fault, r.error_code) == (Fault.PF, 0x5)
        # The user program's code: executable through the user CR3; the kernel
        # PGD's user entries carry XD, so fetching it there faults (P|U/S|I/D).
        space = AddressSpace(memory, cr3=user_cr3)
        va = next(m.start for m in space.mappings(0, 0x80000000) if m.user and not m.nx)
        assert simulate_access(memory, "cs", va, "execute", cpl=3, cr3=user_cr3).fault is None
        r = simulate_access(memory, "cs", va, "execute", cpl=3, cr3=kernel_cr3)
        assert (r.fault, r.error_code) == (Fault.PF, 0x15)


def test_a_register_the_image_does_not_carry():
    from dataclasses import replace
    with guest("x86_64-4level") as memory:
        cpu = memory.cpu
        segments = {k: v for k, v in cpu.segments.items() if k != "fs"}

        class Without:
            name = memory.name
            cpu = replace(memory.cpu, segments=segments)
        with pytest.raises(DecodeError, match="no FS register"):
            simulate_access(Without(), "fs", 0)
        with pytest.raises(DecodeError):
            simulate_access(memory, "0x10", 0)      # a string that is not a register name
        with pytest.raises(DecodeError):
            simulate_access(memory, "ds", 0, size=0)
        with pytest.raises(DecodeError):
            simulate_access(memory, "ds", 0, cpl=4)


def test_access_result_renders_escaped_html():
    with guest("x86_64-4level") as memory:
        html = simulate_access(memory, "ds", 0xFFFFFFFF81000000, cpl=3)._repr_html_()
    assert html.startswith('<div class="ksinspect-access">') and "#PF(0x5)" in html
    assert "<table" in html and "U/S" in html
    with guest("i386-pae") as memory:      # the load rule reads "max(CPL 3, RPL 3) = 3 <= DPL 3"
        html = simulate_access(memory, 0x7B, 0xC1000000, cpl=3)._repr_html_()
    assert "= 3 &lt;= DPL 3" in html and "<= DPL" not in html


def test_the_command_knows_the_same_segment_registers():
    from ksinspect import access
    from ksinspect.commands import cpu
    assert set(cpu.SEGMENT_REGISTERS) == set(access.SEGMENT_REGISTERS)
