"""Known-answer tests for paging-structure entries.

Sources: Intel SDM vol. 3A chapter 4 -- 4.3 (32-bit paging, Tables 4-4 to
4-6, PSE-36), 4.4 (PAE, Tables 4-8 to 4-11), 4.5 (4- and 5-level paging,
Tables 4-14 to 4-20), 4.6.2 (protection keys), 4.9.2 (memory type from
PAT/PCD/PWT) -- and 11.12 (IA32_PAT, Tables 11-10 and 11-12); real entries
from the Linux guest in tests/data/qemu, whose "info tlb" is an independent
oracle (QEMU's own page walker).
"""
import struct

import pytest

from ksinspect.errors import DecodeError, TruncatedDataError
from ksinspect.x86 import LEVEL_NAMES, PAT_DEFAULT, PagingEntry, decode_paging_entries

from reference_model import PhysicalMemory, qemu_file, qemu_registers
from conftest import check_teaching_forms

# Linux's IA32_PAT: arch/x86/mm/pat/memtype.c pat_bp_init()/init_cache_modes():
# PAT(0, WB) | PAT(1, WC) | PAT(2, UC_MINUS) | PAT(3, UC) | PAT(4, WB) | PAT(5, WP) |
# PAT(6, UC_MINUS) | PAT(7, WT); the guest's boot log (tests/data/qemu/x86_64-4level/
# console.log.xz) prints it: "x86/PAT: Configuration [0-7]: WB  WC  UC- UC  WB  WP  UC- WT".
LINUX_PAT = 0x0407050600070106
LINUX_PAT_TYPES = ["WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT"]
# SDM Table 11-12, IA32_PAT after power-up or reset: PA0..PA7 = WB WT UC- UC WB WT UC- UC.
DEFAULT_PAT_TYPES = ["WB", "WT", "UC-", "UC", "WB", "WT", "UC-", "UC"]

KIB4, MIB2, MIB4, GIB1 = 1 << 12, 1 << 21, 1 << 22, 1 << 30


def e(raw, mode="4level", level=1, **kw):
    return PagingEntry.decode(raw, mode=mode, level=level, **kw).to_dict()


def test_default_pat_constant():
    assert PAT_DEFAULT == 0x0007040600070406   # SDM Table 11-12


def test_level_names():
    # SDM 4.5: PML5 table, PML4 table, page-directory-pointer table, page directory, page table.
    for mode, top in (("32", 2), ("pae", 3), ("4level", 4), ("5level", 5)):
        names = {level: name for level, name in
                 LEVEL_NAMES[[m for m in LEVEL_NAMES if m.value == mode][0]].items()}
        assert names == {lvl: n for lvl, n in
                         {1: "PTE", 2: "PDE", 3: "PDPTE", 4: "PML4E", 5: "PML5E"}.items() if lvl <= top}
        for level in range(1, top + 1):
            assert e(1, mode, level)["level_name"] == names[level]


# -------------------------------------------------------- 32-bit paging ---

def test_32bit_pte():
    # Table 4-6: P R/W U/S A D -> 4 KiB page at 0x00123000.
    x = e(0x00123067, "32", 1)
    assert x["frame"] == 0x123000 and x["page_size"] == KIB4 and x["leaf"]
    assert x["present"] and x["writable"] and x["user"] and x["accessed"] and x["dirty"]
    assert not x["global"] and not x["pat"] and not x["nx"] and x["pkey"] is None
    assert x["memory_type"] == "WB" and x["anomalies"] == [] and x["reserved_bits"] == 0
    # PAT (bit 7), PCD, PWT all set -> PAT entry 7 = UC at reset (Table 11-12).
    x = e(0x0012309F, "32", 1)
    assert (x["pat"], x["pcd"], x["pwt"], x["memory_type"]) == (True, True, True, "UC")
    assert x["frame"] == 0x123000 and x["page_size"] == KIB4


