"""Known-answer tests for segment descriptors and gates.

Sources: Intel SDM vol. 3A 3.4.5 (Figure 3-8, Tables 3-1 and 3-2), 3.4.5.1
(expand-down segments), 5.8.3 / 5.8.3.1 (call gates, Figures 5-8 and 5-9),
6.11 / 6.14.1 (IDT gates, Figures 6-2 and 6-8), 7.2.2 / 7.2.3 (TSS
descriptors, Figures 7-3 and 7-4), and real systems: Linux's GDT
(arch/x86/kernel/cpu/common.c), a Windows XP SP3 GDT dumped with WinDbg,
and the GDT/IDT of the Linux guest in tests/data/qemu.
"""
import struct

import pytest

from ksinspect.errors import DecodeError, TruncatedDataError
from ksinspect.x86 import Gate, SegmentDescriptor, decode_descriptor_table

from builders.descriptors import gate_qword as gate, segment_qword as make
from reference_model import (PhysicalMemory, qemu_file, qemu_registers, ref_translate)
from conftest import check_teaching_forms


def d(lo, hi=None, mode="legacy"):
    return SegmentDescriptor.decode(lo, hi, mode=mode).to_dict()


def test_make_helper_matches_linux_gdt_entry_init():
    # Linux GDT_ENTRY_INIT(0xa09b, 0, 0xfffff) == 0x00af9b000000ffff (__KERNEL_CS):
    # the helper is right about the layout.
    assert make(0, 0xFFFFF, 0xB, 1, 0, 1, 0, 1, 0, 1) == 0x00AF9B000000FFFF


# ---------------------------------------------------------------- real GDTs ---

# Linux x86-64 GDT, arch/x86/kernel/cpu/common.c (gdt_page):
#   GDT_ENTRY_INIT(0xc09b, 0, 0xfffff) KERNEL32_CS, (0xa09b) KERNEL_CS,
#   (0xc093) KERNEL_DS, (0xc0fb) USER32_CS, (0xc0f3) USER_DS, (0xa0fb) USER_CS.
# QEMU's info registers for the guest in tests/data/qemu agrees:
#   "CS =0010 ... 00af9b00 DPL=0 CS64 [-RA]", "SS =0018 ... 00cf9300 DPL=0 DS [-WA]".
LINUX_GDT = [
    # raw, kind, dpl, width in long mode, type
    (0x00CF9B000000FFFF, "code", 0, 32, 0xB),   # __KERNEL32_CS
    (0x00AF9B000000FFFF, "code", 0, 64, 0xB),   # __KERNEL_CS
    (0x00CF93000000FFFF, "data", 0, 32, 0x3),   # __KERNEL_DS
    (0x00CFFB000000FFFF, "code", 3, 32, 0xB),   # __USER32_CS
    (0x00CFF3000000FFFF, "data", 3, 32, 0x3),   # __USER_DS
    (0x00AFFB000000FFFF, "code", 3, 64, 0xB),   # __USER_CS
]


@pytest.mark.parametrize("raw,kind,dpl,width,type_", LINUX_GDT, ids=lambda v: "%#x" % v
                         if isinstance(v, int) and v > 0xFFFF else None)
def test_linux_gdt_entries(raw, kind, dpl, width, type_):
    x = d(raw, mode="long")
    assert (x["kind"], x["dpl"], x["width"], x["type"]) == (kind, dpl, width, type_)
    # 0xfffff with G=1: the 4 GiB flat segment (3.4.5 "Segment limit field").
    assert (x["base"], x["raw_limit"], x["limit"]) == (0, 0xFFFFF, 0xFFFFFFFF)
    assert x["range"] == [0, 0xFFFFFFFF]
    assert x["present"] and x["granularity"] and x["accessed"] and not x["system"]
    assert x["size"] == 8 and x["anomalies"] == [] and x["raw_high"] is None
    if kind == "code":
        assert x["readable"] and x["executable"] and not x["conforming"]
    else:
        assert x["writable"] and not x["executable"] and not x["expand_down"]


def test_linux_kernel_cs_in_protected_mode_has_reserved_l_bit():
    # 3.4.5: "When not in IA-32e mode ... bit 21 [L] is reserved and should always
    # be set to 0". D=0, so a protected-mode reader sees a 16-bit segment.
    x = d(0x00AF9B000000FFFF, mode="legacy")
    assert x["kind"] == "code" and x["width"] == 16
    assert x["anomalies"] == ["l-reserved"]


# Windows XP SP3 (x86) GDT at 0x8003f000 ("kd> db 8003f000", first 0x48 bytes) from
# https://wooyun.js.org/drops/学习.认识CPU的GDT.html (also drops.wooyun.org/tips/7715),
# with WinDbg's "dg" reading of the same layout from http://advdbg.org/forums/6281/ShowPost.aspx:
#   0028 80042000 000020ab TSS32 Busy 0 Nb By P Nl 0000008b
#   0030 ffdff000 00001fff Data RW Ac 0 Bg Pg P Nl 00000c93
#   0040 00000400 0000ffff Data RW    3 Nb By P Nl 000000f2
WINDOWS_XP_GDT_BYTES = bytes.fromhex(
    "0000000000000000"   # 0x00 null
    "ffff0000009bcf00"   # 0x08 KGDT_R0_CODE
    "ffff00000093cf00"   # 0x10 KGDT_R0_DATA
    "ffff000000fbcf00"   # 0x18 KGDT_R3_CODE
    "ffff000000f3cf00"   # 0x20 KGDT_R3_DATA
    "ab200020048b0080"   # 0x28 KGDT_TSS
    "010000f0df93c0ff"   # 0x30 KGDT_R0_PCR
    "ff0f000000f34000"   # 0x38 KGDT_R3_TEB (base 0 in this dump)
    "ffff000400f20000")  # 0x40 KGDT_VDM_TILE


