"""`ksinspect vtop`: each level's PFN and WinDbg's !pte letters, and symbol
expressions through --symbols (issue 18 item 19).

Known answers for the letters come from WinDbg itself: the x86 example of
Microsoft's !pte page (PDE 0003B163 -> ``pfn 3b G-DA--KWV``, PTE 00154121
-> ``pfn 154 G--A--KRV``, printed before WinDbg added the C and E columns)
and x64 ``!pte`` sessions published by M. van Kuipers
(gist.github.com/mvankuipers/cadc55481fd30c8887a16974b3c716eb,
.../51d9cfbc53bcc36490a0737976b30e5c, .../bda738f8032726db9e089e6b0cc508aa).
On the QEMU guests the leaf's letters are checked against QEMU's own
``info tlb`` letters for the same entry (another program reading the same
SDM bits).
"""
import json
import lzma

import pytest

from conftest import qemu_file, run_cli
from ksinspect.views.windbg import pte_flags
from ksinspect.x86 import PagingEntry

CORE = qemu_file("x86_64-4level")
KALLSYMS = qemu_file("x86_64-4level", "kallsyms.txt.xz")


# -- the letters -----------------------------------------------------------------------

@pytest.mark.parametrize("raw, pfn, letters", [
    # x64 sessions: PXE, PPE, PDE and PTE contents and WinDbg's third line.
    (0x0A00_0000_1A90_7867, 0x1A907, "---DA--UWEV"),
    (0x0A00_0000_1B00_8867, 0x1B008, "---DA--UWEV"),
    (0x8000_0000_A1DD_0867, 0xA1DD0, "---DA--UW-V"),
    (0xC100_0000_A76C_C867, 0xA76CC, "---DA--UW-V"),
    (0x02D0_0006_5419_5867, 0x654195, "---DA--UWEV"),
    (0x32C0_0006_5207_B025, 0x65207B, "----A--UREV"),
])
def test_letters_and_pfn_match_windbg_x64(raw, pfn, letters):
    entry = PagingEntry.decode(raw, "4level", level=1)
    assert entry.frame >> 12 == pfn
    assert pte_flags(raw, entry.large and entry.leaf, nx_capable=True) == letters


@pytest.mark.parametrize("raw, pfn, letters", [
    (0x0003_B163, 0x3B, "G-DA--KWV"),        # the PDE of Microsoft's x86 example
    (0x0015_4121, 0x154, "G--A--KRV"),       # its PTE
])
def test_letters_match_the_documented_x86_example(raw, pfn, letters):
    # That example predates the C and E columns: compare the nine it shows, and
    # E is always shown where there is no execute-disable bit.
    entry = PagingEntry.decode(raw, "32", level=1)
    assert entry.frame >> 12 == pfn
    ours = pte_flags(raw, False, nx_capable=False)
    assert ours[1:9] + ours[10] == letters and ours[9] == "E" and ours[0] == "-"


def test_each_letter_reads_its_sdm_bit():
    # SDM vol. 3A Table 4-19 (4-level PTE): P 0, R/W 1, U/S 2, PWT 3, PCD 4, A 5, D 6, G 8,
    # bit 9 ignored (Windows: copy on write), XD 63.
    assert pte_flags(0x001, False, True) == "-------KREV"
    assert pte_flags(0x003, False, True) == "-------KWEV"
    assert pte_flags(0x005, False, True) == "-------UREV"
    assert pte_flags(0x009, False, True) == "------TKREV"
    assert pte_flags(0x011, False, True) == "-----N-KREV"
    assert pte_flags(0x021, False, True) == "----A--KREV"
    assert pte_flags(0x041, False, True) == "---D---KREV"
    assert pte_flags(0x101, False, True) == "-G-----KREV"
    assert pte_flags(0x201, False, True) == "C------KREV"
    assert pte_flags((1 << 63) | 1, False, True) == "-------KR-V"
    # XD is reserved without EFER.NXE: E stays. L only for a large-page leaf (a PTE's
    # bit 7 is PAT, Table 4-19; a PDE's is PS, Table 4-18).
    assert pte_flags((1 << 63) | 1, False, False) == "-------KREV"
    assert pte_flags(0x081, False, True) == "-------KREV"
    assert pte_flags(0x081, True, True) == "--L----KREV"


# -- vtop on a real guest ---------------------------------------------------------------

def _info_tlb():
    with lzma.open(qemu_file("x86_64-4level", "info-tlb.txt.xz"), "rt") as fh:
        lines = fh.read().splitlines()
    rows = {}
    for line in lines[::97]:                       # a spread of pages, both halves
        va, rest = line.split(": ")
        pa, letters = rest.split()
        rows[int(va, 16)] = (int(pa, 16), letters)
    return rows