def test_32bit_pde_to_page_table():
    # Table 4-5: PS=0, bits 31:12 address the page table; D (bit 6) and G are ignored.
    x = e(0x00123067, "32", 2)
    assert (x["leaf"], x["large"], x["frame"], x["page_size"]) == (False, False, 0x123000, 0)
    assert not x["dirty"] and x["accessed"]


# 0xAB in bits 20:13 (PSE-36: physical address bits 39:32), 0x301 in bits 31:22,
# PS | R/W | P: a 4 MiB page at 0xAB_C040_0000.
PSE36 = 0xC0400000 | (0xAB << 13) | 0x83


def test_32bit_pde_4mib_with_pse36():
    assert PSE36 == 0xC0556083
    # Table 4-4: bits (M-20):13 are address bits (M-1):32 with M = min(MAXPHYADDR, 40).
    x = e(PSE36, "32", 2, maxphyaddr=40)
    assert (x["leaf"], x["large"], x["page_size"]) == (True, True, MIB4)
    assert x["frame"] == 0xABC0400000 and x["anomalies"] == [] and x["reserved_bits"] == 0
    # MAXPHYADDR 52 still gives M = 40 in 32-bit paging.
    assert e(PSE36, "32", 2)["frame"] == 0xABC0400000
    # M = 36: bits 16:13 are address bits 35:32; bits 21:17 are reserved, and 0xAB
    # sets bits 18 and 20 there.
    x = e(PSE36, "32", 2, maxphyaddr=36)
    assert x["frame"] == 0xBC0400000
    assert x["reserved_bits"] == (1 << 18) | (1 << 20) and x["anomalies"] == ["reserved-phys"]


def test_32bit_pde_bit_21_is_always_reserved():
    # Table 4-4: "21:(M-19) Reserved (must be 0)" -- with M <= 40 that includes bit 21.
    x = e(0x00600083, "32", 2)
    assert x["frame"] == 0x400000 and x["reserved_bits"] == 1 << 21
    assert x["anomalies"] and set(x["anomalies"]) <= {"reserved-level", "reserved-phys"}


def test_32bit_pde_4mib_pat_is_bit_12():
    # Table 4-4: bit 12 is PAT for a 4 MiB page -> PAT entry 4 (WB at reset).
    x = e(0x00401083, "32", 2)
    assert x["pat"] and x["frame"] == 0x400000 and x["memory_type"] == "WB"
    x = e(0x00401083 | 0x18, "32", 2)   # PAT PCD PWT -> entry 7
    assert x["memory_type"] == "UC"


def test_32bit_pde_ps_ignored_without_cr4_pse():
    # Table 4-5: "If CR4.PSE = 1, must be 0 ... otherwise, ignored".
    x = e(PSE36, "32", 2, pse=False)
    assert (x["leaf"], x["large"], x["page_size"], x["frame"]) == (False, False, 0, 0xC0556000)
    assert x["anomalies"] == []


def test_32bit_entries_are_32_bits_wide():
    with pytest.raises(DecodeError):
        PagingEntry.decode(1 << 32 | 1, mode="32", level=1)


def test_32bit_has_no_xd():
    x = e(0x80000001, "32", 1, nxe=True)
    assert not x["nx"] and x["frame"] == 0x80000000 and x["anomalies"] == []


# ------------------------------------------------------------------ PAE ---

def test_pae_pdpte():
    # Table 4-8: P, PWT, PCD, address (M-1):12. Linux i386 PAE fills PDPTEs with
    # __pa(pmd) | _PAGE_PRESENT only (arch/x86/include/asm/pgalloc.h pud_populate).
    x = e(0x0000000012345001, "pae", 3)
    assert (x["frame"], x["leaf"], x["page_size"]) == (0x12345000, False, 0)
    assert x["anomalies"] == [] and x["memory_type"] == "WB"
    x = e(0x0000000012345019, "pae", 3)      # PWT | PCD -> entry 3 = UC
    assert x["pwt"] and x["pcd"] and x["memory_type"] == "UC"


