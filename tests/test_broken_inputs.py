"""A corpus of broken input, run through the library and every file-reading command.

Each case is a file built here from the specifications (tests/builders/image_builder.py
writes ELF cores, QEMU notes and LiME headers from the gABI, QEMU's
arch_dump.c and LiME's README, independently of ksinspect.memory), then
broken in one way: empty and truncated files in every format, bad ELF
program headers and notes, bad LiME headers, descriptor-table registers
pointing outside the image or with giant limits, CR3 of 0 or past the
image, page tables that loop, map themselves or point past the image, table
files whose length is not a multiple of 8.

Every case must end one of two ways (issue 8):

* the library raises its own exception, a specific subclass of
  KsinspectError, whose one-line message names the input; the CLI prints
  that line on stderr and exits 1, without a traceback;
* or the result carries a finding (a warning on the image, a translation's
  error, a table's finding), and the CLI exits 0.

A run that takes longer than a few seconds counts as a hang.
"""
import gzip
import lzma
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders.image_builder import (build_elf_core, build_lime, build_note, build_raw, lime_header,
                           qemu_cpu_state, qword_page)
from hang_guard import deadline
from ksinspect.errors import ImageFormatError, KsinspectError, TruncatedDataError
from ksinspect.memory import open_image
from ksinspect.paging import AddressSpace, WalkLimitError
from conftest import run_cli  # noqa: E402  (tests/conftest.py)

P_RW = 0x3            # present, writable (SDM Table 4-15 and following)
GDT_VA, IDT_VA = 0x5000, 0x6000
LINUX_GDT = struct.pack("<8Q", 0, 0x00CF9B000000FFFF, 0x00AF9B000000FFFF, 0x00CF93000000FFFF,
                        0x00CFFB000000FFFF, 0x00CFF3000000FFFF, 0x00AFFB000000FFFF, 0)


# -- a good image, then broken copies of it -------------------------------------------------

def tables(pml4_extra=None, pdpt_extra=None, pd_extra=None, pt_extra=None):
    """4-level tables at 0x1000-0x4fff identity-mapping 0x0000-0x6fff (SDM §4.5)."""
    def table(first, extra):
        entries = dict(first)
        entries.update(extra or {})
        return qword_page(entries)

    pages = {
        0x1000: table({0: 0x2000 | P_RW}, pml4_extra),
        0x2000: table({0: 0x3000 | P_RW}, pdpt_extra),
        0x3000: table({0: 0x4000 | P_RW}, pd_extra),
        0x4000: table({i: i * 0x1000 | P_RW for i in range(7)}, pt_extra),
        GDT_VA: LINUX_GDT + bytes(0x1000 - len(LINUX_GDT)),
        IDT_VA: bytes(0x1000),
    }
    return [(0, bytes(0x1000))] + sorted(pages.items())


def state(**overrides):
    seg = dict
    values = dict(gdt=seg(selector=0, limit=0x3F, flags=0, base=GDT_VA),
                  idt=seg(selector=0, limit=0xFFF, flags=0, base=IDT_VA),
                  tr=seg(selector=0, limit=0, flags=0, base=0), cr=[0x80050033, 0, 0, 0x1000,
                                                                    0x6F0])
    values.update(overrides)
    return qemu_cpu_state(**values)


def core(runs=None, **overrides):
    return build_elf_core(tables() if runs is None else runs, qemu_state=state(**overrides))


GOOD_CORE = core()
GOOD_RAW = build_raw(tables())


def phdr_at(data, index):
    """File offset of ELF64 program header ``index`` (gABI: e_phoff at 32, 56 bytes each)."""
    return struct.unpack_from("<Q", data, 32)[0] + 56 * index


def patched(data, offset, fmt, value):
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def note_offset(data):
    """p_offset of the PT_NOTE (program header 0 in cores built here)."""
    return struct.unpack_from("<Q", data, phdr_at(data, 0) + 8)[0]


def seg_limit(limit, base):
    return dict(selector=0, limit=limit, flags=0, base=base)


