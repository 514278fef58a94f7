"""PEB, TEB, process parameters and loader lists, from synthetic process memory.

tests/builders/windows_image_builder.py plants the structures from the layout JSON
files (offsets from Microsoft's PDBs; see ksinspect/windows/layouts/README.md)
and records what it planted; the decoders must give that back. One test
plants a PEB by hand at winternl.h offsets, without any layout file.
"""
import json
import struct

import pytest

from conftest import run_cli as run
from ksinspect.errors import DecodeError, InvalidAddressError
from ksinspect.paging import AddressSpace
from ksinspect.windows import load_layout
from ksinspect.windows.peb import (Check, read_peb, read_peb32, read_teb, walk_list,
                                   x86_layout_for)

from builders.windows_image_builder import (PAGE, VirtualMemory, build_process, build_teb, layout_json,
                                   offset, put, write_pointer)

PEB_KEYS = ["address", "being_debugged", "image_base", "ldr", "process_parameters",
            "image_path", "command_line", "current_directory", "environment", "modules",
            "checks", "findings", "structure", "layout", "loader_layout", "notes"]

NATIVE = ["win2003-sp2-3790.3959-x64", "win7-sp1-7601.17514-x64", "win10-1607-14393.0-x64",
          "win10-22h2-19045.2965-x64", "win11-25h2-26200.6584-x64",
          "winxp-sp2-2600-x86", "winxp-sp3-2600.5512-x86", "win7-sp1-7601.24000-x86",
          "win10-1809-17763.107-x86"]
WOW64 = [("win7-sp1-7601.17514-x64", "win7-sp1-7601.17514-x86"),
         ("win10-22h2-19045.2965-x64", "win10-22h2-19045.2965-x86"),
         # No x86 Windows 11: the decoder falls back on the newest older x86 file.
         ("win11-24h2-26100.1742-x64", "win10-22h2-19045.2965-x86")]


def assert_matches(peb, planted):
    assert peb.address == planted.peb
    assert peb.being_debugged is planted.being_debugged
    assert peb.image_base == planted.image_base
    assert peb.ldr == planted.ldr
    assert peb.process_parameters == planted.params
    assert peb.image_path == planted.image_path
    assert peb.command_line == planted.command_line
    assert peb.current_directory == planted.current_directory
    assert list(peb.environment) == planted.environment
    # the builder links every module on the load- and memory-order lists and
    # all but the main image (the first) on the initialisation-order list
    assert [m.to_dict() for m in peb.modules] == [
        {"base": m.base, "size": m.size, "entry_point": m.entry_point, "name": m.name,
         "path": m.path, "lists": ["load", "memory"] + (["init"] if i else [])}
        for i, m in enumerate(planted.modules)]
    assert peb.findings == ()
    lists = {w.name: list(w.entries) for w in peb.lists}
    assert lists["load"] == lists["memory"] == [m.entry for m in planted.modules]
    assert lists["init"] == [m.entry for m in planted.modules[1:]]
    document = peb.to_dict()
    assert list(document) == PEB_KEYS
    json.dumps(document)


@pytest.mark.parametrize("name", NATIVE)
def test_native_peb(name):
    planted = build_process(name)
    peb = read_peb(planted.memory, planted.peb, name)
    assert_matches(peb, planted)
    assert peb.struct_name == "_PEB" and not peb.wow64


@pytest.mark.parametrize("name, loader", WOW64)
def test_wow64_peb32(name, loader):
    planted = build_process(name, loader, wow64=True)
    peb = read_peb32(planted.memory, planted.peb, name)
    assert_matches(peb, planted)
    assert peb.wow64 and peb.loader_layout.name == loader
    assert bool(peb.notes) == name.startswith("win11")


def test_x86_layout_for():
    assert x86_layout_for(load_layout("win8-rtm-9200.16384-x64"))[0].name == \
        "win8-rtm-9200.16384-x86"
    chosen, note = x86_layout_for(load_layout("server2022-21h2-20348.169-x64"))
    assert chosen.name == "win10-22h2-19045.2965-x86" and "server2022" in note


def test_read_peb32_of_an_x86_layout_is_the_native_peb():
    planted = build_process("win81-rtm-9600.16384-x86")
    assert_matches(read_peb32(planted.memory, planted.peb, "win81-rtm-9600.16384-x86"), planted)