@pytest.mark.parametrize("extra", [1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 7, 1 << 8])
def test_pae_pdpte_reserved_bits(extra):
    # Table 4-8: bits 2:1 and 8:5 are reserved (must be 0); in particular there is
    # no R/W, U/S, A or PS in a PAE PDPTE, so no 1 GiB pages.
    x = e(0x12345001 | extra, "pae", 3)
    assert x["reserved_bits"] == extra and "reserved-level" in x["anomalies"]
    assert not x["leaf"] and not x["large"]


def test_pae_pdpte_bit_63_is_reserved_even_with_nxe():
    # Table 4-8: "63:M Reserved (must be 0)" -- a PDPTE has no XD bit.
    for nxe in (True, False):
        x = e((1 << 63) | 0x12345001, "pae", 3, nxe=nxe)
        assert x["reserved_bits"] == 1 << 63 and "xd-reserved" in x["anomalies"]
        assert not x["nx"]


def test_pae_pde_2mib():
    # Table 4-9: PS=1 -> 2 MiB page, address (M-1):21, bits 20:13 reserved, XD bit 63.
    x = e(0x80000000002001E3, "pae", 2)
    assert (x["leaf"], x["large"], x["page_size"], x["frame"]) == (True, True, MIB2, 0x200000)
    assert x["nx"] and x["global"] and x["dirty"] and x["pkey"] is None and x["anomalies"] == []
    x = e(0x002021E3, "pae", 2)
    assert x["reserved_bits"] == 1 << 13 and x["anomalies"] == ["reserved-level"]


def test_pae_pte():
    # Table 4-11.
    x = e(0x8000000012345063, "pae", 1)
    assert (x["frame"], x["page_size"], x["nx"], x["pkey"]) == (0x12345000, KIB4, True, None)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_pae_bits_62_to_52_are_reserved(level):
    raw = (1 << 52) | (1 << 62) | 0x12345001
    x = e(raw, "pae", level, maxphyaddr=52)
    assert x["reserved_bits"] & ((1 << 52) | (1 << 62)) == (1 << 52) | (1 << 62)
    assert "reserved-phys" in x["anomalies"] or "reserved-level" in x["anomalies"]


# --------------------------------------------------------- 4- and 5-level ---

# Real entries walked from the guest's CR3 (tests/data/qemu/x86_64-4level,
# core-trimmed.elf), with QEMU's "info tlb" line for each:
#   ffff888000200000: 0000000000200000 XGPDA---W   (direct map, PDE 0x80000000002001e3)
#   ffffffff81000000: 0000000001000000 -GPDA----   (kernel text, PDE 0x00000000010001e1)
#   0000000000400000: 000000000330e000 X---A--U-   (busybox, PTE 0x800000000330e025)
#   00000000005e2000: 00000000029f7000 X--DA--UW   (busybox data, PTE 0x80000000029f7867)
#   ffffc9000000b000: 00000000fed00000 XG-DAC--W   (HPET ioremap, PTE 0x80000000fed00173)
#   ffffffffff5fc000: 00000000fec00000 XG-DACT-W   (IO-APIC fixmap, PTE 0x80000000fec0017b)
REAL = [
    # raw, level, frame, page_size, nx, global, dirty, user, writable, pcd, pwt, Linux PAT type
    (0x80000000002001E3, 2, 0x200000, MIB2, True, True, True, False, True, False, False, "WB"),
    (0x00000000010001E1, 2, 0x1000000, MIB2, False, True, True, False, False, False, False, "WB"),
    (0x800000000330E025, 1, 0x330E000, KIB4, True, False, False, True, False, False, False, "WB"),
    (0x80000000029F7867, 1, 0x29F7000, KIB4, True, False, True, True, True, False, False, "WB"),
    (0x80000000FED00173, 1, 0xFED00000, KIB4, True, True, True, False, True, True, False, "UC-"),
    (0x80000000FEC0017B, 1, 0xFEC00000, KIB4, True, True, True, False, True, True, True, "UC"),
]


