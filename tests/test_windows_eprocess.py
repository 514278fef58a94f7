"""_EPROCESS decoding (ksinspect.windows.eprocess) over images built from the layouts.

Expected values are what tests/builders/eprocess_image_builder.py planted, at offsets
it read itself from the layout JSON; FILETIME conversions are checked against
datetime arithmetic from MS-DTYP 2.3.3 (100-ns ticks since 1601-01-01 UTC).
"""
import datetime
import json
import os
import re

import pytest

from builders.eprocess_image_builder import RawLayout, filetime, standard_image
from conftest import run_cli as run
from ksinspect.errors import InvalidAddressError
from ksinspect.paging import AddressSpace
from ksinspect.windows import load_layout
from ksinspect.windows.eprocess import decode_eprocess, filetime_to_iso, read_eprocess

# (layout, paging): x86 2-level and PAE, x64 4-level, across the three WoW64 schemes.
BUILDS = [
    ("winxp-sp3-2600.5512-x86", "32"),
    ("winvista-sp2-6002.18005-x86", "pae"),
    ("win7-sp1-7601.17514-x86", "pae"),
    ("win10-22h2-19045.2965-x86", "pae"),
    ("win2003-sp2-3790.3959-x64", "4level"),       # Wow64Process -> _WOW64_PROCESS
    ("winvista-sp1-6001.18000-x64", "4level"),
    ("win7-sp1-7601.17514-x64", "4level"),         # Wow64Process is the PEB32
    ("win81-rtm-9600.16384-x64", "4level"),
    ("win10-1607-14393.0-x64", "4level"),          # WoW64Process -> _EWOW64PROCESS
    ("win10-22h2-19045.2965-x64", "4level"),
    ("win11-24h2-26100.1742-x64", "4level"),
]
PROCESS_KEYS = {"pid", "ppid", "name", "eprocess", "dtb", "peb", "create_time", "exit_time",
                "wow64"}


def iso(year, month, day, hour=0, minute=0, second=0):
    return datetime.datetime(year, month, day, hour, minute, second).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


# -- FILETIME ---------------------------------------------------------------------------

def test_filetime_unix_epoch():
    # 1970-01-01 is 369 years (89 leap days) after 1601-01-01: 11644473600 s.
    assert filetime_to_iso(11644473600 * 10_000_000) == "1970-01-01T00:00:00Z"


def test_filetime_keeps_microseconds_and_zero_is_none():
    assert filetime_to_iso(11644473600 * 10_000_000 + 1_234_567) == "1970-01-01T00:00:00.123456Z"
    assert filetime_to_iso(0) is None
    assert filetime_to_iso((1 << 63) - 1) is None          # beyond year 9999


# -- decoding per build -------------------------------------------------------------------

@pytest.mark.parametrize("layout_name,paging", BUILDS)
def test_every_planted_field_decodes(layout_name, paging):
    builder, planted = standard_image(layout_name, paging, wow64=True)
    memory = builder.memory()
    layout = load_layout(layout_name)
    space = AddressSpace(memory, cr3=builder.cr3, mode=paging)
    for i, p in enumerate(planted):
        process = read_eprocess(space, p.eprocess, layout)
        assert (process.pid, process.ppid, process.name) == (p.pid, p.ppid, p.name)
        assert process.dtb == p.dtb and process.peb == p.peb
        assert process.address == p.eprocess and process.physical == p.eprocess_pa
        assert process.create_iso == iso(2024, 3, 1, 8, 0, i)
        assert process.exit_iso is None
        assert process.anomalies == ()
        assert process.wow64_pointer == p.wow64_pointer
        if p.wow64_pointer:
            assert process.peb32 == p.peb32 == 0x7EFDE000
        else:
            assert process.to_dict()["wow64"] is None
        assert set(process.to_dict()) == PROCESS_KEYS


def test_wow64_exists_only_on_x64():
    builder, planted = standard_image("win10-22h2-19045.2965-x86", "pae", wow64=True)
    assert all(p.wow64_pointer == 0 for p in planted)
    builder, planted = standard_image("win10-22h2-19045.2965-x64", None, wow64=True)
    assert [p.name for p in planted if p.wow64_pointer] == ["notepad.exe"]


def test_explain_names_the_offsets_of_this_build():
    builder, planted = standard_image("win10-22h2-19045.2965-x64", None)
    raw = RawLayout("win10-22h2-19045.2965-x64")
    space = AddressSpace(builder.memory(), cr3=builder.cr3, mode="4level")
    text = read_eprocess(space, planted[1].eprocess,
                         load_layout("win10-22h2-19045.2965-x64")).explain()
    assert "+%#x" % raw.off("_EPROCESS", "UniqueProcessId") in text
    assert "+%#x" % raw.off("_EPROCESS", "ImageFileName") in text
    assert "smss.exe" in text and "2024-03-01T08:00:01Z" in text
    assert "WRK" in text and "MS-DTYP" in text


