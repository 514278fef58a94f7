"""ksinspect.memory and ``ksinspect info``: memory images and the CPU state in them.

Expected values come from sources independent of the code under test:

* the real QEMU fixtures (tests/data/qemu/*): QEMU's own ``info registers``
  text, parsed here with a few regular expressions, and meta.json written by
  tools/make_qemu_fixture.py (the QEMU note fields it decoded, the pages it
  kept); the PT_LOAD table is re-read with tests/reference_model.py;
* synthetic images from tests/builders/image_builder.py, written from the ELF gABI
  (ELF header, program header, notes), QEMU's target/i386/arch_dump.c
  (struct QEMUCPUState) and LiME's format description;
* paging-mode rules from the Intel SDM vol. 3A §4.1.1 Table 4-1 (CR0.PG,
  CR4.PAE, CR4.LA57, IA32_EFER.LME/LMA).
"""
import glob
import json
import lzma
import os
import re
import struct
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders.image_builder import (EM_386, build_elf_core, build_lime, build_note, build_raw,
                           elf_offsets, lime_header, qemu_cpu_state, qword_page,
                           runs_from_pages)
from conftest import run_cli
from ksinspect.errors import ImageFormatError, InvalidAddressError, KsinspectError
from ksinspect.memory import (CpuState, PhysicalMemory, Run, SegmentCache, open_image,
                              open_image_bytes, parse_info_registers)
from reference_model import PhysicalMemory as RefCore

QEMU_DIR = os.path.join(os.path.dirname(__file__), "data", "qemu")
PROFILES = sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(QEMU_DIR, "*", "core-trimmed.elf.xz")))
# meta.json's paging_mode names 32-bit paging "2level"; the library says "32".
MODE_NAMES = {"4level": "4level", "5level": "5level", "pae": "pae", "2level": "32"}
PRINTED_FLAGS = 0x00FFFF00    # QEMU's info registers prints flags & 0x00ffff00 (cpu-dump.c)

QUICK = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


def fixture(profile, name):
    return os.path.join(QEMU_DIR, profile, name)


def info_registers(profile):
    """QEMU's ``info registers`` for a profile, parsed with plain regexes."""
    with open(fixture(profile, "info-registers.txt")) as fh:
        text = fh.read()
    regs = {k: int(v, 16) for k, v in re.findall(r"\b(CR[0234]|EFER)=([0-9a-f]+)", text)}
    for m in re.finditer(r"^(GDT|IDT)=\s+([0-9a-f]+) ([0-9a-f]+)$", text, re.M):
        regs[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16))
    for m in re.finditer(r"^(ES|CS|SS|DS|FS|GS|LDT|TR) *=([0-9a-f]{4}) ([0-9a-f]+) ([0-9a-f]{8}) "
                         r"([0-9a-f]{8})", text, re.M):
        regs[m.group(1)] = tuple(int(m.group(i), 16) for i in range(2, 6))
    return regs


def meta(profile):
    with open(fixture(profile, "meta.json")) as fh:
        return json.load(fh)


@pytest.fixture(scope="module", params=PROFILES)
def profile_image(request):
    with open_image(fixture(request.param, "core-trimmed.elf.xz")) as memory:
        yield request.param, memory


def test_all_four_profiles_are_present():
    assert PROFILES == ["i386-2level", "i386-pae", "x86_64-4level", "x86_64-5level"]


# -- the real QEMU cores -------------------------------------------------------------------

def test_fixture_cpu_state_matches_info_registers(profile_image):
    profile, memory = profile_image
    expected = info_registers(profile)
    cpu = memory.cpu
    assert memory.format == "elf-qemu"
    assert memory.compression == "xz"
    assert cpu.sources == ("qemu-note",)
    assert (cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4) == (
        expected["CR0"], expected["CR2"], expected["CR3"], expected["CR4"])
    assert (cpu.gdtr_base, cpu.gdtr_limit) == expected["GDT"]
    assert (cpu.idtr_base, cpu.idtr_limit) == expected["IDT"]
    for printed, name in (("CS", "cs"), ("SS", "ss"), ("DS", "ds"), ("ES", "es"), ("FS", "fs"),
                          ("GS", "gs"), ("TR", "tr"), ("LDT", "ldtr")):
        seg = cpu.segments[name]
        assert (seg.selector, seg.base, seg.limit, seg.flags & PRINTED_FLAGS) == \
            expected[printed], name
    assert cpu.efer is None                       # QEMU 7.2's note has no EFER
    assert cpu.paging_mode() == MODE_NAMES[meta(profile)["paging_mode"]]


