"""Privileged instructions at CPL 3 on this machine (``ksinspect live --privileged``).

The expectation is the SDM's (vol. 3A §5.9; each instruction's #GP
condition in vol. 2): #GP(0) at CPL 3, except RDTSC with CR4.TSD=0, RDPMC
with CR4.PCE=1 and SGDT/SIDT/SLDT/STR/SMSW with CR4.UMIP=0. Linux turns a
user #GP into SIGSEGV with si_code SI_KERNEL (arch/x86/kernel/traps.c) and
emulates the UMIP instructions with fixed dummies (arch/x86/kernel/umip.c),
which are checked value for value. The probe's encodings are compared with
what the GNU assembler produces for the same instructions.
"""
import json
import os
import platform
import shutil
import subprocess

import pytest

from ksinspect._native import cpu_probe as probe
from ksinspect.errors import DecodeError

from conftest import run_cli as run

LINUX_X86_64 = platform.system() == "Linux" and platform.machine() == "x86_64"
live = pytest.mark.skipif(not LINUX_X86_64, reason="needs Linux on x86-64 (CPL 3 probes)")

# AT&T syntax, with the operands the probe uses ([rdi], di, eax, rax).
ASSEMBLY = {
    "clts": "clts", "hlt": "hlt", "invd": "invd", "wbinvd": "wbinvd",
    "invlpg": "invlpg (%rdi)", "lgdt": "lgdt (%rdi)", "lidt": "lidt (%rdi)",
    "lldt": "lldt %di", "lmsw": "lmsw %di", "ltr": "ltr %di",
    "mov_to_cr0": "mov %rax, %cr0", "mov_from_cr0": "mov %cr0, %rax",
    "mov_to_cr3": "mov %rax, %cr3", "mov_from_cr3": "mov %cr3, %rax",
    "mov_to_cr4": "mov %rax, %cr4", "mov_from_cr4": "mov %cr4, %rax",
    "mov_to_dr7": "mov %rax, %db7", "mov_from_dr7": "mov %db7, %rax",
    "rdmsr": "rdmsr", "wrmsr": "wrmsr", "rdpmc": "rdpmc", "rdtsc": "rdtsc",
    "sgdt": "sgdt (%rdi)", "sidt": "sidt (%rdi)", "sldt": "sldt %eax", "str": "str %eax",
    "smsw": "smsw %eax", "cli": "cli", "sti": "sti", "in": "in $0x80, %al",
    "out": "out %al, $0x80",
}


@pytest.mark.skipif(shutil.which("as") is None or shutil.which("objcopy") is None
                    or not LINUX_X86_64, reason="needs GNU as and objcopy for x86-64")
def test_encodings_are_what_the_assembler_produces(tmp_path):
    assert set(ASSEMBLY) == set(probe.INSTRUCTIONS)
    for name, text in ASSEMBLY.items():
        src, obj, raw = tmp_path / "a.s", tmp_path / "a.o", tmp_path / "a.bin"
        src.write_text(".text\n%s\n" % text)
        subprocess.run(["as", "--64", "-o", str(obj), str(src)], check=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(raw)],
                       check=True)
        assert probe.encoding(probe.INSTRUCTIONS[name]) == raw.read_bytes(), name


def test_unknown_instruction_numbers_are_refused():
    for bad in (-1, probe.COUNT, 1 << 20):
        with pytest.raises(DecodeError):
            probe.encoding(bad)


@live
def test_every_privileged_instruction_does_what_the_sdm_says():
    from ksinspect.live.cpu_probe import VECTOR_GP, privileged_table
    rows = privileged_table()
    assert [r.name for r in rows] == list(ASSEMBLY)
    bad = [(r.name, r.sdm, r.linux, r.observed) for r in rows if not r.agrees]
    assert not bad
    by_name = {r.name: r for r in rows}
    for name in ("clts", "hlt", "lgdt", "mov_to_cr0", "mov_from_cr3", "rdmsr", "wrmsr"):
        assert by_name[name].trapno == VECTOR_GP and by_name[name].error_code == 0
    if not by_name["rdtsc"].faulted:
        assert by_name["rdtsc"].value or by_name["rdtsc"].value_high


@live
def test_cli_live_privileged():
    status, out, _ = run("live", "--privileged", "--json")
    d = json.loads(out)
    assert status == 0 and len(d["instructions"]) == probe.COUNT
    assert all(r["agrees"] for r in d["instructions"])
    assert {"tsd", "pce", "umip"} <= set(d["cr4"])
    status, out, _ = run("live", "--privileged")
    assert status == 0 and "%d of %d agree." % (probe.COUNT, probe.COUNT) in out


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_portable_fallback_reports_unsupported(tmp_path):
    # Built as on a host without the probe (KSI_LIVE_DISABLE): every run says
    # KSI_ERR_UNSUPPORTED, unknown numbers still KSI_ERR_BAD_ARGUMENT, encodings work.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    main = tmp_path / "main.c"
    main.write_text('#include "ksi_cpu_probe.h"\n#include <stdio.h>\n'
                    "int main(void) {\n  ksi_cpu_probe r; uint8_t b[4]; size_t n = 9;\n"
                    "  int run = ksi_cpu_probe_run(KSI_PI_HLT, &r);\n"
                    "  int bad = ksi_cpu_probe_run(99, &r);\n"
                    "  int enc = ksi_cpu_probe_encoding(KSI_PI_HLT, b, 4, &n);\n"
                    "  printf(\"%d %d %d %d\\n\", run, bad, enc, (int)n);\n  return 0;\n}\n")
    exe = tmp_path / "fallback"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-DKSI_LIVE_DISABLE",
                    '-DKSI_BUILD_VERSION="test"', "-I", os.path.join(root, "csrc"), str(main),
                    os.path.join(root, "csrc", "ksi_cpu_probe.c"),
                    os.path.join(root, "csrc", "ksi_common.c"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    from ksinspect._native import lib
    assert out == [str(lib.KSI_ERR_UNSUPPORTED), str(lib.KSI_ERR_BAD_ARGUMENT), "0", "1"]