def test_exit_time_and_anomalies_are_reported():
    layout = load_layout("win7-sp1-7601.17514-x64")
    raw = RawLayout("win7-sp1-7601.17514-x64")
    data = bytearray(layout.sizeof("_EPROCESS"))
    data[0] = 6                                             # a thread, not a process
    raw.put(data, 0, "_EPROCESS", "UniqueProcessId", 0x102)  # not a multiple of 4
    raw.put(data, 0, "_EPROCESS", "ImageFileName", "bad\x07name")
    raw.put(data, 0, "_EPROCESS", "ExitTime", filetime(2024, 5, 6, 7, 8, 9))
    process = decode_eprocess(bytes(data), layout)
    assert process.exit_iso == iso(2024, 5, 6, 7, 8, 9) and process.exited
    text = " ".join(process.anomalies)
    assert "Type is 6" in text and "0x102" in text and "printable" in text
    assert "DirectoryTableBase is 0" in text


def test_html_escapes_a_hostile_name():
    layout = load_layout("win7-sp1-7601.17514-x64")
    raw = RawLayout("win7-sp1-7601.17514-x64")
    data = bytearray(layout.sizeof("_EPROCESS"))
    raw.put(data, 0, "_EPROCESS", "ImageFileName", "<b>x</b>")
    page = decode_eprocess(bytes(data), layout)._repr_html_()
    assert "<b>" not in page and "&lt;b&gt;" in page


# -- the command ------------------------------------------------------------------------------

@pytest.fixture
def win7_image(tmp_path):
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None, wow64=True)
    path = tmp_path / "win7.raw"
    path.write_bytes(builder.flat())
    return str(path), builder, planted


def test_cli_eprocess_json(win7_image):
    path, builder, planted = win7_image
    status, out, err = run("eprocess", path, "--layout", "win7-sp1-x64", "--cr3",
                           hex(builder.cr3), "--address", hex(planted[4].eprocess), "--json")
    assert status == 0, err
    document = json.loads(out)
    assert document["pid"] == 2216 and document["name"] == "notepad.exe"
    assert document["wow64"] == planted[4].peb32
    assert document["physical"] == planted[4].eprocess_pa
    assert PROCESS_KEYS <= set(document)


def test_cli_eprocess_table_explains(win7_image):
    """Without --cr3 (a raw image has no CPU state) the kernel CR3 is the
    System process's DirectoryTableBase, found by psscan."""
    path, builder, planted = win7_image
    status, out, err = run("eprocess", path, "--layout", "win7-sp1-x64",
                           "--address", hex(planted[3].eprocess))
    assert status == 0, err
    assert "explorer.exe" in out and "UniqueProcessId" in out and "1504" in out


def test_cli_eprocess_without_any_cr3(tmp_path):
    path = tmp_path / "zeros.raw"
    path.write_bytes(bytes(1 << 16))
    code, out, err = run("eprocess", str(path), "--layout", "win7-sp1-x64", "--address", "0")
    assert code == 1 and err.count("\n") == 1 and "--cr3" in err


@pytest.mark.parametrize("argv,status,needle", [
    (("--layout", "win99-x64", "--cr3", "1000", "--address", "0"), 2, "win99-x64"),
    (("--layout", "win7-sp1-x64", "--cr3", "1000", "--address", "fffffa80dead0000"), 1,
     "0xfffffa80dead0000"),
    (("--layout", "win7-sp1-x64", "--address", "0x1g"), 2, "'0x1g'"),
    (("--layout", "win7-sp1-x64", "--cr3", "zz", "--address", "0"), 2, "'zz'"),
])
def test_cli_eprocess_bad_input_is_one_line(win7_image, argv, status, needle):
    path = win7_image[0]
    code, out, err = run("eprocess", path, *argv)
    assert code == status
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_cli_eprocess_missing_image_is_one_line(tmp_path):
    code, out, err = run("eprocess", str(tmp_path / "nope.raw"), "--layout", "win7-sp1-x64",
                         "--cr3", "1000", "--address", "0")
    assert code == 1 and err.count("\n") == 1 and "nope.raw" in err


def test_unmapped_eprocess_raises_invalid_address():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    space = AddressSpace(builder.memory(), cr3=builder.cr3, mode="4level")
    with pytest.raises(InvalidAddressError):
        read_eprocess(space, 0xFFFFFA80DEAD0000, load_layout("win7-sp1-x64"))


def _raw_offset(raw, path):
    """A member path's offset summed from the layout JSON alone."""
    total, struct = 0, "_EPROCESS"
    for part in path.split("."):
        total += raw.off(struct, part)
        struct = raw.type(struct, part)
    return total