def test_fixture_note_keeps_qemu_raw_segment_flags(profile_image):
    # meta.json decoded the note itself: the TR flags there are unmasked.
    profile, memory = profile_image
    note = meta(profile)["qemu_note"]
    tr = memory.cpu.segments["tr"]
    assert tr.flags == int(note["tr"]["flags"], 16)
    assert (tr.selector, tr.base, tr.limit) == (int(note["tr"]["selector"], 16),
                                                int(note["tr"]["base"], 16),
                                                int(note["tr"]["limit"], 16))
    assert [memory.cpu.cr0, 0, memory.cpu.cr2, memory.cpu.cr3, memory.cpu.cr4] == \
        [int(v, 16) for v in note["cr"]]


def test_fixture_values_written_out():
    # A few values copied by hand from info-registers.txt and meta.json.
    with open_image(fixture("x86_64-4level", "core-trimmed.elf.xz")) as memory:
        cpu = memory.cpu
        assert cpu.arch == "x86_64"
        assert (cpu.cr0, cpu.cr3, cpu.cr4) == (0x80050033, 0x487C000, 0x750EF0)
        assert (cpu.gdtr_base, cpu.gdtr_limit) == (0xFFFFFE0000001000, 0x7F)
        assert (cpu.idtr_base, cpu.idtr_limit) == (0xFFFFFE0000000000, 0xFFF)
        assert cpu.segments["cs"] == SegmentCache(0x10, 0, 0xFFFFFFFF, 0x00AF9B00)
        assert cpu.segments["tr"] == SegmentCache(0x40, 0xFFFFFE0000003000, 0x4087, 0x8900)
        assert cpu.segments["ldtr"] == SegmentCache(0, 0, 0, 0x8200)
        assert cpu.rip == 0xFFFFFFFF81A592EB and cpu.rsp == 0xFFFFFFFF82A03E98
        assert cpu.segments["cs"].long and cpu.nxe() and cpu.table_root() == 0x487C000
    with open_image(fixture("i386-2level", "core-trimmed.elf.xz")) as memory:
        cpu = memory.cpu
        assert cpu.arch == "i386" and cpu.paging_mode() == "32" and cpu.pse
        assert cpu.segments["tr"] == SegmentCache(0x80, 0xFF406000, 0x407B, 0xFF008940)
        assert cpu.kernel_gs_base is None and not cpu.nxe()
    with open_image(fixture("i386-pae", "core-trimmed.elf.xz")) as memory:
        # PAE: CR3 bits 31:5 locate the 32-byte PDPT (SDM §4.4.1).
        assert memory.cpu.cr3 == 0x221AE60 and memory.cpu.table_root() == 0x221AE60


def test_fixture_registers_file_adds_efer(profile_image):
    profile, _ = profile_image
    expected = info_registers(profile)
    with open_image(fixture(profile, "core-trimmed.elf.xz"),
                    registers=fixture(profile, "info-registers.txt")) as memory:
        cpu = memory.cpu
        assert cpu.efer == expected["EFER"]
        assert cpu.sources == ("qemu-note", "info-registers")
        assert memory.warnings == ()                         # the two files agree
        assert cpu.paging_mode() == MODE_NAMES[meta(profile)["paging_mode"]]
        assert "EFER" in cpu.paging_decision()[1]
        # the note's unmasked flags survive the merge
        assert cpu.segments["tr"].flags == int(meta(profile)["qemu_note"]["tr"]["flags"], 16)
        assert cpu.nxe() == bool(expected["EFER"] >> 11 & 1)


