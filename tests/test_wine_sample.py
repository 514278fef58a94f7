"""The shipped Wine samples (tests/data/wine): a real Windows x64 process's PEB
memory, decoded offline and compared with what the process printed about itself.

The samples are LiME files whose ranges hold the process's *virtual*
addresses (tools/capture_wine_process.py; tests/data/wine/README.md), so
``open_image(sample)`` is a flat reader: VA == image address. The expected
values come from the sidecar's ``printed_lines``: what tests/programs/peb_self.c
printed from Windows APIs (NtQueryInformationProcess, NtCurrentTeb,
GetModuleHandleW, GetCommandLineW, EnumProcessModules + GetModuleInformation
+ GetModuleFileNameExW), never from ksinspect; the arguments are the ones the
capture passed (README step 3); the Linux view of the images is the sidecar's
``/proc/PID/maps`` lines. No Wine is needed to run this file.
"""
import json
import os

import pytest

from conftest import run_cli as cli
from ksinspect.errors import InvalidAddressError
from ksinspect.live.windows_process import choose_layout, read_os_version
from ksinspect.live.wine import split_windows_command_line
from ksinspect.memory import open_image
from ksinspect.windows.checks import pe_header_checks
from ksinspect.windows.peb import read_peb, read_teb

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "wine")
# tests/data/wine/README.md, step 3: the arguments given to both runs.
ARGS = ["plain", "with space", 'with "quote"', "back\\slash"]


def printed(lines):
    """The program's key=value lines, parsed here (not the sidecar's own parse)."""
    values, modules = {}, []
    for line in lines:
        key, _, value = line.partition("=")
        if key == "module":
            base, size, entry, path = value.split(" ", 3)
            modules.append((int(base, 16), int(size, 16), int(entry, 16), path))
        else:
            values[key] = value
    return values, modules


class Sample:
    def __init__(self, name):
        with open(os.path.join(DATA, name + ".json")) as handle:
            self.sidecar = json.load(handle)
        self.path = os.path.join(DATA, name + ".lime.xz")
        self.memory = open_image(self.path)
        self.values, self.modules = printed(self.sidecar["printed_lines"])
        # The build, from the PEB's own version fields (Wine 8 says 6.1.7601, Windows 7 SP1).
        version = read_os_version(self.memory, self.hex("peb"), "x64")
        self.layout = choose_layout(*version, "x64")[0].name

    def hex(self, key):
        return int(self.values[key], 16)


@pytest.fixture(scope="module")
def normal():
    sample = Sample("peb_self")
    yield sample
    sample.memory.close()


@pytest.fixture(scope="module")
def masquerade():
    sample = Sample("peb_self-masquerade")
    yield sample
    sample.memory.close()


def test_samples_are_small_lime_files_of_whole_pages(normal, masquerade):
    for sample in (normal, masquerade):
        assert os.path.getsize(sample.path) < 64 * 1024
        assert sample.memory.format == "lime"
        for run in sample.memory.runs:
            assert run.start % 0x1000 == 0 and run.length % 0x1000 == 0


@pytest.mark.parametrize("which", ["normal", "masquerade"])
def test_teb_agrees_with_what_the_program_printed(request, which):
    sample = request.getfixturevalue(which)
    teb = read_teb(sample.memory, sample.hex("teb"), sample.layout)
    assert teb.self_pointer == sample.hex("teb")
    assert teb.peb == sample.hex("peb")
    assert teb.process_id == int(sample.values["pid"])
    assert teb.stack_limit < teb.stack_base
    assert teb.findings == ()


def test_peb_agrees_with_what_the_program_printed(normal):
    peb = read_peb(normal.memory, normal.hex("peb"), normal.layout)
    assert peb.image_base == normal.hex("image_base")
    assert peb.command_line == normal.values["command_line"]
    assert split_windows_command_line(peb.command_line)[1:] == ARGS
    assert peb.image_path == "C:\\ksinspect\\peb_self.exe" == normal.modules[0][3]
    assert peb.current_directory == "C:\\ksinspect\\"
    assert "WINEDEBUG=-all" in peb.environment       # the capture's environment
    assert not peb.being_debugged
    load_order = [(m.base, m.size, m.entry_point, m.path) for m in peb.modules
                  if "load" in m.lists]
    assert load_order == normal.modules              # EnumProcessModules walks load order
    assert peb.findings == ()
    assert all(check.agree for check in pe_header_checks(normal.memory, peb.modules,
                                                         peb.image_base))


