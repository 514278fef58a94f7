"""Live tests of the PEB of a Windows program running under Wine (read from Linux).

tests/programs/peb_self.c is compiled with mingw-w64 in the session set-up
and run under Wine in a private prefix. It prints what Windows tells it
about itself (NtQueryInformationProcess's PebBaseAddress, NtCurrentTeb(),
GetModuleHandle(NULL), GetCommandLineW, GetEnvironmentStringsW,
EnumProcessModules with GetModuleInformation / GetModuleFileNameExW) and its
Linux PID (a raw getpid system call); those are the expected values. The
loader's module list varies from run to run, so it is compared with what
the program printed, never with a fixed list.

With a 32-bit Wine installed, ``wine peb_self.exe`` runs it under
``start.exe /exec``: ``Popen.pid`` is start.exe's (tests/wine_programs.py
keeps both PIDs). ``ksinspect peb --pid`` of start.exe follows it to the
program; the tests check that with an explicit ``wine start.exe /exec`` too,
so it runs with or without wine32. The 32-bit program's ``_PEB32`` (WoW64)
is read where a 32-bit Wine is installed, and skipped, saying what to
install, where it is not.

Needs Linux x86-64 with ``wine`` and ``x86_64-w64-mingw32-gcc`` (Debian:
``apt-get install -y --no-install-recommends wine wine64
gcc-mingw-w64-x86-64-win32``); skipped otherwise, with the reason. The
prefix is made once per session (about 10-30 s); each test ends the
processes it started, by PID, and the session ends with ``wineserver -k`` of
its own prefix.
"""
import errno
import json
import os
import subprocess
import sys

import pytest

if os.environ.get("KSINSPECT_SANITIZED"):
    # tools/sanitize_test.py (CI's slowest step): about 30 s each of starting Wine programs.
    pytest.skip("not run under the sanitizers: the Linux-side readers of a Wine process are Python over /proc and ptrace; the structures they decode are the ones tests/test_wine_sample.py decodes from the shipped samples on the sanitized core", allow_module_level=True)

import wine_programs
from conftest import run_cli
from ksinspect.errors import LiveOSError, NoTebError
from ksinspect.live import wine
from ksinspect.live.proc_memory import ProcessMemory
from ksinspect.live.windows_process import bootstrap_layout, inspect_live_peb
from wine_programs import ARGS, module_differences, status as _status

pytestmark = pytest.mark.live


@pytest.fixture(scope="session")
def wine_env(tmp_path_factory):
    """A compiled peb_self.exe and a private, initialised WINEPREFIX."""
    wine_programs.require()
    root = tmp_path_factory.mktemp("wine")
    env = wine_programs.wine_environment(root / "prefix")
    print("\nWine prefix initialised in %.1f s" % wine_programs.make_prefix(env))
    yield {"exe": wine_programs.build(root, 64), "env": env, "root": root}
    # The prefix is this session's own: end its wineserver (and what it still runs).
    subprocess.run(["wineserver", "-k"], env=env, timeout=120)


program = wine_programs.program_fixture("program", "wine_env")
masquerading = wine_programs.program_fixture("masquerading", "wine_env", "--masquerade")


@pytest.fixture(scope="module")
def peb(program):
    return inspect_live_peb(program.pid)


def _comm(pid: int) -> str:
    with open("/proc/%d/comm" % pid) as handle:
        return handle.read().strip()


def test_the_program_is_its_own_linux_pid_or_start_exe_runs_it(program):
    assert _comm(program.pid) == "peb_self.exe"
    assert program.windows_pid != program.pid           # Wine's own process IDs
    if program.launcher_pid != program.pid:
        # wine32 installed: `wine` ran the 64-bit program under start.exe /exec.
        assert _comm(program.launcher_pid) == "start.exe"
        assert wine_programs.missing32() == ""


