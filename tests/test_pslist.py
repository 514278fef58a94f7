"""pslist: ActiveProcessLinks walks, the kernel image found with pefile, PEBs
read through each process's own DirectoryTableBase.

Images come from tests/builders/eprocess_image_builder.py; expected values are what
it planted (processes, PEB strings, modules, the list order, the kernel PE).
"""
import io
import json
import struct

import pefile
import pytest

from builders.eprocess_image_builder import (EprocessImageBuilder, Module, PebPlan, build_kernel_pe,
                                    filetime, standard_image)
from hang_guard import deadline
from builders.image_builder import build_elf_core, build_raw, qemu_cpu_state
from ksinspect.cli import main
from ksinspect.errors import DecodeError, KsinspectError
from ksinspect.memory import open_image_bytes
from ksinspect.paging import AddressSpace
from ksinspect.windows import load_layout
from ksinspect.windows import kernel as kernel_search
from ksinspect.windows.kernel import KernelNotFoundError, find_kernel, read_kernel_image
from ksinspect.windows.pslist import pslist, walk_processes
from conftest import run_cli  # noqa: E402  (tests/conftest.py)

# the process record, and every finding on that process ({code, message} each)
PROCESS_KEYS = {"pid", "ppid", "name", "eprocess", "dtb", "peb", "create_time", "exit_time",
                "wow64", "findings"}
BUILDS = [("winxp-sp3-2600.5512-x86", "32"), ("win7-sp1-7601.17514-x86", "pae"),
          ("win2003-sp2-3790.3959-x64", "4level"), ("win7-sp1-7601.17514-x64", "4level"),
          ("win10-22h2-19045.2965-x64", "4level"), ("win11-24h2-26100.1742-x64", "4level")]


run = run_cli


def space_of(builder):
    return AddressSpace(builder.memory(), cr3=builder.cr3, mode=builder.paging)


# -- the kernel image ------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["x86", "x64"])
def test_builder_pe_is_a_pe_for_pefile(arch):
    """The synthetic kernel is a valid PE: pefile (independent of ksinspect)
    reads the export directory the builder wrote."""
    base = 0x82A00000 if arch == "x86" else 0xFFFFF80002A00000
    pe_file, image, rva = build_kernel_pe(arch, base, "ntoskrnl.exe",
                                          {"PsInitialSystemProcess": 0x1234, "NtBuildNumber": 7})
    pe = pefile.PE(data=pe_file)
    assert pe.OPTIONAL_HEADER.ImageBase == base
    assert pe.FILE_HEADER.Machine == (0x14C if arch == "x86" else 0x8664)
    assert pe.DIRECTORY_ENTRY_EXPORT.name == b"ntoskrnl.exe"
    exports = {s.name: s.address for s in pe.DIRECTORY_ENTRY_EXPORT.symbols}
    assert exports == {b"NtBuildNumber": rva["NtBuildNumber"],
                       b"PsInitialSystemProcess": rva["PsInitialSystemProcess"]}
    assert pe.get_dword_at_rva(rva["PsInitialSystemProcess"]) == 0x1234


def test_kernel_found_by_scanning_the_kernel_half():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    kernel = find_kernel(space_of(builder), 8)
    assert kernel.base == builder.kernel_base and kernel.name == "ntoskrnl.exe"
    assert kernel.export_va("PsInitialSystemProcess") == builder.system_pointer_va


def test_kernel_not_found_says_what_to_give():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None, kernel_image=False)
    builder.link()
    with pytest.raises(KernelNotFoundError, match="--kernel-base"):
        find_kernel(space_of(builder), 8)


def _aliased_kernel_half(leaf, page):
    """4-level tables (SDM vol. 3A §4.5) whose PML4 slot 0x1f0 (the x64 system
    image space, fffff800`00000000) holds one PDPT, all of whose entries point
    to one PD, all of whose entries point to one PT, whose 512 entries are
    *leaf*: with leaf present, every 4 KiB page of the 512 GiB is mapped, to
    the same physical page *page*."""
    def table(entry):
        return struct.pack("<512Q", *([entry] * 512))
    pml4 = bytearray(4096)
    struct.pack_into("<Q", pml4, 0x1F0 * 8, 0x2000 | 3)
    runs = [(0x1000, bytes(pml4)), (0x2000, table(0x3000 | 3)), (0x3000, table(0x4000 | 3)),
            (0x4000, table(leaf)), (0x5000, page)]
    return AddressSpace(open_image_bytes(build_raw(runs)), cr3=0x1000, mode="4level")