def test_parse_info_registers_on_fixtures(profile_image):
    profile, memory = profile_image
    with open(fixture(profile, "info-registers.txt")) as fh:
        text = fh.read()
    expected = info_registers(profile)
    cpu = parse_info_registers(text.replace("\n", "\r\n"))          # monitor CRLF
    assert cpu.arch == ("x86_64" if profile.startswith("x86_64") else "i386")
    assert (cpu.cr0, cpu.cr3, cpu.cr4, cpu.efer) == (
        expected["CR0"], expected["CR3"], expected["CR4"], expected["EFER"])
    assert (cpu.gdtr_base, cpu.gdtr_limit) == expected["GDT"]
    assert (cpu.segments["ldtr"].selector, cpu.segments["ldtr"].base,
            cpu.segments["ldtr"].limit, cpu.segments["ldtr"].flags) == expected["LDT"]
    assert cpu.paging_mode() == memory.cpu.paging_mode()
    assert cpu.rip == memory.cpu.rip


def test_parse_info_registers_literal_values():
    text = open(fixture("i386-pae", "info-registers.txt")).read()
    cpu = parse_info_registers(text)
    assert cpu.efer == 0x800 and cpu.cr3 == 0x0221AE60 and cpu.rip == 0xC19386C3
    assert cpu.segments["fs"] == SegmentCache(0xD8, 0x05EFA000, 0xFFFFFFFF, 0x008F9300)
    assert cpu.general["eax"] == 0xC19386B0
    text = open(fixture("x86_64-5level", "info-registers.txt")).read()
    cpu = parse_info_registers(text)
    assert cpu.efer == 0xD01 and cpu.cr4 == 0x751EF0 and cpu.paging_mode() == "5level"
    assert cpu.general["r14"] == 0xFFFFFFFF82A1A110


def test_parse_info_registers_rejects_other_text():
    with pytest.raises(ImageFormatError, match="regs.txt: no CR0"):
        parse_info_registers("hello\nworld\n", "regs.txt")


def test_fixture_runs_lie_in_the_file(profile_image):
    profile, memory = profile_image
    kept = meta(profile)["core_trimmed"]
    assert memory.file_size == kept["size"]
    assert memory.size == kept["pages_kept"] * 4096
    assert sum(r.length for r in memory.runs) == memory.size
    assert len(memory.runs) <= kept["pt_load_runs"]
    previous = None
    for run in memory.runs:
        assert run.length > 0 and run.offset + run.length <= memory.file_size
        if previous is not None:
            assert previous.end <= run.start                      # sorted, no overlap
            assert not (previous.end == run.start
                        and previous.offset + previous.length == run.offset)   # merged
        previous = run


def test_fixture_reads_match_the_elf_file(profile_image):
    profile, memory = profile_image
    data = lzma.decompress(open(fixture(profile, "core-trimmed.elf.xz"), "rb").read())
    ref = RefCore(data)
    root = memory.cpu.table_root()
    page = root & ~0xFFF
    assert memory.read(page, 4096) == ref.read(page, 4096)
    for start, length, _ in ref.segments:
        assert memory.read(start + length - 8, 8) == ref.read(start + length - 8, 8)
        assert memory.contains(start, length)


def test_fixture_absent_page_raises_naming_the_address(profile_image):
    _, memory = profile_image
    absent = next(p for p in range(0, 1 << 32, 4096) if not memory.contains(p))
    assert not memory.contains(absent, 1)
    with pytest.raises(InvalidAddressError) as info:
        memory.read(absent, 4096)
    assert info.value.address == absent
    assert "%#x" % absent in str(info.value)
    assert "core-trimmed.elf.xz" in str(info.value)
    assert info.value.level is None


def test_fixture_buffer_is_zero_copy_for_cffi(profile_image):
    # How the C walker reads: ffi.from_buffer(memory.buffer) at runs[i].offset.
    from ksinspect._core import ffi
    _, memory = profile_image
    view = ffi.from_buffer(memory.buffer)
    run = memory.runs[-1]
    assert bytes(ffi.buffer(view + run.offset, 16)) == memory.read(run.start, 16)


def test_close_while_c_holds_the_buffer():
    from ksinspect._core import ffi
    memory = open_image(fixture("i386-2level", "core-trimmed.elf.xz"))
    run = memory.runs[0]
    before = memory.read(run.start, 16)
    view = ffi.from_buffer(memory.buffer)
    memory.close()                      # the mapping stays alive for `view`
    assert memory.closed and bytes(ffi.buffer(view + run.offset, 16)) == before
    del view


# -- synthetic images -----------------------------------------------------------------------

