"""ksinspect.triage in this process: the record of each image, the checks it
runs, its bounds, and the ``triage`` command with ``--workers 0``.

Expected values come from outside ksinspect: QEMU's own ``info registers``
and ``info tlb`` of the shipped guests (parsed here by the conformance
test's parser), what the image builders planted (tests/builders/eprocess_image_builder.py,
tests/builders/pagetable_builder.py, written from the Windows layouts and the SDM),
and the broken-input corpus of tests/test_broken_inputs.py with the text
each case must produce.
"""
import io
import json
import os
import pickle
import re
import subprocess
import sys
import time

import pytest

from builders.eprocess_image_builder import standard_image
from builders.image_builder import build_elf_core, qemu_cpu_state
from builders.pagetable_builder import P, PS, RW, PageTableBuilder
from test_broken_inputs import CASES
from qemu_monitor import parse_info_tlb, read_text

from conftest import run_cli as cli
from ksinspect.table_source import read_table
from ksinspect.tables import decode_idt
from ksinspect.symbols import SymbolTable
from ksinspect.triage import (TriageFinding, TriageOptions, TriageRecord, summarize, triage,
                              triage_image)
from ksinspect.memory import open_image

DATA = os.path.join(os.path.dirname(__file__), "data")
QEMU = os.path.join(DATA, "qemu")
PROFILES = {"x86_64-4level": "4level", "x86_64-5level": "5level", "i386-pae": "pae",
            "i386-2level": "32"}
WIN10 = "win10-22h2-19045.2965-x64"


def guest(profile):
    return os.path.join(QEMU, profile, "core-trimmed.elf.xz")


def qemu_register(profile, name):
    """A register from QEMU's `info registers` text (``CR3=000000000487c000``)."""
    text = read_text(profile, "info-registers.txt")
    return int(re.search(r"\b%s=([0-9a-f]+)" % name, text).group(1), 16)


def qemu_table_register(profile, name):
    """(base, limit) of GDT= / IDT= in `info registers` ("GDT=     BASE LIMIT")."""
    text = read_text(profile, "info-registers.txt")
    base, limit = re.search(r"^%s=\s*([0-9a-f]+) ([0-9a-f]+)" % name, text, re.M).groups()
    return int(base, 16), int(limit, 16)


def errors_and_messages(record):
    """Every error string and finding message anywhere in a record."""
    texts = [record.error or ""] + [f.message for f in record.findings]
    for value in record.to_dict().values():
        if isinstance(value, dict) and "error" in value:
            texts.append(value["error"])
    return texts


@pytest.fixture(scope="module")
def guests():
    options = TriageOptions(symbols_dir=QEMU)
    return {profile: triage_image(guest(profile), options) for profile in PROFILES}


# -- the shipped guests, against QEMU -----------------------------------------------------