MZ_ONLY = b"MZ" + bytes(4094)                   # e_lfanew 0: no PE\0\0 behind it


@pytest.mark.parametrize("leaf, page, reason", [
    (0x5000 | 3, bytes(4096), "stopped after looking at %d mapped pages"
     % kernel_search.MAX_PAGES_EXAMINED),
    (0x5000 | 3, MZ_ONLY, "stopped after %d pages starting with MZ" % kernel_search.MAX_CANDIDATES),
    (0x5000, bytes(4096), "stopped after reading %d paging entries"
     % kernel_search.MAX_WALK_ENTRIES),
])
def test_kernel_search_of_a_hostile_kernel_half_ends_in_one_line_naming_its_cap(leaf, page,
                                                                                reason):
    """512 GiB of mapped (or walkable) pages: the search ends, bounded, and the
    error says where it looked and which cap ended it."""
    space = _aliased_kernel_half(leaf, page)
    with deadline():
        with pytest.raises(KernelNotFoundError) as caught:
            find_kernel(space, 8)
    message = str(caught.value)
    assert "\n" not in message and reason in message, message
    assert "0xfffff80000000000-0xfffff88000000000" in message and "--kernel-base" in message


def test_kernel_search_looks_at_no_more_pages_than_its_cap(monkeypatch):
    space = _aliased_kernel_half(0x5000 | 3, bytes(4096))
    reads = []
    real_read = space.memory.read
    monkeypatch.setattr(space.memory, "read", lambda pa, n: reads.append(pa) or real_read(pa, n))
    monkeypatch.setattr(kernel_search, "MAX_PAGES_EXAMINED", 1000)
    with pytest.raises(KernelNotFoundError, match="after looking at 1000 mapped pages .3 MiB., "
                                                  "at 0xfffff800003e8000"):
        find_kernel(space, 8)
    assert len(reads) == 1000


def test_kernel_base_that_is_not_a_pe():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    with pytest.raises(DecodeError, match="no PE image"):
        read_kernel_image(space_of(builder), planted[0].eprocess)


# -- walks ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout_name,paging", BUILDS)
def test_walk_from_ps_initial_system_process(layout_name, paging):
    builder, planted = standard_image(layout_name, paging, wow64=True)
    result = pslist(builder.memory(), load_layout(layout_name), mode=paging)
    assert [e.process.pid for e in result] == [p.pid for p in planted]
    assert [e.process.address for e in result] == [p.eprocess for p in planted]
    assert result.findings == []
    assert result.head == builder.list_head_va                 # PsActiveProcessHead, skipped
    assert result.kernel.base == builder.kernel_base
    for entry, p in zip(result, planted):
        assert set(entry.to_dict()) == PROCESS_KEYS
        assert entry.errors == []
        if p.peb_plan is None:
            assert entry.peb is None and entry.command_line is None
            continue
        assert entry.peb.address == p.peb
        assert entry.peb.command_line == p.peb_plan.command_line
        assert entry.peb.image_path == p.peb_plan.image_path
        assert [(m.base, m.size, m.name, m.path) for m in entry.modules] == [
            (m.base, m.size, m.name, m.path) for m in p.peb_plan.modules]
        if p.peb32:
            assert entry.peb32.address == p.peb32
            assert entry.peb32.command_line == p.peb_plan.command_line
            assert entry.to_dict()["wow64"] == p.peb32


def test_cr3_comes_from_the_image_cpu_state():
    """A QEMU ELF core carries CR3 (and CR0/CR4/EFER for the mode)."""
    builder, planted = standard_image("win10-22h2-19045.2965-x64", None)
    state = qemu_cpu_state(cr=[0x80050033, 0, 0, builder.cr3, 0x6F8])
    core = build_elf_core(builder.kernel.runs(), qemu_state=state)
    memory = open_image_bytes(core)
    result = pslist(memory, load_layout("win10-22h2-x64"))
    assert [e.process.name for e in result] == [p.name for p in planted]
    assert result.cr3 == builder.cr3


def test_walk_from_a_given_eprocess_sees_the_head_once():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    result = pslist(builder.memory(), load_layout("win7-sp1-x64"), start=planted[2].eprocess,
                    cr3=builder.cr3)
    assert [e.process.pid for e in result] == [p.pid for p in planted[2:] + planted[:2]]
    assert result.findings == [] and result.head == builder.list_head_va


