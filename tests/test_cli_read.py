"""`ksinspect read`: raw bytes, WinDbg's dd / dq / dps views (issue 18 item 17).

Expected values come from outside ksinspect: the GDT descriptors QEMU's own
``info registers`` shows for the guests' CS and SS (a flat descriptor with
base 0 is its flags dword over 0x0000ffff, SDM vol. 3A §3.4.5), the page
table builder's bookkeeping (tests/builders/pagetable_builder.py) and a System.map
written here. The layouts are WinDbg's (Microsoft's d* page: "each line
displayed includes the address of the first byte in the line followed by
the contents of memory"; dd shows double words, dq quad words, dps one
pointer and its symbol; "if you attempt to display an invalid address, its
contents are shown as question marks"): four dwords or two qwords a line,
64-bit addresses and qwords with a backtick between their halves.
"""
import io
import json
import os
import struct
import subprocess
import sys

import pytest

from conftest import qemu_file, run_cli
from builders.pagetable_builder import PageTableBuilder
from ksinspect.cli import main

CORE = qemu_file("x86_64-4level")
PAE = qemu_file("i386-pae")


def registers(profile):
    """{name: (selector, flags dword)} and the GDT base, from QEMU's info registers."""
    found, gdt = {}, None
    with open(qemu_file(profile, "info-registers.txt"), encoding="ascii") as fh:
        for line in fh:
            name, _, rest = line.partition("=")
            if name.strip() in ("CS", "SS"):
                fields = rest.split()
                found[name.strip()] = (int(fields[0], 16), int(fields[3], 16))
            elif name.strip() == "GDT":
                gdt = int(rest.split()[0], 16)
    return found, gdt


def flat_descriptor(flags):
    return flags << 32 | 0x0000FFFF


def test_qwords_show_the_gdt_as_dq_does():
    segs, gdt = registers("x86_64-4level")
    (cs, cs_flags), (ss, ss_flags) = segs["CS"], segs["SS"]
    assert (cs, ss) == (0x10, 0x18)
    status, out, err = run_cli("read", CORE, "%x" % (gdt + cs), "10", "--qwords")
    assert (status, err) == (0, "")
    want_cs, want_ss = flat_descriptor(cs_flags), flat_descriptor(ss_flags)
    address = gdt + cs
    assert out == "%08x`%08x  %08x`%08x %08x`%08x\n" % (
        address >> 32, address & 0xFFFFFFFF, want_cs >> 32, want_cs & 0xFFFFFFFF,
        want_ss >> 32, want_ss & 0xFFFFFFFF)


def test_dwords_are_little_endian_four_a_line():
    segs, gdt = registers("x86_64-4level")
    cs_flags, ss_flags = segs["CS"][1], segs["SS"][1]
    status, out, _ = run_cli("read", CORE, "%x" % (gdt + 0x10), "20", "--dwords")
    assert status == 0
    first, second = out.splitlines()
    assert first.split("  ")[1] == "0000ffff %08x 0000ffff %08x" % (cs_flags, ss_flags)
    assert second.startswith("fffffe00`00001020  ")
    assert len(second.split("  ")[1].split()) == 4


def test_a_32_bit_target_prints_eight_digit_addresses():
    segs, gdt = registers("i386-pae")
    cs, cs_flags = segs["CS"]
    status, out, _ = run_cli("read", PAE, "%x" % (gdt + cs), "8", "--dwords")
    assert status == 0 and out == "%08x  0000ffff %08x\n" % (gdt + cs, cs_flags)
    # dps on a 32-bit target reads 4-byte pointers.
    status, out, _ = run_cli("read", PAE, "%x" % (gdt + cs), "8", "--dps")
    assert out.splitlines() == ["%08x  0000ffff" % (gdt + cs),
                                "%08x  %08x" % (gdt + cs + 4, cs_flags)]


def test_unreadable_memory_shows_question_marks_and_goes_on():
    # The GDT page is kept in the trimmed core; the next page (mapped, see info tlb) is not.
    _segs, gdt = registers("x86_64-4level")
    end = gdt + 0x1000
    status, out, err = run_cli("read", CORE, "%x" % (end - 8), "18", "--qwords")
    assert status == 0
    assert out.splitlines() == [
        "fffffe00`00001ff8  00000000`00000000 ????????`????????",
        "fffffe00`00002008  ????????`????????"]
    assert len(err.splitlines()) == 1 and "not in the image" in err and "????????" in err
    # A unit with any unreadable byte is unreadable.
    status, out, _ = run_cli("read", CORE, "%x" % (end - 4), "8", "--qwords")
    assert out == "fffffe00`00001ffc  ????????`????????\n"
    status, out, _ = run_cli("read", CORE, "%x" % (end - 4), "8", "--dwords")
    assert out == "fffffe00`00001ffc  00000000 ????????\n"


def test_records_are_one_unit_each():
    segs, gdt = registers("x86_64-4level")
    status, out, _ = run_cli("read", CORE, "%x" % (gdt + 0x10), "10", "--qwords", "--json")
    assert status == 0
    assert json.loads(out) == [
        {"address": gdt + 0x10, "value": flat_descriptor(segs["CS"][1])},
        {"address": gdt + 0x18, "value": flat_descriptor(segs["SS"][1])}]
    status, out, _ = run_cli("read", CORE, "%x" % (gdt + 0xFF8), "10", "--qwords", "--format",
                             "jsonl")
    assert [json.loads(line)["value"] for line in out.splitlines()] == [0, None]
    status, out, _ = run_cli("read", CORE, "%x" % (gdt + 0xFF8), "10", "--qwords", "--format",
                             "csv")
    assert out.splitlines() == ["address,value", "%#x,0x0" % (gdt + 0xFF8),
                                "%#x," % (gdt + 0x1000)]