@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_cpu_state_paging_mode_and_cr3_as_qemu_reports_them(guests, profile):
    record = guests[profile]
    assert record.error is None
    assert record.cpu["paging_mode"] == PROFILES[profile]
    assert record.cpu["cr3"] == qemu_register(profile, "CR3")
    assert "CPU state" in record.cpu["how"]
    assert record.input["format"] == "elf-qemu" and record.input["compression"] == "xz"
    assert record.input["size"] == os.path.getsize(guest(profile))
    assert (record.gdt["base"], record.gdt["limit"]) == qemu_table_register(profile, "GDT")
    assert (record.idt["base"], record.idt["limit"]) == qemu_table_register(profile, "IDT")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_page_counts_and_rights_equal_qemu_info_tlb(guests, profile):
    """Leaf pages per size, supervisor W+X pages and user pages in the kernel
    half, counted from QEMU's `info tlb` (one line per present leaf entry)."""
    rows = parse_info_tlb(read_text(profile, "info-tlb.txt"))
    large = {"32": "4 MiB"}.get(PROFILES[profile], "2 MiB")
    big = sum(1 for _, _, flags in rows if flags[2] == "P")
    expected = {"4 KiB": len(rows) - big}
    if big:
        expected[large] = big
    paging = guests[profile].paging
    assert paging["pages"] == expected
    assert paging["complete"] and paging["reserved_skipped"] == 0
    kernel = 1 << 63 if profile.startswith("x86_64") else 0xC0000000
    wx = sum(1 for _, _, f in rows if f[8] == "W" and f[7] != "U" and f[0] != "X")
    user_kernel = sum(1 for va, _, f in rows if f[7] == "U" and va >= kernel)
    assert paging["wx_pages"] == wx and paging["user_kernel_pages"] == user_kernel
    codes = guests[profile].codes
    if profile == "i386-2level":     # 32-bit paging: no XD bit, so every writable page is X
        writable = sum(1 for _, _, f in rows if f[8] == "W" and f[7] != "U")
        assert wx == writable > 0 and "no-execute-disable" in codes and not paging["nxe"]
    else:
        assert wx == 0 and "kernel-wx-pages" not in codes and paging["nxe"]
    assert "user-kernel-mapping" not in codes


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_linux_from_its_kallsyms_and_idt_findings_keep_the_library_codes(guests, profile):
    record = guests[profile]
    symbols_file = os.path.join(QEMU, profile, "kallsyms.txt.xz")
    assert record.os["family"] == "linux" and symbols_file in record.os["evidence"]
    assert record.symbols["source"] == symbols_file
    # The same walk through the library, by hand: triage adds no finding of its own here.
    with open_image(guest(profile)) as memory:
        found = read_table(memory, "IDT")
        idt = decode_idt(found.data, found.mode, found.base, found.limit,
                         SymbolTable.from_system_map(symbols_file))
    expected = [(e.vector, f.code) for e in idt for f in e.findings]
    assert [(f.where["vector"], f.code) for f in record.findings if f.check == "idt"] == expected
    assert {code for _, code in expected} == {"handler-outside-text"}
    # README: vectors 20-31 point at the early exception stubs in the freed .init.text.
    assert {v for v, _ in expected} <= set(range(20, 32))


def test_without_symbols_the_os_is_unknown_and_no_handler_is_judged():
    record = triage_image(guest("x86_64-4level"))
    assert record.os["family"] is None and record.symbols is None
    assert record.idt["text_range"] is None
    assert "handler-outside-text" not in record.codes


def test_process_memory_samples_have_no_cpu_state_and_say_so():
    record = triage_image(os.path.join(DATA, "wine", "peb_self.lime.xz"))
    assert record.error is None and record.input["format"] == "lime"
    assert record.cpu is None and record.paging is None and record.gdt is None
    assert record.findings == ()


def test_hash_is_the_sha256_of_the_file_as_stored(tmp_path):
    import hashlib
    path = guest("i386-pae")
    record = triage_image(path, TriageOptions(hash=True))
    with open(path, "rb") as fh:
        assert record.input["sha256"] == hashlib.sha256(fh.read()).hexdigest()
    assert triage_image(path).input["sha256"] is None


# -- Windows: pslist against psscan -------------------------------------------------------

@pytest.fixture(scope="module")
def windows_images(tmp_path_factory):
    """A Windows 10 22H2 kernel space with csrss.exe (PID 356) unlinked (DKOM):
    as a raw image, and as an ELF core whose QEMU note carries its CR3."""
    builder, planted = standard_image(WIN10, "4level")
    builder.unlink(planted[2])
    folder = tmp_path_factory.mktemp("windows")
    raw = folder / "win10.raw"
    raw.write_bytes(builder.flat())
    core = folder / "win10-core.elf"
    state = qemu_cpu_state(cr=[0x80050033, 0, 0, builder.cr3, 0x6F0])
    core.write_bytes(build_elf_core(builder.kernel.runs(), qemu_state=state))
    return {"raw": str(raw), "core": str(core), "csrss": planted[2]}


