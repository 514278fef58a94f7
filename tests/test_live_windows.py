"""ksinspect.windows.live_windows: the parts that run without Windows.

The ctypes back-end itself cannot run here (no Windows, and no Windows
CPython to run under Wine); these tests cover the comparisons it makes, with
fake facts, the structure sizes it declares (against the sizes the Windows
SDK gives on x64), and that it refuses cleanly elsewhere.
"""
import ctypes
import sys
from types import SimpleNamespace

import pytest

from ksinspect.errors import UnsupportedError
from ksinspect.windows import live_windows
from ksinspect.windows.live_windows import WindowsFacts, normalise_windows_path, windows_checks

IMAGE = "C:\\Windows\\System32\\notepad.exe"
BASE = 0x7FF6A0000000


def _facts(**changes):
    values = dict(snapshot_base=BASE, snapshot_size=0x38000, snapshot_path=IMAGE,
                  image_name=IMAGE, debugger_present=False)
    values.update(changes)
    return WindowsFacts(**values)


def _main(size=0x38000):
    return SimpleNamespace(base=BASE, size=size)


def _by_name(checks):
    return {c.name: c for c in checks}


def test_a_clean_process_agrees():
    checks = windows_checks(_facts(), BASE, IMAGE, False, _main())
    assert len(checks) == 5 and all(c.agree for c in checks)
    # Paths: \\?\ prefixes, slashes and case do not matter.
    checks = windows_checks(_facts(image_name="\\\\?\\c:/windows/system32/NOTEPAD.EXE"),
                            BASE, IMAGE, False, _main())
    assert all(c.agree for c in checks)


def test_masquerade_and_debugger_disagree():
    spoofed = "C:\\Windows\\System32\\svchost.exe"
    checks = _by_name(windows_checks(_facts(), BASE, spoofed, False, _main()))
    assert not checks["image path vs QueryFullProcessImageNameW"].agree
    assert not checks["image path vs the main module of a Toolhelp32 snapshot"].agree
    assert checks["ImageBaseAddress vs the main module of a Toolhelp32 snapshot"].agree
    # BeingDebugged cleared by an anti-debugging trick while a debugger is attached.
    checks = _by_name(windows_checks(_facts(debugger_present=True), BASE, IMAGE, False, _main()))
    assert not checks["BeingDebugged vs CheckRemoteDebuggerPresent"].agree
    checks = _by_name(windows_checks(_facts(), BASE, IMAGE, True, _main()))
    assert not checks["BeingDebugged vs CheckRemoteDebuggerPresent"].agree
    # A tampered SizeOfImage in the loader entry.
    checks = _by_name(windows_checks(_facts(), BASE, IMAGE, False, _main(size=0x1000)))
    assert not checks["SizeOfImage of the main module: loader entry vs Toolhelp32 snapshot"].agree


def test_a_failed_source_is_a_disagreement_not_a_pass():
    facts = _facts(snapshot_base=None, snapshot_size=None, snapshot_path=None, image_name=None,
                   debugger_present=None, errors=("CreateToolhelp32Snapshot: access denied",))
    checks = windows_checks(facts, BASE, IMAGE, False, _main())
    assert checks and not any(c.agree for c in checks)
    assert len(windows_checks(_facts(), BASE, IMAGE, False, None)) == 4


def test_normalise_windows_path():
    assert normalise_windows_path("\\??\\C:\\A\\b.EXE") == normalise_windows_path("c:/a/B.exe")
    assert normalise_windows_path(None) is None


@pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="x64 structure sizes")
def test_structure_sizes_match_the_x64_sdk():
    # sizeof(PROCESS_BASIC_INFORMATION) = 48 and sizeof(MODULEENTRY32W) = 1080 on x64
    # (winternl.h; tlhelp32.h: 5 DWORDs, BYTE*, DWORD, HMODULE, WCHAR[256], WCHAR[260]).
    assert ctypes.sizeof(live_windows._ProcessBasicInformation) == 48
    assert ctypes.sizeof(live_windows._ModuleEntry32W) == 1080
    assert live_windows._ModuleEntry32W.szExePath.offset == 560


@pytest.mark.skipif(sys.platform == "win32", reason="checks the refusal outside Windows")
def test_refuses_outside_windows():
    assert not live_windows.available()
    with pytest.raises(UnsupportedError) as caught:
        live_windows.open_process(4)
    assert "needs Windows" in str(caught.value) and "wine" in str(caught.value)
    with pytest.raises(UnsupportedError):
        live_windows.gather_facts(SimpleNamespace(pid=4))


def test_wide_strings_decode_as_utf16():
    entry = live_windows._ModuleEntry32W()
    text = "C:\\Prog\u00e9\\a.exe"
    units = [int.from_bytes(text.encode("utf-16-le")[i:i + 2], "little")
             for i in range(0, 2 * len(text), 2)]
    for i, unit in enumerate(units):
        entry.szExePath[i] = unit
    assert live_windows._wide(entry.szExePath) == text