def test_loop_ends_the_walk_with_a_finding():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    links = load_layout("win7-sp1-x64").offset("_EPROCESS", "ActiveProcessLinks")
    builder.set_flink(planted[3], planted[1].eprocess + links)     # 3 -> 1: a loop
    result = pslist(builder.memory(), load_layout("win7-sp1-x64"), cr3=builder.cr3)
    assert [e.process.pid for e in result] == [p.pid for p in planted[:4]]
    assert len(result.findings) >= 1 and "loops" in result.findings[-1]


def test_link_into_unmapped_memory_ends_the_walk():
    builder, planted = standard_image("win10-22h2-19045.2965-x64", None)
    builder.set_flink(planted[2], 0xFFFFFA80DEAD0448)
    result = pslist(builder.memory(), load_layout("win10-22h2-x64"), cr3=builder.cr3)
    assert [e.process.pid for e in result] == [p.pid for p in planted[:3]]
    assert "cannot be followed" in result.findings[-1]
    assert "0xfffffa80dead0448" in result.findings[-1]


def test_link_to_memory_outside_the_image_ends_the_walk():
    builder, planted = standard_image("win7-sp1-7601.17514-x86", "pae")
    builder.kernel.map(0x86000000, 0x40000000, writable=True, user=False)  # pa not stored
    builder.set_flink(planted[1], 0x86000010)
    result = pslist(builder.memory(), load_layout("win7-sp1-x86"), cr3=builder.cr3, mode="pae")
    assert [e.process.pid for e in result] == [4, 268]
    assert "not in the image" in result.findings[-1]


def test_null_flink_and_bad_blink_are_findings():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    builder.set_flink(planted[3], 0)
    result = pslist(builder.memory(), load_layout("win7-sp1-x64"), cr3=builder.cr3)
    assert len(result) == 4 and "null" in result.findings[-1]
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    builder.set_flink(planted[1], builder._links_va(planted[3]))   # skip 2: 3's Blink is 2
    result = pslist(builder.memory(), load_layout("win7-sp1-x64"), cr3=builder.cr3)
    assert [e.process.pid for e in result] == [4, 268, 1504, 2216]
    assert any("Blink" in f for f in result.findings)


def test_the_walk_is_capped():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    result = pslist(builder.memory(), load_layout("win7-sp1-x64"), cr3=builder.cr3,
                    max_entries=2)
    assert len(result) == 2 and "max_entries" in result.findings[-1]


def test_a_second_non_process_node_stops_the_walk():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    # Point into the middle of the kernel image's .data: a LIST_ENTRY-looking
    # node that is not a process and not the list head.
    builder.set_flink(planted[2], builder.kernel_base + 0x1100)
    result = pslist(builder.memory(), load_layout("win7-sp1-x64"), cr3=builder.cr3)
    assert len(result) == 3
    assert result.findings and "walk stops" in result.findings[-1]


def test_peb_errors_are_notes_not_failures():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    # explorer's PEB pointer goes nowhere: the walk goes on, the entry carries the error.
    layout = load_layout("win7-sp1-x64")
    builder.write_pa(planted[3].eprocess_pa + layout.offset("_EPROCESS", "Peb"),
                     (0x7FF00000000).to_bytes(8, "little"))
    result = pslist(builder.memory(), layout, cr3=builder.cr3)
    assert len(result) == 5
    assert result[3].peb is None and "PEB at 0x7ff00000000" in result[3].errors[0]
    assert "Note: process 1504" in result.explain()


# -- the command --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pslist")
    made = {}
    for name, layout, paging in (("x64", "win10-22h2-19045.2965-x64", None),
                                 ("x86", "winxp-sp3-2600.5512-x86", "32")):
        builder, planted = standard_image(layout, paging, wow64=True)
        path = folder / (name + ".raw")
        path.write_bytes(builder.flat())
        made[name] = (str(path), builder, planted)
    return made


def test_cli_pslist_json_keys_are_exact(images):
    path, builder, planted = images["x64"]
    status, out, err = run("pslist", path, "--layout", "win10-22h2-x64", "--json")
    assert status == 0, err
    document = json.loads(out)
    assert [set(d) for d in document] == [PROCESS_KEYS] * len(planted)
    assert [d["pid"] for d in document] == [p.pid for p in planted]
    assert document[4]["wow64"] == planted[4].peb32
    assert document[1]["create_time"] == "2024-03-01T08:00:01Z"


def test_cli_pslist_table_x86_two_level(images):
    path, builder, planted = images["x86"]
    status, out, err = run("pslist", path, "--layout", "winxp-sp3", "--mode", "32")
    assert status == 0, err
    for p in planted:
        assert p.name in out
    assert '"C:\\Windows\\System32\\notepad.exe" --planted 2216' in out
    assert "PsActiveProcessHead" in out