def test_raw_windows_image_with_a_layout_finds_the_unlinked_process(windows_images):
    record = triage_image(windows_images["raw"], TriageOptions(layout="win10-22h2-x64"))
    csrss = windows_images["csrss"]
    assert record.error is None
    assert record.os["family"] == "windows" and record.os["build"] == 19045
    assert "System process" in record.cpu["how"] and record.cpu["paging_mode"] == "4level"
    w = record.windows
    assert w["layout"] == WIN10 and "as given" in w["layout_from"]
    assert w["kernel"]["name"] == "ntoskrnl.exe"
    assert (w["listed"], w["scanned"]) == (4, 5)
    assert w["unlinked"] == [{"pid": 356, "name": "csrss.exe", "physical": csrss.eprocess_pa}]
    unlinked = [f for f in record.findings if f.code == "process-unlinked"]
    assert len(unlinked) == 1 and unlinked[0].where == {"pid": 356,
                                                        "physical": csrss.eprocess_pa}


def test_psscan_cap_is_a_finding(windows_images):
    record = triage_image(windows_images["core"], TriageOptions(max_candidates=2))
    assert record.windows["scanned"] == 2
    capped = [f for f in record.findings if f.code == "scan-limit"]
    assert len(capped) == 1 and "max_candidates" in capped[0].message


def test_windows_core_gets_its_layout_from_the_kernels_build(windows_images):
    record = triage_image(windows_images["core"])
    assert record.os["family"] == "windows" and "NtBuildNumber 19045" in record.os["evidence"]
    assert record.windows["layout"] == WIN10
    assert "NtBuildNumber 19045" in record.windows["layout_from"]
    assert [u["pid"] for u in record.windows["unlinked"]] == [356]
    # The builder maps no GDT or IDT: those checks say why, the others ran.
    assert "error" in record.gdt and "error" in record.idt and record.paging["complete"]


def test_raw_image_without_a_layout_is_not_guessed(windows_images):
    record = triage_image(windows_images["raw"])
    assert record.error is None and record.cpu is None and record.windows is None
    assert record.os["family"] is None


# -- page-table findings on planted tables --------------------------------------------------

def planted_tables_core(tmp_path):
    """4-level tables (SDM §4.5) with one page of each kind the checks look for."""
    b = PageTableBuilder("4level")
    b.map(0xFFFF800000001000, 0x100000, writable=True, user=False, nx=False)     # W+X kernel
    b.map(0xFFFF800000002000, 0x101000, writable=True, user=False, nx=True)      # W, NX
    b.map(0xFFFFFFFF80000000, 0x102000, writable=False, user=False, nx=False)    # kernel text
    b.map(0xFFFF800000200000, 0x103000, writable=False, user=True, nx=True)      # user, kernel half
    b.map(0x400000, 0x104000, writable=True, user=True, nx=True)                 # user, user half
    b.map(0x40000000, 0x200000, size=2 << 20, writable=False, user=True, nx=False)
    # A PML4E with PS set: reserved in a PML4E (SDM Table 4-15), the walk skips it.
    b.write_entry(b.cr3 + 8 * 3, 0x105000 | P | RW | PS)
    path = tmp_path / "planted.elf"
    path.write_bytes(build_elf_core(b.runs(), qemu_state=qemu_cpu_state(
        cr=[0x80050033, 0, 0, b.cr3, 0x6F0])))
    return str(path)


def test_planted_pages_give_each_page_table_finding(tmp_path):
    record = triage_image(planted_tables_core(tmp_path))
    paging = record.paging
    assert paging["pages"] == {"4 KiB": 5, "2 MiB": 1}
    assert (paging["wx_pages"], paging["user_kernel_pages"], paging["reserved_skipped"]) == \
        (1, 1, 1)
    by_code = {f.code: f for f in record.findings if f.check == "paging"}
    assert set(by_code) == {"kernel-wx-pages", "user-kernel-mapping", "reserved-bits"}
    assert by_code["kernel-wx-pages"].where["listed"] == [[0xFFFF800000001000,
                                                          0xFFFF800000002000]]
    assert by_code["user-kernel-mapping"].where["listed"] == [[0xFFFF800000200000,
                                                              0xFFFF800000201000]]


