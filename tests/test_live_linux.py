"""Live tests of ksinspect.live.linux: vectors read from this very machine.

Expected values come from sources independent of ksinspect:

* the Linux kernel's GDT layout, arch/x86/include/asm/segment.h (x86-64):
  GDT_ENTRY_DEFAULT_USER32_CS = 4, GDT_ENTRY_DEFAULT_USER_DS = 5,
  GDT_ENTRY_DEFAULT_USER_CS = 6, GDT_ENTRY_CPUNODE = 15, and
  __USER_CS = GDT_ENTRY_DEFAULT_USER_CS*8 + 3 = 0x33,
  __USER_DS = GDT_ENTRY_DEFAULT_USER_DS*8 + 3 = 0x2b,
  __USER32_CS = 4*8 + 3 = 0x23, __CPUNODE_SEG = 15*8 + 3 = 0x7b;
* the Intel SDM: vol. 2A "LAR" (access-rights layout: bits 15:8 and 23:20
  of the descriptor's second dword), vol. 2A/2B "LSL", vol. 3A 3.4.2
  (selector = index << 3 | TI << 2 | RPL) and Figure 3-8 (descriptor
  layout);
* the kernel's fill_ldt() (arch/x86/include/asm/desc.h), which builds an LDT
  descriptor from struct user_desc with DPL 3, S=1 and the accessed bit set.

Anything that writes the LDT runs in a child process so the test process's
own LDT stays empty.
"""
import ctypes
import json
import os
import platform
import subprocess
import sys

import pytest

from ksinspect.errors import DecodeError, UnsupportedError
from ksinspect.live import linux

IS_LINUX_X86_64 = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")

live = pytest.mark.live
needs_linux_x86_64 = pytest.mark.skipif(
    not IS_LINUX_X86_64 or not linux.available(),
    reason="live tests need Linux on x86-64 (this is %s / %s%s)" % (
        sys.platform, platform.machine(),
        "" if linux.available() else ": " + str(linux.unavailable_reason())))

# arch/x86/include/asm/segment.h (x86-64), see the module docstring.
USER32_CS = 4 * 8 + 3      # 0x23
USER_DS = 5 * 8 + 3        # 0x2b
USER_CS = 6 * 8 + 3        # 0x33
CPUNODE_SEG = 15 * 8 + 3   # 0x7b
KERNEL_CS = 2 * 8          # 0x10, DPL 0

# LAR access-rights bits (SDM vol. 2A "LAR"; vol. 3A Figure 3-8 shifted to
# the second dword): type in 11:8, S 12, DPL 14:13, P 15, AVL 20, L 21,
# D/B 22, G 23.
AR_ACCESSED = 1 << 8
AR_RW = 1 << 9             # code: readable; data: writable
AR_DC = 1 << 10            # code: conforming; data: expand-down
AR_CODE = 1 << 11
AR_S = 1 << 12
AR_P = 1 << 15
AR_AVL = 1 << 20
AR_L = 1 << 21
AR_DB = 1 << 22
AR_G = 1 << 23


def ar_dpl(rights):
    return (rights >> 13) & 3


# --- segment registers --------------------------------------------------

@live
@needs_linux_x86_64
def test_segment_registers_are_linux_user_selectors():
    regs = linux.segment_registers()
    assert regs["cs"] == USER_CS == 0x33
    assert regs["ss"] == USER_DS == 0x2b
    # A 64-bit process starts with DS = ES = 0 (start_thread() in
    # arch/x86/kernel/process_64.c passes _ds = 0); __USER_DS also works.
    assert regs["ds"] in (0, USER_DS)
    assert regs["es"] in (0, USER_DS)
    assert set(regs) == {"cs", "ds", "es", "fs", "gs", "ss", "fs_base", "gs_base"}


@live
@needs_linux_x86_64
def test_fs_base_points_at_the_thread_control_block():
    # x86-64 ELF TLS ABI (Drepper, "ELF Handling For Thread-Local Storage",
    # variant II): %fs:0 holds the thread pointer itself, i.e. the TCB's first
    # word is its own address. Read it with ctypes, independently of the core.
    fs_base = linux.segment_registers()["fs_base"]
    assert fs_base
    assert ctypes.c_uint64.from_address(fs_base).value == fs_base