def test_leaf_letters_and_pfn_agree_with_qemu_info_tlb():
    rows = _info_tlb()
    status, out, _ = run_cli("vtop", CORE, *("%x" % va for va in rows), "--json")
    assert status == 0
    translations = json.loads(out)
    assert len(translations) == len(rows)
    for t in translations:
        pa, qemu = rows[t["va"]]
        leaf = t["path"][-1]
        assert leaf["pfn"] == pa >> 12
        ours = leaf["flags"]
        # QEMU's XGPDACTUW against WinDbg's C G L D A N T U/K W/R E V, bit by bit.
        assert (qemu[0] == "X") == (ours[9] == "-")
        assert (qemu[1] == "G") == (ours[1] == "G")
        assert (qemu[2] == "P") == (ours[2] == "L")
        assert (qemu[3] == "D") == (ours[3] == "D")
        assert (qemu[4] == "A") == (ours[4] == "A")
        assert (qemu[5] == "C") == (ours[5] == "N")
        assert (qemu[6] == "T") == (ours[6] == "T")
        assert (qemu[7] == "U") == (ours[7] == "U")
        assert (qemu[8] == "W") == (ours[8] == "W")
        assert ours[10] == "V"
        for step in t["path"]:                      # every level present: its own PFN
            assert step["pfn"] == (step["value"] & ((1 << 52) - 1)) >> 12


def test_table_shows_each_level_beside_the_walk():
    status, out, _ = run_cli("vtop", CORE, "ffff888000200000")
    assert status == 0
    view = out.split("WinDbg !pte view")[1].splitlines()[1:]
    assert len(view) == 3                            # PML4E, PDPTE, and the 2 MiB PDE
    assert view[-1].startswith("  PDE at ") and view[-1].endswith("pfn 200 -GLDA--KW-V")
    status, out, _ = run_cli("vtop", CORE, "ffff888000200000", "400000")
    header, _rule, first, second = out.splitlines()
    assert "pfn" in header.split() and "flags" in header.split()
    assert "0x4401/0x4402/0x200" in first and "-GLDA--KW-V" in first
    assert "----A--UR-V" in second                 # the user text page: read-only, NX


def test_not_present_levels_say_not_valid():
    status, out, _ = run_cli("vtop", CORE, "1000", "--json")
    assert status == 0
    path = json.loads(out)[0]["path"]
    assert path[-1]["pfn"] is None and path[-1]["flags"] is None
    status, out, _ = run_cli("vtop", CORE, "1000", "2000", "--format", "csv")
    header = out.splitlines()[0].split(",")
    row = out.splitlines()[1].split(",")
    assert row[header.index("flags")].endswith("not valid")


# -- symbol expressions ------------------------------------------------------------------

def _kallsyms_address(name):
    with lzma.open(KALLSYMS, "rt") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == name:
                return int(parts[0], 16)
    raise AssertionError(name)


def test_symbol_plus_offset_resolves_through_kallsyms():
    idt = _kallsyms_address("idt_table")
    status, out, err = run_cli("vtop", CORE, "idt_table+0x10", "--symbols", KALLSYMS, "--json")
    # stderr: only how it was read (CR3 as QEMU's info registers gives it)
    assert status == 0, err
    assert err == "ksinspect: note: read through CR3 0x487c000 (4level paging)\n"
    translation = json.loads(out)[0]
    assert translation["va"] == idt + 0x10
    # info tlb maps that page; the physical address follows.
    pa = _info_tlb_all()[idt & ~0xFFF][0]
    assert translation["pa"] == pa + (idt & 0xFFF) + 0x10
    status, out, _ = run_cli("vtop", CORE, "init_task-0n16", "idt_table", "--symbols", KALLSYMS,
                             "--json")
    assert [t["va"] for t in json.loads(out)] == [_kallsyms_address("init_task") - 16, idt]


def _info_tlb_all():
    with lzma.open(qemu_file("x86_64-4level", "info-tlb.txt.xz"), "rt") as fh:
        return {int(line.split(":")[0], 16): (int(line.split()[1], 16), line.split()[2])
                for line in fh}


def test_symbols_in_an_address_file(tmp_path):
    listing = tmp_path / "addresses.txt"
    listing.write_text("idt_table+8\nffffffff81000000  # a number\n")
    status, out, _ = run_cli("vtop", CORE, "--from-file", listing, "--symbols", KALLSYMS,
                             "--json")
    assert status == 0
    assert [t["va"] for t in json.loads(out)] == [_kallsyms_address("idt_table") + 8,
                                                  0xFFFF_FFFF_8100_0000]


@pytest.mark.parametrize("argv, needle", [
    (["idt_table"], "--symbols"),                                       # names need a table
    (["nosuch+0x10", "--symbols", KALLSYMS], "no symbol named 'nosuch'"),
    (["idt_table+zz", "--symbols", KALLSYMS], "not a hex number"),
    (["1dt table", "--symbols", KALLSYMS], "NAME[+-OFFSET]"),
])
def test_bad_symbol_expressions_are_usage_errors(argv, needle):
    status, out, err = run_cli("vtop", CORE, *argv)
    assert status == 2 and out == ""
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
