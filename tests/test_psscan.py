"""psscan: the C constraint scanner (csrc/ksi_scan.c) against a plain Python
reference, and the EPROCESS scan over synthetic images (unlinked processes
flagged, structures across chunk and run borders, hostile bytes).
"""
import io
import json
import os
import random
import struct

import pytest

from builders.eprocess_image_builder import filetime, standard_image
from ksinspect._native.scan import ALIGNED, CSTRING, MASKED_EQUAL, RANGE, ZERO_OK, ScanSpec
from ksinspect.cli import main
from ksinspect.errors import DecodeError
from ksinspect.memory import PhysicalMemory, Run
from ksinspect.paging import AddressSpace
from ksinspect.windows import load_layout
from ksinspect.windows.psscan import eprocess_constraints, psscan, scan_memory
from conftest import run_cli  # noqa: E402  (tests/conftest.py)


run = run_cli


# -- a reference scanner, written from the header's description -----------------------------

def reference_check(data, at, check):
    offset, length, kind, flags, a, b = check
    field = data[at + offset:at + offset + length]
    if kind == CSTRING:
        if 0 not in field:
            return False
        text = field[:field.index(0)]
        return len(text) >= a and all(0x20 <= c <= 0x7E for c in text)
    v = int.from_bytes(field, "little")
    if kind == MASKED_EQUAL:
        return v & b == a
    if kind == RANGE:
        return a <= v <= b
    return v & a == 0 and v <= b and (v != 0 or bool(flags & ZERO_OK))


def reference_scan(data, base, size, align, anchor, checks, start_limit=None):
    end = len(data) - size + 1
    if start_limit is not None:
        end = min(end, start_limit)
    hits = []
    for at in range(0, max(end, 0)):
        if (base + at) % align:
            continue
        word = int.from_bytes(data[at + anchor[0]:at + anchor[0] + 4], "little")
        if word & anchor[1] != anchor[2]:
            continue
        if all(reference_check(data, at, c) for c in checks):
            hits.append(base + at)
    return hits


CHECKS = [(8, 4, RANGE, 0, 0x1000, 0x2000), (12, 2, ALIGNED, 0, 3, 0x100),
          (14, 2, ALIGNED, ZERO_OK, 3, 0x100), (16, 8, MASKED_EQUAL, 0, 0x10, 0xF0),
          (24, 8, CSTRING, 0, 2, 0)]
ANCHOR = (0, 0x00FF00FF, 0x001B0003)


def planted_record(rng):
    rec = bytearray(32)
    struct.pack_into("<I", rec, 0, 0x001B0003 | rng.choice([0, 0x0100, 0x55000000]))
    struct.pack_into("<IHHQ", rec, 8, rng.randrange(0x1000, 0x2001), 4 * rng.randrange(1, 64),
                     4 * rng.randrange(0, 64), 0x10 | rng.randrange(0, 2) << 40)
    rec[24:32] = b"ab.exe\0\0"
    return rec


@pytest.mark.parametrize("seed", range(12))
def test_c_scan_agrees_with_the_reference(seed):
    rng = random.Random(seed)
    data = bytearray(rng.getrandbits(8) for _ in range(6000))
    for _ in range(40):                      # planted, some misaligned, some broken
        at = rng.randrange(0, len(data) - 32)
        rec = planted_record(rng)
        if rng.random() < 0.3:
            rec[rng.randrange(8, 32)] ^= 1 << rng.randrange(8)
        data[at:at + 32] = rec
    for _ in range(200):                     # anchor words alone
        at = rng.randrange(0, len(data) - 4)
        data[at:at + 4] = b"\x03\x00\x1b\x00"
    base = rng.choice([0, 4, 0x1000, 0x123458])
    align = rng.choice([1, 4, 8, 16])
    spec = ScanSpec(32, align, ANCHOR, CHECKS)
    expected = reference_scan(bytes(data), base, 32, align, ANCHOR, CHECKS)
    hits, anchors = spec.scan(bytes(data), base, len(data), capacity=3)   # resumes often
    assert hits == expected
    assert anchors >= len(hits)
    limit = rng.randrange(0, len(data))
    assert spec.scan(bytes(data), base, limit)[0] == reference_scan(
        bytes(data), base, 32, align, ANCHOR, CHECKS, limit)