def test_from_bytes_raw_with_base():
    memory = PhysicalMemory.from_bytes(bytes(range(256)) * 32, base=0x10000)
    assert memory.format == "raw" and memory.runs == (Run(0x10000, 8192, 0),)
    assert memory.size == 8192 and memory.cpu is None and memory.path is None
    assert memory.read(0x10001, 3) == b"\x01\x02\x03"
    assert memory.contains(0x10000, 8192) and not memory.contains(0x10000, 8193)
    with pytest.raises(InvalidAddressError) as info:
        memory.read(0xFFFF, 2)
    assert info.value.address == 0xFFFF
    with pytest.raises(InvalidAddressError) as info:
        memory.read(0x11FF8, 16)                 # starts inside, runs off the end
    assert info.value.address == 0x12000 and "0x12000" in str(info.value)
    assert memory.read(0x10000, 0) == b""


def test_raw_file(tmp_path):
    path = tmp_path / "memory.raw"
    path.write_bytes(build_raw([(0x1000, b"\xAA" * 16)]))
    with open_image(str(path)) as memory:
        assert memory.format == "raw" and memory.runs == (Run(0, 0x1010, 0),)
        assert memory.read(0x1000, 2) == b"\xAA\xAA" and memory.read(0, 4) == b"\0" * 4
        assert memory.cpu is None


def test_lime_runs_and_reads(tmp_path):
    a, b, c = b"A" * 0x1000, b"B" * 0x1000, b"C" * 0x800
    path = tmp_path / "guest.lime"
    # b and a are adjacent in memory (not in the file: a header sits between).
    path.write_bytes(build_lime([(0x5000, c), (0x2000, b), (0x1000, a)]))
    with open_image(str(path)) as memory:
        assert memory.format == "lime"
        # LiME offsets: 32-byte header before each range's data.
        assert memory.runs == (Run(0x1000, 0x1000, 32 + 0x800 + 32 + 0x1000 + 32),
                               Run(0x2000, 0x1000, 32 + 0x800 + 32),
                               Run(0x5000, 0x800, 32))
        assert memory.read(0x1FFE, 4) == b"AABB"                  # spans two runs
        assert memory.read(0x5000, 0x800) == c
        assert memory.contains(0x1000, 0x2000) and not memory.contains(0x1000, 0x2001)
        with pytest.raises(InvalidAddressError) as info:
            memory.read(0x2FF0, 0x20)
        assert info.value.address == 0x3000
        assert memory.size == 0x2800


def test_elf_core_with_qemu_note_in_memory():
    pages = {0x1000: qword_page({0: 0x2003}), 0x2000: qword_page({1: 0x3003}),
             0x8000: b"\x90" * 4096}
    core = build_elf_core(runs_from_pages(pages), qemu_state=qemu_cpu_state(cr=[
        0x80050033, 0, 0, 0x1000, 0x20]))
    memory = open_image_bytes(core, "synthetic.elf")
    assert memory.format == "elf-qemu" and len(memory.runs) == 2   # 0x1000-0x3000, 0x8000
    assert memory.runs[0].start == 0x1000 and memory.runs[0].length == 0x2000
    assert struct.unpack("<Q", memory.read(0x1000, 8))[0] == 0x2003
    assert struct.unpack("<Q", memory.read(0x2008, 8))[0] == 0x3003
    assert memory.cpu.cr3 == 0x1000 and memory.cpu.paging_mode() == "4level"
    assert memory.cpu.kernel_gs_base == 0
    with pytest.raises(InvalidAddressError, match="0x3000 is not in the image synthetic.elf"):
        memory.read(0x3000, 1)


def test_elf32_core_i386():
    state = qemu_cpu_state(cr=[0x80000011, 0, 0, 0x5000, 0x10],
                           cs=dict(selector=0x60, limit=0xFFFFFFFF, flags=0x00CF9A00, base=0))
    core = build_elf_core([(0x5000, qword_page({}))], qemu_state=state, machine=EM_386,
                          elf_class=32)
    memory = open_image_bytes(core)
    assert memory.description.startswith("ELF32 core, e_machine 3")
    assert memory.cpu.arch == "i386" and memory.cpu.paging_mode() == "32"
    assert memory.cpu.pse and not memory.cpu.nxe()
    assert memory.read(0x5000, 8) == b"\0" * 8