# -- bounds: caps and the time limit ----------------------------------------------------------

def self_map_core(tmp_path):
    """A PML4 whose 512 entries all name itself: 2^36 pages of one frame."""
    b = PageTableBuilder("4level")
    for i in range(512):
        b.write_entry(b.cr3 + 8 * i, b.cr3 | P | RW)
    path = tmp_path / "self-map.elf"
    path.write_bytes(build_elf_core(b.runs(), qemu_state=qemu_cpu_state(
        cr=[0x80050033, 0, 0, b.cr3, 0x6F0])))
    return str(path)


def test_a_runaway_walk_stops_at_the_cap_with_a_finding(tmp_path):
    started = time.monotonic()
    record = triage_image(self_map_core(tmp_path), TriageOptions(max_ranges=1 << 14))
    assert time.monotonic() - started < 20
    assert record.error is None and not record.paging["complete"]
    limit = [f for f in record.findings if f.code == "walk-limit"]
    assert len(limit) == 1 and "max_ranges" in limit[0].message
    # An unfinished walk means no Windows kernel search (two bytes per mapped page).
    assert "no Windows kernel search" in record.os["note"]


def test_the_time_limit_stops_a_long_scan(tmp_path):
    """psscan over 1 GiB (sparse): the limit is checked after each 64 MiB chunk."""
    path = tmp_path / "big.raw"
    with open(path, "wb") as fh:
        fh.truncate(1 << 30)
    started = time.monotonic()
    record = triage_image(str(path), TriageOptions(layout="win10-22h2-x64", time_limit=0.05))
    assert time.monotonic() - started < 5
    assert "time limit of 0.05 s" in record.error and "psscan" in record.error
    assert record.input["format"] == "raw"      # what was done before stays in the record


def test_the_time_limit_stops_hashing(tmp_path):
    path = tmp_path / "big.raw"
    with open(path, "wb") as fh:
        fh.truncate(4 << 30)
    started = time.monotonic()
    record = triage_image(str(path), TriageOptions(hash=True, time_limit=0.2))
    assert time.monotonic() - started < 3
    assert "hashing" in record.error and record.input["sha256"] is None
    assert record.input["size"] == 4 << 30


# -- broken images -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken-triage")
    paths = {}
    for name, (data, _, _, _) in CASES.items():
        (folder / name).write_bytes(data)
        paths[name] = str(folder / name)
    return paths


def test_every_broken_image_gives_a_record_that_says_what_is_wrong(broken):
    records = {r.path: r for r in triage(broken.values())}
    assert len(records) == len(CASES)
    for name, (_, outcome, text, _) in CASES.items():
        record = records[broken[name]]
        texts = errors_and_messages(record)
        assert not any("internal error" in t for t in texts), (name, texts)
        assert all("\n" not in t for t in texts), name
        if outcome == "error":
            assert any(text in t for t in texts if t), (name, texts)
        else:
            assert record.error is None, (name, record.error)


# -- the record as a value ----------------------------------------------------------------------

def test_record_round_trips_through_dict_json_and_pickle(guests):
    record = guests["i386-pae"]
    again = TriageRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record and pickle.loads(pickle.dumps(record)) == record
    assert set(record.comparable()) == set(record.to_dict()) - {"seconds", "timings", "attempts",
                                                                "worker"}
    assert {"open", "input", "symbols", "paging", "gdt", "idt"} <= set(record.timings)
    assert sum(record.timings.values()) <= record.seconds


def test_summary_counts_images_by_finding_and_keeps_the_slowest_and_errors():
    f = TriageFinding("idt", "handler-outside-text", "m")
    records = [TriageRecord("/a", findings=(f, f), seconds=0.5),
               TriageRecord("/b", findings=(f,), seconds=2.0, attempts=2),
               TriageRecord("/c", error="/c: empty file", seconds=0.1)]
    s = summarize(records)
    assert (s.images, s.failed) == (3, 1)
    assert s.by_code == {"handler-outside-text": ["/a", "/b"]}
    assert s.slowest[0] == (2.0, "/b") and s.errors == [("/c", "/c: empty file")]
    assert s.retried == [(2, "/b")] and s.to_dict()["by_code"] == {"handler-outside-text": 2}


