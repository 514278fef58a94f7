"""The compiled core and its build: version stamp, cdef/header agreement."""
import os
import re
import subprocess
import sys

import pytest

import ksinspect
from ksinspect import _native
from ksinspect._native import debugreg, paging, segment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
sys.path.insert(0, CSRC)
import build_core  # noqa: E402  (the build script is importable on purpose)


def test_core_is_stamped_with_the_package_version():
    assert _native.ffi.string(_native.lib.ksi_build_version()).decode() == ksinspect.__version__


def test_stale_build_is_refused_with_a_clear_message():
    code = ("import ksinspect._version as v; v.__version__ = '0.0.0-stale'\n"
            "try:\n    import ksinspect._native\n"
            "except ImportError as e:\n    print(type(e).__name__, e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    assert result.stdout.startswith("BuildMismatchError")
    assert "0.0.0-stale" in result.stdout and "rebuild" in result.stdout


def _strip_comments(text):
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def _prototypes(text):
    """Names of the functions a header declares (anywhere in it)."""
    return set(re.findall(r"^[A-Za-z_][\w \*]*?\b(ksi_\w+)\s*\(", _strip_comments(text), re.M))


@pytest.mark.parametrize("header", build_core.HEADERS)
def test_every_declared_function_is_in_the_cdef_and_the_module(header):
    with open(os.path.join(CSRC, header), encoding="utf-8") as fh:
        text = fh.read()
    declared = _prototypes(text)
    in_cdef = _prototypes(build_core.cdef_of(text))
    assert declared, "no prototypes found in %s" % header
    assert declared == in_cdef, "declared outside the KSI-CDEF block: %s" % (declared - in_cdef)
    missing = {name for name in declared if not hasattr(_native.lib, name)}
    assert not missing


def test_build_lists_every_source_and_header():
    headers = {f for f in os.listdir(CSRC) if f.endswith(".h")} - {"ksinspect.h"}
    sources = {f for f in os.listdir(CSRC) if f.endswith(".c")}
    assert set(build_core.HEADERS) == headers
    assert set(build_core.SOURCES) == sources
    with open(os.path.join(CSRC, "ksinspect.h"), encoding="utf-8") as fh:
        umbrella = fh.read()
    for header in headers:
        assert '#include "%s"' % header in umbrella


def test_struct_formats_match_the_compiled_layout():
    # Python reads each decoded struct with one unpack; the format is derived
    # from cffi's offsets, and each field must land where C put it.
    ffi = _native.ffi
    for ctype, fields, record in (
            ("ksi_descriptor", segment.DESCRIPTOR_FIELDS, segment.DESCRIPTOR_RECORD),
            ("ksi_pte", paging.PTE_FIELDS, paging.PTE_RECORD),
            ("ksi_dr7", debugreg.DR7_FIELDS, debugreg.DR7_RECORD),
            ("ksi_dr6", debugreg.DR6_FIELDS, debugreg.DR6_RECORD),
            ("ksi_selector", segment.SELECTOR_FIELDS, segment.SELECTOR_RECORD)):
        assert record.size == ffi.sizeof(ctype)
        value = ffi.new(ctype + " *")
        scalar = [name for name in fields if "[" not in name]
        for i, name in enumerate(scalar, start=1):
            setattr(value, name, i)
        row = dict(zip(fields, record.unpack(ffi.buffer(value))))
        assert [row[name] for name in scalar] == list(range(1, len(scalar) + 1))


def test_dr7_batch_entry_point_matches_single_decodes():
    values = [0x400, 0xD0402, 0x00000000000F0403, 0xFFFFFFFF00000000, 0]
    options = debugreg.DR_OPTION_LONG_MODE
    rows = debugreg.decode_dr7_batch(values, options)
    record = debugreg.DR7_RECORD
    batch = [record.unpack_from(rows, i * record.size) for i in range(len(values))]
    assert batch == [debugreg.decode_dr7(v, options) for v in values]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the per-call glue is built "
                    "by setup.py where a C compiler for this Python exists (Linux here)")
def test_the_per_call_glue_is_built_for_this_version():
    # setup.py builds it as optional (a platform without a compiler runs the
    # Python path), so a build that broke would otherwise go unnoticed.
    assert _native.percall is not None, "ksinspect._percall did not build: see setup.py"
    assert _native.percall.BUILD_VERSION == ksinspect.__version__
    for name in build_core.PERCALL_SOURCES[1:]:
        assert name in build_core.SOURCES      # the core sources it calls, no others
