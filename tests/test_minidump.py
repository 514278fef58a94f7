"""Windows minidumps: ksinspect.memory.minidump, ksinspect.windows.dump and the commands.

The fixtures (tests/data/minidump/, made by tools/make_minidump_fixture.py
under Wine 8) are real MiniDumpWriteDump dumps of tests/programs/minidump_self.c,
trimmed to the pages the tests read, and a real ``winedbg --minidump`` of
peb_self.c. Every expected value is what the program printed about itself
from Windows APIs (the JSON sidecars), never ksinspect's own output.
"""
import json
import lzma
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import run_cli as _run
from ksinspect.errors import InvalidAddressError, KsinspectError, MinidumpFormatError
from ksinspect.memory import open_image, open_image_bytes
from ksinspect.memory.minidump import StreamType, parse
from ksinspect.windows.context import Context
from ksinspect.windows.dump import (dump_of, dump_peb, dump_teb, dump_threads,
                                    exception_context)

DATA = os.path.join(os.path.dirname(__file__), "data", "minidump")


def _printed(stem):
    with open(os.path.join(DATA, stem + ".json")) as f:
        return json.load(f)["printed"]


def _path(stem):
    return os.path.join(DATA, stem + ".dmp.xz")


def _bytes(stem):
    with lzma.open(_path(stem)) as f:
        return f.read()


@pytest.fixture(scope="module", params=["self", "self-masquerade", "self-x86"])
def full(request):
    with open_image(_path(request.param)) as memory:
        yield request.param, memory, _printed(request.param)


def _h(text):
    return int(text, 16)


def test_streams_and_system_info(full):
    _stem, memory, printed = full
    assert memory.format == "minidump" and memory.virtual
    dump = dump_of(memory)
    names = [s.name for s in dump.streams]
    assert "ThreadListStream" in names and "Memory64ListStream" in names
    wine = [s for s in dump.streams if s.type == 0xFFF0]
    assert len(wine) == 1 and "unknown" in wine[0].name and not wine[0].known
    si = dump.system_info
    assert si.arch == ("x86" if _stem == "self-x86" else "x64")
    assert si.version == "6.1.7601"                            # Wine's default: Windows 7 SP1
    assert dump.misc_info.process_id == int(printed["pid"])


def test_threads_and_contexts_match_what_the_program_printed(full):
    _stem, memory, printed = full
    states = {s.thread_id: s for s in dump_threads(memory)}
    main_thread = states[int(printed["tid"])]
    worker = states[int(printed["worker_tid"])]
    assert main_thread.teb == _h(printed["teb"]) and worker.teb == _h(printed["worker_teb"])
    assert main_thread.exception and not worker.exception
    c = worker.context
    x86 = printed.get("arch") == "x86"
    assert c.wow64 == x86 and c.layout.size == (716 if x86 else 1232)
    for reg in (("Eip", "Esp", "Ebx", "Esi", "Edi", "Ebp") if x86 else
                ("Rip", "Rsp", "R12", "R13", "R14", "R15")):
        assert c[reg] == _h(printed["worker_" + reg.lower()]), reg
    start, end = (_h(x) for x in printed["worker_loop"].split())
    assert start <= c.instruction_pointer < end
    assert c.eflags == _h(printed["worker_eflags"])
    assert c.rflags.if_ and not c.rflags.tf      # IF set, no single-stepping (SDM §3.4.3)
    # 0x33 / 0x23: the 64-bit / 32-bit user code selectors, GDT index 6 / 4, RPL 3
    assert c.segments["SegCs"].raw == _h(printed["worker_segcs"]) == (0x23 if x86 else 0x33)
    assert c.segments["SegCs"].rpl == 3 and c.segments["SegSs"].raw == _h(printed["worker_segss"])
    # Wine's dbghelp asks for CONTEXT_FULL: the debug registers are not in the dump.
    assert "Dr7" not in c.registers and c.dr7 is None


@pytest.mark.parametrize("stem", ["self", "self-x86"])
def test_the_context_getthreadcontext_returned(stem):
    """The whole CONTEXT the program got from GetThreadContext(CONTEXT_ALL), after it
    set Dr0 and Dr7 = 0xd0001 with SetThreadContext (what issue 13's debugger decodes)."""
    printed = _printed(stem)
    x86 = stem == "self-x86"
    c = Context.from_bytes(bytes.fromhex(printed["worker_context"]), wow64=x86)
    # winnt.h: CONTEXT_ALL = CONTEXT_AMD64 | 0x1f; the i386 one = CONTEXT_i386 | 0x3f
    assert c.flags.raw == _h(printed["worker_context_flags"]) == (0x1003F if x86 else 0x10001F)
    assert c["Dr0"] == _h(printed["watched"]) == _h(printed["worker_dr0"])
    assert c["Dr7"] == _h(printed["worker_dr7"]) == 0xD0001
    slot = c.dr7.breakpoints[0]       # SDM §17.2.4: L0, R/W0 = 01 (write), LEN0 = 11 (4 bytes)
    assert slot.local and not slot.global_ and slot.condition.label == "write"
    assert slot.length == 4 and not any(b.enabled for b in c.dr7.breakpoints[1:])
    marker = "Ebx" if x86 else "R12"
    assert c[marker] == _h(printed["worker_" + marker.lower()])
    assert c.instruction_pointer == _h(printed["worker_eip" if x86 else "worker_rip"])
    assert "breakpoint address, DR0: local, write, 4 bytes" in c.explain()