def test_windows_xp_gdt():
    table = decode_descriptor_table(WINDOWS_XP_GDT_BYTES, "legacy", base_address=0x8003F000)
    got = [(e.slot_offset, e.address, e.to_dict()) for e in table]
    assert [g[0] for g in got] == list(range(0, 0x48, 8))
    assert [g[1] for g in got] == [0x8003F000 + o for o in range(0, 0x48, 8)]
    x = [g[2] for g in got]
    assert x[0]["kind"] == "null"
    for i, dpl in ((1, 0), (3, 3)):   # flat 4 GiB code, "Code RE Ac"
        assert (x[i]["kind"], x[i]["dpl"], x[i]["width"], x[i]["limit"]) == ("code", dpl, 32, 0xFFFFFFFF)
    for i, dpl in ((2, 0), (4, 3)):   # flat 4 GiB data, "Data RW Ac"
        assert (x[i]["kind"], x[i]["dpl"], x[i]["width"], x[i]["limit"]) == ("data", dpl, 32, 0xFFFFFFFF)
    # 0x28: "TSS32 Busy", base 80042000, limit 000020ab.
    assert (x[5]["kind"], x[5]["width"], x[5]["base"], x[5]["limit"]) == ("tss-busy", 32, 0x80042000, 0x20AB)
    assert x[5]["range"] == [0, 0x20AB] and x[5]["system"] and x[5]["size"] == 8
    # 0x30: KPCR, "ffdff000 00001fff Data RW Ac 0 Bg Pg": raw limit 1 with G=1.
    assert (x[6]["base"], x[6]["raw_limit"], x[6]["limit"]) == (0xFFDFF000, 1, 0x1FFF)
    assert x[6]["granularity"] and x[6]["writable"] and x[6]["accessed"] and x[6]["dpl"] == 0
    # 0x38: TEB, "Data RW Ac 3 Bg By": limit 0xfff, byte granular, 32-bit ("Bg").
    assert (x[7]["base"], x[7]["limit"], x[7]["dpl"], x[7]["granularity"]) == (0, 0xFFF, 3, False)
    assert x[7]["width"] == 32
    # 0x40: "00000400 0000ffff Data RW 3 Nb By": 16-bit ("Nb"), not accessed.
    assert (x[8]["base"], x[8]["limit"], x[8]["width"], x[8]["accessed"]) == (0x400, 0xFFFF, 16, False)
    assert all(e["anomalies"] == [] for e in x)


def test_windows_xp_other_descriptors():
    # Same dump, dd at 0x8003f050: "95000068 80008954" -> TSS32 available at
    # 0x80549500, limit 0x68 (the double-fault TSS); 0x8003f068: "80003fff 0000920b"
    # -> data RW at 0xb8000 (VGA text), limit 0x3fff; 0x8003f078: "0000ffff 80009a40"
    # -> 16-bit code "Code RE" at 0x80400000, limit 0xffff.
    x = d(0x8000895495000068)
    assert (x["kind"], x["width"], x["base"], x["limit"], x["type"]) == ("tss-available", 32, 0x80549500, 0x68, 9)
    x = d(0x0000920B80003FFF)
    assert (x["kind"], x["base"], x["limit"], x["writable"], x["accessed"]) == ("data", 0xB8000, 0x3FFF, True, False)
    x = d(0x80009A400000FFFF)
    assert (x["kind"], x["base"], x["limit"], x["width"]) == ("code", 0x80400000, 0xFFFF, 16)
    assert x["readable"] and not x["accessed"] and not x["conforming"]
    # dd at 0x8003f038: "e0000fff 7f40f3fd" -> the TEB at 0x7ffde000, limit 0xfff, DPL 3.
    x = d(0x7F40F3FDE0000FFF)
    assert (x["kind"], x["base"], x["limit"], x["dpl"], x["width"]) == ("data", 0x7FFDE000, 0xFFF, 3, 32)


# ---------------------------------------------------- Table 3-1: every type ---

# SDM vol. 3A Table 3-1 "Code- and Data-Segment Types", row by row:
# type: (kind, accessed, writable, expand_down, readable, conforming)
TABLE_3_1 = {
    0x0: ("data", False, False, False, False, False),  # Read-Only
    0x1: ("data", True, False, False, False, False),   # Read-Only, accessed
    0x2: ("data", False, True, False, False, False),   # Read/Write
    0x3: ("data", True, True, False, False, False),    # Read/Write, accessed
    0x4: ("data", False, False, True, False, False),   # Read-Only, expand-down
    0x5: ("data", True, False, True, False, False),    # Read-Only, expand-down, accessed
    0x6: ("data", False, True, True, False, False),    # Read/Write, expand-down
    0x7: ("data", True, True, True, False, False),     # Read/Write, expand-down, accessed
    0x8: ("code", False, False, False, False, False),  # Execute-Only
    0x9: ("code", True, False, False, False, False),   # Execute-Only, accessed
    0xA: ("code", False, False, False, True, False),   # Execute/Read
    0xB: ("code", True, False, False, True, False),    # Execute/Read, accessed
    0xC: ("code", False, False, False, False, True),   # Execute-Only, conforming
    0xD: ("code", True, False, False, False, True),    # Execute-Only, conforming, accessed
    0xE: ("code", False, False, False, True, True),    # Execute/Read, conforming
    0xF: ("code", True, False, False, True, True),     # Execute/Read, conforming, accessed
}