def test_candidate_at_the_very_end_and_one_byte_short():
    rec = planted_record(random.Random(1))
    spec = ScanSpec(32, 8, ANCHOR, CHECKS)
    assert spec.scan(bytes(8) + rec, 0x100, 1 << 40)[0] == [0x108]
    assert spec.scan(bytes(8) + rec[:-1], 0x100, 1 << 40)[0] == []
    assert spec.match(rec) and not spec.match(rec[:-1])


@pytest.mark.parametrize("size,align,anchor,checks", [
    (32, 3, ANCHOR, CHECKS),                               # align not a power of two
    (32, 8192, ANCHOR, CHECKS),
    (32, 8, (30, 0xFF, 3), CHECKS),                         # anchor past the end
    (16, 8, ANCHOR, CHECKS),                                # a check past the end
    (32, 8, ANCHOR, [(0, 3, RANGE, 0, 0, 1)]),             # 3-byte number
    (32, 8, ANCHOR, [(0, 4, 99, 0, 0, 1)]),                # unknown kind
    (32, 8, ANCHOR, [(0, 4, CSTRING, 0, 4, 0)]),           # min chars >= length
])
def test_bad_specs_are_refused(size, align, anchor, checks):
    with pytest.raises(DecodeError):
        ScanSpec(size, align, anchor, checks)


# -- EPROCESS scans ------------------------------------------------------------------------

@pytest.mark.parametrize("layout_name,paging", [
    ("winxp-sp3-2600.5512-x86", "32"), ("win7-sp1-7601.17514-x86", "pae"),
    ("win7-sp1-7601.17514-x64", "4level"), ("win10-22h2-19045.2965-x64", "4level"),
    ("win11-24h2-26100.1742-x64", "4level")])
def test_unlinked_process_is_found_and_flagged(layout_name, paging):
    builder, planted = standard_image(layout_name, paging, wow64=True)
    builder.unlink(planted[2])                              # DKOM: csrss.exe
    memory = builder.memory()
    layout = load_layout(layout_name)
    space = AddressSpace(memory, cr3=builder.cr3, mode=paging)
    from ksinspect.windows.pslist import pslist
    listed = pslist(memory, layout, space=space, read_pebs=False)
    assert [e.process.pid for e in listed] == [4, 268, 1504, 2216]
    result = psscan(memory, layout, space=space, listed=listed.processes)
    assert [h.process.physical for h in result] == [p.eprocess_pa for p in planted]
    assert [h.process.address for h in result] == [p.eprocess for p in planted]
    assert [h.process.pid for h in result] == [p.pid for p in planted]
    assert [h.process.peb32 for h in result] == [p.peb32 or None for p in planted]
    assert [h.status for h in result] == ["listed", "listed", "UNLINKED", "listed", "listed"]
    assert [h.process.pid for h in result.unlinked] == [356]
    assert len(result.findings) == 1 and "356" in result.findings[0]


def test_exited_process_is_not_called_unlinked():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None)
    gone = builder.add_process("cmd.exe", 3004, 1504, create_time=filetime(2024, 3, 1, 9),
                               exit_time=filetime(2024, 3, 1, 10))
    builder.link([p for p in builder.processes if p is not gone])
    memory = builder.memory()
    layout = load_layout("win7-sp1-x64")
    space = AddressSpace(memory, cr3=builder.cr3, mode="4level")
    from ksinspect.windows.pslist import pslist
    result = psscan(memory, layout, space, listed=pslist(memory, layout, space=space).processes)
    statuses = {h.process.pid: h.status for h in result}
    assert statuses[3004] == "exited" and result.unlinked == []


def test_chunk_borders_and_run_borders_do_not_hide_a_process():
    builder, planted = standard_image("win10-22h2-19045.2965-x64", None)
    memory = builder.memory()
    layout = load_layout("win10-22h2-x64")
    spec, _ = eprocess_constraints(layout)
    expected = sorted(p.eprocess_pa for p in planted)
    for chunk in (4096, 4096 + 16, 1 << 20):
        assert sorted(scan_memory(memory, spec, chunk)[0]) == expected
    # Split every run in the middle of each EPROCESS and store the halves in
    # reverse file order: contiguous in physical memory, not in the file.
    data, runs = bytearray(), []
    cuts = sorted({p.eprocess_pa + 700 for p in planted})
    pieces = []
    for run in memory.runs:
        start, end = run.start, run.start + run.length
        points = [start] + [c for c in cuts if start < c < end] + [end]
        for a, b in zip(points, points[1:]):
            pieces.append((a, memory.read(a, b - a)))
    for pa, blob in reversed(pieces):
        runs.append(Run(pa, len(blob), len(data)))
        data += blob
    split = PhysicalMemory(bytes(data), sorted(runs, key=lambda r: r.start), "raw")
    assert sorted(scan_memory(split, spec, 4096)[0]) == expected
    result = psscan(split, layout)
    assert [h.process.name for h in result] == [p.name for p in planted]


