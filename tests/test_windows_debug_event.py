"""The pure parts of the Win32 debugger, on any system: DEBUG_EVENT and
MEMORY_BASIC_INFORMATION decoded from bytes, PAGE_* names, COFF symbols.

Expected values: the structure offsets as mingw-w64's Windows headers lay
them out (tests/programs/win_offsets.c prints offsetof/sizeof, run under
Wine: skipped without it), the member offsets of Microsoft's documentation
written inline otherwise, binutils' x86_64-w64-mingw32-nm for the COFF
symbols.
"""
import os
import shutil
import struct
import subprocess

import pytest

import wine_programs
from ksinspect.errors import DecodeError, TruncatedDataError
from ksinspect.live import win32_api
from ksinspect.windows import memory_info as mi
from ksinspect.windows.debug_event import DebugEvent, DebugEventCode, exception_name
from ksinspect.windows.pe_symbols import coff_symbols

HERE = os.path.dirname(os.path.abspath(__file__))


def _event(code, pid, tid, union=b""):
    data = bytearray(176)
    struct.pack_into("<III", data, 0, code, pid, tid)
    data[16:16 + len(union)] = union
    return bytes(data)


class Memory:
    """A fake debuggee: read(address, size) over a dict of blobs."""

    def __init__(self, blobs):
        self.blobs = blobs

    def read(self, address, size):
        for base, blob in self.blobs.items():
            if base <= address and address + size <= base + len(blob):
                return blob[address - base:address - base + size]
        raise OSError("unreadable %#x" % address)


def test_exception_event_guard_page_with_its_parameters():
    # EXCEPTION_RECORD: Code +0, Flags +4, Record +8, Address +16, Count +24, Info +32;
    # dwFirstChance +152 (minwinbase.h, x64).
    union = bytearray(160)
    struct.pack_into("<IIQQI", union, 0, 0x80000001, 0, 0, 0x14000182C, 2)
    struct.pack_into("<QQ", union, 32, 1, 0x14000E06C)
    struct.pack_into("<I", union, 152, 1)
    event = DebugEvent.decode(_event(1, 0x20, 0x24, bytes(union)))
    assert event.name == "EXCEPTION_DEBUG_EVENT" and (event.pid, event.tid) == (0x20, 0x24)
    info = event.info
    assert info.name == "STATUS_GUARD_PAGE_VIOLATION" and info.first_chance
    assert (info.access, info.data_address, info.address) == ("write", 0x14000E06C, 0x14000182C)
    assert "write of 0x14000e06c" in str(event)
    text = event.explain()
    assert "ExceptionInformation[0]" in text and "dwFirstChance" in text and "+0x98" in text
    assert event.to_dict()["info"]["parameters"] == [1, 0x14000E06C]


@pytest.mark.parametrize("code, name", [(0x80000003, "EXCEPTION_BREAKPOINT"),
                                        (0x80000004, "EXCEPTION_SINGLE_STEP"),
                                        (0xC0000005, "EXCEPTION_ACCESS_VIOLATION"),
                                        (0x40010005, "DBG_CONTROL_C"),
                                        (0x12345678, "exception 0x12345678")])
def test_exception_names(code, name):
    assert exception_name(code) == name


def test_create_process_follows_the_image_name_pointer():
    # hFile +0, hProcess +8, hThread +16, lpBaseOfImage +24, lpThreadLocalBase +40,
    # lpStartAddress +48, lpImageName +56, fUnicode +64.
    union = bytearray(72)
    struct.pack_into("<QQQQIIQQQH", union, 0, 0x10, 0x14, 0x18, 0x140000000, 0, 0,
                     0x67FE0000, 0x1400014D0, 0x5000, 1)
    memory = Memory({0x5000: struct.pack("<Q", 0x6000),
                     0x6000: "C:\\w\u00e9\\prog.exe\0".encode("utf-16-le") + b"\xff" * 64})
    event = DebugEvent.decode(_event(3, 1, 2, bytes(union)), memory.read)
    info = event.info
    assert (info.image_base, info.start_address, info.thread_local_base) == (
        0x140000000, 0x1400014D0, 0x67FE0000)
    assert info.image_name == "C:\\w\u00e9\\prog.exe" and info.unicode
    # A NULL pointer, or a pointer to NULL, is allowed ("the debugger should be prepared").
    assert DebugEvent.decode(_event(3, 1, 2, bytes(union)), Memory({}).read).info.image_name \
        is None


def test_output_debug_string_ansi_and_unicode_and_hostile_text():
    text = b"bell\x07 and \x1b[2J\0"
    union = struct.pack("<QHH", 0x7000, 0, len(text))
    event = DebugEvent.decode(_event(8, 1, 2, union), Memory({0x7000: text}).read)
    assert event.info.text == "bell\x07 and \x1b[2J"          # exact in the value / JSON
    assert "\x1b" not in str(event) and "\\x1b" in str(event)  # escaped in text output
    wide = "d\u00e9j\u00e0\0".encode("utf-16-le")
    event = DebugEvent.decode(_event(8, 1, 2, struct.pack("<QHH", 0x7000, 1, 5)),
                              Memory({0x7000: wide}).read)
    assert event.info.text == "d\u00e9j\u00e0" and event.info.unicode