def kdump():
    info = b"OSRELEASE=6.1.0\nPAGESIZE=4096\n"
    return build_elf_core(tables(), notes=[build_note("VMCOREINFO", 0, info)],
                          prstatus={"rip": 0xFFFFFFFF81000000})


def last_load_cut(data):
    """The file cut in the middle of its last PT_LOAD's data."""
    phnum = struct.unpack_from("<H", data, 56)[0]
    p_offset = struct.unpack_from("<Q", data, phdr_at(data, phnum - 1) + 8)[0]
    p_filesz = struct.unpack_from("<Q", data, phdr_at(data, phnum - 1) + 32)[0]
    return data[:p_offset + p_filesz // 2]


# name -> (file bytes, "error" or "finding", text the error or finding must contain,
#          extra CLI arguments for images that carry no CPU state)
RAW_ARGS = ("--cr3", "1000", "--mode", "4level")
CASES = {
    # empty and truncated files, every format
    "empty.raw": (b"", "error", "empty", ()),
    "empty.lime": (b"", "error", "empty", ()),
    "empty.elf.xz": (b"", "error", "empty", ()),
    "empty.raw.gz": (b"", "error", "empty", ()),
    "nothing.raw.xz": (lzma.compress(b""), "error", "decompresses to nothing", ()),
    "truncated.raw.xz": (lzma.compress(GOOD_RAW)[:-40], "error", "corrupt xz", ()),
    "truncated.elf.gz": (gzip.compress(GOOD_CORE)[:-40], "error", "corrupt gzip", ()),
    "truncated-ident.elf": (GOOD_CORE[:10], "error", "truncated ELF header", ()),
    "truncated-ehdr.elf": (GOOD_CORE[:40], "error", "truncated ELF header", ()),
    "truncated-phdrs.elf": (GOOD_CORE[:100], "error", "program header table", ()),
    "truncated-load.elf": (last_load_cut(GOOD_CORE), "error", "past the end of the file", ()),
    "truncated-note.elf": (GOOD_CORE[:note_offset(GOOD_CORE) + 20], "error",
                           "past the end of the file", ()),
    "truncated-kdump.elf": (last_load_cut(kdump()), "error", "past the end of the file", ()),
    "truncated-header.lime": (build_lime([(0, GOOD_RAW)])[:20], "error", "too short", ()),
    "truncated-data.lime": (build_lime([(0, GOOD_RAW)])[:5000], "error", "claims", ()),
    # malformed ELF program headers
    "huge-phnum.elf": (patched(GOOD_CORE, 56, "<H", 0xFFFE), "error", "program header table",
                       ()),
    "pn-xnum-no-sections.elf": (patched(GOOD_CORE, 56, "<H", 0xFFFF), "error", "PN_XNUM", ()),
    "phentsize-small.elf": (patched(GOOD_CORE, 54, "<H", 20), "error", "e_phentsize", ()),
    "phoff-past-eof.elf": (patched(GOOD_CORE, 32, "<Q", 1 << 40), "error",
                           "program header table", ()),
    "load-offset-past-eof.elf": (patched(GOOD_CORE, phdr_at(GOOD_CORE, 2) + 8, "<Q", 1 << 40),
                                 "error", "past the end of the file", ()),
    "load-filesz-past-eof.elf": (patched(GOOD_CORE, phdr_at(GOOD_CORE, 2) + 32, "<Q", 1 << 33),
                                 "error", "past the end of the file", ()),
    "load-paddr-wraps.elf": (patched(GOOD_CORE, phdr_at(GOOD_CORE, 2) + 24, "<Q",
                                     (1 << 64) - 0x800), "error",
                             "past the end of the physical address space", ()),
    "overlapping-loads.elf": (build_elf_core(tables() + [(0x1800, b"\xcc" * 0x2000)],
                                             qemu_state=state()), "finding", "overlaps", ()),
    "not-core.elf": (patched(GOOD_CORE, 16, "<H", 2), "error", "not ET_CORE", ()),
    "big-endian.elf": (patched(GOOD_CORE, 5, "<B", 2), "error", "not little-endian", ()),
    # malformed notes
    "note-descsz-huge.elf": (patched(GOOD_CORE, note_offset(GOOD_CORE) + 4, "<I", 0xFFFFFFF0),
                             "error", "runs past the end of its PT_NOTE", ()),
    "note-namesz-huge.elf": (patched(GOOD_CORE, note_offset(GOOD_CORE), "<I", 0x7FFFFFFF),
                             "error", "runs past the end of its PT_NOTE", ()),
    "note-segment-past-eof.elf": (patched(GOOD_CORE, phdr_at(GOOD_CORE, 0) + 32, "<Q", 1 << 32),
                                  "error", "PT_NOTE", ()),
    "note-garbage-tail.elf": (build_elf_core(tables(), qemu_state=state(),
                                             notes=[b"\x01\x02\x03\x04\x05\x06"]),
                              "error", "too short for a note header", ()),
    "qemu-note-unknown-version.elf": (core(version=7), "finding", "version 7", RAW_ARGS),
    # bad LiME headers
    "bad-magic.lime": (build_lime([(0, GOOD_RAW)], magic=0x464C457F), "error", "magic", ()),
    "bad-version.lime": (build_lime([(0, GOOD_RAW)], version=3), "error", "version 3", ()),
    "start-after-end.lime": (lime_header(0x7000, 0x1000) + GOOD_RAW, "error", "below its start",
                             ()),
    "overlapping.lime": (build_lime([(0, GOOD_RAW), (0x3000, b"\xee" * 0x2000)]), "finding",
                         "overlaps", RAW_ARGS),
    # descriptor-table registers
    "gdtr-outside-image.elf": (core(gdt=seg_limit(0x7F, 0x40000000)), "error",
                               "0x40000000", ()),
    "idtr-outside-image.elf": (core(idt=seg_limit(0xFFF, 0xFFFF800000000000)), "error",
                               "0xffff800000000000", ()),
    "gdtr-giant-limit.elf": (core(gdt=seg_limit(0xFFFF, GDT_VA)), "error", "0x7000", ()),
    "idtr-limit-past-image.elf": (core(idt=seg_limit(0xFFFF, IDT_VA)), "error", "0x7000", ()),
    "gdtr-non-canonical.elf": (core(gdt=seg_limit(0x7F, 0x0000800000000000)), "error",
                               "canonical", ()),
    # CR3
    "cr3-zero.elf": (core(cr=[0x80050033, 0, 0, 0, 0x6F0]), "finding", "not present", ()),
    "cr3-past-image.elf": (core(cr=[0x80050033, 0, 0, 0x7FFF0000, 0x6F0]), "error",
                           "not in the image", ()),
    "cr3-zero-not-in-image.elf": (core(runs=tables()[1:], cr=[0x80050033, 0, 0, 0, 0x6F0]),
                                  "error", "not in the image", ()),
    # page tables that loop, map themselves or point past the image
    "pdpt-loops-to-pml4.elf": (core(runs=tables(pdpt_extra={1: 0x1000 | P_RW})), "finding",
                               "", ()),
    "pml4-self-map.elf": (core(runs=tables(pml4_extra={0x1ED: 0x1000 | P_RW})), "finding", "",
                          ()),
    "pd-maps-itself.elf": (core(runs=tables(pd_extra={1: 0x3000 | P_RW | 0x80})), "finding",
                           "", ()),
    "pt-points-past-image.elf": (core(runs=tables(pt_extra={5: 0x7FFFF000 | P_RW})), "finding",
                                 "not in the image", ()),
    "pdpt-table-past-image.elf": (core(runs=tables(pdpt_extra={1: 0x7FFFF000 | P_RW})),
                                  "finding", "", ()),
    # raw images (no CPU state: the CLI is given --cr3 and --mode)
    "tables.raw": (GOOD_RAW, "finding", "", RAW_ARGS),
    "random.raw": (bytes((i * 97 + 13) & 0xFF for i in range(5000)), "finding", "", RAW_ARGS),
}

# Commands that read an image; "{va}" is a linear address the good image maps.
COMMANDS = {
    "info": ("info",),
    "gdt": ("gdt",),
    "idt": ("idt",),
    "ldt": ("ldt",),
    "vtop": ("vtop", "5010"),
    "vtop-many": ("vtop", "5010", "8000", "ffff800000000000", "0"),
    "maps": ("maps", "--max-entries", "2000000"),
    "ptov": ("ptov", "5010", "--max-entries", "2000000"),
    "read": ("read", "5000", "40"),
    "read-across": ("read", "6ff0", "40"),
}


def cli(*argv):
    return run_cli(*argv, guarded=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    paths = {}
    for name, (data, _, _, _) in CASES.items():
        path = folder / name
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


def library_steps(path):
    """Open the image, walk it, read its tables: (findings, errors) where each
    error is a KsinspectError a step raised (the steps after it still run)."""
    from ksinspect.table_source import read_table
    findings, errors = [], []
    try:
        memory = open_image(path)
    except KsinspectError as exc:
        return findings, [exc]
    with memory:
        findings += memory.warnings
        try:
            space = AddressSpace(memory, cr3=None if memory.cpu else 0x1000,
                                 mode=None if memory.cpu else "4level")
        except KsinspectError as exc:
            return findings, [exc]
        for va in (0x5010, 0x7000, 0xFFFF800000000000):
            findings.append(space.translate(va).error or "mapped")
        try:
            findings += ["%#x-%#x" % (m.start, m.end)
                         for m in space.mappings(max_entries=2_000_000)]
        except WalkLimitError as exc:
            errors.append(exc)
        findings += ["alias %#x" % a.va for a in space.physical_to_virtual(0x5010)]
        for which in ("GDT", "IDT"):
            try:
                findings.append("%s: %d bytes" % (which, len(read_table(memory, which).data)))
            except KsinspectError as exc:
                errors.append(exc)
    return findings, errors


@pytest.mark.parametrize("name", sorted(CASES))
def test_library_raises_its_own_error_or_reports_a_finding(corpus, name):
    _, outcome, text, _ = CASES[name]
    with deadline():
        findings, errors = library_steps(corpus[name])
    for exc in errors:
        assert type(exc) is not KsinspectError, "not a specific error class: %r" % exc
        assert "\n" not in str(exc)
    if outcome == "error":
        assert errors, "no error; findings: %s" % findings
        assert text in str(errors[0])
        if isinstance(errors[0], ImageFormatError):
            assert corpus[name] in str(errors[0])
    else:
        assert not any(isinstance(e, ImageFormatError) for e in errors)
        assert any(text in f for f in findings) or any(text in str(e) for e in errors), findings


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_exits_0_or_1_with_one_line_naming_the_input(corpus, name, command):
    _, outcome, text, extra = CASES[name]
    argv = list(COMMANDS[command])
    if extra and argv[0] in ("vtop", "maps", "ptov", "read"):
        argv += list(extra)
    if extra and argv[0] in ("gdt", "idt", "ldt"):
        argv += ["--base", "5000", "--limit", "3f", "--physical"]
    argv.insert(1, corpus[name])
    status, out, err = cli(*argv)
    assert "Traceback" not in err
    try:
        open_image(corpus[name]).close()
        unreadable = False
    except ImageFormatError:
        unreadable = True
    if status == 0:
        assert err == "" or err.startswith("ksinspect: note: ")
        assert not unreadable, "exit 0 on an image the library refuses"
        return
    assert argv[0] != "info" or unreadable, err
    assert status == 1, (status, err)
    assert err.count("\n") == 1 and err.startswith("ksinspect: error: "), err
    assert corpus[name] in err, "the error does not name the input: %s" % err


# -- raw descriptor tables ------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, 7, 12, 13, 4095])
@pytest.mark.parametrize("command", ["gdt", "ldt", "idt"])
def test_raw_table_whose_length_is_not_a_multiple_of_8(tmp_path, command, length):
    path = tmp_path / ("table-%d.bin" % length)
    path.write_bytes((LINUX_GDT * 600)[:length])
    status, out, err = cli(command, str(path), "--mode", "long")
    assert status == 1 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and str(path) in err, err
    assert ("not a multiple of the 8-byte" in err) if length else ("empty" in err)


@pytest.mark.parametrize("length", [1, 7, 12, 13])
def test_library_table_length_error_is_truncated_data(length):
    from ksinspect import tables
    with pytest.raises(TruncatedDataError):
        tables.decode_table((LINUX_GDT * 2)[:length], "GDT", "long")


def test_limit_above_16_bits_is_refused(corpus):
    status, _, err = cli("gdt", corpus["tables.raw"], "--base", "5000", "--limit", "10000",
                         "--physical")
    assert status == 1 and "larger than 0xFFFF" in err and corpus["tables.raw"] in err


def test_linear_base_without_cpu_state_asks_for_a_physical_one(corpus):
    status, _, err = cli("gdt", corpus["tables.raw"], "--base", "5000", "--limit", "3f",
                         "--cr3", "1000")
    # a missing option is usage (exit 2, README "Errors and exit statuses"): the
    # paging mode, or a physical base
    assert status == 2 and "--physical" in err and corpus["tables.raw"] in err
    assert "give --paging-mode" in err and len(err.splitlines()) == 1


# -- random bytes as every kind of input ----------------------------------------------------

@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000),
       magic=st.sampled_from([b"", b"\x7fELF\x02\x01\x01", b"\x7fELF\x01\x01\x01", b"EMiL",
                              b"EMiL\x01\x00\x00\x00"]),
       command=st.sampled_from(sorted(COMMANDS)))