def test_hand_placed_peb_at_winternl_offsets():
    """No layout file: offsets from winternl.h (x64 PEB: BeingDebugged 2,
    ImageBaseAddress 0x10 (Reserved3[1]), Ldr 0x18, ProcessParameters 0x20;
    RTL_USER_PROCESS_PARAMETERS: Reserved1[16] then Reserved2[10] pointers,
    ImagePathName 0x60, CommandLine 0x70; UNICODE_STRING Buffer at 8). Flags
    (the third ULONG of Reserved1, bit 0 = normalized) is set so Buffers are
    addresses."""
    memory = VirtualMemory()
    peb, params, text = 0x7FF7FFFDE000, 0x25A0000, 0x25A1000
    memory.map(peb, PAGE)
    memory.map(params, 2 * PAGE)
    memory.write(peb + 0x2, b"\x00")
    memory.write(peb + 0x10, struct.pack("<QQQ", 0x7FF600000000, 0, params))
    memory.write(params + 8, struct.pack("<I", 1))
    image = "C:\\x.exe".encode("utf-16-le")
    cmdline = "x.exe -v".encode("utf-16-le")
    memory.write(text, image)
    memory.write(text + 0x100, cmdline)
    memory.write(params + 0x60, struct.pack("<HHIQ", len(image), len(image), 0, text))
    memory.write(params + 0x70, struct.pack("<HHIQ", len(cmdline), len(cmdline), 0, text + 0x100))
    decoded = read_peb(memory, peb, "win10-2004-19041.264-x64")
    assert decoded.being_debugged is False
    assert decoded.image_base == 0x7FF600000000 and decoded.ldr == 0
    assert decoded.image_path == "C:\\x.exe" and decoded.command_line == "x.exe -v"
    assert decoded.modules == ()
    assert any("Ldr is NULL" in f for f in decoded.findings)
    assert any("Environment is NULL" in f for f in decoded.findings)


@pytest.mark.parametrize("name, wow64", [("win10-22h2-19045.2965-x64", False),
                                         ("win10-22h2-19045.2965-x86", False),
                                         ("win10-22h2-19045.2965-x64", True),
                                         ("winxp-sp3-2600.5512-x86", False)])
def test_teb(name, wow64):
    memory = VirtualMemory()
    teb = 0x7EFDD000 if wow64 or name.endswith("x86") else 0x7FF7FFFDA000
    build_teb(memory, name, teb, 0x7EFDE000, pid=0x1234, tid=0x5678, wow64=wow64)
    decoded = read_teb(memory, teb, name, wow64=wow64)
    assert (decoded.self_pointer, decoded.peb, decoded.process_id, decoded.thread_id) == (
        teb, 0x7EFDE000, 0x1234, 0x5678)
    assert (decoded.stack_base, decoded.stack_limit) == (teb - 0x10000, teb - 0x20000)
    assert decoded.findings == ()
    assert decoded.struct_name == ("_TEB32" if wow64 else "_TEB")
    assert "ProcessEnvironmentBlock" in decoded.explain()
    assert set(decoded.to_dict()) >= {"address", "self", "peb", "process_id", "thread_id"}


def test_teb_self_pointer_mismatch_is_a_finding():
    memory = VirtualMemory()
    build_teb(memory, "win10-22h2-19045.2965-x64", 0x40000, 0x20000, 1, 2, self_pointer=0x30000)
    assert "NtTib.Self" in read_teb(memory, 0x40000, "win10-22h2-19045.2965-x64").findings[0]


# -- broken lists ---------------------------------------------------------------------------

LAYOUT = "win10-22h2-19045.2965-x64"


def link_field(planted, module_index, list_name):
    return planted.modules[module_index].entry + planted.link_offsets[list_name]


def test_looping_list_ends_with_a_finding():
    planted = build_process(LAYOUT)
    # The last entry's load-order Flink goes back to the second entry, not the head.
    write_pointer(planted.memory, link_field(planted, 3, "load"), link_field(planted, 1, "load"), 8)
    peb = read_peb(planted.memory, planted.peb, LAYOUT)
    assert any("load: list loops at %#x" % link_field(planted, 1, "load") in f
               for f in peb.findings)
    assert len(peb.modules) == 4


def test_list_pointing_outside_memory_ends_with_a_finding():
    planted = build_process(LAYOUT)
    write_pointer(planted.memory, link_field(planted, 1, "memory"), 0xDEAD00000000, 8)
    peb = read_peb(planted.memory, planted.peb, LAYOUT)
    assert any("memory: entry points outside memory" in f and "0xdead00000000" in f
               for f in peb.findings)
    walk = {w.name: w for w in peb.lists}["memory"]
    assert len(walk.entries) == 2