def test_elf_absent_tail_is_not_zero():
    core = build_elf_core([(0x1000, b"\x11" * 0x1000, 0x3000)])
    memory = open_image_bytes(core, "tail.elf")
    assert memory.format == "elf" and memory.cpu is None
    assert memory.runs == (Run(0x1000, 0x1000, memory.runs[0].offset),)
    assert memory.absent == ((0x2000, 0x2000),)
    with pytest.raises(InvalidAddressError, match="0x2800 is declared by a PT_LOAD"):
        memory.read(0x2800, 8)


def test_elf_pn_xnum_count_in_section_header():
    runs = [(0x1000 * (2 * i + 1), bytes([i]) * 16) for i in range(5)]
    memory = open_image_bytes(build_elf_core(runs, pn_xnum=True))
    assert len(memory.runs) == 5 and memory.read(0x3000, 1) == b"\x01"


def test_elf_overlapping_segments_are_clipped_with_a_warning():
    # kdump vmcores map kernel text twice; the first (lowest) range wins.
    core = build_elf_core([(0x1000, b"A" * 0x2000), (0x2000, b"B" * 0x2000)])
    memory = open_image_bytes(core)
    assert [(r.start, r.length) for r in memory.runs] == [(0x1000, 0x2000), (0x3000, 0x1000)]
    assert memory.read(0x2FFF, 2) == b"AB"
    assert any("overlaps" in w for w in memory.warnings)


def test_elf_kdump_vmcoreinfo_and_prstatus():
    note = build_note("VMCOREINFO", 0, b"OSRELEASE=6.1.0\nPAGESIZE=4096\n")
    core = build_elf_core([(0, b"\0" * 64)], notes=[note],
                          prstatus={"rip": 0xFFFFFFFF81000000, "rsp": 0x1234, "cs": 0x10})
    memory = open_image_bytes(core)
    assert memory.format == "elf-kdump" and memory.cpu is None
    assert "OSRELEASE=6.1.0" in memory.vmcoreinfo
    assert memory.prstatus[0]["rip"] == 0xFFFFFFFF81000000 and memory.prstatus[0]["cs"] == 0x10


def test_elf_qemu_note_of_unknown_version_is_a_warning():
    memory = open_image_bytes(build_elf_core([(0, b"\0" * 64)],
                                             qemu_state=qemu_cpu_state(version=2)))
    assert memory.format == "elf-qemu" and memory.cpu is None
    assert any("version 2" in w for w in memory.warnings)


def test_elf_qemu_note_without_kernel_gs_base():
    memory = open_image_bytes(build_elf_core([(0, b"\0" * 64)], qemu_state=qemu_cpu_state(),
                                             with_kernel_gs_base=False))
    assert memory.cpu.kernel_gs_base is None and memory.cpu.cr4 == 0x750EF0


def test_registers_override_and_conflicts(tmp_path):
    path = tmp_path / "core.elf"
    path.write_bytes(build_elf_core([(0, b"\0" * 64)], qemu_state=qemu_cpu_state()))
    note_cpu = open_image(str(path)).cpu
    other = CpuState(**{**note_cpu.__dict__, "cr3": 0x9000, "efer": 0xD01, "sources": ("x",)})
    with open_image(str(path), registers=other) as memory:
        assert memory.cpu.cr3 == 0x9000 and memory.cpu.efer == 0xD01
        assert any("CR3: 0x1000 in the image, 0x9000" in w for w in memory.warnings)
    raw = tmp_path / "plain.raw"
    raw.write_bytes(b"\0" * 4096)
    regs = fixture("x86_64-4level", "info-registers.txt")
    with open_image(str(raw), registers=regs) as memory:
        assert memory.cpu.sources == ("info-registers",) and memory.cpu.efer == 0xD01


# -- paging mode rules (SDM vol. 3A §4.1.1 Table 4-1) -------------------------------------

def cpu_state(cr0=0x80000001, cr4=0, efer=None, arch="x86_64", cs_flags=0x00AF9B00):
    segs = {n: SegmentCache(0, 0, 0, 0) for n in ("ds", "es", "fs", "gs", "ss", "ldtr", "tr")}
    segs["cs"] = SegmentCache(0x10, 0, 0xFFFFFFFF, cs_flags)
    return CpuState(arch, cr0, 0, 0x1000, cr4, efer, 0, 0, 0, 0, segs, 0, 0, 0, None)


