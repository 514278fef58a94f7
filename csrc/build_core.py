"""cffi build script for ``ksinspect._core``.

This file alone knows the C sources, the order of the headers and the
compiler flags. The cdef is not written twice: it is the text between the
``KSI-CDEF-BEGIN`` / ``KSI-CDEF-END`` markers of each header, so the header
and what cffi sees cannot drift (tests/test_build.py checks that every declaration reached the module).

Environment:
    KSINSPECT_WERROR=1    treat C warnings as errors (CI does).
    KSINSPECT_SANITIZE=1  build with AddressSanitizer and UBSan.

:func:`cross_compile_windows` builds the same module for Windows x64 on
Linux with mingw-w64 (no MSVC): cffi writes the module's C, and the
compiler links it against the target interpreter's ``python3X.dll``
(tools/windows_wheel.py packs the result into a win_amd64 wheel).
"""
import contextlib
import os
import re
import subprocess
import sys
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Order matters: a header may use types declared by the ones before it.
HEADERS = ["ksi_common.h", "ksi_segment.h", "ksi_paging.h", "ksi_debugreg.h", "ksi_live.h",
           "ksi_walk.h", "ksi_scan.h", "ksi_fields.h", "ksi_control.h",
           "ksi_cpu_probe.h", "ksi_kdump.h", "ksi_pagecache.h"]
SOURCES = ["ksi_common.c", "ksi_segment.c", "ksi_paging.c", "ksi_debugreg.c", "ksi_live.c",
           "ksi_walk.c", "ksi_scan.c", "ksi_fields.c", "ksi_control.c",
           "ksi_cpu_probe.c", "ksi_kdump.c", "ksi_pagecache.c"]

_CDEF_BLOCK = re.compile(r"/\* KSI-CDEF-BEGIN \*/\n(.*?)/\* KSI-CDEF-END \*/", re.S)


def cdef_of(header_text):
    """Return the cffi declarations of one header (the marked blocks)."""
    blocks = _CDEF_BLOCK.findall(header_text)
    if not blocks:
        raise ValueError("header has no KSI-CDEF block")
    return "\n".join(blocks)


def full_cdef():
    parts = []
    for name in HEADERS:
        with open(os.path.join(HERE, name), encoding="utf-8") as fh:
            parts.append(cdef_of(fh.read()))
    return "\n".join(parts)


def package_version():
    path = os.path.join(ROOT, "ksinspect", "_version.py")
    with open(path, encoding="utf-8") as fh:
        match = re.search(r'^__version__ = "([^"]+)"', fh.read(), re.M)
    if not match:
        raise RuntimeError("cannot find __version__ in " + path)
    return match.group(1)


def compile_args():
    args = ["-std=c99", "-Wall", "-Wextra", "-O2"]
    if os.environ.get("KSINSPECT_WERROR") == "1":
        args.append("-Werror")
    if os.environ.get("KSINSPECT_SANITIZE") == "1":
        args += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                 "-fno-sanitize-recover=undefined", "-O1", "-g"]
    return args


def link_args():
    if os.environ.get("KSINSPECT_SANITIZE") == "1":
        return ["-fsanitize=address,undefined"]
    return []


MINGW_X64 = "x86_64-w64-mingw32-gcc"


def windows_compile_args():
    """Flags for the mingw-w64 build of the module: the same warnings and
    optimisation as the native build, plus what a Windows extension needs.

    The interpreter's pyconfig.h defines MS_WIN64 itself for mingw-w64, so it
    is not passed here (doing so is a redefinition warning). libgcc is linked
    statically so the .pyd imports only python3X.dll and system DLLs.
    """
    args = ["-std=c99", "-Wall", "-Wextra", "-O2", "-shared", "-static-libgcc", "-s"]
    if os.environ.get("KSINSPECT_WERROR") == "1":
        args.append("-Werror")
    return args


def cross_compile_windows(output, python_include, python_dll, compiler=MINGW_X64):
    """Build ``ksinspect._core`` for Windows x64 into the file *output* (a ``.pyd``).

    Args:
        output: the .pyd to write (e.g. ``_core.cp312-win_amd64.pyd``).
        python_include: the target interpreter's Windows headers (with its
            Windows ``pyconfig.h``).
        python_dll: that interpreter's ``python3X.dll`` (mingw links against
            the DLL itself; no import library is needed).
        compiler: the mingw-w64 C compiler.

    Raises:
        subprocess.CalledProcessError: the compiler failed (its messages are
            on stderr, as for any build).
    """
    with tempfile.TemporaryDirectory(prefix="ksinspect-win-") as work:
        module_c = os.path.join(work, "_core.c")
        with contextlib.redirect_stdout(sys.stderr):     # cffi says "generating ..."
            ffibuilder.emit_c_code(module_c)
        command = [compiler, *windows_compile_args(),
                   '-DKSI_BUILD_VERSION="%s"' % package_version(),
                   "-I" + os.path.join(ROOT, "csrc"), "-I" + python_include,
                   module_c, *[os.path.join(ROOT, "csrc", s) for s in SOURCES],
                   python_dll, "-o", output]
        subprocess.run(command, check=True)
    return output


# ksinspect._percall (csrc/python/percall.c): CPython glue for the per-call
# hot path of AddressSpace, with the core sources it calls compiled in. It is
# optional: where it does not build, the package runs the same Python path.
PERCALL_SOURCES = ["python/percall.c", "ksi_pagecache.c", "ksi_walk.c", "ksi_paging.c",
                   "ksi_segment.c", "ksi_common.c"]


def percall_extension():
    """The setuptools Extension of ksinspect._percall (for setup.py)."""
    from setuptools import Extension
    return Extension(
        "ksinspect._percall",
        sources=["csrc/" + s for s in PERCALL_SOURCES],
        include_dirs=["csrc"],
        define_macros=[("KSI_BUILD_VERSION", '"%s"' % package_version())],
        extra_compile_args=compile_args(),
        extra_link_args=link_args(),
        optional=True,
    )


ffibuilder = FFI()
ffibuilder.cdef(full_cdef())
ffibuilder.set_source(
    "ksinspect._core",
    '#include "ksinspect.h"\n',
    # Relative to the project root, where setup.py runs the build.
    sources=["csrc/" + s for s in SOURCES],
    include_dirs=["csrc"],
    define_macros=[("KSI_BUILD_VERSION", '"%s"' % package_version())],
    extra_compile_args=compile_args(),
    extra_link_args=link_args(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose="-v" in sys.argv)