def test_null_flink_and_bad_blink():
    planted = build_process(LAYOUT)
    write_pointer(planted.memory, link_field(planted, 2, "init"), 0, 8)
    write_pointer(planted.memory, link_field(planted, 1, "load") + 8, 0x1234, 8)
    peb = read_peb(planted.memory, planted.peb, LAYOUT)
    assert any("init: Flink after" in f and "NULL" in f for f in peb.findings)
    assert any("load: Blink of" in f for f in peb.findings)


def test_cap_on_entries():
    planted = build_process(LAYOUT)
    peb = read_peb(planted.memory, planted.peb, LAYOUT, max_modules=2)
    assert any("cap of 2 entries hit" in f for f in peb.findings)


def test_self_looping_head_of_a_huge_list_terminates():
    memory = VirtualMemory()
    memory.map(0x1000, PAGE * 4)
    # 600 links in a ring that never returns to the head: a loop finding, fast.
    links = [0x2000 + 16 * i for i in range(600)]
    write_pointer(memory, 0x1000, links[0], 8)
    for a, b in zip(links, links[1:] + [links[0]]):
        write_pointer(memory, a, b, 8)
    walk = walk_list(memory, 0x1000, 0, 8, max_entries=10000, name="load")
    assert len(walk.entries) == 600
    assert any("list loops at 0x2000" in f for f in walk.findings)
    assert len(walk.findings) <= 3          # one Blink finding and a count, not 600


def test_unlinked_module_is_a_finding():
    planted = build_process(LAYOUT, unlink={"load": [2], "init": [3]})
    peb = read_peb(planted.memory, planted.peb, LAYOUT)
    hidden = planted.modules[2]
    assert hidden.base in [m.base for m in peb.modules]       # still found through another list
    module = next(m for m in peb.modules if m.base == hidden.base)
    assert module.lists == ("memory", "init")
    assert any(hidden.name in f and "not in the load-order list: unlinked" in f
               for f in peb.findings)
    assert any(planted.modules[3].name in f and "init-order" in f for f in peb.findings)
    # The main image is never expected in the initialisation-order list.
    assert not any("app.exe" in f for f in peb.findings)


def test_unreadable_parts_are_findings_and_an_unreadable_peb_raises():
    planted = build_process(LAYOUT)
    layout = layout_json(LAYOUT)
    put(planted.memory, layout, "_PEB", planted.peb, {"ProcessParameters": 0x66600000,
                                                       "Ldr": 0x77700000})
    peb = read_peb(planted.memory, planted.peb, LAYOUT)
    assert any("ProcessParameters 0x66600000 cannot be read" in f for f in peb.findings)
    assert any("Ldr 0x77700000" in f for f in peb.findings)
    assert peb.image_path is None and peb.modules == ()
    with pytest.raises(InvalidAddressError, match="_PEB at 0x12340000 cannot be read"):
        read_peb(planted.memory, 0x12340000, LAYOUT)
    with pytest.raises(InvalidAddressError, match="_TEB at 0x12340000 cannot be read"):
        read_teb(planted.memory, 0x12340000, LAYOUT)
    with pytest.raises(DecodeError):
        read_peb32(planted.memory, planted.peb, "win10-22h2-19045.2965-x64",
                   loader_layout="win10-22h2-19045.2965-x64")


def test_unnormalized_parameters_are_rebased():
    planted = build_process(LAYOUT)
    layout = layout_json(LAYOUT)
    rupp = "_RTL_USER_PROCESS_PARAMETERS"
    memory, params = planted.memory, planted.params

    def pointer_at(member_offset):
        return int.from_bytes(memory.read(params + member_offset, 8), "little")

    values = {"Flags": 0}
    for member in ("ImagePathName", "CommandLine"):
        buffer_offset = offset(layout, rupp, member) + 8
        values[member] = {"Buffer": pointer_at(buffer_offset) - params}
    cd = offset(layout, rupp, "CurrentDirectory") + 8
    values["CurrentDirectory"] = {"DosPath": {"Buffer": pointer_at(cd) - params}}
    values["Environment"] = pointer_at(offset(layout, rupp, "Environment")) - params
    put(memory, layout, rupp, params, values)
    peb = read_peb(memory, planted.peb, LAYOUT)
    assert peb.image_path == planted.image_path
    assert peb.command_line == planted.command_line
    assert peb.current_directory == planted.current_directory
    assert list(peb.environment) == planted.environment
    assert any("not normalized" in f for f in peb.findings)