@pytest.mark.parametrize("mode", ["legacy", "long"])
@pytest.mark.parametrize("type_", sorted(TABLE_3_1))
def test_table_3_1_code_and_data_types(type_, mode):
    kind, accessed, writable, expand_down, readable, conforming = TABLE_3_1[type_]
    x = d(make(0x1000, 0x0FFF, type_, s=1, dpl=2, db=1), mode=mode)
    assert x["type"] == type_ and x["kind"] == kind and not x["system"] and x["dpl"] == 2
    assert (x["accessed"], x["writable"], x["expand_down"], x["readable"], x["conforming"]) == (
        accessed, writable, expand_down, readable, conforming)
    assert x["executable"] == (kind == "code")
    assert x["width"] == 32 and x["size"] == 8 and x["anomalies"] == []
    assert x["range"] == ([0x1000, 0xFFFFFFFF] if expand_down else [0, 0x0FFF])


# ---------------------------------------------------- Table 3-2: every type ---

# SDM vol. 3A Table 3-2 "System-Segment and Gate-Descriptor Types":
# type: (32-bit mode kind, width), (IA-32e mode kind, width)
TABLE_3_2 = {
    0x0: (("reserved", 0), ("reserved", 0)),      # Reserved / Upper 8 bytes of a 16-byte descriptor
    0x1: (("tss-available", 16), ("reserved", 0)),  # 16-bit TSS (Available) / Reserved
    0x2: (("ldt", 0), ("ldt", 0)),                # LDT / LDT
    0x3: (("tss-busy", 16), ("reserved", 0)),     # 16-bit TSS (Busy) / Reserved
    0x4: (("call-gate", 16), ("reserved", 0)),    # 16-bit Call Gate / Reserved
    0x5: (("task-gate", 0), ("reserved", 0)),     # Task Gate / Reserved
    0x6: (("interrupt-gate", 16), ("reserved", 0)),  # 16-bit Interrupt Gate / Reserved
    0x7: (("trap-gate", 16), ("reserved", 0)),    # 16-bit Trap Gate / Reserved
    0x8: (("reserved", 0), ("reserved", 0)),      # Reserved / Reserved
    0x9: (("tss-available", 32), ("tss-available", 64)),  # 32-bit TSS (Available) / 64-bit TSS (Available)
    0xA: (("reserved", 0), ("reserved", 0)),      # Reserved / Reserved
    0xB: (("tss-busy", 32), ("tss-busy", 64)),    # 32-bit TSS (Busy) / 64-bit TSS (Busy)
    0xC: (("call-gate", 32), ("call-gate", 64)),  # 32-bit Call Gate / 64-bit Call Gate
    0xD: (("reserved", 0), ("reserved", 0)),      # Reserved / Reserved
    0xE: (("interrupt-gate", 32), ("interrupt-gate", 64)),  # 32-bit / 64-bit Interrupt Gate
    0xF: (("trap-gate", 32), ("trap-gate", 64)),  # 32-bit / 64-bit Trap Gate
}
SIXTEEN = {"ldt", "tss-available", "tss-busy", "call-gate", "interrupt-gate", "trap-gate"}


@pytest.mark.parametrize("mode", ["legacy", "long"])
@pytest.mark.parametrize("type_", sorted(TABLE_3_2))
def test_table_3_2_system_types(type_, mode):
    kind, width = TABLE_3_2[type_][mode == "long"]
    lo = make(0x5000, 0x67, type_, s=0, dpl=0, p=1)
    hi = 0 if mode == "long" else None
    x = SegmentDescriptor.decode(lo, hi, mode=mode)
    t = x.to_dict()
    assert t["system"] and t["type"] == type_ and t["present"]
    assert (t["kind"], t["width"]) == (kind, width)
    assert t["size"] == (16 if mode == "long" and kind in SIXTEEN else 8)
    assert isinstance(x, Gate) == kind.endswith("gate")
    if kind == "reserved":
        assert t["anomalies"] == ["reserved-type"] and t["range"] is None
    else:
        assert "reserved-type" not in t["anomalies"]
    if kind in ("ldt", "tss-available", "tss-busy"):
        assert (t["base"], t["limit"], t["range"]) == (0x5000, 0x67, [0, 0x67])
    if kind.endswith("gate"):
        assert t["range"] is None and "selector" in t and "offset" in t


def test_null_descriptor():
    # 3.4.2 / 3.5.1: the first GDT entry is the null descriptor (all zero).
    for mode in ("legacy", "long"):
        x = d(0, mode=mode)
        assert x["kind"] == "null" and x["range"] is None and x["width"] == 0
        assert x["size"] == 8 and x["anomalies"] == [] and not x["present"]


def test_null_descriptor_ignores_next_qword_in_protected_mode():
    # SDM 3.4.5 / Table 3-2: legacy descriptors are 8 bytes; the high qword only
    # exists for IA-32e system descriptors. The same call already ignores raw_high
    # for every other legacy descriptor (raw_high comes back None).
    x = d(0, 5, mode="legacy")
    assert x["kind"] == "null" and x["anomalies"] == []


# -------------------------------------------------------- limits and ranges ---

@pytest.mark.parametrize("raw_limit,g,limit", [
    (0xFFFFF, 1, 0xFFFFFFFF),   # 3.4.5: 4 KiB units, low 12 bits all ones: 4 GiB
    (0x00000, 1, 0x00000FFF),   # smallest page-granular segment: 4 KiB
    (0x00001, 1, 0x00001FFF),   # the Windows XP KPCR descriptor above
    (0xFFFFF, 0, 0x000FFFFF),   # byte granular: 1 MiB
    (0x0FFFF, 0, 0x0000FFFF),   # real-mode-like 64 KiB
    (0x00000, 0, 0x00000000),   # 1-byte segment
])
def test_effective_limit(raw_limit, g, limit):
    x = d(make(0, raw_limit, 0x3, g=g, db=1))
    assert (x["raw_limit"], x["granularity"], x["limit"]) == (raw_limit, bool(g), limit)
    assert x["range"] == [0, limit]


