"""cffi build script for ``ksinspect._core``.

This file alone knows the C sources, the order of the headers and the
compiler flags. The cdef is not written twice: it is the text between the
``KSI-CDEF-BEGIN`` / ``KSI-CDEF-END`` markers of each header, so the header
and what cffi sees cannot drift (tests/test_cdef.py checks the extraction).

Environment:
    KSINSPECT_WERROR=1    treat C warnings as errors (CI does).
    KSINSPECT_SANITIZE=1  build with AddressSanitizer and UBSan.
"""
import os
import re
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Order matters: a header may use types declared by the ones before it.
HEADERS = ["ksi_common.h", "ksi_segment.h", "ksi_paging.h", "ksi_debugreg.h", "ksi_live.h",
           "ksi_walk.h", "ksi_scan.h", "ksi_fields.h"]
SOURCES = ["ksi_common.c", "ksi_segment.c", "ksi_paging.c", "ksi_debugreg.c", "ksi_live.c",
           "ksi_walk.c", "ksi_scan.c", "ksi_fields.c"]

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