@pytest.mark.parametrize("layout_name,paging", BUILDS)
def test_every_offset_explain_prints_is_the_layouts(layout_name, paging):
    """Each '+OFFSET NAME' row of eprocess's table is the member's offset in
    the layout JSON (Blink one pointer after Flink, not at Flink's offset)."""
    builder, planted = standard_image(layout_name, paging)
    raw = RawLayout(layout_name)
    space = AddressSpace(builder.memory(), cr3=builder.cr3, mode=paging)
    text = read_eprocess(space, planted[1].eprocess, load_layout(layout_name)).explain()
    rows = re.findall(r"^  \+(0x[0-9a-f]+|\?)\s+(\S+)", text, re.M)
    assert len(rows) >= 11
    for offset, path in rows:
        assert offset != "?", path
        assert int(offset, 16) == _raw_offset(raw, path), (layout_name, path)
    printed = dict((p, int(o, 16)) for o, p in rows)
    assert printed["ActiveProcessLinks.Blink"] == printed["ActiveProcessLinks.Flink"] + raw.ptr


def test_win7_x64_links_at_the_published_offsets():
    """win7 SP1 x64: ActiveProcessLinks at +0x188 (Vergilius / WinDbg dt
    nt!_EPROCESS), so Flink +0x188, Blink +0x190."""
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    space = AddressSpace(builder.memory(), cr3=builder.cr3, mode="4level")
    text = read_eprocess(space, planted[1].eprocess,
                         load_layout("win7-sp1-7601.17514-x64")).explain()
    assert re.search(r"\+0x188\s+ActiveProcessLinks\.Flink", text)
    assert re.search(r"\+0x190\s+ActiveProcessLinks\.Blink", text)


# -- one finding shape; one argument order (issues 18 item 15, 15 item 10) ------------------

def test_anomalies_have_stable_codes():
    layout = load_layout("win7-sp1-7601.17514-x64")
    raw = RawLayout("win7-sp1-7601.17514-x64")
    data = bytearray(layout.sizeof("_EPROCESS"))
    data[0] = 6                                             # a thread, not a process
    raw.put(data, 0, "_EPROCESS", "UniqueProcessId", 0x102)
    raw.put(data, raw.off("_EPROCESS", "Pcb"), "_KPROCESS", "DirectoryTableBase",
            0x1234)                                         # not 32-byte aligned
    process = decode_eprocess(bytes(data), layout)
    # Pcb.Header.Size is 0, not sizeof(_KPROCESS) / 4 = 0x160 / 4 (the layout file)
    assert [f.code for f in process.findings] == ["header-type", "header-size",
                                                  "pid-not-a-handle", "dtb-misaligned"]
    assert process.findings is process.anomalies


def test_cli_eprocess_json_findings(win7_image):
    path, builder, planted = win7_image
    status, out, err = run("eprocess", path, "--layout", "win7-sp1-x64", "--cr3",
                           hex(builder.cr3), "--address", hex(planted[4].eprocess), "--json")
    assert status == 0, err
    document = json.loads(out)
    assert document["findings"] == [] and "anomalies" not in document
    status, out, err = run("eprocess", path, "--layout", "win7-sp1-x64", "--cr3",
                           hex(builder.cr3), "--address", hex(planted[4].eprocess),
                           "--format", "csv")
    assert status == 0 and out.splitlines()[0].endswith(",wow64,findings")


def test_read_eprocess_takes_memory_address_layout():
    """`read_eprocess(space, address, layout)` as `read_peb(memory, address,
    layout)`; before, it took (space, layout, address) and the README's order
    gave AttributeError: 'int' object has no attribute 'sizeof'."""
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    space = AddressSpace(builder.memory(), cr3=builder.cr3, mode="4level")
    process = read_eprocess(space, planted[2].eprocess, "win7-sp1-7601.17514-x64")
    assert (process.pid, process.name) == (planted[2].pid, planted[2].name)
    with pytest.warns(DeprecationWarning, match=r"read_eprocess\(memory, address, layout\)"):
        old = read_eprocess(space, load_layout("win7-sp1-x64"), planted[2].eprocess)
    assert old.pid == process.pid
    with pytest.raises(TypeError, match=r"read_eprocess\(memory, address, layout"):
        read_eprocess(space, "0x1000", "win7-sp1-x64")
    data = space.read(planted[2].eprocess, load_layout("win7-sp1-x64").sizeof("_EPROCESS"))
    assert decode_eprocess(data, "win7-sp1-x64").pid == planted[2].pid
    with pytest.warns(DeprecationWarning, match=r"decode_eprocess\(data, layout\)"):
        assert decode_eprocess(load_layout("win7-sp1-x64"), data).pid == planted[2].pid
