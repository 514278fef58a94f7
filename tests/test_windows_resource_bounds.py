"""Resource bounds of the Windows walks: every walk that memory contents can
make long has a cap, and reaching it is a finding that says so.

* the process list (pslist ``max_entries``, CLI ``--max-processes``);
* each loader list (``read_peb(max_modules=)``, CLI ``--max-modules``);
* the environment block (``MAX_ENVIRONMENT`` bytes, and EnvironmentSize above it);
* psscan's candidates (``psscan(max_candidates=)``, CLI ``--max-candidates``):
  memory that repeats an EPROCESS gives one candidate per copy.

Process memory comes from tests/builders/windows_image_builder.py, kernel memory from
tests/builders/eprocess_image_builder.py (both written from the layout JSON files).
"""
import json
import time

import pytest

from builders.eprocess_image_builder import standard_image
from conftest import run_cli
from ksinspect.errors import DecodeError
from ksinspect.memory import open_image
from ksinspect.windows import load_layout
from ksinspect.windows.peb import MAX_ENVIRONMENT, read_environment, read_peb
from ksinspect.windows.pslist import pslist
from ksinspect.windows.psscan import MAX_CANDIDATES, psscan
from builders.windows_image_builder import VirtualMemory, build_process, layout_json, offset

KERNEL_LAYOUT = "win7-sp1-7601.17514-x64"
PEB_LAYOUT = "win10-22h2-19045.2965-x64"


def run(*argv):
    """The CLI, bounded in time, with the notes the library writes to sys.stderr."""
    return run_cli(*argv, guarded=True)


def test_process_list_cap():
    builder, planted = standard_image(KERNEL_LAYOUT, None)
    result = pslist(builder.memory(), load_layout(KERNEL_LAYOUT), cr3=builder.cr3,
                    max_entries=3, read_pebs=False)
    assert [e.process.pid for e in result] == [p.pid for p in planted[:3]]
    assert result.findings == ["the walk stopped after 3 processes (max_entries)"]


def test_loader_list_cap_per_list(tmp_path):
    planted = build_process(PEB_LAYOUT)
    # 4 modules in load and memory order, 3 in init order (not the exe).
    peb = read_peb(planted.memory, planted.peb, load_layout(PEB_LAYOUT), max_modules=3)
    assert [len(w.entries) for w in peb.lists] == [3, 3, 3]
    assert [f for f in peb.findings if "cap" in f] == [
        "%s: cap of 3 entries hit; walk stopped" % name for name in ("load", "memory")]
    _, cr3, builder = planted.memory.to_image("4level")
    path = tmp_path / "process.raw"
    path.write_bytes(builder.flat())
    status, out, err = run("peb", path, "--cr3", "%x" % cr3, "--mode", "4level", "--address",
                           "%x" % planted.peb, "--layout", PEB_LAYOUT, "--max-modules", "3")
    assert status == 0 and "Finding: load: cap of 3 entries hit; walk stopped" in out


def test_environment_without_an_end_stops_at_the_cap_quickly():
    """An environment block with no terminating empty string, running through
    more than MAX_ENVIRONMENT readable bytes: read up to the cap, with a
    finding, in linear time (it was quadratic: 17 s for 1 MiB)."""
    memory = VirtualMemory()
    base = 0x10000000
    memory.write(base, b"A\0" * (MAX_ENVIRONMENT // 2 + 0x2000))
    started = time.perf_counter()
    strings, findings = read_environment(memory, base)
    elapsed = time.perf_counter() - started
    assert strings == ["A" * (MAX_ENVIRONMENT // 2)]
    assert findings == ["environment block at %#x has no terminating empty string within "
                        "%#x bytes" % (base, MAX_ENVIRONMENT)]
    assert elapsed < 2, elapsed


def test_environment_size_above_the_cap_is_a_finding():
    memory = VirtualMemory()
    base = 0x10000000
    block = "A=1\0B=2\0\0".encode("utf-16-le")
    memory.write(base, block)
    strings, findings = read_environment(memory, base, size=MAX_ENVIRONMENT * 4)
    assert strings == ["A=1", "B=2"]
    assert findings == ["EnvironmentSize %#x is above the limit of %#x bytes"
                        % (MAX_ENVIRONMENT * 4, MAX_ENVIRONMENT)]


def test_environment_end_found_across_a_page_border():
    # The terminating empty string straddles two pages: the search of each
    # new page starts a little before it.
    memory = VirtualMemory()
    base = 0x10000FF0
    block = ("X" * 6 + "\0").encode("utf-16-le") + b"\0\0"   # ends at 0x10001002
    memory.write(base, block + b"Z" * 0x2000)
    strings, findings = read_environment(memory, base)
    assert strings == ["X" * 6] and findings == []


@pytest.fixture(scope="module")
def repeated_eprocess(tmp_path_factory):
    """A raw image of the same win7 x64 EPROCESS repeated back to back (16-byte pool
    alignment): every copy is a candidate."""
    builder, planted = standard_image(KERNEL_LAYOUT, None)
    raw = layout_json(KERNEL_LAYOUT)
    size = raw["structs"]["_EPROCESS"]["size"]
    record = builder.read_pa(planted[1].eprocess_pa, size)
    record += bytes(-len(record) % 16)
    copies = 300
    path = tmp_path_factory.mktemp("repeat") / "repeat.raw"
    path.write_bytes(record * copies)
    pid_at = offset(raw, "_EPROCESS", "UniqueProcessId")
    return path, len(record), copies, int.from_bytes(record[pid_at:pid_at + 8], "little")


def test_psscan_candidate_cap(repeated_eprocess):
    path, stride, copies, pid = repeated_eprocess
    layout = load_layout(KERNEL_LAYOUT)
    with open_image(str(path)) as memory:
        whole = psscan(memory, layout)
        assert len(whole) == copies and whole.findings == []
        assert [h.process.pid for h in whole] == [pid] * copies
        capped = psscan(memory, layout, max_candidates=100)
        assert [h.process.physical for h in capped] == [i * stride for i in range(100)]
        assert capped.findings == [
            "the scan stopped after 100 candidates (max_candidates): candidates from "
            "physical %#x on are not listed" % (100 * stride)]
        with pytest.raises(DecodeError):
            psscan(memory, layout, max_candidates=0)
    assert MAX_CANDIDATES == 1 << 16


def test_cli_psscan_candidate_cap(repeated_eprocess):
    path, stride, copies, pid = repeated_eprocess
    status, out, err = run("psscan", path, "--layout", KERNEL_LAYOUT, "--no-list", "--json",
                           "--max-candidates", "7")
    assert status == 0 and len(json.loads(out)) == 7
    assert "the scan stopped after 7 candidates" in err and "Traceback" not in err
    status, out, err = run("psscan", path, "--layout", KERNEL_LAYOUT, "--max-candidates", "0")
    assert status == 2 and err.count("\n") == 1 and "--max-candidates" in err