def test_start_exe_pid_is_followed_to_the_program(wine_env):
    """`wine start.exe /exec prog.exe ARGS` (what `wine prog.exe` does when a
    32-bit Wine is installed): the start.exe PID leads to the program."""
    with wine_programs.start(wine_env, "/exec", wine_env["exe"], "--masquerade", *ARGS,
                             exe="start.exe") as running:
        assert running.launcher_pid != running.pid and _comm(running.launcher_pid) == "start.exe"
        peb = inspect_live_peb(running.launcher_pid)
        assert peb.address == running.hex("peb")
        assert peb.command_line == running.values["spoofed_command_line"]
        note = next(n for n in peb.notes if "start.exe" in n)
        assert "followed to the program it started" in note
        assert note.endswith("PID %d (peb_self.exe)" % running.pid)
        status, out, err = run_cli("peb", "--pid", running.launcher_pid, "--json")
        assert status == 0, err
        data = json.loads(out)
        assert data["address"] == running.hex("peb")
        assert any("PID %d (peb_self.exe)" % running.pid in n for n in data["notes"])
    # start.exe ended with its program: its PID is no longer there to follow.
    with pytest.raises(LiveOSError):
        inspect_live_peb(running.launcher_pid)


def test_start_exe_whose_program_ended_is_one_line(wine_env):
    """start.exe whose program is gone (here: killed, start.exe still waits on it
    for an instant, or the PID is reused) must not be read as the program."""
    with wine_programs.start(wine_env, "/exec", wine_env["exe"], *ARGS,
                             exe="start.exe") as running:
        os.kill(running.pid, 9)
        code, _, err = run_cli("peb", "--pid", running.launcher_pid)
        lines = err.splitlines()
        assert code == 1 and len(lines) == 1, err
        assert str(running.launcher_pid) in lines[0]
        assert "start.exe" in lines[0] or "no process" in lines[0]


def test_peb_agrees_with_what_the_program_printed(program, peb):
    assert peb.address == program.hex("peb")
    assert peb.image_base == program.hex("image_base")
    assert peb.command_line == program.values["command_line"]
    assert not peb.being_debugged
    assert peb.layout.arch == "x64"
    assert program.modules, "the program listed no modules"
    assert not module_differences(program, peb.modules)
    main_image = next(m for m in peb.modules if m.base == peb.image_base)
    assert main_image.path == peb.image_path
    assert [m.base for m in peb.modules if "load" in m.lists] == [m[0] for m in program.modules]


def test_command_line_splits_into_the_unix_arguments(program, peb):
    args = wine.split_windows_command_line(peb.command_line)
    assert args[1:] == ARGS
    assert args[0].lower().endswith("peb_self.exe")


def test_environment_is_the_programs(program, peb):
    assert list(peb.environment) == program.environment
    assert any(item.startswith("WINEPREFIX=") for item in peb.environment)


def test_teb_is_the_main_threads_gs_base(program):
    with ProcessMemory(program.pid) as memory:
        location = wine.locate_teb(program.pid, memory, bootstrap_layout("x64"))
    assert location.method == "ptrace gs_base"
    assert location.tid == program.pid
    assert location.teb == program.hex("teb")
    assert location.peb == program.hex("peb")


def test_every_check_agrees(program, peb):
    disagree = [str(c) for c in peb.checks if not c.agree]
    assert not disagree
    names = [c.name for c in peb.checks]
    assert any(n.startswith("command line vs /proc/") for n in names)
    assert any(n.startswith("image path vs the file mapped") for n in names)
    assert any(n.startswith("PE images mapped") for n in names)
    for base, _, _, _ in program.modules:
        assert any(n.startswith("module ") and ("at %#x vs" % base) in n for n in names)
        assert any(n.startswith("SizeOfImage of") and ("at %#x:" % base) in n for n in names)
    assert any(n.startswith("entry point of") for n in names)
    assert any("layout win7-sp1-7601" in note and "6.1.7601" in note for note in peb.notes)