def test_the_three_lists_hold_every_module_but_the_exe_initialises_nothing(normal):
    peb = read_peb(normal.memory, normal.hex("peb"), normal.layout)
    for module in peb.modules:
        expected = ("load", "memory") if module.base == peb.image_base else \
            ("load", "memory", "init")
        assert module.lists == expected, module.name


def test_masquerade_spoofs_the_parameters_and_hides_a_module(masquerade):
    peb = read_peb(masquerade.memory, masquerade.hex("peb"), masquerade.layout)
    # The PEB says what the program wrote into it ...
    assert peb.image_path == masquerade.values["spoofed_image_path"]
    assert peb.command_line == masquerade.values["spoofed_command_line"]
    # ... and no longer what Windows gave it (GetCommandLineW keeps its own copy).
    assert peb.command_line != masquerade.values["command_line"]
    assert split_windows_command_line(masquerade.values["command_line"])[1:] == \
        ["--masquerade"] + ARGS
    hidden_base, _, hidden_path = masquerade.values["unlinked"].partition(" ")
    hidden_base = int(hidden_base, 16)
    hidden = next(m for m in peb.modules if m.base == hidden_base)
    assert hidden.path == hidden_path
    assert hidden.lists == ("memory", "init")
    assert [f for f in peb.findings if "unlinked" in f] == [
        "module version.dll (entry %#x, base %#x) is in the memory/init lists but not in the "
        "load-order list: unlinked" % (hidden.entry, hidden_base)]
    load_order = [(m.base, m.size, m.entry_point, m.path) for m in peb.modules
                  if "load" in m.lists]
    assert load_order == masquerade.modules
    assert hidden_base not in [base for base, _, _, _ in masquerade.modules]


def test_masquerade_disagrees_with_the_linux_view_of_the_images(masquerade):
    """The sidecar's /proc/PID/maps lines: the file mapped at ImageBaseAddress
    is peb_self.exe, not the spoofed svchost.exe; and every private image
    mapping at file offset 0 but one is on the load-order list."""
    peb = read_peb(masquerade.memory, masquerade.hex("peb"), masquerade.layout)
    starts = {}
    for line in masquerade.sidecar["maps_of_images"]:
        fields = line.split(None, 5)
        if fields[1][3] == "p" and int(fields[2], 16) == 0:
            starts[int(fields[0].split("-")[0], 16)] = fields[5].strip()
    assert os.path.basename(starts[peb.image_base]) == "peb_self.exe"
    assert not peb.image_path.lower().endswith("peb_self.exe")
    listed = {m.base for m in peb.modules if "load" in m.lists}
    assert set(starts) - listed == {int(masquerade.values["unlinked"].split()[0], 16)}


def test_a_page_outside_the_sample_is_unmapped(normal):
    with pytest.raises(InvalidAddressError):
        normal.memory.read(normal.hex("image_base") + 0x1000, 8)   # only the header page


def test_cli_peb_flat(normal, masquerade):
    status, out, err = cli("peb", normal.path, "--flat", "--address", normal.values["peb"],
                           "--layout", normal.layout, "--json")
    assert status == 0, err
    document = json.loads(out)
    assert document["address"] == normal.hex("peb")
    assert document["command_line"] == normal.values["command_line"]
    assert [(m["base"], m["size"], m["entry_point"], m["path"])
            for m in document["modules"]] == normal.modules
    assert document["findings"] == []
    status, out, err = cli("peb", masquerade.path, "--flat", "--address",
                           masquerade.values["peb"], "--layout", masquerade.layout)
    assert status == 0, err
    assert "Finding: module version.dll" in out and "unlinked" in out
    assert repr(masquerade.values["spoofed_command_line"]) in out     # shown as a repr