@pytest.mark.parametrize("raw_limit,g,b,expected", [
    # 3.4.5.1: expand-down offsets run from limit+1 to FFFFH (B=0) or FFFFFFFFH (B=1).
    (0x0FFF, 0, 0, [0x1000, 0xFFFF]),          # 16-bit stack, top 60 KiB
    (0x0000, 0, 0, [0x0001, 0xFFFF]),
    (0xFFFFE, 1, 1, [0xFFFFF000, 0xFFFFFFFF]),  # 32-bit, G=1: limit 0xFFFFEFFF
    (0x00000, 1, 1, [0x1000, 0xFFFFFFFF]),     # G=1: limit 0xFFF
    (0x0000, 0, 1, [0x0001, 0xFFFFFFFF]),      # Linux GDT_ENTRY_CPUNODE (limit = cpu 0)
    (0xFFFF, 0, 0, None),                      # limit+1 beyond FFFFH: nothing valid
    (0xFFFFF, 1, 1, None),                     # limit+1 beyond 4 GiB: nothing valid
    (0xFFFFF, 0, 0, None),                     # 1 MiB limit in a 16-bit segment
])
def test_expand_down_ranges(raw_limit, g, b, expected):
    for type_ in (0x4, 0x5, 0x6, 0x7):
        x = d(make(0x10000, raw_limit, type_, g=g, db=b))
        assert x["expand_down"] and x["width"] == (32 if b else 16)
        assert x["range"] == expected


def test_linux_cpunode_segment():
    # Linux setup_getcpu() (arch/x86/kernel/cpu/common.c): type 5 "RO data, expand
    # down, accessed", DPL 3, S=1, P=1, D=1, limit = cpu | node << 12. Read from the
    # guest's GDT entry 15 in tests/data/qemu/x86_64-4level (cpu 0, node 0).
    x = d(0x0040F50000000000, mode="long")
    assert (x["kind"], x["type"], x["dpl"], x["expand_down"], x["writable"]) == ("data", 5, 3, True, False)
    assert x["range"] == [1, 0xFFFFFFFF]


# ------------------------------------------------------ L and D/B anomalies ---

def test_l_and_d_is_reserved():
    # 3.4.5: "If L-bit is set, then D-bit must be cleared."
    x = d(0x00EF9B000000FFFF, mode="long")
    assert x["kind"] == "code" and x["long"] and x["db"] and "l-and-d" in x["anomalies"]
    assert d(0x00AF9B000000FFFF, mode="long")["anomalies"] == []


def test_l_on_a_data_segment_is_reserved():
    # 3.4.5: "for non-code segments, bit 21 is reserved and should always be set to 0".
    assert d(0x00AF93000000FFFF, mode="long")["anomalies"] == ["l-reserved"]
    assert d(0x00AF93000000FFFF, mode="legacy")["anomalies"] == ["l-reserved"]


def test_compatibility_mode_code_segment():
    # 3.4.5: with L=0 in IA-32e mode the segment runs in compatibility mode and D
    # selects 32- or 16-bit operands.
    assert d(0x00CF9B000000FFFF, mode="long")["width"] == 32
    assert d(0x008F9B000000FFFF, mode="long")["width"] == 16


# ---------------------------------------------------- 16-byte system entries ---

# The guest's TSS descriptor, GDT entries 8-9 in tests/data/qemu/x86_64-4level
# core-trimmed.elf; QEMU's info registers: "TR =0040 fffffe0000003000 00004087".
# Busy in memory because LTR marks it busy (SDM LTR: "the TSS descriptor ... is
# marked busy").
QEMU_TSS = (0x00008B0030004087, 0x00000000FFFFFE00)


def test_long_mode_tss_descriptor():
    # Figure 7-4: bytes 11:8 hold base 63:32.
    x = d(*QEMU_TSS, mode="long")
    assert (x["kind"], x["width"], x["size"]) == ("tss-busy", 64, 16)
    assert (x["base"], x["limit"], x["range"]) == (0xFFFFFE0000003000, 0x4087, [0, 0x4087])
    assert x["raw_high"] == QEMU_TSS[1] and x["anomalies"] == []


def test_long_mode_tss_upper_half_missing():
    x = d(QEMU_TSS[0], None, mode="long")
    assert x["kind"] == "tss-busy" and x["size"] == 16
    assert x["anomalies"] == ["upper-missing"] and x["raw_high"] is None


def test_upper_half_alone_is_type_0():
    # Table 3-2, IA-32e type 0: "Upper 8 bytes of an 16-byte descriptor"; 5.8.3.1:
    # the zero type there makes the upper half invalid as a descriptor of its own.
    x = d(QEMU_TSS[1], mode="long")
    assert x["kind"] == "reserved" and x["system"] and x["type"] == 0
    assert x["anomalies"] == ["reserved-type"]


def test_long_mode_tss_in_protected_mode_is_8_bytes():
    x = d(QEMU_TSS[0], mode="legacy")
    assert (x["kind"], x["width"], x["size"], x["base"]) == ("tss-busy", 32, 8, 0x3000)
    assert x["anomalies"] == []


@pytest.mark.parametrize("hi,anomaly", [
    (0x0000010000000000 | 0xFFFFFE00, "upper-type-nonzero"),  # Figure 7-4: bits 12:8 = 00000
    (0x00001F0000000000 | 0xFFFFFE00, "upper-type-nonzero"),
    (0x8000000000000000 | 0xFFFFFE00, "upper-reserved"),      # Figure 7-4: reserved 31:13
    (0x0000000100000000 | 0xFFFFFE00, "upper-reserved"),      # Figure 7-4: reserved 7:0
    (0x0000000000008000, "noncanonical-base"),                # base 0x00008000_00003000
    (0x00000000FFFF7FFF, "noncanonical-base"),
])
def test_long_mode_system_descriptor_upper_checks(hi, anomaly):
    x = d(QEMU_TSS[0], hi, mode="long")
    assert x["anomalies"] == [anomaly]