def test_other_members_and_bad_input():
    assert DebugEvent.decode(_event(5, 1, 2, struct.pack("<I", 7))).info.exit_code == 7
    load = DebugEvent.decode(_event(6, 1, 2, struct.pack("<QQIIQH", 4, 0x7B600000, 0, 0, 0, 0)))
    assert load.info.base == 0x7B600000 and load.info.image_name is None
    assert DebugEvent.decode(_event(7, 1, 2, struct.pack("<Q", 0x10000000))).info.base == \
        0x10000000
    rip = DebugEvent.decode(_event(9, 1, 2, struct.pack("<II", 5, 1))).info
    assert (rip.error, rip.type) == (5, 1)
    thread = DebugEvent.decode(_event(2, 1, 9, struct.pack("<QQQ", 8, 0x67FD0000, 0x1400015CB)))
    assert (thread.info.thread_local_base, thread.info.start_address) == (0x67FD0000,
                                                                          0x1400015CB)
    assert [c.value for c in DebugEventCode] == list(range(1, 10))
    with pytest.raises(TruncatedDataError):
        DebugEvent.decode(b"\x01" * 175)
    odd = DebugEvent.decode(_event(42, 1, 2))
    assert odd.info is None and odd.name == "debug event 42"
    # A parameter count beyond EXCEPTION_MAXIMUM_PARAMETERS (15) is capped.
    union = bytearray(160)
    struct.pack_into("<IIQQI", union, 0, 0xC0000005, 1, 0, 0, 0xFFFF)
    info = DebugEvent.decode(_event(1, 1, 2, bytes(union))).info
    assert len(info.parameters) == 15 and not info.continuable


def test_memory_basic_information():
    # BaseAddress +0, AllocationBase +8, AllocationProtect +16, PartitionId +20,
    # RegionSize +24, State +32, Protect +36, Type +40 (winnt.h, x64).
    raw = struct.pack("<QQIHxxQIII4x", 0x14000E000, 0x140000000, 0x80, 0, 0x1000,
                      0x1000, 0x108, 0x1000000)
    mbi = mi.MemoryBasicInformation.decode(raw)
    assert (mbi.base, mbi.allocation_base, mbi.region_size) == (0x14000E000, 0x140000000, 0x1000)
    assert mbi.committed and mbi.guarded and mbi.contains(0x14000EFFF)
    d = mbi.to_dict()
    assert (d["state"], d["protect"], d["type"], d["allocation_protect"]) == (
        "MEM_COMMIT", "PAGE_WRITECOPY|PAGE_GUARD", "MEM_IMAGE", "PAGE_EXECUTE_WRITECOPY")
    assert "RegionSize" in mbi.explain() and "+0x18" in mbi.explain()
    with pytest.raises(TruncatedDataError):
        mi.MemoryBasicInformation.decode(raw[:47])


def test_guarded_protections():
    assert mi.guarded_protection(mi.PAGE_READWRITE, "any") == 0x104
    assert mi.guarded_protection(mi.PAGE_WRITECOPY, "write") == mi.PAGE_READONLY
    assert mi.guarded_protection(mi.PAGE_EXECUTE_READWRITE | mi.PAGE_NOCACHE, "write") == \
        mi.PAGE_EXECUTE_READ | mi.PAGE_NOCACHE
    with pytest.raises(DecodeError, match="cannot be written"):
        mi.guarded_protection(mi.PAGE_READONLY, "write")
    assert mi.protection_text(0) == "0" and mi.protection_rights(0x40) == "rwx"


def test_the_api_says_why_it_cannot_run_here():
    if win32_api.available():
        pytest.skip("this is Windows")
    assert "needs Windows" in win32_api.unavailable_reason()


def _mingw_program(tmp_path, name):
    if shutil.which(wine_programs.MINGW[64]) is None:
        pytest.skip("x86_64-w64-mingw32-gcc is not installed (%s)" % wine_programs.INSTALL)
    exe = tmp_path / (name + ".exe")
    subprocess.run([wine_programs.MINGW[64], "-O1", "-o", str(exe),
                    os.path.join(HERE, "programs", name + ".c")], check=True)
    return exe


def test_coff_symbols_match_mingw_nm(tmp_path):
    exe = _mingw_program(tmp_path, "win_calls")
    nm = shutil.which("x86_64-w64-mingw32-nm")
    if nm is None:
        pytest.skip("x86_64-w64-mingw32-nm is not installed")
    listed = subprocess.run([nm, str(exe)], capture_output=True, text=True, check=True).stdout
    values = {p[2]: int(p[0], 16) for p in (l.split() for l in listed.splitlines()) if len(p) == 3}
    symbols = coff_symbols(exe.read_bytes())
    for name in ("bump", "counter", "page", "main", "worker"):
        assert 0x140000000 + symbols[name] == values[name], name
    with pytest.raises(DecodeError):
        coff_symbols(b"\x7fELF" + b"\0" * 100)