def test_cli_peb_table_lists_each_module_in_the_module_columns(normal):
    """The table's module rows (views.columns.MODULE_COLUMNS): base, size and
    entry point in hex and the path, as the program printed them, and the
    lists column marks the .exe as on no initialisation-order list."""
    status, out, err = cli("peb", normal.path, "--flat", "--address", normal.values["peb"],
                           "--layout", normal.layout)
    assert status == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines)
                  if line.split() == ["base", "size", "entry", "point", "lists", "path"])
    assert set(lines[header + 1].split()) <= {"-" * n for n in range(1, 80)}
    rows = [line.split(None, 4) for line in lines[header + 2:header + 2 + len(normal.modules)]]
    assert [(int(b, 16), int(s, 16), int(e, 16), p) for b, s, e, _, p in rows] == normal.modules
    assert [r[3] for r in rows] == ["LM-"] + ["LMI"] * (len(normal.modules) - 1)


def test_cli_peb_flat_bad_usage_and_bad_data(normal, tmp_path):
    status, out, err = cli("peb", normal.path, "--flat", "--cr3", "1000", "--address",
                           normal.values["peb"], "--layout", normal.layout)
    assert status == 2 and "--flat" in err and err.count("\n") == 1
    status, out, err = cli("peb", normal.path, "--address", normal.values["peb"],
                           "--layout", normal.layout)
    assert status == 2 and "--flat" in err
    status, out, err = cli("peb", normal.path, "--flat", "--address", "0x10000",
                           "--layout", normal.layout)
    assert status == 1 and "0x10000" in err and err.count("\n") == 1
    truncated = tmp_path / "cut.lime"
    import lzma
    with lzma.open(normal.path) as handle:
        truncated.write_bytes(handle.read()[:5000])
    status, out, err = cli("peb", str(truncated), "--flat", "--address", normal.values["peb"],
                           "--layout", normal.layout)
    assert status == 1 and "cut.lime" in err and err.count("\n") == 1


def test_capture_tool_rounds_to_pages_and_writes_lime_that_reads_back():
    """tools/capture_wine_process.py's recording and LiME writing, on a fake process."""
    import importlib.util
    from ksinspect.memory import open_image_bytes
    tool = os.path.join(os.path.dirname(DATA), "..", "..", "tools", "capture_wine_process.py")
    spec = importlib.util.spec_from_file_location("capture_wine_process", tool)
    capture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(capture)

    class Fake:
        def read(self, address, size):
            return bytes((address + i) * 7 % 251 for i in range(size))

    recorder = capture.RecordingMemory(Fake())
    recorder.read(0x7ff0_0ffe, 4)          # straddles two pages
    recorder.read(0x1_4000_0010, 0x20)
    recorder.read(0x7ff0_2000, 0)          # nothing read: no page
    pages = capture.pages_of(recorder.touched)
    assert pages == [0x7ff0_0000, 0x7ff0_1000, 0x1_4000_0000]
    ranges = capture.ranges_of(pages)
    assert ranges == [(0x7ff0_0000, 0x7ff0_2000), (0x1_4000_0000, 0x1_4000_1000)]
    image = open_image_bytes(capture.lime_bytes(Fake(), ranges))
    assert image.format == "lime"
    assert [(r.start, r.end) for r in image.runs] == ranges
    assert image.read(0x7ff0_0ffe, 4) == Fake().read(0x7ff0_0ffe, 4)
    with pytest.raises(InvalidAddressError):
        image.read(0x7ff0_2000, 1)


# -- peb/teb --flat without --layout; list membership; the teb command (issue 18) ---------------

def _earliest_7601_layout(arch="x64"):
    """Wine 8 says Windows 7 SP1, 6.1.7601 (README step 4): the layout files of
    that build, named by their release, build and revision, sorted; the earliest."""
    from ksinspect.windows.layout_files import available_layouts
    return sorted(n for n in available_layouts()
                  if n.startswith("win7-sp1-7601.") and n.endswith("-" + arch))[0]


def _notes(err):
    return [line for line in err.splitlines() if line.startswith("ksinspect: note: ")]


def test_cli_peb_flat_chooses_the_layout_from_the_pebs_version_fields(normal):
    expected = _earliest_7601_layout()
    status, out, err = cli("peb", normal.path, "--flat", "--address", normal.values["peb"],
                           "--json")
    assert status == 0, err
    document = json.loads(out)
    assert document["layout"] == expected and document["address"] == normal.hex("peb")
    assert [(m["base"], m["size"], m["entry_point"], m["path"])
            for m in document["modules"]] == normal.modules
    # the note names the layout and why: the version fields, at the layout files' offsets
    (note,) = [n for n in _notes(err) if expected in n]
    assert "6.1.7601" in note and "OSMajorVersion" in note and "+0x118/+0x11c/+0x120" in note
    status, out, err = cli("peb", normal.path, "--flat", "--address", normal.values["peb"])
    assert status == 0 and "Note: layout %s chosen from the PEB's own version" % expected in out