def test_random_bytes_as_an_image(tmp_path, data, magic, command):
    path = tmp_path / "random.img"
    path.write_bytes(magic + data)
    argv = list(COMMANDS[command])
    if argv[0] in ("vtop", "maps", "ptov", "read"):
        argv += list(RAW_ARGS)
    argv.insert(1, str(path))
    status, _, err = cli(*argv)
    assert "Traceback" not in err
    assert status in (0, 1) or "carries no CPU state" in err or "--base" in err, err
    if status == 1:
        assert err.count("\n") == 1 and err.startswith("ksinspect: error: "), err


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), command=st.sampled_from(["gdt", "ldt", "idt"]),
       mode=st.sampled_from([[], ["--mode", "long"], ["--mode", "legacy"]]))
def test_random_bytes_as_a_table_file(tmp_path, data, command, mode):
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    status, _, err = cli(command, str(path), *mode)
    assert "Traceback" not in err
    image_magic = (b"\x7fELF", b"EMiL", b"\xfd7zXZ\x00", b"\x1f\x8b")
    if data and len(data) % 8 == 0 and not data.startswith(image_magic):
        assert status == 0, err
    else:
        assert status == 1 and err.count("\n") == 1, err


@settings(max_examples=100, deadline=None)
@given(words=st.lists(st.text(max_size=20), min_size=1, max_size=3),
       command=st.sampled_from(["selector", "desc", "pte", "dr7", "dr6"]))
