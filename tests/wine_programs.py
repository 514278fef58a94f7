"""Windows test programs under Wine, for the live tests (test_live_wine.py,
test_windows_live_windows.py).

tests/programs/peb_self.c is built with mingw-w64 (64-bit, and 32-bit where
a 32-bit Wine is installed) and run under Wine; it prints what Windows tells
it about itself, which is what the tests expect. Its Linux PID is what it
says too (a raw Linux getpid system call, made under Wine only): with a
32-bit Wine installed, ``wine prog.exe`` runs a 64-bit program under
``start.exe /exec``, so ``Popen.pid`` is start.exe's, not the program's.
"""
import os
import platform
import select
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEB_SELF = os.path.join(ROOT, "tests", "programs", "peb_self.c")
WIN_SELF = os.path.join(ROOT, "tests", "programs", "win_self.h")
MINGW = {64: "x86_64-w64-mingw32-gcc", 32: "i686-w64-mingw32-gcc"}
INSTALL = ("apt-get install -y --no-install-recommends wine wine64 "
           "gcc-mingw-w64-x86-64-win32")
INSTALL32 = ("dpkg --add-architecture i386 && apt-get update && apt-get install -y "
             "--no-install-recommends wine32:i386 gcc-mingw-w64-i686-win32")
# Debian's wine32 ships the 32-bit loader here (wine64 ships wine64 beside it).
WINE32_LOADERS = ("/usr/lib/wine/wine", "/usr/lib/i386-linux-gnu/wine/wine")
READY_TIMEOUT = 60
# Arguments chosen to exercise Wine's quoting: a space, a double quote, a backslash.
ARGS = ["plain", "with space", 'with "quote"', "back\\slash"]
# What EnumProcessModules told the program of each module, in the order it prints them.
MODULE_FIELDS = ("size", "entry_point", "path")


def missing() -> str:
    """Why 64-bit Windows programs cannot run here under Wine ("" when they can)."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return "Wine tests need Linux on x86-64 (this is %s / %s)" % (sys.platform,
                                                                       platform.machine())
    absent = [tool for tool in ("wine", "wineserver", MINGW[64]) if shutil.which(tool) is None]
    if absent:
        return "not installed: %s (%s)" % (", ".join(absent), INSTALL)
    return ""


def missing32() -> str:
    """Why 32-bit Windows programs cannot run here ("" when they can)."""
    reason = missing()
    if reason:
        return reason
    if not any(os.access(path, os.X_OK) for path in WINE32_LOADERS):
        return "no 32-bit Wine (wine32:i386) is installed: %s" % INSTALL32
    if shutil.which(MINGW[32]) is None:
        return "%s is not installed: %s" % (MINGW[32], INSTALL32)
    return ""


def require(bits: int = 64) -> None:
    """Skip the calling test, saying why, where *bits*-bit Windows programs cannot run."""
    reason = missing() if bits == 64 else missing32()
    if reason:
        import pytest
        pytest.skip(reason)


def build(out_dir, bits=64) -> str:
    """peb_self.exe (or peb_self32.exe) built into *out_dir*; its path."""
    exe = os.path.join(str(out_dir), "peb_self.exe" if bits == 64 else "peb_self32.exe")
    if os.path.exists(exe) and os.path.getmtime(exe) >= max(
            os.path.getmtime(source) for source in (PEB_SELF, WIN_SELF)):
        return exe                      # built already into this folder
    built = subprocess.run([MINGW[bits], "-O2", "-Wall", "-Wextra", "-Wno-array-bounds", "-o",
                            exe, PEB_SELF, "-lpsapi"], capture_output=True, text=True)
    if built.returncode != 0:
        raise AssertionError(built.stderr)
    return exe


def wine_environment(prefix) -> dict:
    env = dict(os.environ, WINEPREFIX=str(prefix), WINEDEBUG="-all",
               WINEDLLOVERRIDES="mscoree,mshtml=")
    env.pop("DISPLAY", None)
    # Under tools/sanitize_test.py the ASan runtime is preloaded for our C core;
    # Wine is not built for it and refuses to start with it.
    env.pop("LD_PRELOAD", None)
    return env


def make_prefix(env) -> float:
    """Initialise the prefix of *env*; the seconds it took."""
    started = time.monotonic()
    subprocess.run(["wine", "wineboot", "--init"], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=300, check=True)
    subprocess.run(["wineserver", "-w"], env=env, timeout=120, check=True)
    return time.monotonic() - started


class WineProgram:
    """peb_self.exe running under Wine; its key=value report parsed.

    Attributes:
        pid: the program's own Linux PID (as it printed it).
        launcher_pid: ``Popen.pid``: the program itself, or Wine's start.exe.
        windows_pid: its Windows PID (GetCurrentProcessId).
        values, modules, environment: what it printed.
    """

    def __enter__(self) -> "WineProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __init__(self, exe, env, cwd, *extra):
        self.process = subprocess.Popen(
            ["wine", exe, *extra], env=env, cwd=str(cwd),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.launcher_pid = self.process.pid
        self.name = os.path.basename(exe)
        self._pending = b""
        self.values = {}
        self.modules = []
        self.environment = []
        try:
            self._read_report()
        except BaseException:
            self.stop()
            raise
        self.pid = int(self.values["unix_pid"])
        self.windows_pid = int(self.values["pid"])

    def _line(self, timeout: float) -> str:
        """The next line of output (unbuffered reads, so select() sees every byte)."""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s (launched as pid %d) said nothing for %.0f s"
                                     % (self.name, self.launcher_pid, timeout))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError("%s (launched as pid %d) ended early: %r"
                                         % (self.name, self.launcher_pid, self.process.poll()))
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
            elif key == "env":
                self.environment.append(value)
            else:
                self.values[key] = value

    def hex(self, key: str) -> int:
        return int(self.values[key], 16)

    def ping(self) -> str:
        self.process.stdin.write(b"ping\n")
        self.process.stdin.flush()
        return self._line(10)

    def stop(self) -> None:
        """End the program: end of input (it returns, and start.exe with it), then
        SIGKILL to the PIDs this started if they linger."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                own = getattr(self, "pid", None)
                if own and own != self.launcher_pid:
                    try:
                        os.kill(own, 9)
                    except ProcessLookupError:
                        pass
                self.process.kill()
                self.process.wait(timeout=10)
        self.process.stdout.close()


