"""Live tests of the PEB of a Windows program running under Wine.

tests/programs/peb_self.c is compiled with mingw-w64 in the session set-up
and run under Wine in a private prefix. It prints what Windows tells it
about itself (NtQueryInformationProcess's PebBaseAddress, NtCurrentTeb(),
GetModuleHandle(NULL), GetCommandLineW, EnumProcessModules with
GetModuleInformation / GetModuleFileNameExW); those are the expected values.
The loader's module list varies from run to run, so it is compared with what
the program printed, never with a fixed list.

Needs Linux x86-64 with ``wine`` and ``x86_64-w64-mingw32-gcc`` (Debian:
``apt-get install -y --no-install-recommends wine wine64
gcc-mingw-w64-x86-64-win32``); skipped otherwise, with the reason. The
prefix is made once per session (about 10-30 s); each test ends the
processes it started, by PID, and the session ends with ``wineserver -w``.
"""
import errno
import io
import json
import os
import platform
import select
import shutil
import subprocess
import sys
import time

import pytest

from ksinspect.cli import main
from ksinspect.errors import LiveOSError, NoTebError
from ksinspect.live import wine
from ksinspect.live.proc_memory import ProcessMemory
from ksinspect.live.windows_process import bootstrap_layout, inspect_live_peb

pytestmark = pytest.mark.live

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "peb_self.c")
MINGW = "x86_64-w64-mingw32-gcc"
# Arguments chosen to exercise Wine's quoting: a space, a double quote, a backslash.
ARGS = ["plain", "with space", 'with "quote"', "back\\slash"]
READY_TIMEOUT = 60


def _missing() -> str:
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return "Wine tests need Linux on x86-64 (this is %s / %s)" % (sys.platform,
                                                                       platform.machine())
    absent = [tool for tool in ("wine", "wineserver", MINGW) if shutil.which(tool) is None]
    if absent:
        return ("not installed: %s (apt-get install -y --no-install-recommends wine wine64 "
                "gcc-mingw-w64-x86-64-win32)" % ", ".join(absent))
    return ""


@pytest.fixture(scope="session")
def wine_env(tmp_path_factory):
    """A compiled peb_self.exe and a private, initialised WINEPREFIX."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("wine")
    exe = root / "peb_self.exe"
    built = subprocess.run([MINGW, "-O2", "-Wall", "-Wextra", "-Wno-array-bounds", "-o",
                            str(exe), PROGRAM, "-lpsapi"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    env = dict(os.environ, WINEPREFIX=str(root / "prefix"), WINEDEBUG="-all",
               WINEDLLOVERRIDES="mscoree,mshtml=")
    env.pop("DISPLAY", None)
    # Under tools/sanitize_test.py the ASan runtime is preloaded for our C core;
    # Wine is not built for it and refuses to start with it.
    env.pop("LD_PRELOAD", None)
    started = time.monotonic()
    subprocess.run(["wine", "wineboot", "--init"], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=300, check=True)
    subprocess.run(["wineserver", "-w"], env=env, timeout=120, check=True)
    print("\nWine prefix initialised in %.1f s" % (time.monotonic() - started))
    yield {"exe": str(exe), "env": env, "root": root}
    subprocess.run(["wineserver", "-w"], env=env, timeout=120)


class WineProgram:
    """peb_self.exe running under Wine; its key=value report parsed."""

    def __init__(self, wine_env, *extra):
        self.process = subprocess.Popen(
            ["wine", wine_env["exe"], *extra], env=wine_env["env"], cwd=str(wine_env["root"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.pid = self.process.pid
        self._pending = b""
        self.values = {}
        self.modules = []
        try:
            self._read_report()
        except BaseException:
            self.stop()
            raise

    def _line(self, timeout: float) -> str:
        """The next line of output (unbuffered reads, so select() sees every byte)."""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("peb_self.exe (pid %d) said nothing for %.0f s"
                                     % (self.pid, timeout))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError("peb_self.exe (pid %d) ended early: %r"
                                         % (self.pid, self.process.poll()))
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode("utf-8").rstrip("\r")

    def _read_report(self) -> None:
        while True:
            line = self._line(READY_TIMEOUT)
            if line == "ready":
                return
            key, _, value = line.partition("=")
            assert key != "error", value
            if key == "module":
                base, size, entry, path = value.split(" ", 3)
                self.modules.append((int(base, 16), int(size, 16), int(entry, 16), path))
            else:
                self.values[key] = value

    def hex(self, key: str) -> int:
        return int(self.values[key], 16)

    def ping(self) -> str:
        self.process.stdin.write(b"ping\n")
        self.process.stdin.flush()
        return self._line(10)

    def stop(self) -> None:
        """End the program: end of input, then SIGKILL to this PID if it lingers."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process.stdout.close()