# --- LAR / LSL on the GDT ---------------------------------------------------

@live
@needs_linux_x86_64
def test_lar_on_cs_says_present_dpl3_readable_64bit_code():
    rights = linux.lar(USER_CS)
    assert rights is not None
    assert rights & AR_P
    assert ar_dpl(rights) == 3
    assert rights & AR_S
    assert rights & AR_CODE
    assert rights & AR_RW          # readable
    assert not rights & AR_DC      # not conforming
    assert rights & AR_L           # 64-bit code
    assert not rights & AR_DB      # L=1 requires D=0 (SDM vol. 3A 5.2.1)
    assert rights & ~0x00F0FF00 == 0


@live
@needs_linux_x86_64
def test_lsl_and_lar_on_ss_flat_writable_data():
    # __USER_DS is GDT_ENTRY_INIT(DESC_DATA64, 0, 0xfffff): limit 0xFFFFF in
    # 4 KiB pages (G=1), so LSL reports 0xFFFFF << 12 | 0xFFF.
    assert linux.lsl(USER_DS) == 0xFFFFFFFF
    rights = linux.lar(USER_DS)
    assert rights is not None
    assert rights & (AR_P | AR_S | AR_RW | AR_G) == AR_P | AR_S | AR_RW | AR_G
    assert not rights & AR_CODE
    assert ar_dpl(rights) == 3


@live
@needs_linux_x86_64
def test_kernel_selectors_and_null_are_invisible_from_user_mode():
    assert linux.lar(0) is None
    assert linux.lsl(0) is None
    # DPL 0 code: LAR and LSL fail at CPL 3 (SDM vol. 2A "LAR": CPL > DPL).
    assert linux.lar(KERNEL_CS) is None
    assert linux.lar(KERNEL_CS | 3) is None


@live
@needs_linux_x86_64
def test_probe_gdt_finds_the_user_segments():
    found = {p.selector: p for p in linux.probe_gdt(max_index=31)}
    assert {USER32_CS, USER_DS, USER_CS} <= set(found)
    for probe in found.values():
        assert probe.selector & 7 == 3          # GDT, RPL 3
        assert probe.index == probe.selector >> 3
        if probe.access_rights is not None:
            assert ar_dpl(probe.access_rights) == 3
    assert found[USER_CS].access_rights == linux.lar(USER_CS)
    assert found[USER_DS].limit == 0xFFFFFFFF
    # __USER32_CS is 32-bit code: D=1, L=0.
    assert found[USER32_CS].access_rights & (AR_CODE | AR_DB | AR_L) == AR_CODE | AR_DB
    # The full probe (index 0..8191) agrees with the short one.
    assert {p.selector for p in linux.probe_gdt()} == set(found)


@live
@needs_linux_x86_64
def test_cpunode_segment_limit_is_the_current_cpu():
    # The vDSO's getcpu reads "LSL __CPUNODE_SEG": limit = node << 12 | cpu
    # (vdso_read_cpunode(), VDSO_CPUNODE_BITS = 12). Pin this thread to one
    # CPU, then the low 12 bits must be that CPU.
    if linux.lsl(CPUNODE_SEG) is None:
        pytest.skip("this kernel has no CPUNODE segment in its GDT")
    saved = os.sched_getaffinity(0)
    cpu = min(saved)
    try:
        os.sched_setaffinity(0, {cpu})
        limit = linux.lsl(CPUNODE_SEG)
    finally:
        os.sched_setaffinity(0, saved)
    assert limit & 0xFFF == cpu


# --- loading ES -------------------------------------------------------------

@live
@needs_linux_x86_64
def test_load_user_ds_into_es_and_restore():
    before = linux.segment_registers()["es"]
    result = linux.load_es(USER_DS)
    assert result.previous == before
    assert result.loaded == USER_DS
    assert result.access_rights == linux.lar(USER_DS)
    assert result.limit == 0xFFFFFFFF
    assert result.restored == before
    assert linux.segment_registers()["es"] == before


@live
@needs_linux_x86_64
def test_load_null_selector_into_es():
    result = linux.load_es(0)
    assert result.loaded == 0
    assert result.access_rights is None and result.limit is None