def test_length_must_be_whole_units():
    status, out, err = run_cli("read", CORE, "fffffe0000001000", "6", "--dwords")
    assert status == 2 and out == "" and "4-byte units" in err


# -- --raw ------------------------------------------------------------------------------

def test_raw_to_a_file_is_the_bytes():
    segs, gdt = registers("x86_64-4level")
    want = struct.pack("<QQ", flat_descriptor(segs["CS"][1]), flat_descriptor(segs["SS"][1]))
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "ksi-read-raw-%d.bin" % os.getpid())
    try:
        status, out, err = run_cli("read", CORE, "%x" % (gdt + 0x10), "10", "--raw", "--output",
                                   path)
        assert (status, out, err) == (0, "", "")
        with open(path, "rb") as fh:
            assert fh.read() == want
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_raw_to_standard_output_through_a_pipe():
    segs, gdt = registers("x86_64-4level")
    want = struct.pack("<Q", flat_descriptor(segs["CS"][1]))
    done = subprocess.run([sys.executable, "-m", "ksinspect", "read", CORE, "%x" % (gdt + 0x10),
                           "8", "--raw"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120)
    assert done.returncode == 0 and done.stdout == want and done.stderr == b""
    # In-process: the bytes go under the text stream main() was given.
    binary = io.BytesIO()
    text = io.TextIOWrapper(binary, encoding="utf-8")
    assert main(["read", CORE, "%x" % (gdt + 0x10), "8", "--raw"], stream=text,
                errors=io.StringIO()) == 0
    assert binary.getvalue() == want


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_raw_is_refused_on_a_terminal():
    err = io.StringIO()
    assert main(["read", CORE, "fffffe0000001000", "8", "--raw"], stream=_Terminal(),
                errors=err) == 2
    assert "terminal" in err.getvalue() and "--output" in err.getvalue()
    assert len(err.getvalue().splitlines()) == 1


def test_raw_stops_at_the_first_missing_byte(tmp_path):
    path = tmp_path / "part.bin"
    status, _, err = run_cli("read", CORE, "fffffe0000001ff8", "10", "--raw", "--output", path)
    assert status == 1 and "not in the image" in err and len(err.splitlines()) == 1
    assert path.read_bytes() == bytes(8)          # the GDT's last (null) descriptor slot


@pytest.mark.parametrize("argv, needle", [
    (["--raw", "--json"], "--raw"),
    (["--dwords", "--output", "x.bin"], "--output"),
    (["--qwords", "--symbols", "System.map"], "--symbols"),
    (["--raw", "--dps"], "not allowed with"),
])
def test_option_combinations_that_make_no_sense(argv, needle):
    status, out, err = run_cli("read", CORE, "fffffe0000001000", "8", *argv)
    assert status == 2 and out == "" and needle in err and len(err.splitlines()) == 1


# -- --dps with symbols -------------------------------------------------------------------

SYSTEM_MAP = """\
ffffffff81000000 T _text
ffffffff81000100 T start_kernel
ffffffff81000180 t helper
ffffffff81002000 D init_task
ffffffffc0001000 t mod_fn [mymod]
"""
HERE = 0xFFFF_C900_0000_0000


@pytest.fixture
def pointer_image(tmp_path):
    b = PageTableBuilder("4level")
    b.map(HERE, 0x100000)
    values = [0xFFFF_FFFF_8100_0110, 0xFFFF_FFFF_8100_0100, 0x1234, 0xFFFF_FFFF_8100_0180,
              0xFFFF_FFFF_C000_1000, 0xFFFF_FFFF_C000_1008, 0xFFFF_FFFF_8100_1FF8]
    b.write_phys(0x100000, b"".join(struct.pack("<Q", v) for v in values))
    image = tmp_path / "pointers.raw"
    image.write_bytes(b.flat())
    symbols = tmp_path / "System.map"
    symbols.write_text(SYSTEM_MAP)
    return image, symbols, b.cr3, values


def test_dps_names_each_pointer_that_lies_inside_a_symbol(pointer_image):
    image, symbols, cr3, values = pointer_image
    status, out, err = run_cli("read", image, "%x" % HERE, "%x" % (8 * len(values)), "--dps",
                               "--symbols", symbols, "--cr3", "%x" % cr3, "--paging-mode",
                               "4level")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "ffffc900`00000000  ffffffff`81000110 start_kernel+0x10",
        "ffffc900`00000008  ffffffff`81000100 start_kernel",
        "ffffc900`00000010  00000000`00001234",                    # before the first symbol
        "ffffc900`00000018  ffffffff`81000180 helper",
        "ffffc900`00000020  ffffffff`c0001000 mod_fn [mymod]",
        "ffffc900`00000028  ffffffff`c0001008",                    # past the last symbol
        "ffffc900`00000030  ffffffff`81001ff8 helper+0x1e78",      # up to init_task
    ]
    status, out, _ = run_cli("read", image, "%x" % HERE, "10", "--dps", "--symbols", symbols,
                             "--cr3", "%x" % cr3, "--paging-mode", "4level", "--json")
    assert json.loads(out) == [
        {"address": HERE, "value": values[0], "symbol": "start_kernel+0x10"},
        {"address": HERE + 8, "value": values[1], "symbol": "start_kernel"}]