def test_environment_running_into_unmapped_memory():
    planted = build_process("winxp-sp3-2600.5512-x86")       # no EnvironmentSize on XP
    layout = layout_json("winxp-sp3-2600.5512-x86")
    end_of_heap = max(planted.memory.pages) + PAGE
    env = end_of_heap - 8
    planted.memory.write(env, "A=1\0".encode("utf-16-le"))    # no closing empty string
    put(planted.memory, layout, "_RTL_USER_PROCESS_PARAMETERS", planted.params,
        {"Environment": env})
    peb = read_peb(planted.memory, planted.peb, "winxp-sp3-2600.5512-x86")
    assert peb.environment == ("A=1",)
    assert any("stops being readable" in f for f in peb.findings)


def test_over_an_address_space_of_a_memory_image():
    for name, mode in (("win10-22h2-19045.2965-x64", "4level"),
                       ("win7-sp1-7601.17514-x86", "pae"), ("winxp-sp3-2600.5512-x86", "32")):
        planted = build_process(name)
        memory, cr3, _ = planted.memory.to_image(mode)
        space = AddressSpace(memory, cr3=cr3, mode=mode)
        assert_matches(read_peb(space, planted.peb, name), planted)


def test_checks_explain_and_html():
    planted = build_process(LAYOUT, command_line="<script>alert(1)</script>")
    peb = read_peb(planted.memory, planted.peb, LAYOUT).with_checks(
        [Check("image path", "a", "b", False)])
    assert peb.to_dict()["checks"] == [{"name": "image path", "ours": "a", "theirs": "b",
                                        "agree": False, "rule": ""}]
    text = peb.explain()
    assert "_PEB.Ldr" in text and "+0x018" in text and "DISAGREE" in text
    assert "_RTL_USER_PROCESS_PARAMETERS.CommandLine +0x070" in text
    assert "Vergilius" in text
    html = peb._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "4 modules" in str(peb)


# -- command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    planted = build_process(LAYOUT)
    memory, cr3, builder = planted.memory.to_image("4level")
    path = tmp_path_factory.mktemp("peb") / "process.raw"
    path.write_bytes(builder.flat())
    return path, cr3, planted


def test_cli_peb_on_an_image(image_file):
    path, cr3, planted = image_file
    status, out, err = run("peb", path, "--cr3", "%x" % cr3, "--mode", "4level",
                           "--address", "%x" % planted.peb, "--layout", "win10-22h2-x64", "--json")
    assert status == 0, err
    document = json.loads(out)
    assert list(document) == PEB_KEYS
    assert document["command_line"] == planted.command_line
    assert [m["name"] for m in document["modules"]] == [m.name for m in planted.modules]
    status, out, _ = run("peb", path, "--cr3", "%x" % cr3, "--mode", "4level",
                         "--address", "%x" % planted.peb, "--layout", LAYOUT)
    assert status == 0 and planted.image_path in out and "InLoadOrderModuleList" in out
    status, out, _ = run("peb", path, "--cr3", "%x" % cr3, "--mode", "4level",
                         "--address", "%x" % planted.peb, "--layout", LAYOUT, "--format", "csv")
    assert status == 0 and out.splitlines()[0] == "base,size,entry_point,name,path,lists"


def test_cli_peb_errors(image_file):
    path, cr3, planted = image_file
    base = ["peb", path, "--cr3", "%x" % cr3, "--mode", "4level", "--address", "%x" % planted.peb]
    status, out, err = run(*base, "--layout", "win12-x64")
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "win12-x64" in err and "win10-22h2-19045.2965-x64" in err
    status, _, err = run(*base[:-1], "7fff00000000", "--layout", LAYOUT)
    assert status == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "_PEB at 0x7fff00000000 cannot be read" in err
    status, _, err = run("peb", path, "--layout", LAYOUT, "--mode", "4level")
    assert status == 2 and "--address" in err
    status, _, err = run("peb", path, "--address", "1000", "--layout", LAYOUT)
    assert status == 2 and "--cr3" in err
    status, _, err = run("peb", "--pid", "0")
    assert status == 2 and "--pid" in err
    status, _, err = run("peb", path, "--pid", "1")
    assert status == 2 and "not both" in err
    status, _, err = run("peb")
    assert status == 2