@live
@needs_linux_x86_64
def test_load_es_refuses_selectors_that_would_fault():
    before = linux.segment_registers()["es"]
    with pytest.raises(DecodeError):
        linux.load_es(KERNEL_CS | 3)           # DPL 0: #GP
    with pytest.raises(DecodeError):
        linux.load_es(linux.ldt_selector(5))   # empty LDT: #GP
    assert linux.segment_registers()["es"] == before


# --- the LDT ----------------------------------------------------------------

# The entry the child writes. Expected descriptor bytes, by hand from the SDM
# vol. 3A Figure 3-8 layout and fill_ldt():
#   base  = 0x12ABC000, limit = 0x12345 (byte granular: G=0), 32-bit (D/B=1),
#   contents 0 = data, writable (read_exec_only 0): type = 0b0011 with the
#   accessed bit fill_ldt() sets; S=1, DPL=3, P=1; AVL=0, L=0.
#   bytes 0-1  limit 15:0           0x2345 -> 45 23
#   bytes 2-3  base 15:0            0xC000 -> 00 C0
#   byte  4    base 23:16           0xAB
#   byte  5    P|DPL|S|type = 1 11 1 0011 = 0xF3
#   byte  6    G|D/B|L|AVL|limit 19:16 = 0 1 0 0 0001 = 0x41
#   byte  7    base 31:24           0x12
LDT_INDEX = 2
LDT_BASE = 0x12ABC000
LDT_LIMIT = 0x12345
LDT_BYTES = bytes([0x45, 0x23, 0x00, 0xC0, 0xAB, 0xF3, 0x41, 0x12])
LDT_SELECTOR = LDT_INDEX << 3 | 4 | 3          # 0x17: index 2, TI=1, RPL 3
# LAR on it: bytes 5 and 6 of the descriptor in bits 15:8 and 23:16, with
# bits 19:16 (limit 19:16) masked off: 0x41 & 0xF0 = 0x40 -> 0x0040F300.
LDT_ACCESS_RIGHTS = 0x0040F300

_LDT_CHILD = r"""
import json, sys
from ksinspect.live import linux
from ksinspect.errors import UnsupportedError
from ksinspect.errors import LiveOSError
out = {"before": linux.read_ldt().hex()}
try:
    out["selector"] = linux.write_ldt_entry(%(index)d, %(base)d, %(limit)d, contents="data",
                                            seg_32bit=True, limit_in_pages=False)
except (UnsupportedError, LiveOSError) as exc:
    print(json.dumps({"skip": "modify_ldt is not usable here: %%s" %% exc}))
    sys.exit(0)
out["ldt"] = linux.read_ldt().hex()
es = linux.load_es(out["selector"])
out["es"] = es._asdict()
out["lar"] = linux.lar(out["selector"])
out["lsl"] = linux.lsl(out["selector"])
out["probe"] = [p._asdict() for p in linux.probe_ldt(max_index=16)]
linux.clear_ldt_entry(%(index)d)
out["after_clear_lar"] = linux.lar(out["selector"])
out["after_clear"] = linux.read_ldt().hex()
print(json.dumps(out))
""" % {"index": LDT_INDEX, "base": LDT_BASE, "limit": LDT_LIMIT}