def test_long_mode_ldt_descriptor():
    # Figure 7-4 layout for an LDT (type 2): base 0xffff888001234000, limit 0xffff.
    lo = make(0x01234000, 0xFFFF, 0x2, s=0)
    x = d(lo, 0xFFFF8880, mode="long")
    assert (x["kind"], x["base"], x["limit"], x["size"], x["width"]) == (
        "ldt", 0xFFFF888001234000, 0xFFFF, 16, 0)
    assert x["anomalies"] == []
    # canonical boundaries (48-bit): 0x00007fff... and 0xffff8000... are canonical.
    assert d(lo, 0x00007FFF, mode="long")["anomalies"] == []
    assert d(lo, 0xFFFF8000, mode="long")["anomalies"] == []


# -------------------------------------------------------------------- gates ---

# The guest's IDT (tests/data/qemu/x86_64-4level), handler addresses from its
# kallsyms; Linux 6.1 arch/x86/kernel/idt.c: INTG = DPL0 interrupt gate, SYSG =
# DPL3, ISTG(vector, handler, IST_INDEX_x) stores IST_INDEX_x + 1 with
# IST_INDEX_DF=0, NMI=1, DB=2, MCE=3 (arch/x86/include/asm/page_64_types.h).
LINUX_IDT = [
    # vector, lo, hi, offset (kallsyms), dpl, ist
    (0, 0x81C08E0000100990, 0xFFFFFFFF, 0xFFFFFFFF81C00990, 0, 0),  # asm_exc_divide_error
    (1, 0x81C08E0300100CD0, 0xFFFFFFFF, 0xFFFFFFFF81C00CD0, 0, 3),  # asm_exc_debug, IST_INDEX_DB
    (2, 0x81C08E0200101650, 0xFFFFFFFF, 0xFFFFFFFF81C01650, 0, 2),  # asm_exc_nmi, IST_INDEX_NMI
    (3, 0x81C0EE0000100BA0, 0xFFFFFFFF, 0xFFFFFFFF81C00BA0, 3, 0),  # asm_exc_int3, SYSG
    (4, 0x81C0EE00001009B0, 0xFFFFFFFF, 0xFFFFFFFF81C009B0, 3, 0),  # asm_exc_overflow, SYSG
    (8, 0x81C08E0100100D30, 0xFFFFFFFF, 0xFFFFFFFF81C00D30, 0, 1),  # asm_exc_double_fault, IST_INDEX_DF
    (14, 0x81C08E0000100BE0, 0xFFFFFFFF, 0xFFFFFFFF81C00BE0, 0, 0),  # asm_exc_page_fault
    (18, 0x81C08E0400100C30, 0xFFFFFFFF, 0xFFFFFFFF81C00C30, 0, 4),  # asm_exc_machine_check, IST_INDEX_MCE
    (0x80, 0x81C0EE0000100C10, 0xFFFFFFFF, 0xFFFFFFFF81C00C10, 3, 0),  # asm_int80_emulation, SYSG
]


@pytest.mark.parametrize("vector,lo,hi,offset,dpl,ist", LINUX_IDT, ids=[str(v[0]) for v in LINUX_IDT])
def test_linux_idt_gates(vector, lo, hi, offset, dpl, ist):
    g = SegmentDescriptor.decode(lo, hi, mode="long")
    assert isinstance(g, Gate)
    x = g.to_dict()
    assert (x["kind"], x["width"], x["size"]) == ("interrupt-gate", 64, 16)
    assert (x["selector"], x["offset"], x["dpl"], x["ist"]) == (0x10, offset, dpl, ist)
    assert x["present"] and x["param_count"] == 0 and x["anomalies"] == []
    assert (g.selector, g.offset, g.ist) == (0x10, offset, ist)


def test_noncanonical_gate_offset():
    # 6.14.1: "#GP ... if software attempts to reference an interrupt gate with a
    # target RIP that is not in canonical form"; 5.8.3.1 says the same of call gates.
    lo = LINUX_IDT[0][1]
    x = d(lo, 0x00008000, mode="long")
    assert x["offset"] == 0x0000800081C00990 and x["anomalies"] == ["noncanonical-offset"]
    assert d(lo, 0x00007FFF, mode="long")["anomalies"] == []
    assert d(lo, 0xFFFF8000, mode="long")["anomalies"] == []
    assert d(lo, 0xFFFF7FFF, mode="long")["anomalies"] == ["noncanonical-offset"]


def test_long_mode_gate_upper_half_missing():
    x = d(LINUX_IDT[0][1], None, mode="long")
    assert x["kind"] == "interrupt-gate" and "upper-missing" in x["anomalies"]
    assert x["offset"] & 0xFFFFFFFF == 0x81C00990


def test_long_mode_gate_reserved_bits():
    # Figure 6-8: bits 7:3 of the second dword (39:35) are 00000; IST is 2:0.
    lo = LINUX_IDT[0][1] | (1 << 35)
    assert d(lo, 0xFFFFFFFF, mode="long")["anomalies"] == ["gate-reserved-bits"]
    # All 3 IST bits are the IST field, not reserved.
    assert d(LINUX_IDT[0][1] | (7 << 32), 0xFFFFFFFF, mode="long")["ist"] == 7


def test_trap_gate():
    # Type F: trap gate (Table 3-2), 64-bit in IA-32e mode.
    lo = gate(0x81C00990, 0x10, 0xF)
    x = d(lo, 0xFFFFFFFF, mode="long")
    assert (x["kind"], x["offset"], x["width"]) == ("trap-gate", 0xFFFFFFFF81C00990, 64)
    x = d(lo, mode="legacy")
    assert (x["kind"], x["offset"], x["width"], x["size"]) == ("trap-gate", 0x81C00990, 32, 8)