@pytest.mark.parametrize("cr0, cr4, efer, arch, cs_flags, mode", [
    (0x00000011, 0x20, 0x500, "x86_64", 0x00AF9B00, None),        # PG=0
    (0x80000011, 0x00, 0x000, "i386", 0x00CF9A00, "32"),
    (0x80000011, 0x20, 0x800, "i386", 0x00CF9A00, "pae"),
    (0x80000011, 0x20, 0xD01, "x86_64", 0x00AF9B00, "4level"),    # LMA
    (0x80000011, 0x1020, 0xD01, "x86_64", 0x00AF9B00, "5level"),  # LMA + LA57
    (0x80000011, 0x20, 0x100, "x86_64", 0x00AF9B00, "4level"),    # LME, PG, PAE
    (0x80000011, 0x20, 0x000, "x86_64", 0x00AF9B00, "pae"),       # EFER says legacy
    (0x80000011, 0x20, None, "x86_64", 0x00AF9B00, "4level"),     # inferred
    (0x80000011, 0x20, None, "x86_64", 0x00CF9B00, "4level"),     # compatibility mode
    (0x80000011, 0x1020, None, "x86_64", 0x00AF9B00, "5level"),
    (0x80000011, 0x20, None, "i386", 0x00CF9A00, "pae"),
    (0x80000011, 0x10, None, "i386", 0x00CF9A00, "32"),
])
def test_paging_mode_table(cr0, cr4, efer, arch, cs_flags, mode):
    cpu = cpu_state(cr0, cr4, efer, arch, cs_flags)
    assert cpu.paging_mode() == mode
    assert cpu.paging_decision()[1]


@pytest.mark.parametrize("cr4, efer, arch, nxe", [
    (0x20, 0xD01, "x86_64", True), (0x20, 0x501, "x86_64", False), (0x20, 0x800, "i386", True),
    (0x20, None, "x86_64", True), (0x20, None, "i386", True), (0x10, None, "i386", False),
])
def test_nxe(cr4, efer, arch, nxe):
    assert cpu_state(cr4=cr4, efer=efer, arch=arch).nxe() is nxe


def test_cpu_state_to_dict_is_json():
    cpu = cpu_state(cr4=0x20, efer=0xD01)
    d = json.loads(json.dumps(cpu.to_dict()))
    assert d["paging_mode"] == "4level" and d["efer_flags"] == ["SCE", "LME", "LMA", "NXE"]
    assert d["segments"]["cs"]["long"] is True


# -- bad input --------------------------------------------------------------------------------

def _core():
    return build_elf_core([(0x1000, b"\x55" * 0x1000)], qemu_state=qemu_cpu_state())


def _note_past_segment():
    core = bytearray(_core())
    note = next(h for h in elf_offsets(bytes(core))["headers"] if h["type"] == 4)
    struct.pack_into("<I", core, note["offset"] + 4, 0x100000)      # descsz of the first note
    return bytes(core)


def _phdrs_past_eof():
    core = bytearray(_core())
    struct.pack_into("<H", core, 56, 5000)                          # e_phnum
    return bytes(core)


def _load_past_eof():
    core = _core()
    load = [h for h in elf_offsets(core)["headers"] if h["type"] == 1][-1]
    return core[:load["offset"] + load["filesz"] - 1]


def _xz(data):
    return lzma.compress(data)