def test_target_keeps_running_after_inspection(program):
    for _ in range(3):
        inspect_live_peb(program.pid)
    status = _status(program.pid)
    assert status["TracerPid"] == "0"
    assert status["State"][0] in "SR"
    first = program.ping()
    second = program.ping()
    assert first.startswith("pong ") and second == "pong %d" % (int(first.split()[1]) + 1)


def test_cli_json(program):
    status, out, err = run_cli("peb", "--pid", program.pid, "--format", "json")
    assert status == 0, err
    data = json.loads(out)
    for key in ("address", "being_debugged", "image_base", "ldr", "process_parameters",
                "image_path", "command_line", "current_directory", "modules", "checks"):
        assert key in data
    assert data["address"] == program.hex("peb")
    assert data["command_line"] == program.values["command_line"]
    assert data["checks"] and all(c["agree"] for c in data["checks"])
    for check in data["checks"]:
        assert {"name", "ours", "theirs", "agree"} <= set(check)
    for module in data["modules"]:
        assert set(module) == {"base", "size", "entry_point", "name", "path", "lists"}


def test_cli_teb_of_a_live_thread(program):
    """`teb --pid` (issue 18, item 20): the main thread's TEB, as the program
    printed it (NtCurrentTeb; the PEB from NtQueryInformationProcess, its PID
    from GetCurrentProcessId); the notes say how it was found and the layout."""
    status, out, err = run_cli("teb", "--pid", program.pid, "--format", "json")
    assert status == 0, err
    data = json.loads(out)
    assert data["address"] == data["self"] == program.hex("teb")
    assert data["peb"] == program.hex("peb")
    assert data["process_id"] == int(program.values["pid"])
    assert data["findings"] == [] and data["layout"].startswith("win7-sp1-7601")
    notes = [line for line in err.splitlines() if line.startswith("ksinspect: note: ")]
    assert any("GS base" in n for n in notes) and any(data["layout"] in n for n in notes)
    status, out, err = run_cli("teb", "--pid", program.pid, "--tid", "0n%d" % program.pid,
                               "--format", "json")
    assert status == 0 and json.loads(out)["address"] == program.hex("teb")
    status, out, err = run_cli("teb", "--pid", program.pid, "--tid", "0n1")
    assert status == 1 and err.count("\n") == 1 and "no thread 1" in err


def test_masquerade_is_caught(masquerading):
    peb = inspect_live_peb(masquerading.pid)
    assert peb.image_path == masquerading.values["spoofed_image_path"]
    assert peb.command_line == masquerading.values["spoofed_command_line"]
    checks = {c.name.split(" (")[0].split(" vs ")[0]: c for c in peb.checks}
    assert not checks["command line"].agree
    image = next(c for c in peb.checks if c.name.startswith("image path vs the file mapped"))
    assert not image.agree and image.theirs.endswith("/peb_self.exe")
    hidden_base, hidden_path = masquerading.values["unlinked"].split(" ", 1)
    hidden_base = int(hidden_base, 16)
    flagged = [c for c in peb.checks if not c.agree and ("at %#x" % hidden_base) in c.name]
    assert flagged, [str(c) for c in peb.checks]
    assert "not on InLoadOrderModuleList" in flagged[0].ours
    hidden = next(m for m in peb.modules if m.base == hidden_base)
    assert "load" not in hidden.lists and hidden.path.lower() == hidden_path.lower()
    assert any("%#x" % hidden_base in f and "unlinked" in f for f in peb.findings)
    # Everything the masquerade did not touch still agrees.
    for check in peb.checks:
        if check.name.startswith(("SizeOfImage", "entry point", "module ")):
            assert check.agree, str(check)
    assert masquerading.ping().startswith("pong ")