@pytest.mark.parametrize("mode", ["4level", "5level"])
@pytest.mark.parametrize("row", REAL, ids=["%#x" % r[0] for r in REAL])
def test_real_linux_leaf_entries(row, mode):
    raw, level, frame, size, nx, glob, dirty, user, writable, pcd, pwt, mt = row
    x = e(raw, mode, level, pat=LINUX_PAT)
    assert (x["leaf"], x["frame"], x["page_size"]) == (True, frame, size)
    assert (x["nx"], x["global"], x["dirty"], x["user"], x["writable"]) == (nx, glob, dirty, user, writable)
    assert (x["pcd"], x["pwt"], x["accessed"], x["memory_type"]) == (pcd, pwt, True, mt)
    assert x["large"] == (level > 1) and x["pkey"] == 0 and x["anomalies"] == []


def test_real_linux_table_pointers():
    # Same walk: PML4E 0x2a15067, PDPTE 0x2a16063 for ffffffff81000000. Bit 6 is
    # set by Linux (_KERNPG_TABLE includes _PAGE_DIRTY) but Tables 4-15 and 4-17
    # say bit 6 is ignored in a table pointer, so no "dirty".
    for raw, level in ((0x2A15067, 4), (0x2A16063, 3), (0x622F067, 2)):
        x = e(raw, "4level", level)
        assert (x["leaf"], x["large"], x["page_size"]) == (False, False, 0)
        assert x["frame"] == raw & ~0xFFF and x["accessed"] and not x["dirty"]
        assert x["pkey"] is None and x["anomalies"] == [] and not x["global"]


def test_1gib_page():
    # Table 4-16: PDPTE with PS=1 maps 1 GiB; address (M-1):30, bits 29:13 reserved,
    # PAT in bit 12, protection key 62:59.
    x = e(0x80000000400001E3, "4level", 3)
    assert (x["leaf"], x["large"], x["frame"], x["page_size"]) == (True, True, 0x40000000, GIB1)
    assert x["anomalies"] == []
    x = e(0x400021E3, "4level", 3)
    assert x["reserved_bits"] == 1 << 13 and x["anomalies"] == ["reserved-level"]
    x = e(0x400011E3, "5level", 3)
    assert x["pat"] and x["memory_type"] == "WB"          # entry 4 at reset
    x = e(0x400011EB, "5level", 3, pat=LINUX_PAT)         # PAT | PWT -> entry 5
    assert x["memory_type"] == "WP"


def test_2mib_page_reserved_bits():
    # Table 4-18: bits 20:13 of a 2 MiB PDE are reserved.
    x = e(0x002001E3 | (0xFF << 13), "4level", 2)
    assert x["reserved_bits"] == 0xFF << 13 and x["anomalies"] == ["reserved-level"]
    assert x["frame"] == 0x200000


@pytest.mark.parametrize("mode,level", [("4level", 4), ("5level", 4), ("5level", 5)])
def test_ps_is_reserved_in_pml4e_and_pml5e(mode, level):
    # Tables 4-14 and 4-15: "7 (PS) Reserved (must be 0)".
    x = e(0x12345083, mode, level)
    assert not x["leaf"] and not x["large"] and x["page_size"] == 0
    assert x["reserved_bits"] == 1 << 7 and x["anomalies"] == ["reserved-level"]


@pytest.mark.parametrize("maxphyaddr,reserved", [(40, 1 << 40), (41, 0), (36, 1 << 40), (52, 0)])
def test_maxphyaddr_reserved_bits(maxphyaddr, reserved):
    # Table 4-20: "51:M Reserved (must be 0)".
    x = e((1 << 40) | 0x1001, "4level", 1, maxphyaddr=maxphyaddr)
    assert x["reserved_bits"] == reserved
    assert x["anomalies"] == (["reserved-phys"] if reserved else [])
    x = e((1 << 51) | 0x1001, "5level", 5, maxphyaddr=48)
    assert x["reserved_bits"] == 1 << 51 and x["anomalies"] == ["reserved-phys"]


def test_bits_58_to_52_are_ignored_in_4level():
    # Table 4-20: "58:52 Ignored".
    assert e((0x7F << 52) | 0x1001, "4level", 1)["anomalies"] == []