def test_random_text_as_command_line_values(words, command):
    status, _, err = cli(command, *words)
    assert "Traceback" not in err
    assert status in (0, 2) or (status == 1 and err.count("\n") == 1), err


# -- broken side files: the message blames the file at fault ---------------------------------

SIDE_FILES = {
    "garbage": bytes(range(256)) * 4,
    "empty": b"",
    # no line is a symbol (a file with one stray line among symbols is read, with a
    # warning: tests/test_tables.py)
    "not-system-map": b"zzzz\nCPU#0\n",
    "truncated.xz": lzma.compress(b"ffffffff81000000 T _text\n" * 200)[:60],
}


@pytest.mark.parametrize("option", ["--registers", "--symbols"])
@pytest.mark.parametrize("side", sorted(SIDE_FILES))
def test_broken_registers_or_symbols_file_is_named(corpus, tmp_path, option, side):
    path = tmp_path / side
    path.write_bytes(SIDE_FILES[side])
    command = "idt" if option == "--symbols" else "info"
    status, _, err = cli(command, corpus["tables.raw" if option == "--registers" else
                                         "pdpt-loops-to-pml4.elf"], option, str(path))
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("ksinspect: error: %s" % path), err


def test_reversed_text_range_is_bad_usage(corpus):
    status, _, err = cli("idt", corpus["pdpt-loops-to-pml4.elf"], "--text-range", "5-1")
    assert status == 2 and "below START" in err