def test_legacy_interrupt_gate():
    # Figure 6-2: 32-bit interrupt gate, offset 0xc1234567 in selector 0x60
    # (Linux i386 __KERNEL_CS = GDT_ENTRY_KERNEL_CS*8 = 12*8).
    lo = gate(0xC1234567, 0x60, 0xE)
    assert lo == 0xC1238E0000604567
    x = d(lo)
    assert (x["kind"], x["selector"], x["offset"], x["width"], x["ist"]) == (
        "interrupt-gate", 0x60, 0xC1234567, 32, 0)
    assert x["anomalies"] == []
    # Figure 6-2: bits 7:5 of the second dword are 000.
    assert d(lo | (1 << 37))["anomalies"] == ["gate-reserved-bits"]


def test_legacy_call_gate_param_count():
    # Figure 5-8: 32-bit call gate, parameter count in bits 4:0 of the second dword,
    # counted in doublewords (5.8.3). DPL 3 so user code can call through it.
    lo = gate(0x80001234, 0x0008, 0xC, dpl=3, byte4=3)
    assert lo == 0x8000EC0300081234
    g = SegmentDescriptor.decode(lo, mode="legacy")
    x = g.to_dict()
    assert (x["kind"], x["width"], x["selector"], x["offset"], x["param_count"], x["dpl"]) == (
        "call-gate", 32, 8, 0x80001234, 3, 3)
    assert g.param_count == 3 and x["anomalies"] == []
    assert d(gate(0x80001234, 8, 0xC, byte4=31))["param_count"] == 31   # 5 bits: max 31
    # Figure 5-8: bits 7:5 of the second dword are 000.
    x = d(gate(0x80001234, 8, 0xC, byte4=0x20))
    assert x["param_count"] == 0 and x["anomalies"] == ["gate-reserved-bits"]


def test_16_bit_call_gate():
    # Table 3-2 type 4; an 80286-style gate has a 16-bit offset and its last word
    # reserved ("reserved for iAPX 386, must be zero", 80286 manual Figure 2.6).
    x = d(gate(0x1234, 0x0008, 0x4, byte4=2))
    assert (x["kind"], x["width"], x["offset"], x["param_count"]) == ("call-gate", 16, 0x1234, 2)
    assert x["anomalies"] == []


def test_long_mode_call_gate():
    # Figure 5-9 / 5.8.3.1: "The parameter-copy-count field has been removed";
    # bytes 11:8 hold offset 63:32; bits 12:8 of the highest dword must be 0.
    lo = gate(0x81001234, 0x0010, 0xC, dpl=3)
    x = d(lo, 0xFFFFFFFF, mode="long")
    assert (x["kind"], x["width"], x["size"], x["offset"], x["param_count"]) == (
        "call-gate", 64, 16, 0xFFFFFFFF81001234, 0)
    assert x["anomalies"] == []
    assert d(lo, 0x00000C00FFFFFFFF, mode="long")["anomalies"] == ["upper-type-nonzero"]
    assert d(lo, 0x80000000FFFFFFFF, mode="long")["anomalies"] == ["upper-reserved"]


def test_task_gate():
    # Figure 7-6 / 6-2: a task gate holds only a TSS selector, type 5, DPL and P.
    # 32-bit Windows sends #DF (vector 8) through a task gate to the TSS at GDT
    # selector 0x50 (the TSS32 at 0x80549500 in the Windows XP dump above).
    lo = 0x0000850000500000
    g = SegmentDescriptor.decode(lo, mode="legacy")
    assert isinstance(g, Gate)
    x = g.to_dict()
    assert (x["kind"], x["selector"], x["offset"], x["width"], x["size"]) == ("task-gate", 0x50, 0, 0, 8)
    assert x["anomalies"] == [] and x["range"] is None
    # Reserved words of a task gate (15:0, 39:32, 63:48).
    assert d(lo | 0x1234)["anomalies"] == ["gate-reserved-bits"]
    # No task gates in IA-32e mode: type 5 is reserved there (Table 3-2).
    assert d(lo, 0, mode="long")["kind"] == "reserved"


# --------------------------------------------------------- the QEMU guest ---

def _qemu_memory(profile):
    regs_text = qemu_file(profile, "info-registers.txt")
    core = qemu_file(profile, "core-trimmed.elf", binary=True)
    if regs_text is None or core is None:
        pytest.skip("fixture %s not present" % profile)
    regs = qemu_registers(regs_text)
    levels = 5 if regs["CR4"] & (1 << 12) else 4   # CR4.LA57 (bit 12)
    return regs, PhysicalMemory(core), levels


def _read_linear(regs, mem, levels, vaddr, size):
    # Translated with the reference walker, not with ksinspect.
    _, paddr = ref_translate(mem, regs["CR3"], vaddr, levels)
    return mem.read(paddr, size)


@pytest.mark.parametrize("profile", ["x86_64-4level", "x86_64-5level"])
def test_qemu_guest_gdt(profile):
    regs, mem, levels = _qemu_memory(profile)
    base, limit = regs["GDT"]
    data = _read_linear(regs, mem, levels, base, limit + 1)
    table = decode_descriptor_table(data, "long", "segments", base_address=base)
    by_offset = {e.slot_offset: e.to_dict() for e in table}
    # Linux GDT (see LINUX_GDT above) at the selectors of asm/segment.h.
    for (raw, kind, dpl, width, _), offset in zip(LINUX_GDT, (0x08, 0x10, 0x18, 0x20, 0x28, 0x30)):
        assert by_offset[offset]["raw"] == raw
        assert (by_offset[offset]["kind"], by_offset[offset]["dpl"], by_offset[offset]["width"]) == (kind, dpl, width)
    # GDT_ENTRY_TSS = 8: one 16-byte entry, so nothing starts at 0x48.
    tss = by_offset[0x40]
    assert (tss["kind"], tss["size"]) == ("tss-busy", 16) and 0x48 not in by_offset
    # QEMU's info registers: "TR =0040 fffffe0000003000 00004087".
    tr_base, tr_limit = _qemu_tr(profile)
    assert (tss["base"], tss["limit"]) == (tr_base, tr_limit)
    assert by_offset[0]["kind"] == "null"
    assert all(e.address == base + e.slot_offset for e in table)
    assert all(e["anomalies"] == [] for e in by_offset.values())