@pytest.fixture(scope="module")
def ldt_child():
    """Write the LDT entry in a child Python and report what it saw."""
    if not (IS_LINUX_X86_64 and linux.available()):
        pytest.skip("live tests need Linux on x86-64")
    proc = subprocess.run([sys.executable, "-c", _LDT_CHILD], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    if "skip" in result:
        pytest.skip(result["skip"])
    return result


@live
@needs_linux_x86_64
def test_ldt_entry_bytes_match_the_hand_computed_descriptor(ldt_child):
    assert ldt_child["before"] == ""
    assert ldt_child["selector"] == LDT_SELECTOR == 0x17
    ldt = bytes.fromhex(ldt_child["ldt"])
    assert len(ldt) == (LDT_INDEX + 1) * 8
    assert ldt[:LDT_INDEX * 8] == bytes(LDT_INDEX * 8)
    assert ldt[LDT_INDEX * 8:] == LDT_BYTES


@live
@needs_linux_x86_64
def test_ldt_selector_loads_into_es_with_the_limit_we_set(ldt_child):
    es = ldt_child["es"]
    assert es["loaded"] == LDT_SELECTOR
    assert es["previous"] == es["restored"]
    assert es["limit"] == LDT_LIMIT
    assert es["access_rights"] == LDT_ACCESS_RIGHTS
    assert ldt_child["lsl"] == LDT_LIMIT
    assert ldt_child["lar"] == LDT_ACCESS_RIGHTS
    assert [p["selector"] for p in ldt_child["probe"]] == [LDT_SELECTOR]
    # Cleared entry: LAR refuses it and the LDT reads back empty.
    assert ldt_child["after_clear_lar"] is None
    assert bytes.fromhex(ldt_child["after_clear"]).strip(b"\0") == b""


@live
@needs_linux_x86_64
def test_ldt_entry_decodes_with_the_descriptor_decoder(ldt_child):
    x86 = pytest.importorskip("ksinspect.x86")
    ldt = bytes.fromhex(ldt_child["ldt"])
    lo = int.from_bytes(ldt[LDT_INDEX * 8:LDT_INDEX * 8 + 8], "little")
    desc = x86.SegmentDescriptor.decode(lo, mode="long")
    assert desc.kind.value == "data"
    assert desc.base == LDT_BASE
    assert desc.limit == LDT_LIMIT
    assert desc.dpl == 3
    as_dict = desc.to_dict()
    assert isinstance(as_dict, dict)
    assert as_dict["base"] == LDT_BASE
    assert as_dict["limit"] == LDT_LIMIT
    assert as_dict["dpl"] == 3


@live
@needs_linux_x86_64
def test_this_process_ldt_stays_empty(ldt_child):
    assert linux.read_ldt() == b""
    assert linux.probe_ldt() == []


# --- UMIP and the table registers -----------------------------------------------

@live
@needs_linux_x86_64
def test_umip_and_descriptor_table_registers():
    regs = linux.descriptor_table_registers()
    in_force = linux.umip_in_force()
    assert isinstance(in_force, bool)
    if not linux.cpu_has_umip():
        assert in_force is False
    if in_force:
        # Either SGDT faulted or Linux emulated it with its dummy base
        # (arch/x86/kernel/umip.c: UMIP_DUMMY_GDT_BASE, UMIP_DUMMY_IDT_BASE).
        assert regs["gdtr"] is None or regs["gdtr"][0] == linux.UMIP_DUMMY_GDT_BASE
        assert regs["idtr"] is None or regs["idtr"][0] == linux.UMIP_DUMMY_IDT_BASE
    else:
        # Real GDTR: a kernel address, limit of at least the 16 x86-64 entries.
        assert regs["gdtr"][0] >= 0xFFFF800000000000
        assert regs["gdtr"][1] >= 16 * 8 - 1


# --- arguments and unsupported hosts (run everywhere) --------------------------------

@needs_linux_x86_64
def test_bad_arguments_raise_decode_error():
    with pytest.raises(DecodeError):
        linux.lar(0x10000)
    with pytest.raises(DecodeError):
        linux.lsl(-1)
    with pytest.raises(DecodeError):
        linux.probe_gdt(max_index=8192)
    with pytest.raises(DecodeError):
        linux.write_ldt_entry(8192)            # refused before any system call
    with pytest.raises(DecodeError):
        linux.write_ldt_entry(1, limit=0x100000)
    with pytest.raises(DecodeError):
        linux.write_ldt_entry(1, contents="stack")
    assert linux.read_ldt() == b""


def test_unsupported_host_says_why(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    assert not linux.available()
    with pytest.raises(UnsupportedError, match="needs Linux"):
        linux.segment_registers()
    with pytest.raises(NotImplementedError):
        linux.read_ldt()


def test_ldt_selector():
    # SDM vol. 3A 3.4.2: index << 3 | TI << 2 | RPL
    assert linux.ldt_selector(0) == 0x7
    assert linux.ldt_selector(2) == 0x17
    assert linux.ldt_selector(8191, rpl=0) == 0xFFFC
    with pytest.raises(DecodeError):
        linux.ldt_selector(8192)
