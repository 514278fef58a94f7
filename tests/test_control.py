"""CR0, CR4, IA32_EFER, RFLAGS, the #PF error code and the operating mode.

Expected values come from the manuals (sections cited per test), from the
shipped QEMU guests' own ``info registers`` (QEMU prints CR0/CR4/EFER and
decodes EFLAGS as ``[DOSZAPC]`` itself, target/i386/cpu-dump.c), from the
error codes Linux documents for its page-fault handler
(arch/x86/include/asm/trap_pf.h: X86_PF_PROT=1, WRITE=2, USER=4, RSVD=8,
INSTR=16, PK=32, SHSTK=64, SGX=1<<15), and from tests/reference_control.py.
"""
import json
import os
import re

import pytest
from hypothesis import given, settings, strategies as st

from ksinspect._native import control as _native_control
from ksinspect.errors import DecodeError
from ksinspect.x86.control import (CR0, CR4, EFER, RFLAGS, CpuMode, OperatingMode,
                                   PageFaultErrorCode, decode_control_batch)
from ksinspect.x86.paging_entry import PagingMode

from reference_control import NAMES, defined_mask, ref_control, ref_operating_mode
from conftest import PROFILES, QEMU, run_cli as run
TYPES = {"cr0": CR0, "cr4": CR4, "efer": EFER, "rflags": RFLAGS, "pf": PageFaultErrorCode}


def qemu_registers(profile):
    with open(os.path.join(QEMU, profile, "info-registers.txt"), encoding="ascii") as fh:
        text = fh.read()
    regs = {k: int(v, 16) for k, v in re.findall(r"\b(CR0|CR4|EFER)=([0-9a-f]+)", text)}
    m = re.search(r"\b[RE]FL=([0-9a-f]+) \[([-A-Z]{7})\]", text)
    regs["FLAGS"], regs["FLAGS_TEXT"] = int(m.group(1), 16), m.group(2)
    regs["CS_FLAGS"] = int(re.search(r"^CS =\w+ \w+ \w+ (\w+)", text, re.M).group(1), 16)
    return regs


# ----------------------------------------------------------------- known answers

def test_cr0_of_every_guest_is_pe_mp_et_ne_wp_am_pg():
    # QEMU prints CR0=80050033 for every guest: Linux sets PE MP ET NE WP AM PG
    # (SDM Figure 2-7: bits 0, 1, 4, 5, 16, 18, 31).
    for profile in PROFILES:
        cr0 = CR0.decode(qemu_registers(profile)["CR0"])
        assert cr0.bit_names() == ["PE", "MP", "ET", "NE", "WP", "AM", "PG"]
        assert cr0.pe and cr0.pg and cr0.wp and not cr0.cd and not cr0.anomalies


def test_cr4_of_the_guests():
    # x86_64 -cpu max: CR4=00750ef0; 5-level adds LA57 (bit 12) = 00751ef0;
    # i386 -cpu qemu32 with 2-level paging: 00000690 = PSE PGE OSFXSR OSXMMEXCPT.
    r = qemu_registers("x86_64-4level")
    cr4 = CR4.decode(r["CR4"])
    assert cr4.bit_names() == ["PSE", "PAE", "MCE", "PGE", "OSFXSR", "OSXMMEXCPT", "UMIP",
                                "FSGSBASE", "OSXSAVE", "SMEP", "SMAP", "PKE"]
    assert not cr4.la57 and CR4.decode(qemu_registers("x86_64-5level")["CR4"]).la57
    assert CR4.decode(qemu_registers("i386-2level")["CR4"]).bit_names() == [
        "PSE", "PGE", "OSFXSR", "OSXMMEXCPT"]
    assert not cr4.anomalies


def test_efer_of_the_guests():
    # 64-bit Linux: EFER=d01 = SCE LME LMA NXE (SDM §2.2.1); i386 PAE: 800 = NXE only.
    assert EFER.decode(qemu_registers("x86_64-4level")["EFER"]).bit_names() == [
        "SCE", "LME", "LMA", "NXE"]
    assert EFER.decode(qemu_registers("i386-pae")["EFER"]).bit_names() == ["NXE"]
    assert EFER.decode(0).bit_names() == []


@pytest.mark.parametrize("profile", PROFILES)
def test_rflags_agrees_with_qemus_own_flag_string(profile):
    # QEMU decodes EFLAGS as D O S Z A P C (a '-' for each clear flag).
    r = qemu_registers(profile)
    flags = RFLAGS.decode(r["FLAGS"])
    mine = "".join(c if getattr(flags, n) else "-" for c, n in zip(
        "DOSZAPC", ("df", "of", "sf", "zf", "af", "pf", "cf")))
    assert mine == r["FLAGS_TEXT"]
    assert flags.if_ and flags.iopl == 0 and not flags.anomalies