def test_xd_needs_nxe():
    # 4.5 tables, bit 63: "If IA32_EFER.NXE = 1, execute-disable ...; otherwise,
    # reserved (must be 0)".
    x = e((1 << 63) | 0x1001, "4level", 1, nxe=True)
    assert x["nx"] and x["anomalies"] == [] and x["reserved_bits"] == 0
    x = e((1 << 63) | 0x1001, "4level", 1, nxe=False)
    assert not x["nx"] and x["anomalies"] == ["xd-reserved"] and x["reserved_bits"] == 1 << 63
    x = e((1 << 63) | 0x1001, "pae", 1, nxe=False)
    assert not x["nx"] and "xd-reserved" in x["anomalies"]


def test_protection_key():
    # 4.6.2: "the protection key ... in bits 62:59 of the paging-structure entry that
    # maps the page".
    raw = 0x5000000000001001   # bits 62 and 60 -> key 0b1010
    assert e(raw, "4level", 1)["pkey"] == 10
    assert e(raw | 0x80, "5level", 2)["pkey"] == 10      # 2 MiB page
    assert e(raw | 0x80, "4level", 3)["pkey"] == 10      # 1 GiB page
    assert e((0xF << 59) | 0x1001, "4level", 1)["pkey"] == 15
    # Not a leaf: 62:52 are ignored, no key.
    assert e(raw, "4level", 2)["pkey"] is None
    assert e(raw, "4level", 4)["pkey"] is None
    assert e(0x1001, "32", 1)["pkey"] is None


# --------------------------------------------------------------- PAT types ---

@pytest.mark.parametrize("index", range(8))
def test_memory_type_4kib_page(index):
    # 4.9.2: PAT index = 4*PAT + 2*PCD + PWT; for a 4 KiB PTE PAT is bit 7.
    raw = 0x1001 | ((index & 4) << 5) | ((index & 2) << 3) | ((index & 1) << 3)
    assert e(raw, "4level", 1)["memory_type"] == DEFAULT_PAT_TYPES[index]
    assert e(raw, "4level", 1, pat=LINUX_PAT)["memory_type"] == LINUX_PAT_TYPES[index]
    assert e(raw, "pae", 1, pat=LINUX_PAT)["memory_type"] == LINUX_PAT_TYPES[index]
    assert e(raw, "32", 1, pat=LINUX_PAT)["memory_type"] == LINUX_PAT_TYPES[index]


@pytest.mark.parametrize("index", range(8))
def test_memory_type_2mib_page(index):
    # Large pages keep PAT in bit 12 (Tables 4-9, 4-18).
    raw = 0x200081 | ((index & 4) << 10) | ((index & 2) << 3) | ((index & 1) << 3)
    assert e(raw, "4level", 2, pat=LINUX_PAT)["memory_type"] == LINUX_PAT_TYPES[index]
    assert e(raw, "pae", 2)["memory_type"] == DEFAULT_PAT_TYPES[index]


def test_memory_type_of_a_table_pointer_uses_pcd_pwt_only():
    # 4.9.2: the memory type of a paging structure comes from PCD/PWT of the entry
    # that references it, i.e. PAT entries 0-3.
    assert e(0x1001 | 0x08, "4level", 4, pat=LINUX_PAT)["memory_type"] == "WC"
    assert e(0x1001 | 0x18, "5level", 5, pat=LINUX_PAT)["memory_type"] == "UC"
    assert e(0x1001 | 0x10, "4level", 2, pat=LINUX_PAT)["memory_type"] == "UC-"


@pytest.mark.parametrize("encoding", [2, 3])
def test_reserved_pat_encodings(encoding):
    # Table 11-10: encodings 02H and 03H are reserved.
    x = e(0x1001, "4level", 1, pat=(PAT_DEFAULT & ~0xFF) | encoding)
    assert x["memory_type"] == "reserved(%d)" % encoding
    assert x["anomalies"] == ["reserved-memtype"]