def test_exception_stream(full):
    _stem, memory, printed = full
    e = dump_of(memory).exception
    assert e.code == _h(printed["exception_code"]) and e.thread_id == int(printed["exception_tid"])
    assert e.address == _h(printed["exception_address"])
    assert e.parameters == (0x1234, _h(printed["watched"]))     # RaiseException's arguments
    ctx = exception_context(memory)
    assert ctx.instruction_pointer == e.address


def test_modules_stream(full):
    stem, memory, printed = full
    stream = {m.base: m for m in dump_of(memory).modules}
    for line in printed["modules"]:
        base, size, _entry, path = line.split(" ", 3)
        m = stream[_h(base)]
        assert m.size == _h(size) and m.name.lower() == path.rsplit("\\", 1)[-1].lower()


def test_peb_from_the_dump(full):
    stem, memory, printed = full
    peb = dump_peb(memory)
    assert peb.address == _h(printed["peb"]) and peb.image_base == _h(printed["image_base"])
    assert any("SystemInfo" in n for n in peb.notes)
    image_check = [c for c in peb.checks if c.name.startswith("image path")][0]
    assert peb.layout.arch == ("x86" if stem == "self-x86" else "x64")
    if stem != "self-masquerade":
        assert peb.command_line == printed["command_line"]
        assert image_check.agree and not peb.findings
    else:
        assert peb.image_path == printed["spoofed_image_path"]
        assert peb.command_line == printed["spoofed_command_line"]
        assert not image_check.agree
        hidden_base = _h(printed["unlinked"].split()[0])
        hidden = [m for m in peb.modules if m.base == hidden_base][0]
        assert "load" not in hidden.lists
        assert any("unlinked" in f and "%#x" % hidden_base in f for f in peb.findings)
        stream_check = [c for c in peb.checks if "%#x" % hidden_base in c.name][0]
        assert not stream_check.agree and stream_check.theirs is None


def test_teb_and_read(full):
    _stem, memory, printed = full
    teb = dump_teb(memory, int(printed["worker_tid"]))
    assert teb.address == _h(printed["worker_teb"]) and teb.peb == _h(printed["peb"])
    assert teb.thread_id == int(printed["worker_tid"])
    assert memory.read(_h(printed["image_base"]), 2) == b"MZ"
    with pytest.raises(InvalidAddressError, match="virtual address 0x10"):
        memory.read(0x10, 4)


def test_winedbg_dump_without_full_memory():
    printed = _printed("winedbg")
    with open_image(_path("winedbg")) as memory:
        dump = dump_of(memory)
        assert any(s.type == StreamType.MEMORY_LIST for s in dump.streams)
        assert dump.misc_info.process_id == int(printed["pid"])
        states = dump_threads(memory)
        assert states[0].teb == _h(printed["teb"])
        assert all(s.context is not None for s in states)
        with pytest.raises(InvalidAddressError, match="not in the dump"):
            dump_peb(memory)


def test_commands():
    printed = _printed("self-masquerade")
    path = _path("self-masquerade")
    status, out, _ = _run("info", path, "--json")
    doc = json.loads(out)
    assert status == 0 and doc["system_info"]["version"] == "6.1.7601"
    assert doc["misc_info"]["process_id"] == int(printed["pid"])
    status, out, _ = _run("threads", path, "--json")
    rows = {t["thread_id"]: t for t in json.loads(out)}
    worker = rows[int(printed["worker_tid"])]["context"]
    assert worker["registers"]["R13"] == _h(printed["worker_r13"])
    assert worker["segments"]["SegCs"]["rpl"] == 3
    status, out, _ = _run("threads", path, "--thread", "0n" + printed["worker_tid"])
    assert status == 0 and "R15" in out and "1515151515151515" in out
    status, out, _ = _run("peb", path, "--json")
    doc = json.loads(out)
    assert status == 0 and doc["image_path"] == printed["spoofed_image_path"]
    assert any(not c["agree"] for c in doc["checks"])
    status, out, _ = _run("peb", path, "--address", printed["peb"], "--layout", "win7-sp1-x64",
                          "--json")                  # an explicit address reads the dump flat
    assert status == 0 and json.loads(out)["image_path"] == printed["spoofed_image_path"]
    status, out, _ = _run("teb", path, "--json")
    assert json.loads(out)["peb"] == _h(printed["peb"])
    status, out, _ = _run("modules", path, "--format", "csv")
    assert status == 0 and "minidump_self.exe" in out
    status, out, _ = _run("read", path, printed["image_base"], "2", "--json")
    assert json.loads(out)["data"] == "4d5a"
    status, _out, err = _run("vtop", path, "1000")
    assert status == 2 and "minidump" in err and "\n" == err[-1] and err.count("\n") == 1
    status, _out, err = _run("peb", _path("winedbg"))
    assert status == 1 and "not in the dump" in err and err.count("\n") == 1
    status, _out, err = _run("threads", _path("winedbg").replace("winedbg", "nonexistent"))
    assert status == 1 and err.count("\n") == 1