def test_offsets_agree_with_the_windows_headers(tmp_path):
    reason = wine_programs.missing()
    if reason:
        pytest.skip(reason)
    exe = _mingw_program(tmp_path, "win_offsets")
    prefix = os.environ.get("KSINSPECT_TEST_WINEPREFIX")
    if not prefix:                       # the prefix tools/winpython.py keeps (made once)
        info, reason = wine_programs.prepare_winpython()
        if info is None:
            pytest.skip(reason)
        prefix = info["wine_prefix"]
    env = wine_programs.wine_environment(prefix)
    out = subprocess.run(["wine", str(exe)], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    h = {k: int(v) for k, v in (l.split() for l in out.splitlines() if l.strip())}
    assert h["DEBUG_EVENT"] == win32_api.DEBUG_EVENT_SIZE == 176
    # Build each event at the headers' offsets and decode it.
    u = h["DEBUG_EVENT.u"]
    data = bytearray(h["DEBUG_EVENT"])
    struct.pack_into("<III", data, 0, 1, 4, 8)
    struct.pack_into("<I", data, u, h["STATUS_GUARD_PAGE_VIOLATION"])
    struct.pack_into("<Q", data, u + h["EXCEPTION_RECORD.ExceptionAddress"], 0xABC)
    struct.pack_into("<I", data, u + h["EXCEPTION_RECORD.NumberParameters"], 2)
    struct.pack_into("<QQ", data, u + h["EXCEPTION_RECORD.ExceptionInformation"], 8, 0xDEF)
    struct.pack_into("<I", data, u + h["EXCEPTION_DEBUG_INFO.dwFirstChance"], 1)
    info = DebugEvent.decode(bytes(data)).info
    assert (info.address, info.access, info.data_address, info.first_chance) == (
        0xABC, "execute", 0xDEF, True)
    data = bytearray(h["DEBUG_EVENT"])
    struct.pack_into("<I", data, 0, 3)
    for member, value in (("lpBaseOfImage", 0x140000000), ("lpThreadLocalBase", 0x67FE0000),
                          ("lpStartAddress", 0x1400014D0)):
        struct.pack_into("<Q", data, u + h["CREATE_PROCESS_DEBUG_INFO." + member], value)
    struct.pack_into("<H", data, u + h["CREATE_PROCESS_DEBUG_INFO.fUnicode"], 1)
    info = DebugEvent.decode(bytes(data)).info
    assert (info.image_base, info.thread_local_base, info.start_address, info.unicode) == (
        0x140000000, 0x67FE0000, 0x1400014D0, True)
    data = bytearray(h["DEBUG_EVENT"])
    struct.pack_into("<I", data, 0, 6)
    struct.pack_into("<Q", data, u + h["LOAD_DLL_DEBUG_INFO.lpBaseOfDll"], 0x7B600000)
    struct.pack_into("<H", data, u + h["LOAD_DLL_DEBUG_INFO.fUnicode"], 1)
    info = DebugEvent.decode(bytes(data)).info
    assert info.base == 0x7B600000 and info.unicode
    data = bytearray(h["DEBUG_EVENT"])
    struct.pack_into("<I", data, 0, 8)
    struct.pack_into("<H", data, u + h["OUTPUT_DEBUG_STRING_INFO.fUnicode"], 1)
    struct.pack_into("<H", data, u + h["OUTPUT_DEBUG_STRING_INFO.nDebugStringLength"], 9)
    info = DebugEvent.decode(bytes(data)).info
    assert info.unicode and info.length == 9
    raw = bytearray(h["MEMORY_BASIC_INFORMATION"])
    for member, value in (("RegionSize", 0x3000), ("State", 0x1000), ("Protect", 0x104),
                          ("Type", 0x20000)):
        fmt = "<Q" if member == "RegionSize" else "<I"
        struct.pack_into(fmt, raw, h["MEMORY_BASIC_INFORMATION." + member], value)
    mbi = mi.MemoryBasicInformation.decode(bytes(raw))
    assert (mbi.region_size, mbi.state, mbi.protect, mbi.type) == (0x3000, 0x1000, 0x104, 0x20000)
    # The constants and the Toolhelp32 / process-creation offsets win32_api uses.
    assert (h["PAGE_GUARD"], h["DBG_CONTINUE"], h["DBG_EXCEPTION_NOT_HANDLED"]) == (
        mi.PAGE_GUARD, win32_api.DBG_CONTINUE, win32_api.DBG_EXCEPTION_NOT_HANDLED)
    assert (h["THREADENTRY32"], h["THREADENTRY32.th32ThreadID"]) == (28, 8)
    assert (h["MODULEENTRY32W"], h["MODULEENTRY32W.modBaseAddr"], h["MODULEENTRY32W.szModule"],
            h["MODULEENTRY32W.szExePath"]) == (1080, 24, 48, 560)
    assert (h["STARTUPINFOW"], h["STARTUPINFOW.dwFlags"], h["STARTUPINFOW.hStdInput"],
            h["PROCESS_INFORMATION"], h["SYSTEM_INFO.dwPageSize"]) == (104, 60, 80, 24, 4)