def test_hostile_bytes_do_not_crash_the_scan():
    rng = random.Random(7)
    layout = load_layout("win7-sp1-x64")
    blob = bytearray(rng.getrandbits(8) for _ in range(1 << 16))
    for i in range(0, len(blob), 64):           # every aligned slot starts like a process
        blob[i] = 3
        blob[i + 2] = 0x58
    memory = PhysicalMemory.from_bytes(bytes(blob))
    result = psscan(memory, layout)
    size = eprocess_constraints(layout)[0].size
    assert result.anchors == sum(1 for i in range(0, len(blob) - size + 1, 16)
                                 if blob[i] == 3 and blob[i + 2] == 0x58)
    for hit in result:                            # whatever passed decodes, with anomalies
        assert hit.process.header_type == 3


def test_a_process_at_the_end_of_the_image_is_decoded_as_far_as_it_goes():
    builder, planted = standard_image("win7-sp1-7601.17514-x64", None, kernel_image=False)
    builder.link()
    memory = builder.memory()
    layout = load_layout("win7-sp1-x64")
    spec, _ = eprocess_constraints(layout)
    last = planted[-1]
    cut = last.eprocess_pa + spec.size               # every checked field, not the rest
    run = memory.run_at(last.eprocess_pa)
    short = PhysicalMemory(memory.read(run.start, cut - run.start), [
        Run(run.start, cut - run.start, 0)], "raw")
    result = psscan(short, layout)
    tail = [h for h in result if h.process.physical == last.eprocess_pa]
    assert tail and "of the %d EPROCESS bytes" % layout.sizeof("_EPROCESS") in \
        tail[0].process.anomalies[-1]


# -- the command --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dkom_image(tmp_path_factory):
    builder, planted = standard_image("win10-22h2-19045.2965-x64", None)
    builder.unlink(planted[3])
    path = tmp_path_factory.mktemp("psscan") / "dkom.raw"
    path.write_bytes(builder.flat())
    return str(path), builder, planted


def test_cli_psscan_json(dkom_image, capsys):
    path, builder, planted = dkom_image
    status, out, err = run("psscan", path, "--layout", "win10-22h2-x64", "--json")
    assert status == 0, err
    document = json.loads(out)
    assert [d["physical"] for d in document] == [p.eprocess_pa for p in planted]
    assert [d["status"] for d in document] == ["listed"] * 3 + ["UNLINKED", "listed"]
    assert "1504 explorer.exe" in capsys.readouterr().err


def test_cli_psscan_table_and_no_list(dkom_image):
    path, builder, planted = dkom_image
    status, out, err = run("psscan", path, "--layout", "win10-22h2-x64")
    assert status == 0 and "UNLINKED" in out and "Pcb.Header.Type == 3" in out
    status, out, err = run("psscan", path, "--layout", "win10-22h2-x64", "--no-list", "--json")
    assert status == 0 and {d["in_list"] for d in json.loads(out)} == {None}


def test_cli_psscan_bad_input(dkom_image, tmp_path):
    code, out, err = run("psscan", dkom_image[0], "--layout", "nt-4.0-x86")
    assert code == 2 and err.count("\n") == 1 and "nt-4.0-x86" in err
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    code, out, err = run("psscan", str(empty), "--layout", "win10-22h2-x64")
    assert code == 1 and err.count("\n") == 1 and "empty" in err