def test_every_valid_pat_encoding():
    # Table 11-10: 00H UC, 01H WC, 04H WT, 05H WP, 06H WB, 07H UC-.
    for code, name in ((0, "UC"), (1, "WC"), (4, "WT"), (5, "WP"), (6, "WB"), (7, "UC-")):
        assert e(0x1001, "4level", 1, pat=code)["memory_type"] == name


# ------------------------------------------------------------ non-present ---

@pytest.mark.parametrize("mode,level", [("32", 1), ("32", 2), ("pae", 3), ("pae", 1),
                                        ("4level", 4), ("5level", 5), ("4level", 2)])
def test_non_present_entry_shows_nothing(mode, level):
    # 4.3-4.5: with P=0 "the entry is not used" and every other bit is ignored (Linux
    # keeps swap entries there).
    raw = 0xFFFFFFFE if mode == "32" else 0xFFFFFFFFFFFFFFFE
    x = e(raw, mode, level, nxe=False, maxphyaddr=36)
    assert x["present"] is False and x["leaf"] is False
    for key in ("writable", "user", "pwt", "pcd", "accessed", "dirty", "large", "global",
                "pat", "nx"):
        assert x[key] is False, key
    assert (x["pkey"], x["frame"], x["page_size"], x["memory_type"]) == (None, 0, 0, None)
    assert (x["anomalies"], x["reserved_bits"], x["raw"], x["level"], x["mode"]) == (
        [], 0, raw, level, mode)


# ----------------------------------------------------------------- errors ---

@pytest.mark.parametrize("mode,level", [("32", 3), ("pae", 4), ("4level", 5), ("5level", 6),
                                        ("4level", 0), ("32", -1)])
def test_levels_the_mode_lacks(mode, level):
    with pytest.raises(DecodeError) as info:
        PagingEntry.decode(1, mode=mode, level=level)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("mode", ["64", "ept", "6level", "", "PAE5"])
def test_unknown_modes(mode):
    with pytest.raises(DecodeError):
        PagingEntry.decode(1, mode=mode, level=1)


@pytest.mark.parametrize("raw", [1 << 64, -1])
def test_too_wide_values(raw):
    with pytest.raises(DecodeError) as info:
        PagingEntry.decode(raw, mode="4level", level=1)
    assert isinstance(info.value, ValueError)


def test_batch_lengths():
    with pytest.raises(TruncatedDataError):
        decode_paging_entries(b"\0" * 12, mode="4level", level=1)
    with pytest.raises(TruncatedDataError):
        decode_paging_entries(b"\0" * 6, mode="32", level=1)
    assert len(decode_paging_entries(b"\0" * 8, mode="32", level=1)) == 2   # 4-byte entries
    assert len(decode_paging_entries(b"\0" * 8, mode="pae", level=1)) == 1
    assert len(decode_paging_entries(b"", mode="5level", level=5)) == 0


def test_batch_matches_single_decodes_and_addresses():
    raws = [r[0] for r in REAL]
    batch = decode_paging_entries(struct.pack("<6Q", *raws), mode="4level", level=1,
                                  pat=LINUX_PAT, base_address=0x487C000)
    assert len(batch) == 6
    for i, (entry, raw) in enumerate(zip(batch, raws)):
        got = entry.to_dict()
        assert got.pop("address") == 0x487C000 + 8 * i
        assert got == e(raw, "4level", 1, pat=LINUX_PAT)
        assert entry.address == 0x487C000 + 8 * i


# ------------------------------------------------------------ the QEMU guest ---