def test_an_image_given_twice_is_triaged_once(tmp_path):
    path = guest("i386-2level")
    records = list(triage([path, os.path.relpath(path), path]))
    assert [r.path for r in records] == [os.path.abspath(path)]


# -- the command ---------------------------------------------------------------------------------

def test_command_writes_json_lines_when_not_a_terminal_then_a_summary(guests, capsys):
    paths = [guest(p) for p in sorted(PROFILES)]
    status, out, err = cli("triage", *paths, "--symbols-dir", QEMU, "--workers", "0")
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    for line in lines:
        record = TriageRecord.from_dict(json.loads(line))
        profile = os.path.basename(os.path.dirname(record.path))
        assert record.comparable() == guests[profile].comparable()
    summary = capsys.readouterr().err       # the summary goes to stderr, not into the lines
    assert "Images by finding:" in summary and "handler-outside-text" in summary
    assert "4 images in this process" in summary


def test_command_formats_json_csv_and_table(tmp_path):
    path = guest("i386-pae")
    status, out, _ = cli("triage", path, "--workers", "0", "--format", "json", "--no-summary")
    assert status == 0 and [r["path"] for r in json.loads(out)] == [path]
    status, out, _ = cli("triage", path, "--workers", "0", "--format", "csv", "--no-summary")
    header, row = out.splitlines()
    assert header.startswith("path,format,size,os,paging_mode,cr3,findings,codes")
    assert row.startswith(path + ",elf-qemu,")
    status, out, _ = cli("triage", path, "--workers", "0", "--format", "table")
    assert status == 0 and "Slowest images:" in out and path in out


def test_command_reads_a_list_and_exits_1_when_an_image_fails(tmp_path):
    listing = tmp_path / "images.txt"
    missing = str(tmp_path / "missing.elf")
    listing.write_text("# fleet\n\n%s\n%s\n%s\n" % (guest("i386-2level"), missing,
                                                   guest("i386-2level")))
    status, out, err = cli("triage", "--list", str(listing), "--workers", "0")
    assert status == 1 and "Traceback" not in err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in records] == [guest("i386-2level"), missing]
    # The system's own words for the same call the opener makes (os.stat):
    # the C runtime's ENOENT text on Linux, the Windows error text on Windows.
    with pytest.raises(OSError) as opening:
        os.stat(missing)
    assert records[1]["error"] == "%s: cannot open: %s" % (missing, opening.value.strerror)
    assert err.splitlines()[-1] == ("ksinspect: error: 1 of 2 images could not be triaged "
                                    "(their records say why)")


@pytest.mark.parametrize("argv,text", [
    ((), "give IMAGE paths"),
    (("x", "--workers", "-1"), "--workers"),
    (("x", "--workers", "1", "--scheduler", "tcp://h:1"), "not allowed with"),
    (("x", "--time-limit", "0"), "--time-limit"),
    (("x", "--time-limit", "nan"), "--time-limit"),
    (("x", "--max-entries", "0"), "--max-entries"),
    (("x", "--symbols-dir", "/nonexistent-dir"), "--symbols-dir"),
    (("x", "--layout", "win99"), "--layout"),
    (("--list", "/nonexistent-list"), "--list"),
    (("--list", "/"), "a directory"),
])
def test_command_usage_errors_exit_2_in_one_line(argv, text):
    status, out, err = cli("triage", *argv)
    assert status == 2 and out == "" and len(err.splitlines()) == 1 and text in err


