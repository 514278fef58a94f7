"""GDT / LDT / IDT walkers: real QEMU guests, raw tables, findings, bad input.

Expected values come from QEMU itself (its `info registers` decode of the
segment caches, captured with the core by tools/make_qemu_fixture.py) and
from the guest's own /proc/kallsyms; the vector -> handler pairs are those
of Linux's arch/x86/kernel/idt.c (def_idts / X86_TRAP_PF -> asm_exc_page_fault,
X86_TRAP_BP -> asm_exc_int3, IA32_SYSCALL_VECTOR -> entry_INT80_32 on i386).
"""
import csv
import io
import json
import lzma
import os
import re
import struct

import pytest

from ksinspect.errors import TruncatedDataError
from ksinspect.tables import decode_idt, decode_table
from conftest import run_cli  # noqa: E402  (tests/conftest.py)
from conftest import PROFILES as SHIPPED_PROFILES, QEMU  # noqa: E402

PROFILES = SHIPPED_PROFILES


run = run_cli


def core(profile):
    return os.path.join(QEMU, profile, "core-trimmed.elf.xz")


def qemu_segments(profile):
    """{register: (selector, base, limit, flags)} as QEMU printed them."""
    with open(os.path.join(QEMU, profile, "info-registers.txt")) as fh:
        text = fh.read()
    found = {}
    for name, sel, base, limit, flags in re.findall(
            r"^(ES|CS|SS|DS|FS|GS|LDT|TR) *=([0-9a-f]{4}) ([0-9a-f]+) ([0-9a-f]{8}) ([0-9a-f]{8})",
            text, re.M):
        found[name.lower()] = (int(sel, 16), int(base, 16), int(limit, 16), int(flags, 16))
    return found


def kallsyms(profile):
    with lzma.open(os.path.join(QEMU, profile, "kallsyms.txt.xz"), "rt") as fh:
        return {parts[2]: int(parts[0], 16) for parts in (line.split() for line in fh)}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_segment_register_selects_what_qemu_cached(profile):
    status, out, err = run("gdt", core(profile), "--json")
    assert status == 0, err
    entries = {e["index"]: e for e in json.loads(out)}
    checked = 0
    for register, (selector, base, limit, flags) in qemu_segments(profile).items():
        register = "ldtr" if register == "ldt" else register
        if selector >> 3 == 0:
            continue
        entry = entries[selector >> 3]
        assert register.upper() in entry["registers"]
        assert entry["base"] == base and entry["limit"] == limit, register
        # Attribute bits (type without accessed/busy, S, DPL, P, AVL, L, D/B, G).
        mask = 0x00F0FC00 if register == "tr" else 0x00F0FE00
        assert (entry["raw"] >> 32) & mask == flags & mask, register
        assert not [f for f in entry["findings"] if f["code"] == "cache-mismatch"]
        checked += 1
    assert checked >= 3   # CS, SS and TR at least


@pytest.mark.parametrize("profile", PROFILES)
def test_idt_handlers_resolve_to_the_kernels_symbols(profile):
    symbols = os.path.join(QEMU, profile, "kallsyms.txt.xz")
    status, out, err = run("idt", core(profile), "--symbols", symbols, "--json")
    assert status == 0, err
    idt = json.loads(out)
    assert len(idt) == 256
    names = kallsyms(profile)
    assert idt[14]["symbol"] == "asm_exc_page_fault" and idt[14]["name"] == "#PF"
    assert idt[14]["offset"] == names["asm_exc_page_fault"]
    assert idt[3]["symbol"] == "asm_exc_int3" and idt[3]["dpl"] == 3
    if profile.startswith("i386"):
        assert idt[0x80]["symbol"] == "entry_INT80_32" and idt[0x80]["dpl"] == 3
        # #DF is a task gate to the double-fault TSS (Linux doublefault_32.c).
        assert idt[8]["kind"] == "task-gate" and idt[8]["selector"] == 0xF8
    # Every handler flagged as outside the text really is outside _stext.._etext,
    # and here they are the early stubs left in (freed) init text.
    for entry in idt:
        outside = [f for f in entry["findings"] if f["code"] == "handler-outside-text"]
        in_text = names["_stext"] <= entry["offset"] < names["_etext"]
        if entry["present"] and entry["kind"] != "task-gate":
            assert bool(outside) == (not in_text), entry["vector"]
        if outside:
            assert names["_sinittext"] <= entry["offset"] < names["_einittext"]