def test_rflags_as_windbg_prints_it():
    # WinDbg's r command (DOS DEBUG's names): efl=00000246 "nv up ei pl zr na pe nc",
    # 00000202 "nv up ei pl nz na po nc"; every flag set: "ov dn ei ng zr ac pe cy".
    assert RFLAGS.decode(0x246).debugger_flags() == "iopl=0 nv up ei pl zr na pe nc"
    assert RFLAGS.decode(0x202).debugger_flags() == "iopl=0 nv up ei pl nz na po nc"
    assert RFLAGS.decode(0x3ED7).debugger_flags() == "iopl=3 ov dn ei ng zr ac pe cy"


def test_rflags_iopl_and_system_flags():
    # IOPL is bits 13:12, VM bit 17, AC bit 18, ID bit 21 (SDM vol. 1 Figure 3-8).
    f = RFLAGS.decode(0x00223202)
    assert f.iopl == 3 and f.vm and not f.ac and f.id and f.if_
    assert f.to_dict()["iopl"] == 3 and "vm" in f.to_dict()["flags"]
    assert str(f) == "RFLAGS 0x223202: IF VM ID, IOPL 3"


def test_rflags_reserved_bits():
    # Bit 1 always reads 1; bits 3, 5, 15 and 63:22 read 0.
    assert RFLAGS.decode(0x2).reserved_bits == 0
    assert RFLAGS.decode(0).reserved_bits == 0x2
    for bit in (3, 5, 15, 22, 31, 63):
        f = RFLAGS.decode(0x2 | 1 << bit)
        assert f.reserved_bits == 1 << bit and f.to_dict()["anomalies"] == ["reserved-bits"]


@pytest.mark.parametrize("code,expected", [
    # Linux's classic cases (trap_pf.h names): user read of a non-present page,
    # user write not present, user write to a read-only page, user fetch of an
    # NX page, kernel write not present, a reserved bit.
    (0x4, dict(present=False, write=False, user=True, fetch=False)),
    (0x6, dict(present=False, write=True, user=True)),
    (0x7, dict(present=True, write=True, user=True)),
    (0x15, dict(present=True, user=True, fetch=True, write=False)),
    (0x2, dict(present=False, write=True, user=False)),
    (0x9, dict(present=True, rsvd=True, user=False)),
    (0x25, dict(present=True, user=True, pk=True)),
    (0x8005, dict(present=True, user=True, sgx=True)),
    (0x47, dict(present=True, write=True, user=True, shadow_stack=True)),
])
def test_page_fault_error_code(code, expected):
    pf = PageFaultErrorCode.decode(code)
    for name, value in expected.items():
        assert getattr(pf, name) is value, name
    assert not pf.anomalies
    assert PageFaultErrorCode.build(**{k: v for k, v in expected.items()}).raw == code


def test_page_fault_error_code_anomalies():
    # RSVD and PK are reported only with P=1 (§4.7); a fetch is never a write.
    assert PageFaultErrorCode.decode(0x8).to_dict()["anomalies"] == ["rsvd-not-present"]
    assert PageFaultErrorCode.decode(0x20).to_dict()["anomalies"] == ["pk-not-present"]
    assert PageFaultErrorCode.decode(0x13).to_dict()["anomalies"] == ["fetch-write"]
    assert PageFaultErrorCode.decode(0x100).to_dict()["anomalies"] == ["reserved-bits"]
    assert PageFaultErrorCode.decode(1 << 32).reserved_bits == 1 << 32


def test_cr0_invalid_combinations():
    # MOV to CR0 raises #GP for PG=1 with PE=0 and for NW=1 with CD=0 (§2.5).
    assert CR0.decode(0x80000000).to_dict()["anomalies"] == ["pg-without-pe"]
    assert CR0.decode(0x20000001).to_dict()["anomalies"] == ["nw-without-cd"]
    assert CR0.decode(0x60000011).anomalies == 0
    assert CR0.decode(1 << 32 | 1).to_dict()["anomalies"] == ["reserved-bits"]
    assert CR0.decode(1 << 6 | 1).reserved_bits == 1 << 6