def _qemu_tr(profile):
    import re
    text = qemu_file(profile, "info-registers.txt")
    m = re.search(r"^TR =[0-9a-f]{4} ([0-9a-f]+) ([0-9a-f]+)", text, re.M)
    return int(m.group(1), 16), int(m.group(2), 16)


def _kallsyms(profile):
    text = qemu_file(profile, "kallsyms.txt")
    if text is None:
        pytest.skip("no kallsyms in %s" % profile)
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.setdefault(parts[2], int(parts[0], 16))
    return out


@pytest.mark.parametrize("profile", ["x86_64-4level", "x86_64-5level"])
def test_qemu_guest_idt(profile):
    regs, mem, levels = _qemu_memory(profile)
    syms = _kallsyms(profile)
    base, limit = regs["IDT"]
    assert limit + 1 == 256 * 16   # 6.14.1: 16-byte gates in IA-32e mode
    data = _read_linear(regs, mem, levels, base, limit + 1)
    idt = decode_descriptor_table(data, "long", "interrupts")
    assert len(idt) == 256 and all(e.size == 16 for e in idt)
    expect = {0: ("asm_exc_divide_error", 0, 0), 1: ("asm_exc_debug", 0, 3),
              2: ("asm_exc_nmi", 0, 2), 3: ("asm_exc_int3", 3, 0),
              4: ("asm_exc_overflow", 3, 0), 8: ("asm_exc_double_fault", 0, 1),
              14: ("asm_exc_page_fault", 0, 0), 18: ("asm_exc_machine_check", 0, 4)}
    for vector, (symbol, dpl, ist) in expect.items():
        x = idt[vector].to_dict()
        assert x["kind"] == "interrupt-gate" and x["selector"] == 0x10
        assert (x["offset"], x["dpl"], x["ist"]) == (syms[symbol], dpl, ist), vector
    # Every present gate of a healthy kernel targets __KERNEL_CS with a canonical offset.
    for e in idt:
        x = e.to_dict()
        if x["present"]:
            assert x["kind"] == "interrupt-gate" and x["selector"] == 0x10 and x["anomalies"] == []


# ------------------------------------------------------------ tables, bytes ---

def test_table_kinds_for_a_long_mode_gdt():
    data = struct.pack("<4Q", 0, 0x00AF9B000000FFFF, *QEMU_TSS)
    seg = decode_descriptor_table(data, "long", "segments")
    assert [e.slot_offset for e in seg] == [0, 8, 16]
    assert seg[2].raw_high == QEMU_TSS[1]
    flat = decode_descriptor_table(data, "long", "flat")
    assert [e.slot_offset for e in flat] == [0, 8, 16, 24]
    assert "upper-missing" in flat[2].to_dict()["anomalies"]
    assert flat[3].to_dict()["kind"] == "reserved"
    legacy = decode_descriptor_table(data, "legacy", "segments")
    assert [e.slot_offset for e in legacy] == [0, 8, 16, 24]


def test_table_kinds_for_an_idt():
    lo, hi = LINUX_IDT[0][1], LINUX_IDT[0][2]
    data = struct.pack("<4Q", lo, hi, lo, hi)
    idt = decode_descriptor_table(data, "long", "interrupts")
    assert [e.slot_offset for e in idt] == [0, 16]
    assert all(e.to_dict()["offset"] == 0xFFFFFFFF81C00990 for e in idt)
    legacy = decode_descriptor_table(struct.pack("<2Q", 0xC1238E0000604567, 0), "legacy", "interrupts")
    assert [e.slot_offset for e in legacy] == [0, 8]
    assert list(decode_descriptor_table(b"", "long")) == []


@pytest.mark.parametrize("length", [1, 7, 12, 20])
def test_table_length_must_be_a_multiple_of_8(length):
    with pytest.raises(TruncatedDataError) as info:
        decode_descriptor_table(b"\0" * length, "long")
    assert isinstance(info.value, DecodeError) and isinstance(info.value, ValueError)


def test_from_bytes():
    raw = struct.pack("<Q", 0x00AF9B000000FFFF)
    assert SegmentDescriptor.from_bytes(raw, "long").to_dict() == d(0x00AF9B000000FFFF, mode="long")
    raw16 = struct.pack("<2Q", *QEMU_TSS)
    assert SegmentDescriptor.from_bytes(raw16, "long").to_dict() == d(*QEMU_TSS, mode="long")
    for bad in (b"", b"\0" * 7, b"\0" * 12, b"\0" * 17):
        with pytest.raises(TruncatedDataError):
            SegmentDescriptor.from_bytes(bad, "long")


@pytest.mark.parametrize("args", [
    dict(raw=1 << 64), dict(raw=-1), dict(raw=1, raw_high=1 << 64, mode="long"),
    dict(raw=1, mode="real"), dict(raw=1, mode="64"),
])
def test_decode_errors(args):
    with pytest.raises(DecodeError) as info:
        SegmentDescriptor.decode(**args)
    assert isinstance(info.value, ValueError)


def test_unknown_table_kind():
    with pytest.raises(DecodeError):
        decode_descriptor_table(b"\0" * 8, "long", table="ldt-ish")