@pytest.mark.parametrize("seed", range(60))
def test_random_specs_are_refused_or_agree_with_the_reference(seed):
    """Any spec either fails validation (DecodeError) or scans any bytes the
    way the reference does; the C side never reads outside the buffer (the
    sanitizer test below checks that)."""
    rng = random.Random(1000 + seed)
    size = rng.randrange(0, 96)
    checks = []
    for _ in range(rng.randrange(0, 5)):
        kind = rng.choice([MASKED_EQUAL, RANGE, ALIGNED, CSTRING, 7])
        length = rng.choice([1, 2, 4, 8, 3, 16, 0])
        checks.append((rng.randrange(0, 96), length, kind, rng.randrange(0, 2),
                       rng.randrange(0, 8), rng.getrandbits(64)))
    align = rng.choice([1, 2, 8, 16, 6, 0])
    anchor = (rng.randrange(0, 40), rng.choice([0, 0xFF, 0xFFFF]), rng.choice([0, 3]))
    data = bytes(rng.choice([0, 3, 0x41, rng.getrandbits(8)]) for _ in range(rng.randrange(0, 400)))
    valid = (align in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
             and 4 <= size and anchor[0] + 4 <= size
             and all(c[0] + c[1] <= size and (
                 c[1] in (1, 2, 4, 8) if c[2] in (MASKED_EQUAL, RANGE, ALIGNED) else
                 c[2] == CSTRING and 1 <= c[1] <= 256 and c[4] < c[1]) for c in checks))
    if not valid:
        with pytest.raises(DecodeError):
            ScanSpec(size, align, anchor, checks)
        return
    spec = ScanSpec(size, align, anchor, checks)
    base = rng.randrange(0, 64)
    assert spec.scan(data, base, len(data), capacity=2)[0] == reference_scan(
        data, base, size, align, anchor, checks)


def test_c_scanner_takes_a_null_empty_buffer():
    # Found by tests/fuzz/fuzz_scan.c (regress-null-empty-buffer): with buf NULL
    # and length 0 (allowed by ksi_scan.h) the scan did pointer arithmetic on
    # NULL (undefined behaviour, reported by UBSan). The harness, built and
    # replayed by tests/test_fuzz.py, replaces the older standalone
    # tests/fuzz/ksi_scan_fuzz.c that used to be compiled here.
    from ksinspect._native import ffi, lib
    checks = ffi.new("ksi_scan_check[]", 1)
    spec = ffi.new("ksi_scan_spec *", (0x4001, 2, 0, 0xFF, 3, 0, checks))
    cursor = ffi.new("ksi_scan_cursor *")
    out = ffi.new("uint64_t[]", 4)
    count = ffi.new("size_t *", 99)
    assert lib.ksi_scan(ffi.NULL, 0, 0, 2**64 - 1, spec, cursor, out, 4, count) == lib.KSI_OK
    assert count[0] == 0 and cursor.done == 1 and cursor.anchors == 0
    assert lib.ksi_scan(ffi.NULL, 8, 0, 8, spec, cursor, out, 4, count) \
        == lib.KSI_ERR_NULL_POINTER


# -- one finding shape, and a table with columns (issue 18, item 15) ------------------------

def test_cli_psscan_table_has_columns(dkom_image):
    """Volatility's psscan columns that the scan fills, one row per candidate:
    Offset(P) in hex, the PIDs, the name, the FILETIMEs in ISO-8601 (the
    builder's 2024-03-01 08:00:0N), and whether the list reaches it."""
    path, builder, planted = dkom_image
    status, out, err = run("psscan", path, "--layout", "win10-22h2-x64")
    assert status == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Offset(P)"))
    assert lines[header].split() == ["Offset(P)", "PID", "PPID", "Name", "Create", "time",
                                     "Exit", "time", "In", "list"]
    rows = lines[header + 2:header + 2 + len(planted)]
    for row, p, second in zip(rows, planted, range(len(planted))):
        cells = row.split()
        assert cells[:4] == ["%#x" % p.eprocess_pa, str(p.pid), str(p.ppid), p.name]
        assert cells[4] == "2024-03-01T08:00:%02dZ" % second and cells[5] == "-"
        assert cells[6:] == (["no", "(UNLINKED)"] if p is planted[3] else ["yes"])


def test_cli_psscan_json_findings_are_code_and_message(dkom_image):
    path, builder, planted = dkom_image
    status, out, err = run("psscan", path, "--layout", "win10-22h2-x64", "--json")
    assert status == 0, err
    document = json.loads(out)
    assert [[f["code"] for f in d["findings"]] for d in document] == \
        [[], [], [], ["process-unlinked"], []]
    unlinked = document[3]["findings"][0]
    assert set(unlinked) == {"code", "message"} and "explorer.exe" in unlinked["message"]
    status, out, err = run("psscan", path, "--layout", "win10-22h2-x64", "--format", "csv")
    assert status == 0 and out.splitlines()[0].split(",")[-2:] == ["status", "findings"]