def test_cr4_and_efer_reserved_bits():
    assert CR4.decode(1 << 15).reserved_bits == 1 << 15
    assert CR4.decode(1 << 26 | 1 << 29 | 1 << 33).reserved_bits == 1 << 26 | 1 << 29 | 1 << 33
    assert CR4.decode(1 << 32).fred and not CR4.decode(1 << 32).reserved_bits
    assert EFER.decode(0x2).reserved_bits == 0x2 and EFER.decode(1 << 9).reserved_bits == 1 << 9
    assert EFER.decode(0x400).to_dict()["anomalies"] == ["lma-without-lme"]


def test_values_refuse_what_is_not_a_64_bit_integer():
    for cls in TYPES.values():
        with pytest.raises(DecodeError):
            cls.decode(1 << 64)
        with pytest.raises(DecodeError):
            cls.decode(-1)
        with pytest.raises(DecodeError):
            cls.decode("0x10")


# ----------------------------------------------------------------- operating modes

@pytest.mark.parametrize("profile,mode,paging,bits", [
    ("i386-2level", CpuMode.PROTECTED, PagingMode.BITS32, 32),
    ("i386-pae", CpuMode.PROTECTED, PagingMode.PAE, 32),
    ("x86_64-4level", CpuMode.LONG_64BIT, PagingMode.LEVEL4, 48),
    ("x86_64-5level", CpuMode.LONG_64BIT, PagingMode.LEVEL5, 57),
])
def test_operating_mode_of_the_guests(profile, mode, paging, bits):
    # QEMU shows CS "CS64" (L=1, bit 21 of the flags dword) for the 64-bit guests.
    r = qemu_registers(profile)
    m = OperatingMode.of(r["CR0"], r["CR4"], r["EFER"], r["FLAGS"],
                         cs_long=bool(r["CS_FLAGS"] >> 21 & 1))
    assert (m.mode, m.paging, m.address_bits, m.anomalies) == (mode, paging, bits, 0)


def test_operating_modes_from_the_manual():
    # Figure 2-3: reset -> real mode (CR0=0x60000010); PE -> protected;
    # VM -> virtual-8086; LMA with CS.L=0 -> compatibility mode.
    assert OperatingMode.of(0x60000010).mode is CpuMode.REAL
    assert OperatingMode.of(0x60000010).address_bits == 20
    assert OperatingMode.of(0x11, rflags=0x20002).mode is CpuMode.VIRTUAL_8086
    compat = OperatingMode.of(0x80000011, 0x20, 0x500, 2, cs_long=False)
    assert compat.mode is CpuMode.COMPATIBILITY and compat.paging is PagingMode.LEVEL4
    bad = OperatingMode.of(0x11, 0x20000, 0x500, 0x20002)
    assert set(bad.to_dict()["anomalies"]) == {"lma-without-pg", "lma-without-pae", "vm-in-ia32e"}
    assert "lme-pg-without-lma" in OperatingMode.of(0x80000011, 0x20, 0x100).to_dict()[
        "anomalies"]
    assert "cet-without-wp" in OperatingMode.of(0x11, 1 << 23).to_dict()["anomalies"]


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 64 - 1),
       st.integers(0, 2 ** 64 - 1), st.booleans())
def test_operating_mode_matches_the_reference(cr0, cr4, efer, rflags, cs_long):
    m = OperatingMode.of(cr0, cr4, efer, rflags, cs_long)
    mode, paging, bits = ref_operating_mode(cr0, cr4, efer, rflags, cs_long)
    assert m.to_dict()["mode"] == mode and m.to_dict()["paging"] == paging
    assert m.address_bits == bits


# ----------------------------------------------------------------- against the reference

U64 = st.one_of(st.integers(0, 2 ** 64 - 1),
                st.lists(st.integers(0, 63), max_size=5).map(lambda b: sum({1 << i for i in b})))


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(sorted(TYPES)), U64)
def test_decoders_match_the_reference_model(register, raw):
    assert TYPES[register].decode(raw).to_dict() == ref_control(register, raw)


@settings(max_examples=100, deadline=None, database=None)
@given(st.sampled_from(sorted(TYPES)), U64)
def test_each_bit_attribute_reads_its_bit_as_the_manual_places_it(register, raw):
    """The Bit written once in the class body is the attribute (on a value: the
    bit; on the class: the record) and a member of BITS, low bit first."""
    cls = TYPES[register]
    value = cls.decode(raw)
    expected = ref_control(register, raw)
    for bit in cls.BITS:
        assert getattr(cls, bit.attribute) is bit
        assert getattr(value, bit.attribute) is expected[bit.attribute.rstrip("_")]
    assert [b.position for b in cls.BITS] == sorted(b.position for b in cls.BITS)