def test_cli_peb_json_keeps_each_modules_loader_lists(masquerade):
    """EnumProcessModules (the printed modules) walks InLoadOrderModuleList:
    each is on the load list; version.dll was unlinked from that list only
    (tests/data/wine/README.md step 3); the main image is on no
    initialisation-order list (the loader initialises DLLs only)."""
    status, out, err = cli("peb", masquerade.path, "--flat", "--address",
                           masquerade.values["peb"], "--json")
    assert status == 0, err
    document = json.loads(out)
    lists = {m["base"]: m["lists"] for m in document["modules"]}
    for base, _size, _entry, _path in masquerade.modules:
        assert "load" in lists[base]
    assert lists[masquerade.hex("image_base")] == ["load", "memory"]
    unlinked = int(masquerade.values["unlinked"].split()[0], 16)
    assert lists[unlinked] == ["memory", "init"]
    assert [f["code"] for f in document["findings"]] == ["module-unlinked"]
    assert set(document["findings"][0]) == {"code", "message"}
    status, out, err = cli("peb", masquerade.path, "--flat", "--address",
                           masquerade.values["peb"], "--format", "csv")
    rows = out.splitlines()
    assert status == 0 and rows[0] == "base,size,entry_point,name,path,lists"
    assert any(row.startswith("%#x," % unlinked) and row.endswith(",memory;init")
               for row in rows)


@pytest.mark.parametrize("layout", [None, "win7-sp1-x64"])
def test_cli_teb_flat_agrees_with_what_the_program_printed(normal, layout):
    argv = ["teb", normal.path, "--flat", "--address", normal.values["teb"], "--json"]
    status, out, err = cli(*argv + (["--layout", layout] if layout else []))
    assert status == 0, err
    document = json.loads(out)
    assert document["address"] == document["self"] == normal.hex("teb")
    assert document["peb"] == normal.hex("peb")
    assert document["process_id"] == int(normal.values["pid"])
    assert document["structure"] == "_TEB" and document["findings"] == []
    assert document["layout"] == _earliest_7601_layout()
    assert any(document["layout"] in n for n in _notes(err))
    if layout is None:
        assert any("ProcessEnvironmentBlock" in n for n in _notes(err))


def test_cli_teb_usage(normal):
    status, out, err = cli("teb", normal.path, "--flat", "--address", normal.values["teb"],
                           "--tid", "0n36")
    assert status == 2 and "--thread" in err and err.count("\n") == 1
    status, out, err = cli("teb", normal.path, "--flat")
    assert status == 2 and "--address" in err
    status, out, err = cli("teb", "--pid", "4242", "--address", "1000")
    assert status == 2 and "not both" in err
    status, out, err = cli("teb", normal.path, "--address", normal.values["teb"])
    assert status == 2 and "--flat" in err and "--layout" in err
    status, out, err = cli("teb", normal.path, "--flat", "--address", "0x10000")
    assert status == 1 and err.count("\n") == 1


def test_cli_teb_of_a_32bit_process_chooses_the_x86_layout():
    """The 32-bit minidump (tests/data/minidump, a 32-bit program under Wine,
    which says 6.1.7601): its TEB at the address the program printed
    (NtCurrentTeb), read as the dump's virtual memory without --layout:
    NtTib.Self holds the TEB's address at the x86 offset (+0x18 in the x86
    layout files), so the x86 layout of 7601 is chosen from the PEB it points to."""
    root = os.path.join(os.path.dirname(DATA), "minidump")
    with open(os.path.join(root, "self-x86.json")) as handle:
        said = json.load(handle)["printed"]
    status, out, err = cli("teb", os.path.join(root, "self-x86.dmp.xz"), "--address",
                           said["teb"], "--json")
    assert status == 0, err
    document = json.loads(out)
    assert (document["address"], document["peb"], document["process_id"]) == (
        int(said["teb"], 16), int(said["peb"], 16), int(said["pid"]))
    expected = _earliest_7601_layout("x86")
    assert document["layout"] == expected and any(expected in n and "x86 offsets" in n
                                                  for n in _notes(err))
