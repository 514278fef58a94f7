"""Known-answer tests for segment selectors (Intel SDM vol. 3A 3.4.2, Figure 3-6).

A selector is index (bits 15:3), TI (bit 2: 0 = GDT, 1 = LDT) and RPL (1:0).
Every expected value below is worked out by hand from that figure or taken
from a real system (the source is cited next to each vector).
"""
import pytest

from ksinspect.errors import DecodeError, TruncatedDataError
from ksinspect.x86 import Selector, TableIndicator
from html_check import parse_view

# (value, index, table, rpl, source)
VECTORS = [
    # Linux x86-64, arch/x86/include/asm/segment.h: __KERNEL_CS =
    # GDT_ENTRY_KERNEL_CS*8 with GDT_ENTRY_KERNEL_CS = 2. Also QEMU's
    # "CS =0010" in tests/data/qemu/x86_64-4level/info-registers.txt.
    (0x0010, 2, "GDT", 0, "Linux __KERNEL_CS"),
    # __KERNEL_DS = GDT_ENTRY_KERNEL_DS*8 = 3*8; QEMU "SS =0018".
    (0x0018, 3, "GDT", 0, "Linux __KERNEL_DS"),
    # __USER32_CS = GDT_ENTRY_DEFAULT_USER32_CS*8 + 3 = 4*8 + 3.
    (0x0023, 4, "GDT", 3, "Linux __USER32_CS"),
    # __USER_DS = GDT_ENTRY_DEFAULT_USER_DS*8 + 3 = 5*8 + 3.
    (0x002B, 5, "GDT", 3, "Linux __USER_DS"),
    # __USER_CS = GDT_ENTRY_DEFAULT_USER_CS*8 + 3 = 6*8 + 3.
    (0x0033, 6, "GDT", 3, "Linux __USER_CS"),
    # GDT_ENTRY_TSS = 8 -> TR = 0x40 (QEMU "TR =0040"); Windows x64 KGDT64_SYS_TSS is 0x40 too.
    (0x0040, 8, "GDT", 0, "Linux/Windows x64 TSS selector"),
    # __CPUNODE_SEG = GDT_ENTRY_CPUNODE*8 + 3 = 15*8 + 3 (vDSO getcpu, RDPID fallback).
    (0x007B, 15, "GDT", 3, "Linux __CPUNODE_SEG"),
    # Windows x64 KGDT64_R3_CMTEB | RPL 3 = 0x53: the 32-bit TEB selector in FS (WoW64).
    (0x0053, 10, "GDT", 3, "Windows x64 KGDT64_R3_CMTEB"),
    # Windows x86 (XP) KGDT_R0_PCR = 0x30: FS in kernel mode -> the KPCR descriptor.
    (0x0030, 6, "GDT", 0, "Windows x86 KGDT_R0_PCR"),
    # Windows x86 KGDT_R3_TEB | 3 = 0x3B: FS in user mode.
    (0x003B, 7, "GDT", 3, "Windows x86 KGDT_R3_TEB"),
    # SDM 3.4.2: TI=1 selects the LDT; 0x0007 = index 0 of the LDT, RPL 3
    # (index 0 of an LDT is a usable descriptor, unlike the GDT's).
    (0x0007, 0, "LDT", 3, "SDM 3.4.2 TI flag"),
    # Linux modify_ldt users: LDT entry 1 at RPL 3 = (1 << 3) | 4 | 3.
    (0x000F, 1, "LDT", 3, "SDM 3.4.2 LDT selector"),
    # SDM 3.4.2: the null segment selector is GDT index 0 (any RPL).
    (0x0000, 0, "GDT", 0, "SDM 3.4.2 null selector"),
    (0x0003, 0, "GDT", 3, "SDM 3.4.2 null selector with RPL 3"),
    # Largest selector: index 8191 (the 64 KiB table limit / 8), LDT, RPL 3.
    (0xFFFF, 8191, "LDT", 3, "SDM 3.4.2: 13-bit index"),
    (0xFFF8, 8191, "GDT", 0, "SDM 3.4.2: 13-bit index"),
    (0x0004, 0, "LDT", 0, "SDM 3.4.2 TI flag only"),
    (0x0002, 0, "GDT", 2, "SDM 3.4.2 RPL 2"),
]


@pytest.mark.parametrize("value,index,table,rpl,source", VECTORS,
                         ids=["%#06x" % v[0] for v in VECTORS])
def test_known_selectors(value, index, table, rpl, source):
    s = Selector.decode(value)
    assert (s.index, s.table.value, s.rpl) == (index, table, rpl), source
    assert s.table is (TableIndicator.LDT if table == "LDT" else TableIndicator.GDT)
    assert s.to_dict() == {"raw": value, "index": index, "table": table, "rpl": rpl}


def test_offset_is_index_times_eight():
    # SDM 3.4.2: "The processor multiplies the index value by 8 (the number of
    # bytes in a segment descriptor) and adds the result to the base address".
    assert Selector.decode(0x33).offset == 6 * 8
    assert Selector.decode(0xFFFF).offset == 8191 * 8


def test_null_selector_property():
    # SDM 3.4.2: index 0 of the GDT with any RPL is the null selector; LDT index 0 is not.
    assert Selector.decode(0).is_null
    assert Selector.decode(3).is_null
    assert not Selector.decode(4).is_null
    assert not Selector.decode(0x10).is_null


def test_from_bytes_is_little_endian():
    assert Selector.from_bytes(b"\x33\x00").to_dict()["raw"] == 0x33
    assert Selector.from_bytes(b"\x00\x01").index == 0x100 >> 3


def test_from_bytes_too_short():
    with pytest.raises(TruncatedDataError):
        Selector.from_bytes(b"\x33")


@pytest.mark.parametrize("value", [0x10000, 0xFFFFFFFF, 1 << 64, -1])
def test_too_wide_is_a_decode_error(value):
    with pytest.raises(DecodeError) as info:
        Selector.decode(value)
    assert isinstance(info.value, ValueError)


def test_text_forms():
    s = Selector.decode(0x2B)
    line = str(s)
    assert "\n" not in line and line
    text = s.explain()
    assert "SDM" in text and "\n" in text
    parse_view(s._repr_html_(), str(s))
