"""The C boundary: the one package that imports the compiled C core.

``ksinspect._core`` (cffi, built from ``csrc/``) is loaded here once and its
build version checked against the package's; this module also holds what
every boundary module shares (struct layouts read from the cdef, the status
to exception mapping, output arrays, range checks). Then one module per C
concern, as csrc/ has one source file per concern:

=========  ====================  =====================================
module     C source              what crosses
=========  ====================  =====================================
segment    ksi_segment.c         selectors, descriptors, tables of them
paging     ksi_paging.c          paging-structure entries
debugreg   ksi_debugreg.c        DR6, DR7, the DR7 encoder
walk       ksi_walk.c            page walks, mappings, virtual reads
scan       ksi_scan.c            structure scans (psscan)
fields     ksi_fields.c          struct field extraction
live       ksi_live.c            this machine: LAR/LSL, LDT, SGDT...
control    ksi_control.c         CR0/CR3/CR4/EFER/RFLAGS... decoders
cpu_probe  ksi_cpu_probe.c       this CPU: probes of privileged rules
kdump      ksi_kdump.c           the compressed-kdump page index
=========  ====================  =====================================

Each checks arguments and lengths, calls C, turns a status into a named
exception and hands back plain ints, tuples, bytes and memoryviews: callers
never see cdata. Only the layers docs/architecture.md allows import them
("Who touches the C core": x86, paging and windows any of them, memory
only kdump, live only live and cpu_probe; the rest through those layers;
tests/test_layers.py checks it).

Adding a concern is one module here plus its line in :data:`MODULES`.
Decoded C structs hold only unsigned integer members, so a whole struct is
read with one ``struct.unpack`` over its buffer; the field order comes from
cffi's view of the cdef, so the two cannot drift.
"""
import mmap
import struct
from typing import Tuple

from .._version import __version__
from ..errors import (BuildMismatchError, DecodeError, KsinspectError, TruncatedDataError,
                      UnsupportedError)

try:
    from .._core import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise BuildMismatchError(
        "ksinspect._core is not built (%s); install with 'pip install .' "
        "or 'pip install -e .' from the source tree" % exc) from exc

_built_for = ffi.string(lib.ksi_build_version()).decode("ascii")
if _built_for != __version__:
    raise BuildMismatchError(
        "ksinspect._core was built for version %s but the package is %s; "
        "rebuild it with 'pip install .'" % (_built_for, __version__))

# The per-call glue (csrc/python/percall.c), optional: where it was not built,
# or was built for another version, the Python path runs instead.
try:
    from .. import _percall as percall
except ImportError:  # pragma: no cover - depends on the build
    percall = None
if percall is not None and percall.BUILD_VERSION != __version__:  # pragma: no cover
    percall = None

# The C concerns, one boundary module each (ksinspect/_native/<name>.py over
# csrc/ksi_<name>.c): a new one is its module plus a line here.
MODULES = ("segment", "paging", "debugreg", "walk", "scan", "fields", "live", "control",
           "cpu_probe", "kdump")

U64_MAX = (1 << 64) - 1        # the one home of the largest uint64_t (every module here)
_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def layout(ctype: str) -> Tuple[Tuple[str, ...], struct.Struct]:
    """Field names and a struct format for a C struct of unsigned integers
    (and arrays of them), built from cffi's offsets so the two cannot drift."""
    names, fmt, position = [], "=", 0
    for name, field in ffi.typeof(ctype).fields:
        item = field.type.item if field.type.kind == "array" else field.type
        count = field.type.length if field.type.kind == "array" else 1
        if item.kind != "primitive" or ffi.sizeof(item) not in _CODES:
            raise BuildMismatchError("%s.%s is not an unsigned integer" % (ctype, name))
        if field.offset < position:
            raise BuildMismatchError("%s.%s overlaps the field before it" % (ctype, name))
        fmt += "x" * (field.offset - position) + _CODES[ffi.sizeof(item)] * count
        position = field.offset + ffi.sizeof(item) * count
        names.extend(name if count == 1 else "%s[%d]" % (name, i) for i in range(count))
    fmt += "x" * (ffi.sizeof(ctype) - position)
    record = struct.Struct(fmt)
    if record.size != ffi.sizeof(ctype):
        raise BuildMismatchError("%s: struct format %s does not match sizeof" % (ctype, fmt))
    return tuple(names), record