BAD_IMAGES = {
    "empty.raw": (b"", "empty"),
    "truncated-header.elf": (_core()[:40], "truncated ELF header"),
    "tiny.elf": (b"\x7fELF\x02\x01", "truncated ELF header"),
    "phdrs-past-eof.elf": (_phdrs_past_eof(), "program header table"),
    "load-past-eof.elf": (_load_past_eof(), "past the end of the file"),
    "note-past-segment.elf": (_note_past_segment(), "runs past the end of its PT_NOTE"),
    "exec.elf": (build_elf_core([(0, b"x")], e_type=2), "not ET_CORE"),
    "bigendian.elf": (b"\x7fELF\x02\x02" + _core()[6:], "not little-endian"),
    "class3.elf": (b"\x7fELF\x03" + _core()[5:], "ELF class 3"),
    "virtual-only.elf": (build_elf_core([(0, b"x" * 8), (0, b"y" * 8)],
                                        vaddrs=[0x400000, 0x600000]), "p_paddr 0"),
    "no-load.elf": (build_elf_core([]), "no program headers"),
    "short-qemu-note.elf": (build_elf_core([(0, b"x")], notes=[build_note(
        "QEMU", 0, struct.pack("<II", 1, 440) + bytes(100))]), "needs at least 432"),
    "bad-magic.lime": (build_lime([(0, b"x" * 64)]) + lime_header(0x1000, 0x1FFF,
                                                                   magic=0x12345678),
                       "magic 0x12345678"),
    "bad-version.lime": (build_lime([(0, b"x" * 64)], version=2), "version 2"),
    "reversed.lime": (lime_header(0x2000, 0x1000) + b"x" * 64, "below its start"),
    "overlong.lime": (lime_header(0, 0xFFFFF) + b"x" * 4096, "claims 1048576 bytes"),
    "trailing.lime": (build_lime([(0, b"x" * 64)]) + b"EMiL\x01", "too short for a LiME range"),
    "corrupt.xz": (b"\xfd7zXZ\x00" + bytes(range(200)), "corrupt xz"),
    "truncated.elf.xz": (_xz(_core())[:-30], "corrupt xz"),
    "corrupt.gz": (b"\x1f\x8b\x08\x00" + bytes(100), "corrupt gzip"),
    "kdump-compressed": (b"KDUMP   " + bytes(4096), "kdump header"),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_raises_naming_the_file(tmp_path, name):
    data, message = BAD_IMAGES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageFormatError) as info:
        open_image(str(path))
    text = str(info.value)
    assert str(path) in text and message in text and "\n" not in text


@pytest.mark.parametrize("name", ["empty.raw", "note-past-segment.elf", "overlong.lime",
                                  "corrupt.xz"])
def test_cli_info_on_bad_image_is_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_IMAGES[name][0])
    status, out, err = run_cli("info", str(path))
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("ksinspect: error: ") and str(path) in err


def test_cli_info_bad_image_in_a_real_process(tmp_path):
    path = tmp_path / "empty.img"
    path.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "ksinspect", "info", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageFormatError, match="nope.raw: cannot open"):
        open_image(str(tmp_path / "nope.raw"))
    with pytest.raises(ImageFormatError, match="not a regular file"):
        open_image(str(tmp_path))


def test_decompression_cap(tmp_path):
    path = tmp_path / "big.raw.xz"
    path.write_bytes(lzma.compress(bytes(3 << 20)))
    with pytest.raises(ImageFormatError, match="big.raw.xz: decompresses to more than"):
        open_image(str(path), max_decompressed=1 << 20)
    status, _, err = run_cli("info", str(path), "--max-decompressed", "1")
    assert status == 1 and "more than 1048576 bytes" in err
    with open_image(str(path)) as memory:
        assert memory.size == 3 << 20 and memory.compression == "xz"


def test_decompressed_copy_leaves_no_file(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    memory = open_image(fixture("x86_64-4level", "core-trimmed.elf.xz"))
    memory.read(memory.runs[0].start, 8)
    memory.close()
    memory.close()                                 # twice is fine
    assert os.listdir(str(scratch)) == []
    with pytest.raises(ValueError):
        memory.read(memory.runs[0].start, 8)


def test_random_bytes_without_magic_are_raw(tmp_path):
    data = bytes((i * 7919 + 13) % 251 for i in range(10000))
    path = tmp_path / "noise.bin"
    path.write_bytes(data)
    with open_image(str(path)) as memory:
        assert memory.format == "raw" and memory.read(100, 4) == data[100:104]


@QUICK
@given(magic=st.sampled_from([b"\x7fELF", b"\x7fELF\x02\x01", b"\x7fELF\x01\x01", b"EMiL",
                              b"EMiL\x01\x00\x00\x00"]),
       body=st.binary(max_size=600))
def test_random_bytes_after_magic_never_crash(magic, body):
    _open_or_clean_error(magic + body)


@QUICK
@given(data=st.data(), kind=st.sampled_from(["elf64", "elf32", "lime"]))
def test_mutated_images_never_crash(data, kind):
    if kind == "lime":
        image = bytearray(build_lime([(0x1000, b"A" * 48), (0x3000, b"B" * 16)]))
    else:
        image = bytearray(build_elf_core(
            [(0x1000, b"A" * 32), (0x2000, b"B" * 16, 64)], qemu_state=qemu_cpu_state(),
            prstatus={"rip": 1}, elf_class=64 if kind == "elf64" else 32,
            machine=62 if kind == "elf64" else 3))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(4, len(image) - 1))
        image[at] = data.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, 1, 2, 4,
                                               data.draw(st.integers(0, 255))]))
    cut = data.draw(st.integers(1, len(image)))
    _open_or_clean_error(bytes(image[:cut]))


