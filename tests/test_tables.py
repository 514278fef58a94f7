"""GDT / LDT / IDT walkers: real QEMU guests, raw tables, findings, bad input.

Expected values come from QEMU itself (its `info registers` decode of the
segment caches, captured with the core by tools/make_qemu_fixture.py) and
from the guest's own /proc/kallsyms; the vector -> handler pairs are those
of Linux's arch/x86/kernel/idt.c (def_idts / X86_TRAP_PF -> asm_exc_page_fault,
X86_TRAP_BP -> asm_exc_int3, IA32_SYSCALL_VECTOR -> entry_INT80_32 on i386).
"""
import io
import json
import lzma
import os
import re
import struct

import pytest

from ksinspect.cli import main
from ksinspect.errors import TruncatedDataError
from ksinspect.tables import decode_idt, decode_table

QEMU = os.path.join(os.path.dirname(__file__), "data", "qemu")
PROFILES = ("x86_64-4level", "x86_64-5level", "i386-pae", "i386-2level")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), stream=out, errors=err), out.getvalue(), err.getvalue()


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