def test_text_forms():
    for value in (SegmentDescriptor.decode(0x00AF9B000000FFFF, mode="long"),
                  SegmentDescriptor.decode(*QEMU_TSS, mode="long"),
                  SegmentDescriptor.decode(LINUX_IDT[0][1], LINUX_IDT[0][2], mode="long"),
                  SegmentDescriptor.decode(0x0000850000500000, mode="legacy"),
                  SegmentDescriptor.decode(0, mode="legacy")):
        check_teaching_forms(value, explain_newlines=3)
    gate_html = SegmentDescriptor.decode(LINUX_IDT[0][1], LINUX_IDT[0][2], mode="long")._repr_html_()
    if "->" in str(SegmentDescriptor.decode(LINUX_IDT[0][1], LINUX_IDT[0][2], mode="long")):
        assert "-&gt;" in gate_html


def test_to_dict_is_json_ready():
    import json
    for lo, hi, mode in ((0x00AF9B000000FFFF, None, "long"), (*QEMU_TSS, "long"),
                         (LINUX_IDT[3][1], LINUX_IDT[3][2], "long")):
        x = d(lo, hi, mode)
        assert json.loads(json.dumps(x)) == x


def test_attributes_word_is_bits_55_to_40_without_the_limit():
    # __KERNEL_CS 0x00af9b000000ffff (SDM §3.4.5 Figure 3-8): access byte 0x9b
    # (P=1, DPL=0, S=1, type 1011) in bits 47:40, flags nibble 0xa (G=1, L=1) in 55:52.
    assert SegmentDescriptor.decode(0x00AF9B000000FFFF, mode="long").attributes == 0xA09B
    # A 16-bit data segment with limit bits 19:16 set: they are not attributes.
    assert SegmentDescriptor.decode(0x000F93000000FFFF, mode="legacy").attributes == 0x0093


# ------------------------------------------ the upper dword of a 16-byte entry ---

@pytest.mark.parametrize("type_", [0xE, 0xF], ids=["interrupt-gate", "trap-gate"])
def test_64_bit_idt_gate_upper_dword_is_reserved_whole(type_):
    # SDM vol. 3A §6.14.1, Figure 6-8 (64-Bit IDT Gate Descriptors): bytes 15:12
    # are one Reserved field; unlike the call gate (Figure 5-9) and the TSS/LDT
    # descriptor (Figure 7-4) there is no type field of 0 in bits 12:8.
    lo = gate(0x81C00990, 0x10, type_)
    for hi in (0xFFFFFFFF | 1 << 40, 0xFFFFFFFF | 0x1F << 40, 0xFFFFFFFF | 1 << 63,
               0xFFFFFFFF | 1 << 32):
        assert d(lo, hi, mode="long")["anomalies"] == ["upper-reserved"], hex(hi)
    g = SegmentDescriptor.decode(lo, 0xFFFFFFFF | 0x0C << 40, mode="long")
    upper = [(f.name, f.msb, f.lsb) for f in g.fields() if f.lsb >= 64]
    assert upper == [("Reserved", 127, 96), ("Offset 63:32", 95, 64)]
    # what is flagged in the picture is the set bits of that reserved dword
    assert g.anomaly_bits() == 0x0C << 104


def test_call_gate_and_tss_keep_the_type_field_of_0():
    # Figures 5-9 and 7-4: bits 12:8 of the upper dword are 00000.
    for lo in (gate(0x81001234, 0x0010, 0xC, dpl=3), QEMU_TSS[0]):
        g = SegmentDescriptor.decode(lo, 0xFFFFFFFF | 1 << 44, mode="long")
        assert g.to_dict()["anomalies"] == ["upper-type-nonzero"]
        upper = [(f.name, f.msb, f.lsb) for f in g.fields() if f.lsb >= 64]
        assert upper[:3] == [("Reserved", 127, 109), ("Zero", 108, 104), ("Reserved", 103, 96)]


def test_one_decode_is_one_call_into_c(monkeypatch):
    """SegmentDescriptor.decode builds the whole value in C (ksinspect._percall.
    new_descriptor) and leaves the checked path to what C does not take."""
    import ksinspect.x86.descriptor as module
    if module._percall is None:
        pytest.skip("ksinspect._percall is not built here")
    calls = []
    checked = module._decode
    monkeypatch.setattr(module, "_decode", lambda *a: calls.append(a) or checked(*a))
    # SDM 3.4.5: base 0, limit 0xFFFFF with G=1, D=1, P=1, DPL 0, type 0xB (code,
    # execute/read, accessed): Linux's __KERNEL32_CS.
    seg = SegmentDescriptor.decode(0x00CF9B000000FFFF, None, "legacy", address=0x10)
    assert (seg.kind.value, seg.base, seg.limit, seg.dpl, seg.type, seg.address) == (
        "code", 0, 0xFFFFFFFF, 0, 0xB, 0x10)
    assert seg.raw_high is None and type(seg) is SegmentDescriptor
    # SDM 6.14.1 (Figure 6-8): a 64-bit interrupt gate, selector 0x10, offset
    # 0xFFFFFFFF81A00B10, P=1, DPL 0, type 0xE, IST 0; the high qword holds offset 63:32.
    gate = SegmentDescriptor.decode(0x81A08E0000100B10, 0x00000000FFFFFFFF, "long")
    assert (gate.kind.value, gate.offset, gate.selector, gate.raw_high) == (
        "interrupt-gate", 0xFFFFFFFF81A00B10, 0x10, 0xFFFFFFFF)
    assert type(gate) is Gate and not calls
    # A value wider than 64 bits runs the checked path, which says so.
    with pytest.raises(DecodeError):
        SegmentDescriptor.decode(1 << 64, None, "long")
    assert len(calls) == 1
