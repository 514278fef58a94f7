"""ksinspect.windows.live_windows: the Windows live back-end.

The first part runs anywhere: the comparisons it makes, with fake facts,
the structure sizes it declares (against the sizes the Windows SDK gives on
x64), and that it refuses cleanly elsewhere.

The second part runs it for real: the official Windows CPython under Wine
(tools/winpython.py, this checkout built as a win_amd64 wheel) runs
``python -m ksinspect peb --pid N`` against tests/programs/peb_self.c
running in the same Wine prefix, and compares with what the program printed
about itself (Windows APIs inside the program) and with the Linux-side
reading of the same process (ptrace + /proc, :mod:`ksinspect.live.wine`):
two independent views of one process. Skipped, saying what to install,
without Wine and mingw-w64 (and the 32-bit program without wine32).
"""
import ctypes
import os
import json
import sys
from types import SimpleNamespace

import pytest

if os.environ.get("KSINSPECT_SANITIZED"):
    # tools/sanitize_test.py (CI's slowest step): about 30 s each of starting Wine programs.
    pytest.skip("not run under the sanitizers: the Windows side runs under Wine on the mingw-built core, and its Linux-side comparison is tests/test_live_wine.py's (left out for the same reason)", allow_module_level=True)

import wine_programs
from wine_programs import module_differences

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


def test_device_paths_become_drive_letters():
    devices = {"\\device\\harddiskvolume3": "c:"}
    assert normalise_windows_path("\\Device\\HarddiskVolume3\\Windows\\System32\\NTDLL.dll",
                                  devices) == "c:\\windows\\system32\\ntdll.dll"
    # Wine answers GetMappedFileNameW with \\??\\C:\\...; no device table needed.
    assert normalise_windows_path("\\??\\C:\\windows\\system32\\ntdll.dll") == \
        "c:\\windows\\system32\\ntdll.dll"
    # A device that is a prefix of another's name is not a match.
    assert normalise_windows_path("\\Device\\HarddiskVolume31\\a.exe", devices) == \
        "\\device\\harddiskvolume31\\a.exe"


def _module(base, name, lists=("load", "memory", "init")):
    return SimpleNamespace(base=base, name=name, path="C:\\Windows\\System32\\" + name,
                           lists=lists, size=0x1000)


def test_mapped_images_catch_a_spoofed_path_and_an_unlinked_module():
    """VirtualQueryEx + GetMappedFileNameW against the PEB (fake facts in the
    form Windows gives them: device paths)."""
    devices = {"\\device\\harddiskvolume3": "c:"}
    images = ((BASE, "\\Device\\HarddiskVolume3\\Windows\\System32\\notepad.exe"),
              (0x7FFB0000, "\\Device\\HarddiskVolume3\\Windows\\System32\\ntdll.dll"),
              (0x7FFC0000, "\\Device\\HarddiskVolume3\\Windows\\System32\\evil.dll"))
    facts = _facts(images=images, devices=devices)
    modules = [_module(BASE, "notepad.exe", ("load", "memory")), _module(0x7FFB0000, "ntdll.dll"),
               _module(0x7FFC0000, "evil.dll", ("memory", "init"))]
    checks = _by_name(windows_checks(facts, BASE, IMAGE, False, _main(0x1000), modules))
    assert checks["image path vs the image mapped at ImageBaseAddress %#x (GetMappedFileNameW)"
                  % BASE].agree
    assert checks["module ntdll.dll at 0x7ffb0000 vs the image mapped there "
                  "(VirtualQueryEx)"].agree
    summary = checks["PE images mapped in the process (VirtualQueryEx, MEM_IMAGE) vs the "
                     "loader lists"]
    assert (summary.ours, summary.theirs, summary.agree) == (2, 3, False)
    assert not checks["PE image evil.dll at 0x7ffc0000 on the loader lists"].agree
    spoofed = _by_name(windows_checks(facts, BASE, "C:\\Windows\\System32\\svchost.exe",
                                      False, _main(0x1000), modules[:2]))
    assert not spoofed["image path vs the image mapped at ImageBaseAddress %#x "
                       "(GetMappedFileNameW)" % BASE].agree
    # A module where no image is mapped.
    ghost = _by_name(windows_checks(facts, BASE, IMAGE, False, _main(0x1000),
                                    [_module(0x10000000, "ghost.dll")]))
    check = ghost["module ghost.dll at 0x10000000 vs the image mapped there (VirtualQueryEx)"]
    assert not check.agree and check.theirs == "no image is mapped at 0x10000000"