def test_gdt_of_a_64_bit_guest_lists_the_tss_once_and_marks_registers():
    status, out, _ = run("gdt", core("x86_64-4level"), "--json")
    entries = json.loads(out)
    tss = [e for e in entries if e["kind"].startswith("tss")]
    assert len(tss) == 1 and tss[0]["size"] == 16 and tss[0]["registers"] == ["TR"]
    assert 9 not in [e["index"] for e in entries]   # the TSS's upper half is not a slot


def test_read_table_takes_an_address_space_too():
    # QEMU's info registers: GDT= fffffe0000001000 0000007f, IDT= fffffe0000000000 00000fff.
    # An AddressSpace over the image reads them through its own CR3 (was AttributeError 'cpu').
    from ksinspect.memory import open_image
    from ksinspect.paging import AddressSpace
    from ksinspect.table_source import read_table
    with open_image(core("x86_64-4level")) as memory:
        space = AddressSpace(memory)
        for which, base, limit in (("GDT", 0xfffffe0000001000, 0x7f),
                                   ("IDT", 0xfffffe0000000000, 0xfff)):
            through_space, through_image = read_table(space, which), read_table(memory, which)
            assert (through_space.base, through_space.limit) == (base, limit)
            assert through_space.data == through_image.data and len(through_space.data) == limit + 1


def test_raw_gdt_file_infers_mode_and_says_so(tmp_path):
    # Linux x86-64 GDT_ENTRY_INIT values (arch/x86/kernel/cpu/common.c).
    raw = struct.pack("<4Q", 0, 0x00CF9B000000FFFF, 0x00AF9B000000FFFF, 0x00CF93000000FFFF)
    path = tmp_path / "gdt.bin"
    path.write_bytes(raw)
    status, out, _ = run("gdt", str(path))
    assert status == 0 and "mode inferred as long" in out
    status, out, _ = run("gdt", str(path), "--mode", "legacy", "--json")
    assert [e["kind"] for e in json.loads(out)] == ["null", "code", "code", "data"]


def test_dpl3_gate_on_an_unusual_vector_is_a_finding():
    def gate(dpl):   # 64-bit interrupt gate to 0x10:0xffffffff81000000 (SDM Figure 6-8)
        lo = 0x10 << 16 | (0x8E | dpl << 5) << 40 | 0x8100 << 48
        return struct.pack("<QQ", lo, 0xFFFFFFFF)
    idt = decode_idt(b"".join(gate(3 if v in (3, 0x2E) else 0) for v in range(0x30)), "long")
    codes = {e.vector: [f.code for f in e.findings] for e in idt}
    assert codes[0x2E] == ["user-reachable-gate"] and codes[3] == [] and codes[0] == []


def test_tss_not_selected_by_tr_is_a_finding():
    status, out, _ = run("gdt", core("i386-pae"), "--json")
    flagged = [e["selector"] for e in json.loads(out)
               if any(f["code"] == "tss-not-selected-by-tr" for f in e["findings"])]
    assert flagged == [0xF8]   # the double-fault TSS (GDT_ENTRY_DOUBLEFAULT_TSS = 31)


@pytest.mark.parametrize("data", [b"", b"\0" * 12])
def test_bad_table_lengths_raise(data):
    with pytest.raises(TruncatedDataError):
        decode_table(data)