@pytest.mark.parametrize("register", sorted(TYPES))
def test_the_c_core_and_the_manual_agree_on_the_defined_bits(register):
    defined, _ = _native_control.layout(_native_control.REGISTERS[register])
    assert defined == defined_mask(register)
    names = {b.attribute.rstrip("_") for b in TYPES[register].BITS}
    assert names == set(NAMES[register].values())


@pytest.mark.parametrize("register", sorted(TYPES))
def test_fields_cover_every_bit_once(register):
    for raw in (0, 2 ** 64 - 1, 0x80050033):
        fields = TYPES[register].decode(raw).fields()
        width = max(f.msb for f in fields) + 1
        assert width in (32, 64)
        covered = 0
        for f in fields:
            assert covered & f.mask == 0, f
            covered |= f.mask
        assert covered == (1 << width) - 1


def test_batch_equals_single_decodes():
    values = [0, 0x246, 0x80050033, 2 ** 64 - 1, 0x15, 1 << 32]
    for register, cls in TYPES.items():
        batch = decode_control_batch(register, values)
        assert [v.to_dict() for v in batch] == [cls.decode(v).to_dict() for v in values]
    with pytest.raises(DecodeError):
        decode_control_batch("cr9", values)
    with pytest.raises(DecodeError):
        decode_control_batch("cr0", [1 << 64])


def test_pictures_and_html_name_every_bit():
    for cls in TYPES.values():
        value = cls.decode(0x80050033)
        svg = value.to_svg()
        for b in cls.BITS:
            assert 'data-name="%s"' % b.name in svg
        html = value._repr_html_()
        assert "<svg" in html and "Source:" in html


# ----------------------------------------------------------------- the command line

@pytest.mark.parametrize("register", sorted(TYPES))
def test_cli_json_is_to_dict(register):
    status, out, _ = run(register, "0x80050033", "--json")
    assert status == 0 and json.loads(out) == TYPES[register].decode(0x80050033).to_dict()


def test_cli_explains_and_flags_reserved_bits():
    status, out, _ = run("cr4", "8000")
    assert status == 0 and "reserved bits 0x8000 are off" in out
    status, out, _ = run("pf", "0n7")
    assert status == 0 and out.startswith("#PF error code 0x7: protection violation, user write")


@pytest.mark.parametrize("argv", [("cr0", "zz"), ("rflags", "1" + "0" * 16), ("pf",),
                                  ("efer", "-1")])
def test_cli_bad_values_are_usage_errors(argv):
    status, out, err = run(*argv)
    assert status == 2 and out == "" and err.startswith("ksinspect: error: ")
    assert len(err.splitlines()) == 1


def test_info_shows_the_control_registers_decoded():
    # The x86_64 guest's core: CR0/CR4 from QEMU's note, RFLAGS 0x246; the
    # operating mode is inferred (the note has no EFER) as IA-32e 64-bit (CS64).
    image = os.path.join(QEMU, "x86_64-4level", "core-trimmed.elf.xz")
    status, out, _ = run("info", image)
    assert status == 0
    assert re.search(r"^cr0 +0x80050033 +PE MP ET NE WP AM PG$", out, re.M)
    assert re.search(r"^rflags +0x246 +PF ZF IF, IOPL 0$", out, re.M)
    assert "Operating mode: IA-32e 64-bit mode, 4level paging, 48-bit linear addresses" in out
    doc = json.loads(run("info", image, "--json")[1])
    assert doc["cpu"]["control"]["cr4"] == CR4.decode(0x750EF0).to_dict()
    assert doc["cpu"]["control"]["efer"] is None
    assert doc["cpu"]["operating_mode"]["mode"] == "long_64bit"


def test_cli_cpu_mode():
    # The 4-level guest's registers (info registers: CR0 80050033, CR4 00750ef0, EFER d01).
    status, out, _ = run("cpu-mode", "80050033", "--cr4", "750ef0", "--efer", "d01",
                         "--rflags", "246", "--cs-long", "--json")
    d = json.loads(out)
    assert status == 0 and (d["mode"], d["paging"], d["address_bits"]) == (
        "long_64bit", "4level", 48)
    status, out, _ = run("cpu-mode", "60000010")
    assert status == 0 and out.startswith("real-address mode, paging off, 20-bit")
    status, out, err = run("cpu-mode", "80000000", "--efer", "zz")
    assert status == 2 and len(err.splitlines()) == 1