def test_cli_layouts():
    status, out, _ = run("layouts", "--json")
    assert status == 0
    document = json.loads(out)
    assert len(document) == 59
    assert {"name", "os", "arch", "nt_version"} <= set(document[0])
    status, out, _ = run("layouts", "--arch", "x86", "--format", "csv")
    rows = out.splitlines()
    assert status == 0 and rows[0].startswith("name,os,arch,nt_version")
    assert len(rows) == 1 + 27 and all(",x86," in r for r in rows[1:])
    status, out, _ = run("layouts")
    assert status == 0 and "win11-25h2-26200.6584-x64" in out and "README.md" in out


def test_cli_peb_paging_mode_defaults_to_the_layouts(image_file):
    """A raw image has no CPU state: as pslist/psscan/eprocess do, peb walks
    an x64 layout's process in 4-level paging (x64 Windows' only mode) when
    only --cr3 is given; --paging-mode names it explicitly."""
    path, cr3, planted = image_file
    for extra in ([], ["--paging-mode", "4level"]):
        status, out, err = run("peb", path, "--cr3", "%x" % cr3, *extra, "--address",
                               "%x" % planted.peb, "--layout", "win10-22h2-x64", "--json")
        assert status == 0, err
        assert json.loads(out)["command_line"] == planted.command_line


# -- the layout from the PEB's own version fields (issue 18, item 20) ------------------------

def _earliest(build, arch):
    """The shipped layout files of *build*, by name; the earliest revision."""
    from ksinspect.windows.layout_files import available_layouts
    return sorted(n for n in available_layouts()
                  if n.split("-")[-2].split(".")[0] == str(build) and n.endswith("-" + arch))[0]


def _with_version(peb_layout, version, wow64=False):
    planted = build_process(peb_layout, wow64=wow64)
    fields = dict(zip(("OSMajorVersion", "OSMinorVersion", "OSBuildNumber"), version))
    put(planted.memory, layout_json(peb_layout), "_PEB32" if wow64 else "_PEB", planted.peb,
        fields)
    return planted


@pytest.mark.parametrize("peb_layout, wow64, version, arch", [
    ("win10-22h2-19045.2965-x64", False, (10, 0, 19045), "x64"),
    ("win7-sp1-7601.17514-x86", False, (6, 1, 7601), "x86"),
    ("winxp-sp3-2600.5512-x86", False, (5, 1, 2600), "x86"),
    ("win10-22h2-19045.2965-x64", True, (10, 0, 19045), "x64"),     # _PEB32: the x64 layout
])
def test_choose_peb_layout_reads_the_version_fields(peb_layout, wow64, version, arch):
    from ksinspect.windows.peb import choose_peb_layout
    planted = _with_version(peb_layout, version, wow64)
    layout, note = choose_peb_layout(planted.memory, planted.peb, wow64=wow64)
    assert layout.name == _earliest(version[2], arch)
    assert layout.name in note and "%d.%d.%d" % version in note
    # the offsets the note names are the layout file's (x86 and _PEB32: +0xa4, x64: +0x118)
    where = layout_json(peb_layout)["structs"]["_PEB32" if wow64 else "_PEB"]["fields"]
    assert "+%#x/" % where["OSMajorVersion"]["offset"] in note


def test_choose_peb_layout_of_a_peb_without_a_version_says_give_a_layout():
    from ksinspect.windows.peb import choose_peb_layout
    planted = build_process(LAYOUT)                   # the builder leaves the version 0
    with pytest.raises(DecodeError, match="give a layout"):
        choose_peb_layout(planted.memory, planted.peb)


def test_cli_peb_through_page_tables_without_layout(tmp_path):
    planted = _with_version("win10-22h2-19045.2965-x64", (10, 0, 19045))
    memory, cr3, builder = planted.memory.to_image("4level")
    path = tmp_path / "process.raw"
    path.write_bytes(builder.flat())
    status, out, err = run("peb", path, "--cr3", "%x" % cr3, "--paging-mode", "4level",
                           "--address", "%x" % planted.peb, "--json")
    assert status == 0, err
    document = json.loads(out)
    assert document["layout"] == _earliest(19045, "x64")
    assert document["command_line"] == planted.command_line
    assert "10.0.19045" in err and document["layout"] in err
    status, out, err = run("peb", path, "--cr3", "%x" % cr3, "--address", "%x" % planted.peb)
    assert status == 2 and "--layout" in err and "--paging-mode" in err