def start(place: dict, *extra, bits: int = 64, exe=None) -> WineProgram:
    """peb_self.exe of *bits* (or *exe*, e.g. start.exe) run with *extra* arguments in
    *place*: a dict with the Wine environment (``env``) and a folder (``root``)."""
    if exe is None:
        exe = build(place["root"], bits)
    return WineProgram(exe, place["env"], place["root"], *extra)


def program_fixture(name: str, place: str, *extra, bits: int = 64):
    """A module-scoped pytest fixture called *name*: peb_self.exe of *bits*, run
    with *extra* then ARGS in the place the fixture *place* gives (see start()),
    stopped at the end of the module; skipped, saying why, where *bits*-bit
    programs cannot run. Assign it to *name* in the test module."""
    import pytest

    @pytest.fixture(scope="module", name=name)
    def running(request):
        require(bits)
        with start(request.getfixturevalue(place), *extra, *ARGS, bits=bits) as program:
            yield program
    return running


def module_differences(program: WineProgram, modules, fields=MODULE_FIELDS) -> list:
    """The modules *program* printed that *modules* (objects or JSON dicts with
    ``base`` and *fields*) do not list with the same *fields*:
    ``[(base, printed, read or None)]``, empty when all agree."""
    def value(module, name):
        return module[name] if isinstance(module, dict) else getattr(module, name)

    read = {value(m, "base"): m for m in modules}
    differences = []
    for base, *printed in program.modules:
        expected = tuple(dict(zip(MODULE_FIELDS, printed))[name] for name in fields)
        found = read.get(base)
        got = None if found is None else tuple(value(found, name) for name in fields)
        if got != expected:
            differences.append((base, expected, got))
    return differences


def status(pid: int) -> dict:
    with open("/proc/%d/status" % pid) as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


# -- the Windows CPython under Wine (tools/winpython.py) -----------------------------

WINPYTHON = os.path.join(ROOT, "tools", "winpython.py")


def prepare_winpython():
    """(the tool's --info, "") once prepared in its private prefix, or (None, why not).

    $WINEPREFIX is left out, so the tool uses (and makes) the private prefix
    of its cache; the tests start their programs in that prefix too.
    """
    env = dict(os.environ)
    env.pop("WINEPREFIX", None)
    result = subprocess.run([sys.executable, WINPYTHON, "--quiet", "--info"], env=env,
                            capture_output=True, text=True, timeout=900)
    if result.returncode == 2:
        return None, result.stderr.strip().splitlines()[-1]
    if result.returncode != 0:
        raise AssertionError("winpython --info failed:\n" + result.stderr)
    import json
    return json.loads(result.stdout), ""


def run_winpython(info, *args, stdin=None, timeout=300):
    """python.exe *args* through the tool, in the tool's prefix."""
    env = wine_environment(info["wine_prefix"])
    return subprocess.run([sys.executable, WINPYTHON, "--quiet", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)