def test_progress_line_on_a_terminal_counts_done_failed_and_running(monkeypatch, tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    status, out, _ = cli("triage", guest("i386-pae"), str(tmp_path / "missing"), "--workers",
                         "0", "--no-summary")
    shown = terminal.getvalue()
    assert status == 1 and len(out.splitlines()) == 2
    assert "] 0/2 done, 0 failed, 0 running" in shown
    assert "] 2/2 done, 1 failed, 0 running" in shown
    assert shown.endswith("\r\033[K")               # the bar is gone at the end


def test_triage_format_default_leaves_the_other_commands_defaults_alone():
    """triage defaults to JSON lines off a terminal; the commands beside it keep table."""
    status, out, _ = cli("info", guest("i386-pae"))
    assert status == 0 and out.startswith("Image:")
    status, out, _ = cli("triage", guest("i386-pae"), "--workers", "0", "--no-summary")
    assert status == 0 and json.loads(out)["path"] == guest("i386-pae")
    status, out, _ = cli("triage", guest("i386-pae"), "--workers", "0", "--no-summary",
                         "--json")
    assert status == 0 and json.loads(out)[0]["path"] == guest("i386-pae")


def test_workers_0_runs_without_importing_dask():
    code = ("import sys, io\nfrom ksinspect.cli import main\n"
            "status = main(['triage', %r, '--workers', '0'], stream=io.StringIO(), "
            "errors=io.StringIO())\n"
            "print(status, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dask', 'distributed')))\n" % guest("i386-pae"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=os.path.dirname(__file__))
    assert done.stdout.split() == ["0", "[]"], done.stderr


# -- minidumps: the PEB checks (issue 16's reader) -------------------------------------------

def printed(name):
    with open(os.path.join(DATA, "minidump", name + ".json"), encoding="utf-8") as fh:
        return json.load(fh)["printed"]


def test_masquerading_minidump_gives_the_peb_findings():
    """What the program printed about itself: the spoofed strings it wrote into
    its PEB, the DLL it unlinked, and its real image (the module at its base)."""
    facts = printed("self-masquerade")
    record = triage_image(os.path.join(DATA, "minidump", "self-masquerade.dmp.xz"))
    assert record.error is None and record.input["format"] == "minidump"
    assert record.os["family"] == "windows" and record.os["release"] == "6.1.7601"
    dump = record.process_dump
    assert dump["peb"] == int(facts["peb"], 16)
    assert dump["image_path"] == facts["spoofed_image_path"]
    assert dump["command_line"] == facts["spoofed_command_line"]
    unlinked_base = int(facts["unlinked"].split()[0], 16)
    unlinked = [f for f in record.findings if f.code == "peb-finding"]
    assert len(unlinked) == 1 and "%#x" % unlinked_base in unlinked[0].message
    image = [f for f in record.findings if f.code == "peb-check" and "image path" in f.message]
    assert len(image) == 1 and "C:\\\\ksi\\\\minidump_self.exe" in image[0].message


def test_minidump_without_full_memory_says_the_teb_is_missing():
    record = triage_image(os.path.join(DATA, "minidump", "winedbg.dmp.xz"))
    assert record.error is None and record.os["family"] == "windows"
    assert "not in the dump" in record.process_dump["error"]


def test_a_compressed_kdump_gives_the_record_of_the_elf_core_of_the_same_snapshot():
    """tests/data/kdump/i386-pae: QEMU wrote the ELF core and the kdump-zlib of one
    stopped guest (its README): everything but the input section must agree."""
    folder = os.path.join(DATA, "kdump", "i386-pae")
    options = TriageOptions(symbols_dir=QEMU)
    elf = triage_image(os.path.join(folder, "core-trimmed.elf.xz"), options).comparable()
    for name in ("qemu-zlib.kdump.xz", "makedumpfile-lzo.kdump.xz"):
        kdump = triage_image(os.path.join(folder, name), options).comparable()
        assert kdump["input"]["format"] == "kdump"
        for key in ("cpu", "os", "gdt", "idt", "paging", "findings"):
            if key == "cpu":
                assert {k: v for k, v in kdump[key].items() if k != "how"} == \
                    {k: v for k, v in elf[key].items() if k != "how"}
            else:
                assert kdump[key] == elf[key], (name, key)