def test_scan_finds_the_teb_when_ptrace_is_refused(program):
    """A second tracer holds the threads (as a debugger would): PTRACE_SEIZE
    fails with EPERM and the TEB is found by scanning memory instead."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(program.pid)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "seized"
        with ProcessMemory(program.pid) as memory:
            location = wine.locate_teb(program.pid, memory, bootstrap_layout("x64"))
        assert location.method == "scan"
        assert "already traced" in location.note
        assert location.teb == program.hex("teb")
        assert location.peb == program.hex("peb")
        peb = inspect_live_peb(program.pid)
        assert peb.address == program.hex("peb")
        assert any("scanning" in note for note in peb.notes)
    finally:
        holder.stdin.close()        # the holder exits; the kernel detaches its tracees
        holder.wait(timeout=10)
    assert program.ping().startswith("pong ")
    assert _status(program.pid)["TracerPid"] == "0"


# Seizes every thread of the PID (no stop), says so, exits at end of input.
_HOLDER = r"""
import ctypes, ctypes.util, os, sys
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
pid = int(sys.argv[1])
for tid in os.listdir("/proc/%d/task" % pid):
    if libc.ptrace(0x4206, int(tid), None, None) != 0:
        sys.exit("seize %s: %s" % (tid, os.strerror(ctypes.get_errno())))
print("seized", flush=True)
sys.stdin.read()
"""


def test_a_pid_that_does_not_exist(wine_env):
    pid = _unused_pid()
    code, _, err = run_cli("peb", "--pid", pid)
    lines = err.splitlines()
    assert code == 1, err
    assert len(lines) == 1 and str(pid) in lines[0] and "no process" in lines[0]
    with pytest.raises(LiveOSError) as caught:
        inspect_live_peb(pid)
    assert caught.value.errno == errno.ESRCH


def test_a_linux_process_has_no_teb():
    wine_programs.require()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(NoTebError) as caught:
            inspect_live_peb(sleeper.pid)
        assert caught.value.pid == sleeper.pid
        code, _, err = run_cli("peb", "--pid", sleeper.pid)
        lines = err.splitlines()
        assert code == 1, err
        assert len(lines) == 1
        assert "not a Windows program running under Wine" in lines[0] and "TEB" in lines[0]
        assert sleeper.poll() is None and _status(sleeper.pid)["TracerPid"] == "0"
    finally:
        sleeper.kill()
        sleeper.wait()


def _unused_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as handle:
        pid = int(handle.read()) - 1
    while os.path.exists("/proc/%d" % pid):
        pid -= 1
    return pid


# -- a 32-bit program (WoW64), where a 32-bit Wine is installed ---------------------

program32 = wine_programs.program_fixture("program32", "wine_env", "--masquerade", bits=32)


def test_a_32bit_programs_peb32_from_linux(program32):
    assert program32.values["bits"] == "32" and program32.values["wow64"] == "1"
    assert program32.launcher_pid == program32.pid       # the 32-bit loader runs it itself
    peb = inspect_live_peb(program32.pid)
    assert peb.struct_name == "_PEB32" and peb.layout.arch == "x64"
    assert peb.loader_layout.arch == "x86"
    assert peb.address == program32.hex("peb")
    assert peb.image_base == program32.hex("image_base")
    assert peb.command_line == program32.values["spoofed_command_line"]
    assert list(peb.environment) == program32.environment
    assert any("FS base" in note and "%#x" % program32.hex("teb") in note for note in peb.notes)
    assert not module_differences(program32, peb.modules, ("size", "entry_point"))
    # The masquerade is caught here as in a 64-bit process.
    checks = {c.name: c for c in peb.checks}
    assert not checks["command line vs /proc/%d/cmdline" % program32.pid].agree
    image = next(c for c in peb.checks if c.name.startswith("image path vs the file mapped"))
    assert not image.agree and image.theirs.endswith("/peb_self32.exe")
    hidden = int(program32.values["unlinked"].split(" ", 1)[0], 16)
    assert any(not c.agree and ("at %#x" % hidden) in c.name for c in peb.checks)
    for check in peb.checks:
        if check.name.startswith(("SizeOfImage", "entry point", "module ")):
            assert check.agree, str(check)
    assert program32.ping().startswith("pong ")