def status_message(status: int) -> str:
    return ffi.string(lib.ksi_status_message(status)).decode("ascii")


def raise_for(status: int, what: str) -> None:
    """Raise the named exception for a C status (KSI_OK never gets here)."""
    message = "%s: %s" % (what, status_message(status))
    if status == lib.KSI_ERR_TRUNCATED:
        raise TruncatedDataError(message)
    if status == lib.KSI_ERR_UNSUPPORTED:
        raise UnsupportedError(message)
    if status in (lib.KSI_ERR_BAD_MODE, lib.KSI_ERR_BAD_LEVEL, lib.KSI_ERR_OUT_OF_RANGE,
                  lib.KSI_ERR_BAD_ARGUMENT):
        raise DecodeError(message)
    raise KsinspectError(message)


def check_u64(value: int, what: str) -> None:
    """Refuse what a C ``uint64_t`` cannot hold: a negative or too wide integer, or
    no integer at all."""
    if not isinstance(value, int):
        raise DecodeError("%s: %r is not an integer" % (what, value))
    if not 0 <= value <= U64_MAX:
        raise DecodeError("%s: %#x does not fit in 64 bits" % (what, value))


# Large outputs come from an anonymous mapping faulted in by one syscall
# (MAP_POPULATE): per-page faults on a fresh 100 MB array cost more than
# the decoding itself.
_POPULATE_FLAGS = (getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
                   | getattr(mmap, "MAP_POPULATE", 0)) if hasattr(mmap, "MAP_POPULATE") else 0
_POPULATE_MIN_BYTES = 1 << 20
# Where the kernel has transparent huge pages (Linux madvise), an output of
# 4 MiB or more asks for them and is populated by MADV_POPULATE_WRITE
# (Linux 5.14): one fault per 2 MiB instead of 512 (a fresh 24 MB array took
# 9-12 ms to populate in 4 KiB pages, 2 ms in 2 MiB ones). An older kernel
# refuses the advice; its pages are then faulted in as C writes them.
_HUGE_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)
_POPULATE_WRITE = 23             # MADV_POPULATE_WRITE (linux/mman.h), not in the mmap module
_HUGE_MIN_BYTES = 4 << 20


def new_array(ctype: str, count: int):
    """A writable C array of count structs (its contents are overwritten by C)."""
    count = max(count, 1)
    size = count * ffi.sizeof(ctype)
    if _POPULATE_FLAGS and size >= _POPULATE_MIN_BYTES:
        if _HUGE_ADVICE is not None and size >= _HUGE_MIN_BYTES:
            mapping = mmap.mmap(-1, size, flags=_POPULATE_FLAGS & ~mmap.MAP_POPULATE)
            for advice in (_HUGE_ADVICE, _POPULATE_WRITE):
                try:
                    mapping.madvise(advice)
                except OSError:
                    pass
        else:
            mapping = mmap.mmap(-1, size, flags=_POPULATE_FLAGS)
        # The cdata keeps the buffer alive, and the buffer keeps the mapping.
        return ffi.cast(ctype + " *", ffi.from_buffer(mapping, require_writable=True)), mapping
    return ffi.new(ctype + "[]", count), None


def rows(out, count: int, ctype: str) -> memoryview:
    """The C output (a cdata array or its mapping) as bytes, without a copy;
    rows are read with the *_RECORD formats."""
    size = count * ffi.sizeof(ctype)
    if isinstance(out, mmap.mmap):
        return memoryview(out)[:size]
    return memoryview(ffi.buffer(out, size))


def enum_values(prefix: str) -> dict:
    """Every C enum constant whose name starts with prefix, name -> value."""
    return {name: getattr(lib, name) for name in dir(lib) if name.startswith(prefix)}