# -- for real: the Windows CPython under Wine -------------------------------------

@pytest.fixture(scope="module")
def winpython(tmp_path_factory):
    """The prepared interpreter (tools/winpython.py --info) and a folder of programs."""
    wine_programs.require()
    info, reason = wine_programs.prepare_winpython()
    if info is None:
        pytest.skip(reason)
    info = dict(info, root=tmp_path_factory.mktemp("winside"))
    info["env"] = wine_programs.wine_environment(info["wine_prefix"])
    # The prefix is the tool's, which other runs may use at the same time (the
    # Windows-side suite does): the programs started here are ended by PID, and
    # its wineserver exits by itself once nothing runs there.
    yield info


program = wine_programs.program_fixture("program", "winpython")
masquerading = wine_programs.program_fixture("masquerading", "winpython", "--masquerade")


def _windows_peb(winpython, pid, *extra):
    """``ksinspect peb --pid PID --json`` run by the Windows CPython: (status, JSON, stderr)."""
    result = wine_programs.run_winpython(winpython, "-m", "ksinspect", "peb", "--pid", str(pid),
                                         "--json", *extra)
    data = json.loads(result.stdout) if result.returncode == 0 else None
    return result.returncode, data, result.stderr


def test_windows_side_reads_the_teb_the_program_printed(winpython, program):
    """`teb --pid` through the Win32 backend (issue 18, item 20): the TEB of
    the main thread from NtQueryInformationProcess / NtQueryInformationThread,
    as the program printed it (NtCurrentTeb, its PEB, GetCurrentProcessId)."""
    result = wine_programs.run_winpython(winpython, "-m", "ksinspect", "teb", "--pid",
                                         str(program.windows_pid), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["address"] == data["self"] == program.hex("teb"), data
    assert data["peb"] == program.hex("peb")
    assert data["process_id"] == int(program.values["pid"]) and data["findings"] == []
    assert any("NtQueryInformationThread" in n for n in data["notes"])


def _agreeing(data):
    return {c["name"]: c["agree"] for c in data["checks"]}


def test_windows_side_reads_what_the_program_printed(winpython, program):
    status, data, err = _windows_peb(winpython, program.windows_pid)
    assert status == 0, err
    assert data["structure"] == "_PEB" and data["layout"].endswith("-x64")
    assert data["address"] == program.hex("peb")
    assert data["image_base"] == program.hex("image_base")
    assert data["command_line"] == program.values["command_line"]
    assert data["environment"] == program.environment
    assert data["being_debugged"] is False
    assert program.modules and not module_differences(program, data["modules"])
    assert data["image_path"] == next(path for base, _, _, path in program.modules
                                      if base == program.hex("image_base"))
    assert any("NtQueryInformationProcess(ProcessBasicInformation)" in n for n in data["notes"])
    disagree = [c for c in data["checks"] if not c["agree"]]
    assert not disagree, disagree
    names = list(_agreeing(data))
    for expected in ("image path vs QueryFullProcessImageNameW",
                     "ImageBaseAddress vs the main module of a Toolhelp32 snapshot",
                     "BeingDebugged vs CheckRemoteDebuggerPresent",
                     "PE images mapped in the process (VirtualQueryEx, MEM_IMAGE) vs the "
                     "loader lists"):
        assert expected in names
    for base, _, _, _ in program.modules:
        assert any(n.startswith("module ") and "at %#x vs the image mapped" % base in n
                   for n in names)
    assert program.ping().startswith("pong ")


def test_two_views_of_one_process_agree(winpython, program):
    """Inside Wine (NtQueryInformationProcess + ReadProcessMemory) and outside it
    (ptrace GS base + /proc/PID/mem): the same PEB, strings and modules."""
    from ksinspect.live.windows_process import inspect_live_peb

    status, windows, err = _windows_peb(winpython, program.windows_pid)
    assert status == 0, err
    linux = inspect_live_peb(program.pid).to_dict()
    for key in ("address", "image_base", "ldr", "process_parameters", "image_path",
                "command_line", "current_directory", "environment", "being_debugged",
                "structure", "layout"):
        assert windows[key] == linux[key], key
    assert [(m["base"], m["size"], m["entry_point"], m["path"]) for m in windows["modules"]] \
        == [(m["base"], m["size"], m["entry_point"], m["path"]) for m in linux["modules"]]
    assert any("GS base" in n for n in linux["notes"])


def test_masquerade_is_caught_from_both_sides(winpython, masquerading):
    from ksinspect.live.windows_process import inspect_live_peb

    status, windows, err = _windows_peb(winpython, masquerading.windows_pid)
    assert status == 0, err
    linux = inspect_live_peb(masquerading.pid).to_dict()
    hidden = int(masquerading.values["unlinked"].split(" ", 1)[0], 16)
    for data, image_checks in (
            (windows, ("image path vs QueryFullProcessImageNameW",
                       "image path vs the image mapped at ImageBaseAddress %#x "
                       "(GetMappedFileNameW)" % masquerading.hex("image_base"))),
            (linux, ("image path vs the file mapped at ImageBaseAddress %#x (/proc/%d/maps)"
                     % (masquerading.hex("image_base"), masquerading.pid),))):
        assert data["image_path"] == masquerading.values["spoofed_image_path"]
        assert data["command_line"] == masquerading.values["spoofed_command_line"]
        agree = _agreeing(data)
        for name in image_checks:
            assert agree[name] is False, name
        unlinked = [n for n, ok in agree.items() if not ok and n.startswith("PE image ")
                    and "at %#x" % hidden in n]
        assert unlinked, data["checks"]
        assert any("%#x" % hidden in f["message"] and f["code"] == "module-unlinked"
                   for f in data["findings"])
        for name, ok in agree.items():
            if name.startswith(("SizeOfImage", "entry point", "module ")):
                assert ok, name
    # Only the Linux side has an independent command line (/proc/PID/cmdline);
    # on Windows the kernel's copy of it is the PEB's own.
    assert _agreeing(linux)["command line vs /proc/%d/cmdline" % masquerading.pid] is False


def test_a_pid_that_does_not_exist_is_one_line(winpython):
    result = wine_programs.run_winpython(winpython, "-m", "ksinspect", "peb", "--pid", "999996")
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "999996" in lines[0] and "no process" in lines[0] and "Windows PIDs" in lines[0]


def test_an_exited_process_is_one_line(winpython):
    """A process that has ended while a handle keeps it (its parent's): OpenProcess
    still works, its memory is gone."""
    exe = wine_programs.build(winpython["root"], 64)
    script = ("import io, subprocess, sys\n"
              "from ksinspect.cli import main\n"
              "child = subprocess.Popen([sys.argv[1]], stdin=subprocess.PIPE, "
              "stdout=subprocess.DEVNULL)\n"
              "child.stdin.close(); child.wait()\n"
              "err = io.StringIO()\n"
              "code = main(['peb', '--pid', str(child.pid)], stream=io.StringIO(), errors=err)\n"
              "print(code, child.pid, child.returncode); print(err.getvalue(), end='')\n")
    result = wine_programs.run_winpython(winpython, "-c", script, exe)
    assert result.returncode == 0, result.stderr
    first, *lines = result.stdout.splitlines()
    code, pid, exit_status = first.split()
    assert code == "1" and len(lines) == 1, result.stdout
    assert "process %s (peb_self.exe) has exited (exit status %s)" % (pid, exit_status) \
        in lines[0]


program32 = wine_programs.program_fixture("program32", "winpython", "--masquerade", bits=32)


def test_wow64_peb32_from_both_sides(winpython, program32):
    """A 32-bit program: its _PEB32 read by the 64-bit Windows interpreter
    (ProcessWow64Information) and from Linux (FS base of the 32-bit process)."""
    from ksinspect.live.windows_process import inspect_live_peb

    status, windows, err = _windows_peb(winpython, program32.windows_pid)
    assert status == 0, err
    linux = inspect_live_peb(program32.pid).to_dict()
    for data in (windows, linux):
        assert data["structure"] == "_PEB32"
        assert data["address"] == program32.hex("peb")
        assert data["image_base"] == program32.hex("image_base")
        assert data["command_line"] == program32.values["spoofed_command_line"]
        assert data["environment"] == program32.environment
        assert not module_differences(program32, data["modules"], ("size", "entry_point"))
    for key in ("address", "image_base", "image_path", "command_line", "environment",
                "modules", "layout"):
        assert windows[key] == linux[key], key
    assert any("WoW64" in n for n in windows["notes"])
    hidden = int(program32.values["unlinked"].split(" ", 1)[0], 16)
    agree = _agreeing(windows)
    assert agree["image path vs QueryFullProcessImageNameW"] is False
    assert any(not ok and "at %#x" % hidden in n for n, ok in agree.items())