@pytest.mark.parametrize("argv, needle", [
    (["gdt", "EMPTY"], "empty"),
    (["gdt", "ODD"], "not a multiple of the 8-byte"),
    (["gdt", "CORE", "--base", "0xfffffe0000001000", "--limit", "0x1fffff"], "larger than 0xFFFF"),
    (["gdt", "CORE", "--base", "0x7000000", "--limit", "0x7f", "--physical"], "not in"),
    (["gdt", "CORE", "--cr3", "0x1000"], ""),
    (["idt", "TRUNCATED"], "TRUNCATED"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, argv, needle):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "odd").write_bytes(b"\0" * 12)
    with lzma.open(core("x86_64-4level")) as fh:
        (tmp_path / "truncated.elf").write_bytes(fh.read(100))
    names = {"EMPTY": str(tmp_path / "empty"), "ODD": str(tmp_path / "odd"),
             "CORE": core("x86_64-4level"), "TRUNCATED": str(tmp_path / "truncated.elf")}
    argv = [names.get(a, a) for a in argv]
    needle = names.get(needle, needle)
    status, out, err = run(*argv)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err and needle.lower() in err.lower()


# -- the paging options: the same names as vtop's ----------------------------------------------

# Linux x86-64's first GDT entries, GDT_ENTRY_INIT values from
# arch/x86/kernel/cpu/common.c: null, __KERNEL32_CS (0x08), __KERNEL_CS (0x10),
# __KERNEL_DS (0x18).
LINUX_GDT = (0, 0x00CF9B000000FFFF, 0x00AF9B000000FFFF, 0x00CF93000000FFFF)
GDT_VA = 0xFFFF_FE00_0000_1000          # cpu_entry_area's GDT page on x86-64 Linux


@pytest.fixture()
def lime_with_gdt(tmp_path):
    """A LiME image (no CPU state) whose page tables map GDT_VA to a page
    holding LINUX_GDT."""
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from builders.image_builder import build_lime
    from builders.pagetable_builder import PageTableBuilder
    b = PageTableBuilder("4level")
    b.map(GDT_VA, 0x0030_0000, user=False)
    b.write_phys(0x0030_0000, struct.pack("<4Q", *LINUX_GDT))
    path = tmp_path / "memory.lime"
    path.write_bytes(build_lime(b.runs()))
    return str(path), b.cr3


@pytest.mark.parametrize("mode_option", ["--paging-mode", "--mode"])
def test_gdt_of_a_lime_image_through_cr3_and_a_paging_mode(lime_with_gdt, mode_option):
    """The README's `gdt memory.lime --base ADDR --limit 1f --cr3 X`, with the
    paging mode named as vtop names it (--mode 4level kept as an alias)."""
    path, cr3 = lime_with_gdt
    status, out, err = run("gdt", path, "--base", hex(GDT_VA), "--limit", "1f",
                           "--cr3", hex(cr3), mode_option, "4level", "--json")
    assert status == 0, err
    entries = json.loads(out)
    assert [e["raw"] for e in entries] == list(LINUX_GDT)
    # 0x10: 64-bit code (L=1, SDM §3.4.5 / §5.2.1), DPL 0
    cs = next(e for e in entries if e["selector"] == 0x10)
    assert cs["long"] is True and cs["dpl"] == 0


def test_gdt_descriptor_format_and_paging_mode_together(lime_with_gdt):
    path, cr3 = lime_with_gdt
    argv = ["gdt", path, "--base", hex(GDT_VA), "--limit", "1f", "--cr3", hex(cr3),
            "--paging-mode", "4level", "--json"]
    status, out, err = run(*argv, "--descriptor-format", "legacy")
    assert status == 0, err
    assert "mode inferred" not in out and [e["raw"] for e in json.loads(out)] == list(LINUX_GDT)
    status, out, err = run(*argv[:-1], "--mode", "long")           # the old alias
    assert status == 0 and "mode inferred" not in out, err


def test_gdt_of_a_lime_image_names_what_is_missing(lime_with_gdt):
    """No CPU state: the message names only the option not given (exit 2)."""
    path, cr3 = lime_with_gdt
    status, out, err = run("gdt", path, "--base", hex(GDT_VA), "--limit", "1f",
                           "--cr3", hex(cr3))
    assert status == 2 and out == "" and len(err.splitlines()) == 1
    assert "--paging-mode" in err and "give --paging-mode" in err and "give --cr3" not in err
    status, out, err = run("gdt", path, "--base", hex(GDT_VA), "--limit", "1f",
                           "--paging-mode", "4level")
    assert status == 2 and "give --cr3" in err and "--paging-mode" not in err


def test_gdt_base_without_limit_is_usage(lime_with_gdt):
    path, _ = lime_with_gdt
    status, out, err = run("gdt", path, "--base", hex(GDT_VA))
    assert status == 2 and "--limit" in err and len(err.splitlines()) == 1


def test_idt_symbols_with_a_console_marker_line_are_read_with_one_warning(tmp_path):
    """The real kallsyms of the x86_64 guest with a serial console's marker
    line appended (and a prompt before it): the symbols resolve as from the
    clean file, and one warning counts the two stray lines and names the first."""
    profile = "x86_64-4level"
    with lzma.open(os.path.join(QEMU, profile, "kallsyms.txt.xz"), "rb") as fh:
        clean = fh.read()
    noisy = tmp_path / "kallsyms-serial.txt"
    noisy.write_bytes(b"root@guest:~# cat /proc/kallsyms\n" + clean + b"CPU#0\n")
    status, out, err = run("idt", core(profile), "--symbols", str(noisy), "--json")
    assert status == 0, err
    idt = json.loads(out)
    assert idt[14]["symbol"] == "asm_exc_page_fault"
    assert idt[14]["offset"] == kallsyms(profile)["asm_exc_page_fault"]
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("ksinspect: warning: ")
    assert all(line.startswith("ksinspect: note: ") for line in err.splitlines()
               if line not in warnings)
    assert "skipped 2 lines" in err and "line 1" in err and "cat /proc/kallsyms" in err


@pytest.mark.parametrize("content, needle", [
    (b"CPU#0\nhello world\n", 'line 1 reads "CPU#0"'),
    (bytes(range(256)) * 4, "no line is a System.map"),
])
def test_idt_symbols_with_no_symbol_line_are_refused(tmp_path, content, needle):
    bad = tmp_path / "not-symbols.map"
    bad.write_bytes(content)
    status, out, err = run("idt", core("x86_64-4level"), "--symbols", str(bad))
    assert status == 1 and out == "" and len(err.splitlines()) == 1
    assert needle in err and str(bad) in err
    assert "codec" not in err and "\\n'" not in err


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_provenance_reaches_stderr_in_machine_formats(fmt):
    """How the GDT was found (GDTR) and read (CR3, paging mode) is on stderr
    when stdout is for a script; the values are QEMU's `info registers`."""
    profile = "x86_64-4level"
    with open(os.path.join(QEMU, profile, "info-registers.txt")) as fh:
        text = fh.read()
    base, limit = re.search(r"^GDT=\s+([0-9a-f]+) ([0-9a-f]+)", text, re.M).groups()
    cr3 = re.search(r"CR3=([0-9a-f]+)", text).group(1)
    status, out, err = run("gdt", core(profile), "--format", fmt)
    assert status == 0, err
    notes = err.splitlines()
    assert all(line.startswith("ksinspect: note: ") for line in notes)
    assert any("GDTR" in n and "%#x" % int(base, 16) in n and "%#x" % int(limit, 16) in n
               for n in notes)
    assert any("CR3 %#x" % int(cr3, 16) in n and "4level" in n for n in notes)
    if fmt == "json":
        json.loads(out)
    status, out, err = run("gdt", core(profile))
    assert err == "" and "GDTR" in out


@pytest.mark.parametrize("selectors, expected", [
    ("8-10", [0x08, 0x10]),        # dg 8 10: __KERNEL32_CS and __KERNEL_CS
    ("10", [0x10]),
    ("0x13-1b", [0x10, 0x18]),     # RPL bits of either end do not move the range
    ("40-50", []),                 # past the table: no rows
])
def test_gdt_selector_range_as_windbg_dg(tmp_path, selectors, expected):
    path = tmp_path / "gdt.bin"
    path.write_bytes(struct.pack("<4Q", *LINUX_GDT))
    status, out, err = run("gdt", str(path), selectors, "--descriptor-format", "long", "--json")
    assert status == 0, err
    entries = json.loads(out)
    assert [e["selector"] for e in entries] == expected
    assert [e["raw"] for e in entries] == [LINUX_GDT[s >> 3] for s in expected]


def test_gdt_selector_range_errors_are_usage(tmp_path):
    path = tmp_path / "gdt.bin"
    path.write_bytes(struct.pack("<4Q", *LINUX_GDT))
    for bad in ("zz", "18-8", "10000"):
        status, out, err = run("gdt", str(path), bad)
        assert status == 2 and out == "" and "SELECTORS" in err and len(err.splitlines()) == 1


def test_gdt_csv_is_hex_like_its_table(tmp_path):
    path = tmp_path / "gdt.bin"
    path.write_bytes(struct.pack("<4Q", *LINUX_GDT))
    status, out, _ = run("gdt", str(path), "--descriptor-format", "long", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    kernel_cs = rows[2]
    assert (kernel_cs["selector"], kernel_cs["raw"]) == ("0x10", "%#x" % LINUX_GDT[2])
    assert kernel_cs["limit"] == "0xffffffff" and kernel_cs["long"] == "true"