# -- bad input: one line each, never a crash --------------------------------------------

def _dir_entry(data, index):
    count, dir_rva = struct.unpack_from("<II", data, 8)
    return dir_rva + 12 * index


def _stream(data, kind):
    count, dir_rva = struct.unpack_from("<II", data, 8)
    for i in range(count):
        t, size, rva = struct.unpack_from("<III", data, dir_rva + 12 * i)
        if t == kind:
            return i, size, rva
    raise AssertionError(kind)


def _mutations():
    data = _bytes("self")
    out = {"truncated header": data[:20]}
    d = bytearray(data)
    struct.pack_into("<I", d, 8, 0x10000000)                  # NumberOfStreams huge
    out["directory past the end"] = bytes(d)
    i, size, rva = _stream(data, StreamType.MODULE_LIST)
    d = bytearray(data)
    struct.pack_into("<I", d, _dir_entry(data, i) + 8, len(data) - 10)
    out["stream past the end"] = bytes(d)
    d = bytearray(data)
    struct.pack_into("<II", d, _dir_entry(data, i) + 4, 0xFFFFFFFF, 0xFFFFFFFF)
    out["rva and size that overflow"] = bytes(d)
    i, size, rva = _stream(data, StreamType.THREAD_LIST)
    d = bytearray(data)
    struct.pack_into("<I", d, rva, 0xFFFFFFFF)               # 2^32 - 1 threads
    out["thread list with 2^32 entries"] = bytes(d)
    i, size, rva = _stream(data, StreamType.MEMORY64_LIST)
    d = bytearray(data)
    first = struct.unpack_from("<Q", d, rva + 16)[0]
    struct.pack_into("<Q", d, rva + 32, first)                # second range starts at the first
    out["overlapping memory ranges"] = bytes(d)
    d = bytearray(data)
    struct.pack_into("<Q", d, rva + 16, 0xFFFFFFFFFFFFF000)
    out["range past 2^64"] = bytes(d)
    d = bytearray(data)
    struct.pack_into("<Q", d, rva, 1 << 40)
    out["memory64 count past the stream"] = bytes(d)
    return out


MUTATIONS = _mutations()


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_broken_dumps_are_one_line(case, tmp_path):
    with pytest.raises(MinidumpFormatError) as info:
        open_image_bytes(MUTATIONS[case], name="bad.dmp")
    assert str(info.value).startswith("bad.dmp: ") and "\n" not in str(info.value)
    path = tmp_path / "bad.dmp"
    path.write_bytes(MUTATIONS[case])
    status, _out, err = _run("info", str(path))
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err


def test_context_shorter_than_its_flags():
    data = bytearray(_bytes("self"))
    i, size, rva = _stream(bytes(data), StreamType.THREAD_LIST)
    struct.pack_into("<I", data, rva + 4 + 40, 300)           # thread 0: ThreadContext.DataSize
    memory = open_image_bytes(bytes(data), name="short.dmp")
    state = dump_threads(memory)[0]
    assert state.context is None and "CONTEXT_FLOATING_POINT" in state.problem
    assert "CONTEXT_FLOATING_POINT" in str(state)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 0x2000), st.integers(0, 255)), min_size=1, max_size=8))
def test_random_corruption_never_crashes(edits):
    data = bytearray(_HEAD)
    for at, value in edits:
        if at < len(data):
            data[at] = value
    try:
        dump = parse(bytes(data), len(data), "fuzz.dmp")
    except MinidumpFormatError:
        return
    for t in dump.threads:
        assert t.context_rva + t.context_size <= len(data)
    for r in dump.ranges:
        assert r.rva + r.size <= len(data) and r.end <= 1 << 64


_HEAD = _bytes("self")