def _open_or_clean_error(blob):
    try:
        memory = open_image_bytes(blob, "fuzz.img")
    except ImageFormatError as exc:
        assert "fuzz.img" in str(exc) and "\n" not in str(exc)
        return
    assert memory.format in ("raw", "lime", "elf", "elf-qemu", "elf-kdump")
    for run in memory.runs:
        assert run.offset + run.length <= len(blob)
        assert len(memory.read(run.start, min(run.length, 16))) == min(run.length, 16)
    if memory.cpu is not None:
        memory.cpu.paging_mode()
        json.dumps(memory.to_dict())


# -- the info command -----------------------------------------------------------------------

def test_cli_info_table():
    path = fixture("x86_64-4level", "core-trimmed.elf.xz")
    status, out, err = run_cli("info", path)
    assert status == 0 and err == ""
    assert "elf-qemu" in out and "21 ranges" in out
    assert "0x2a15000  0x2a1a000  0x5000   0x1000" in out        # first PT_LOAD
    assert re.search(r"cr3\s+0x487c000", out)
    assert re.search(r"tr\s+0x40\s+0xfffffe0000003000\s+0x4087\s+0x8900", out)
    assert re.search(r"ldtr\s+0x0\s+0x0\s+0x0\s+0x8200", out)
    assert "Paging mode: 4level" in out and "EFER not known" in out


def test_cli_info_json_with_registers():
    profile = "i386-pae"
    status, out, _ = run_cli("info", fixture(profile, "core-trimmed.elf.xz"), "--registers",
                             fixture(profile, "info-registers.txt"), "--json")
    doc = json.loads(out)
    assert status == 0
    assert doc["format"] == "elf-qemu" and doc["paging_mode"] == "pae"
    assert doc["cpu"]["efer"] == 0x800 and doc["cpu"]["cr3"] == 0x221AE60
    assert doc["cpu"]["segments"]["tr"]["flags"] == 0xFF008940
    trimmed = meta(profile)["core_trimmed"]       # what the fixture tool wrote
    assert len(doc["runs"]) == trimmed["pt_load_runs"]
    assert doc["size"] == trimmed["pages_kept"] * 4096


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_cli_info_rows(fmt):
    status, out, _ = run_cli("info", fixture("i386-2level", "core-trimmed.elf.xz"),
                             "--format", fmt)
    assert status == 0
    lines = out.splitlines()
    if fmt == "csv":
        assert lines[0].startswith("kind,name,value,start,end,size,offset")
        # one row per PT_LOAD run of the trimmed core, as the fixture tool counted them
        runs = meta("i386-2level")["core_trimmed"]["pt_load_runs"]
        assert sum(line.startswith("run,") for line in lines) == runs
    else:
        rows = [json.loads(line) for line in lines]
        assert {"kind": "paging", "name": "mode", "value": "32"}.items() <= \
            next(r for r in rows if r["kind"] == "paging").items()


def test_cli_info_raw_and_bad_usage(tmp_path):
    path = tmp_path / "x.raw"
    path.write_bytes(b"\0" * 4096)
    status, out, _ = run_cli("info", str(path))
    assert status == 0 and "CPU state: none" in out
    status, _, err = run_cli("info", str(path), "--max-decompressed", "zero")
    assert status == 2


def test_errors_are_the_library_base():
    assert issubclass(ImageFormatError, KsinspectError)
    assert issubclass(InvalidAddressError, LookupError)