def test_cli_pslist_start_and_kernel_base(images):
    path, builder, planted = images["x64"]
    status, out, err = run("pslist", path, "--layout", "win10-22h2-x64", "--cr3",
                           hex(builder.cr3), "--kernel-base", hex(builder.kernel_base),
                           "--format", "csv")
    assert status == 0, err
    assert out.splitlines()[0] == ",".join(
        ("pid", "ppid", "name", "eprocess", "dtb", "peb", "create_time", "exit_time", "wow64",
         "findings"))
    status, out, err = run("pslist", path, "--layout", "win10-22h2-x64", "--start",
                           hex(planted[3].eprocess), "--no-peb", "--format", "jsonl")
    assert status == 0, err
    assert [json.loads(line)["pid"] for line in out.splitlines()] == [1504, 2216, 4, 268, 356]


@pytest.mark.parametrize("argv,status,needle", [
    (("--layout", "win10-99h9-x64"), 2, "win10-99h9-x64"),
    (("--layout", "win10-22h2-x64", "--kernel-base", "fffffa8000c00000"), 1, "no PE image"),
    (("--layout", "win10-22h2-x64", "--max-processes", "0"), 2, "--max-processes"),
    (("--layout", "win10-22h2-x64", "--start", "fffffa80dead0000"), 1, "0xfffffa80dead0000"),
])
def test_cli_pslist_bad_input_is_one_line(images, argv, status, needle):
    code, out, err = run("pslist", images["x64"][0], *argv)
    assert code == status, err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_cli_pslist_on_memory_without_windows(tmp_path):
    path = tmp_path / "zeros.raw"
    path.write_bytes(bytes(1 << 16))
    code, out, err = run("pslist", str(path), "--layout", "win7-sp1-x64")
    assert code == 1 and err.count("\n") == 1 and "--cr3" in err


def test_cli_findings_go_to_stderr_for_json(tmp_path, capsys):
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    builder.set_flink(planted[2], 0xFFFFFA80DEAD0000)
    path = tmp_path / "broken.raw"
    path.write_bytes(builder.flat())
    code, out, err = run("pslist", str(path), "--layout", "win7-sp1-x64", "--json")
    assert code == 0
    assert len(json.loads(out)) == 3
    assert "cannot be followed" in capsys.readouterr().err


def test_walk_findings_have_codes_and_belong_to_the_process_they_were_made_at():
    """A loop (3 -> 1) is found following process 3's Flink: its record carries
    the finding, in the {code, message} shape of the GDT/IDT findings."""
    from ksinspect.tables import Finding as TableFinding
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    links = load_layout("win7-sp1-x64").offset("_EPROCESS", "ActiveProcessLinks")
    builder.set_flink(planted[3], planted[1].eprocess + links)
    result = pslist(builder.memory(), load_layout("win7-sp1-x64"), cr3=builder.cr3)
    assert [f.code for f in result.findings] == ["list-loop"]
    records = result.to_dict()
    assert [[f["code"] for f in r["findings"]] for r in records] == [[], [], [], ["list-loop"]]
    shape = set(TableFinding("x", "y").to_dict())
    assert set(records[3]["findings"][0]) == shape


def test_cli_pslist_json_carries_the_findings(tmp_path):
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    builder.set_flink(planted[2], 0xFFFFFA80DEAD0000)
    path = tmp_path / "broken.raw"
    path.write_bytes(builder.flat())
    code, out, err = run("pslist", str(path), "--layout", "win7-sp1-x64", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert [[f["code"] for f in d["findings"]] for d in document] == \
        [[], [], ["list-outside-memory"]]
    assert "cannot be followed" in document[2]["findings"][0]["message"]


def test_walk_processes_takes_memory_address_layout():
    """One argument order for the readers (issue 15, item 10); the old
    (space, layout, start) still works for one release, with a warning."""
    builder, planted = standard_image("win10-22h2-19045.2965-x64", None)
    space = AddressSpace(builder.memory(), cr3=builder.cr3, mode="4level")
    layout = load_layout("win10-22h2-19045.2965-x64")
    new = walk_processes(space, planted[1].eprocess, layout, read_pebs=False)
    with pytest.warns(DeprecationWarning, match=r"walk_processes\(memory, address, layout\)"):
        old = walk_processes(space, layout, planted[1].eprocess, read_pebs=False)
    assert [e.process.pid for e in new] == [e.process.pid for e in old] == \
        [p.pid for p in planted[1:] + planted[:1]]
