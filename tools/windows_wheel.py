#!/usr/bin/env python3
"""Build a real ``win_amd64`` wheel of this checkout on Linux, with mingw-w64 (no MSVC).

    python tools/windows_wheel.py --include DIR --python-dll python312.dll --out dist/

The C core is cross-compiled by ``csrc/build_core.py`` (cffi writes the
module's C; ``x86_64-w64-mingw32-gcc`` compiles it with every ``csrc/`` file
and links it against the target interpreter's ``python3X.dll``). The wheel
holds the pure-Python package, its package data and that ``.pyd``; its
metadata (name, version, dependencies, extras, the ``ksinspect`` script) is
read from ``pyproject.toml``, so ``pip install`` on Windows, or ``pip install
--platform win_amd64 --target DIR`` anywhere, installs it like any wheel.
``tools/winpython.py`` makes one and installs it into a Windows CPython
under Wine (it downloads the interpreter and the headers this needs).
"""
import argparse
import base64
import fnmatch
import hashlib
import io
import os
import re
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "ksinspect"
# Files of the checkout that the wheel is built from (its cache key in winpython.py).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "csrc", PACKAGE,
                "tools/windows_wheel.py")


def _toml():
    try:
        import tomllib
    except ImportError:          # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            raise SystemExit("windows_wheel: reading pyproject.toml needs Python 3.11 "
                             "or 'pip install tomli'") from None
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)


def package_version():
    with open(os.path.join(ROOT, PACKAGE, "_version.py"), encoding="utf-8") as handle:
        match = re.search(r'^__version__ = "([^"]+)"', handle.read(), re.M)
    if not match:
        raise SystemExit("windows_wheel: no __version__ in %s/_version.py" % PACKAGE)
    return match.group(1)


def package_files():
    """(path in the wheel, path on disk) of the package: the modules of every
    package directory (one with ``__init__.py``) and the package data that
    pyproject.toml lists; caches and native builds left out."""
    config = _toml()
    data_patterns = config.get("tool", {}).get("setuptools", {}).get(
        "package-data", {}).get(PACKAGE, [])
    base = os.path.join(ROOT, PACKAGE)
    files = []
    for folder, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        relative = os.path.relpath(folder, base).replace(os.sep, "/")
        is_package = "__init__.py" in names
        for name in sorted(names):
            inside = name if relative == "." else relative + "/" + name
            if (is_package and name.endswith(".py")) or \
                    any(fnmatch.fnmatch(inside, pattern) for pattern in data_patterns):
                files.append((PACKAGE + "/" + inside, os.path.join(folder, name)))
    return files


def build_inputs_digest():
    """A SHA-256 over every file the wheel is built from (names and contents)."""
    digest = hashlib.sha256()
    for top in BUILD_INPUTS:
        path = os.path.join(ROOT, top)
        paths = [path] if os.path.isfile(path) else sorted(
            os.path.join(folder, name) for folder, dirs, names in os.walk(path)
            if "__pycache__" not in folder for name in names
            if not name.endswith((".so", ".pyd", ".pyc", ".o")))
        for item in paths:
            digest.update(os.path.relpath(item, ROOT).encode() + b"\0")
            with open(item, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def metadata_text():
    """METADATA (core metadata 2.1) from pyproject.toml's [project] table."""
    project = _toml()["project"]
    lines = ["Metadata-Version: 2.1", "Name: " + project["name"],
             "Version: " + package_version(), "Summary: " + project.get("description", "")]
    if "requires-python" in project:
        lines.append("Requires-Python: " + project["requires-python"])
    license_text = project.get("license", {}).get("text")
    if license_text:
        lines.append("License: " + license_text)
    lines += ["Classifier: " + c for c in project.get("classifiers", [])]
    lines += ["Requires-Dist: " + d for d in project.get("dependencies", [])]
    for extra, requirements in sorted(project.get("optional-dependencies", {}).items()):
        lines.append("Provides-Extra: " + extra)
        lines += ['Requires-Dist: %s; extra == "%s"' % (r, extra) for r in requirements]
    readme = project.get("readme")
    if readme:
        lines.append("Description-Content-Type: text/markdown")
    text = "\n".join(lines) + "\n"
    if readme:
        with open(os.path.join(ROOT, readme), encoding="utf-8") as handle:
            text += "\n" + handle.read()
    return text


def entry_points_text():
    scripts = _toml()["project"].get("scripts", {})
    if not scripts:
        return None
    return "[console_scripts]\n" + "".join("%s = %s\n" % item for item in sorted(scripts.items()))


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (name, digest, len(data))


def build_wheel(out_dir, include, python_dll, python_tag):
    """Cross-compile the core and write ``ksinspect-VERSION-TAG-TAG-win_amd64.whl``.

    Args:
        out_dir: where the wheel goes.
        include: the target interpreter's Windows headers.
        python_dll: its python3X.dll.
        python_tag: ``cp312`` and the like (the interpreter the .pyd is for).

    Returns:
        The wheel's path.
    """
    sys.path.insert(0, os.path.join(ROOT, "csrc"))
    try:
        import build_core
    finally:
        sys.path.pop(0)
    version = package_version()
    os.makedirs(out_dir, exist_ok=True)
    pyd_name = "_core.%s-win_amd64.pyd" % python_tag
    pyd_path = os.path.join(out_dir, pyd_name)
    build_core.cross_compile_windows(pyd_path, include, python_dll)
    dist_info = "%s-%s.dist-info" % (PACKAGE, version)
    wheel_name = "%s-%s-%s-%s-win_amd64.whl" % (PACKAGE, version, python_tag, python_tag)
    members = []
    for inside, path in package_files():
        with open(path, "rb") as handle:
            members.append((inside, handle.read()))
    with open(pyd_path, "rb") as handle:
        members.append((PACKAGE + "/" + pyd_name, handle.read()))
    os.unlink(pyd_path)
    members.append((dist_info + "/METADATA", metadata_text().encode("utf-8")))
    members.append((dist_info + "/WHEEL", (
        "Wheel-Version: 1.0\nGenerator: ksinspect tools/windows_wheel.py\n"
        "Root-Is-Purelib: false\nTag: %s-%s-win_amd64\n" % (python_tag, python_tag)).encode()))
    entry_points = entry_points_text()
    if entry_points:
        members.append((dist_info + "/entry_points.txt", entry_points.encode()))
    members.append((dist_info + "/top_level.txt", (PACKAGE + "\n").encode()))
    record = [_record_line(name, data) for name, data in members]
    record.append(dist_info + "/RECORD,,")
    members.append((dist_info + "/RECORD", ("\n".join(record) + "\n").encode()))
    path = os.path.join(out_dir, wheel_name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    with open(path + ".part", "wb") as handle:
        handle.write(buffer.getvalue())
    os.replace(path + ".part", path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--include", required=True,
                        help="the target interpreter's Windows headers (with pyconfig.h)")
    parser.add_argument("--python-dll", required=True, help="its python3X.dll")
    parser.add_argument("--out", default=os.path.join(ROOT, "dist"))
    args = parser.parse_args(argv)
    match = re.search(r"python(3)(\d+)\.dll$", os.path.basename(args.python_dll), re.I)
    if not match:
        parser.error("--python-dll must be a python3X.dll, not %s" % args.python_dll)
    print(build_wheel(args.out, args.include, args.python_dll,
                      "cp%s%s" % match.groups()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