@pytest.fixture(scope="module")
def program(wine_env):
    running = WineProgram(wine_env, *ARGS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def masquerading(wine_env):
    running = WineProgram(wine_env, "--masquerade", *ARGS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def peb(program):
    return inspect_live_peb(program.pid)


def _status(pid: int) -> dict:
    with open("/proc/%d/status" % pid) as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def test_the_popen_pid_is_the_windows_process(program):
    with open("/proc/%d/comm" % program.pid) as handle:
        assert handle.read().strip() == "peb_self.exe"
    assert int(program.values["pid"]) != program.pid   # Wine's own process IDs


def test_peb_agrees_with_what_the_program_printed(program, peb):
    assert peb.address == program.hex("peb")
    assert peb.image_base == program.hex("image_base")
    assert peb.command_line == program.values["command_line"]
    assert not peb.being_debugged
    assert peb.layout.arch == "x64"
    printed = {base: (size, entry, path) for base, size, entry, path in program.modules}
    ours = {m.base: (m.size, m.entry_point, m.path) for m in peb.modules}
    assert program.modules, "the program listed no modules"
    for base, expected in printed.items():
        assert ours.get(base) == expected, "module at %#x" % base
    main_image = next(m for m in peb.modules if m.base == peb.image_base)
    assert main_image.path == peb.image_path
    assert [m.base for m in peb.modules if "load" in m.lists] == list(printed)


def test_command_line_splits_into_the_unix_arguments(program, peb):
    args = wine.split_windows_command_line(peb.command_line)
    assert args[1:] == ARGS
    assert args[0].lower().endswith("peb_self.exe")


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
    out, err = io.StringIO(), io.StringIO()
    assert main(["peb", "--pid", str(program.pid), "--format", "json"], stream=out,
                errors=err) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    for key in ("address", "being_debugged", "image_base", "ldr", "process_parameters",
                "image_path", "command_line", "current_directory", "modules", "checks"):
        assert key in data
    assert data["address"] == program.hex("peb")
    assert data["command_line"] == program.values["command_line"]
    assert data["checks"] and all(c["agree"] for c in data["checks"])
    for check in data["checks"]:
        assert {"name", "ours", "theirs", "agree"} <= set(check)
    for module in data["modules"]:
        assert set(module) == {"base", "size", "entry_point", "name", "path"}


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
    out, err = io.StringIO(), io.StringIO()
    assert main(["peb", "--pid", str(pid)], stream=out, errors=err) == 1
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and str(pid) in lines[0] and "no process" in lines[0]
    with pytest.raises(LiveOSError) as caught:
        inspect_live_peb(pid)
    assert caught.value.errno == errno.ESRCH


def test_a_linux_process_has_no_teb():
    if _missing():
        pytest.skip(_missing())
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(NoTebError) as caught:
            inspect_live_peb(sleeper.pid)
        assert caught.value.pid == sleeper.pid
        out, err = io.StringIO(), io.StringIO()
        assert main(["peb", "--pid", str(sleeper.pid)], stream=out, errors=err) == 1
        lines = err.getvalue().splitlines()
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