@pytest.mark.parametrize("profile", ["x86_64-4level", "x86_64-5level"])
def test_walk_agrees_with_qemu_info_tlb(profile):
    """Walk the guest's page tables with ksinspect and compare with QEMU's own walk."""
    regs_text = qemu_file(profile, "info-registers.txt")
    core = qemu_file(profile, "core-trimmed.elf", binary=True)
    tlb = qemu_file(profile, "info-tlb.txt")
    if None in (regs_text, core, tlb):
        pytest.skip("fixture %s not present" % profile)
    regs = qemu_registers(regs_text)
    mem = PhysicalMemory(core)
    levels = 5 if regs["CR4"] & (1 << 12) else 4    # CR4.LA57
    mode = "5level" if levels == 5 else "4level"
    nxe = bool(regs["EFER"] & (1 << 11))             # IA32_EFER.NXE
    assert nxe

    def walk(va):
        table = regs["CR3"] & 0x000FFFFFFFFFF000
        for level in range(levels, 0, -1):
            index = (va >> (12 + 9 * (level - 1))) & 0x1FF
            entry = PagingEntry.decode(mem.qword(table + 8 * index), mode=mode, level=level,
                                       pat=LINUX_PAT, nxe=nxe)
            assert entry.present and entry.to_dict()["anomalies"] == []
            if entry.leaf:
                return entry, entry.frame | (va & (entry.page_size - 1))
            table = entry.frame

    lines = tlb.splitlines()
    # Every 37th line, plus every large page and every uncached mapping.
    sample = lines[::37] + [ln for ln in lines if ln.split()[-1][2] == "P" or "C" in ln.split()[-1]]
    assert len(sample) > 100
    for line in sample:
        va, pa, flags = line.replace(":", "").split()
        entry, got = walk(int(va, 16))
        assert got == int(pa, 16), line
        # QEMU prints X G P D A C T U W (NX, global, PS, dirty, accessed, PCD, PWT, U/S, R/W).
        mine = "".join(c if bit else "-" for c, bit in zip("XGPDACTUW", (
            entry.nx, entry.global_, entry.large, entry.dirty, entry.accessed, entry.pcd,
            entry.pwt, entry.user, entry.writable)))
        assert mine == flags, line
        expected_type = LINUX_PAT_TYPES[4 * entry.pat + 2 * entry.pcd + entry.pwt]
        assert entry.to_dict()["memory_type"] == expected_type


# -------------------------------------------------------------- text forms ---

def test_text_forms():
    for x in (PagingEntry.decode(0x80000000FEC0017B, mode="4level", level=1, pat=LINUX_PAT),
              PagingEntry.decode(PSE36, mode="32", level=2),
              PagingEntry.decode(0x12345003, mode="pae", level=3),
              PagingEntry.decode(0, mode="5level", level=5)):
        check_teaching_forms(x)


def test_one_decode_is_one_call_into_c(monkeypatch):
    """PagingEntry.decode builds the whole value in C (ksinspect._percall.new_pte)
    and leaves the checked path (the _native wrapper) to what C does not take."""
    import ksinspect.x86.paging_entry as module
    if module._percall is None:
        pytest.skip("ksinspect._percall is not built here")
    calls = []
    checked = module._decode
    monkeypatch.setattr(module, "_decode", lambda *a: calls.append(a) or checked(*a))
    # SDM Table 4-20 (4-level PTE): P, R/W, A, D set, U/S clear, frame bits 51:12, XD bit 63.
    pte = PagingEntry.decode(0x8000_0001_2345_6063, "4level", 1)
    assert (pte.frame, pte.page_size, pte.present, pte.writable, pte.user, pte.nx) == (
        0x1_2345_6000, KIB4, True, True, False, True)
    assert (pte.accessed, pte.dirty, pte.leaf, pte.address, pte.pat_msr) == (
        True, True, True, None, PAT_DEFAULT)
    # SDM Table 4-17 (4-level PDE mapping a 2 MiB page, PS=1), at an address, NXE=0:
    # bit 63 is then reserved.
    pde = PagingEntry.decode(0x8000_0000_FEE0_00E3, "4level", 2, nxe=False, address=0x5008)
    assert (pde.frame, pde.page_size, pde.nx, pde.address) == (0xFEE0_0000, MIB2, False, 0x5008)
    assert pde.anomalies and not calls
    # What C does not take (not a bool, a value wider than 64 bits) runs the checked path.
    assert PagingEntry.decode(0x63, "4level", 1, pse=1).pse == 1
    with pytest.raises(DecodeError):
        PagingEntry.decode(1 << 64, "4level", 1)
    assert len(calls) == 2
