"""The one boundary to the compiled C core (``ksinspect._core``).

Only this module calls the decoders in ``_core``: it checks arguments and
lengths, calls C, turns a status into a named exception, and hands back
plain Python ints and tuples. Callers never see cdata.

Decoded C structs hold only ``uint64_t`` members, so a whole struct is read
with one ``struct.unpack`` over its buffer; the field order is checked
against the cdef when this module is imported.
"""
import mmap
import struct
import threading
from typing import Optional, Sequence, Tuple

from ._version import __version__
from .errors import (BuildMismatchError, DecodeError, EncodeError, KsinspectError,
                     TruncatedDataError, UnsupportedError)

try:
    from ._core import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise BuildMismatchError(
        "ksinspect._core is not built (%s); install with 'pip install .' "
        "or 'pip install -e .' from the source tree" % exc) from exc

_built_for = ffi.string(lib.ksi_build_version()).decode("ascii")
if _built_for != __version__:
    raise BuildMismatchError(
        "ksinspect._core was built for version %s but the package is %s; "
        "rebuild it with 'pip install .'" % (_built_for, __version__))


_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _layout(ctype: str) -> Tuple[Tuple[str, ...], struct.Struct]:
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


SELECTOR_FIELDS, SELECTOR_RECORD = _layout("ksi_selector")
DESCRIPTOR_FIELDS, DESCRIPTOR_RECORD = _layout("ksi_descriptor")
PTE_FIELDS, PTE_RECORD = _layout("ksi_pte")
DR7_FIELDS, DR7_RECORD = _layout("ksi_dr7")
DR6_FIELDS, DR6_RECORD = _layout("ksi_dr6")

U64_MAX = (1 << 64) - 1


class _Scratch(threading.local):
    """Per-thread output structs: C releases the GIL, so they are not shared."""

    def __init__(self):
        self.descriptor = ffi.new("ksi_descriptor *")
        self.descriptor_buf = ffi.buffer(self.descriptor)
        self.selector = ffi.new("ksi_selector *")
        self.selector_buf = ffi.buffer(self.selector)
        self.pte = ffi.new("ksi_pte *")
        self.pte_buf = ffi.buffer(self.pte)
        self.dr7 = ffi.new("ksi_dr7 *")
        self.dr7_buf = ffi.buffer(self.dr7)
        self.dr6 = ffi.new("ksi_dr6 *")
        self.dr6_buf = ffi.buffer(self.dr6)
        self.pte_config = ffi.new("ksi_paging_config *")


_scratch = _Scratch()


def status_message(status: int) -> str:
    return ffi.string(lib.ksi_status_message(status)).decode("ascii")


def _raise_for(status: int, what: str) -> None:
    message = "%s: %s" % (what, status_message(status))
    if status == lib.KSI_ERR_TRUNCATED:
        raise TruncatedDataError(message)
    if status == lib.KSI_ERR_UNSUPPORTED:
        raise UnsupportedError(message)
    if status in (lib.KSI_ERR_BAD_MODE, lib.KSI_ERR_BAD_LEVEL, lib.KSI_ERR_OUT_OF_RANGE,
                  lib.KSI_ERR_BAD_ARGUMENT):
        raise DecodeError(message)
    raise KsinspectError(message)


def _check_u64(value: int, what: str) -> None:
    if not 0 <= value <= U64_MAX:
        raise DecodeError("%s: %#x does not fit in 64 bits" % (what, value))


# --- selectors -------------------------------------------------------------

def decode_selector(value: int) -> tuple:
    if not 0 <= value <= 0xFFFF:
        raise DecodeError("selector %#x does not fit in 16 bits" % value)
    lib.ksi_decode_selector(value, _scratch.selector)
    return SELECTOR_RECORD.unpack(_scratch.selector_buf)


# --- descriptors -----------------------------------------------------------

_decode_descriptor = lib.ksi_decode_descriptor
_unpack_descriptor = DESCRIPTOR_RECORD.unpack


def decode_descriptor(lo: int, hi: Optional[int], mode: int) -> tuple:
    """Decode one descriptor; returns the ksi_descriptor fields in order."""
    scratch = _scratch
    try:
        if hi is None:
            status = _decode_descriptor(lo, 0, 0, mode, scratch.descriptor)
        else:
            status = _decode_descriptor(lo, hi, 1, mode, scratch.descriptor)
    except OverflowError:
        _check_u64(lo, "descriptor low qword")
        _check_u64(hi or 0, "descriptor high qword")
        raise
    if status:
        _raise_for(status, "descriptor %#x" % lo)
    return _unpack_descriptor(scratch.descriptor_buf)


# Large outputs come from an anonymous mapping faulted in by one syscall
# (MAP_POPULATE): per-page faults on a fresh 100 MB array cost more than
# the decoding itself.
_POPULATE_FLAGS = (getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
                   | getattr(mmap, "MAP_POPULATE", 0)) if hasattr(mmap, "MAP_POPULATE") else 0
_POPULATE_MIN_BYTES = 1 << 20


def _new_array(ctype: str, count: int):
    """A writable C array of count structs (its contents are overwritten by C)."""
    count = max(count, 1)
    size = count * ffi.sizeof(ctype)
    if _POPULATE_FLAGS and size >= _POPULATE_MIN_BYTES:
        mapping = mmap.mmap(-1, size, flags=_POPULATE_FLAGS)
        # The cdata keeps the buffer alive, and the buffer keeps the mapping.
        return ffi.cast(ctype + " *", ffi.from_buffer(mapping, require_writable=True)), mapping
    return ffi.new(ctype + "[]", count), None


def _rows(out, count: int, ctype: str) -> memoryview:
    """The C output (a cdata array or its mapping) as bytes, without a copy;
    rows are read with the *_RECORD formats."""
    size = count * ffi.sizeof(ctype)
    if isinstance(out, mmap.mmap):
        return memoryview(out)[:size]
    return memoryview(ffi.buffer(out, size))


def decode_descriptor_table(data, mode: int, table: int) -> memoryview:
    """Decode a descriptor table held in a bytes-like object (zero copy in).

    Returns the ksi_descriptor structs as one memoryview (DESCRIPTOR_RECORD per row).
    """
    view = memoryview(data).cast("B")
    length = len(view)
    capacity = length // 8
    out, mapping = _new_array("ksi_descriptor", capacity)
    count = ffi.new("size_t *")
    status = lib.ksi_decode_descriptor_table(ffi.from_buffer(view), length, mode, table,
                                             out, capacity, count)
    if status not in (lib.KSI_OK, lib.KSI_ERR_TRUNCATED):
        _raise_for(status, "descriptor table")
    return _rows(mapping if mapping is not None else out, count[0], "ksi_descriptor")


# --- paging entries ---------------------------------------------------------

def pat_default() -> int:
    return lib.ksi_pat_default()


def paging_levels(mode: int) -> int:
    return lib.ksi_paging_levels(mode)


_decode_pte = lib.ksi_decode_pte
_unpack_pte = PTE_RECORD.unpack


def decode_pte(value: int, mode: int, level: int, maxphyaddr: int, pat: int,
               options: int) -> tuple:
    scratch = _scratch
    config = scratch.pte_config
    try:
        config.maxphyaddr = maxphyaddr
        config.pat_msr = pat
        config.options = options
        status = _decode_pte(value, config, mode, level, scratch.pte)
    except OverflowError:
        _check_u64(value, "paging entry")
        _check_u64(pat, "IA32_PAT")
        raise DecodeError("MAXPHYADDR %r is out of range" % (maxphyaddr,)) from None
    if status:
        _raise_for(status, "paging entry %#x (mode %d, level %d)" % (value, mode, level))
    return _unpack_pte(scratch.pte_buf)


def decode_pte_table(data, mode: int, level: int, maxphyaddr: int, pat: int,
                     options: int) -> memoryview:
    """Decode consecutive entries; returns the ksi_pte structs as one memoryview (PTE_RECORD per row)."""
    view = memoryview(data).cast("B")
    width = 4 if mode == lib.KSI_PAGING_32BIT else 8
    if len(view) % width:
        raise TruncatedDataError("paging entries: %d bytes is not a multiple of the %d-byte entry"
                                 % (len(view), width))
    count = len(view) // width
    out, mapping = _new_array("ksi_pte", count)
    config = ffi.new("ksi_paging_config *", (maxphyaddr, pat, options))
    status = lib.ksi_decode_pte_table(ffi.from_buffer(view), len(view), config, mode, level,
                                      out, count)
    if status:
        _raise_for(status, "paging entries (mode %d, level %d)" % (mode, level))
    return _rows(mapping if mapping is not None else out, count, "ksi_pte")


# --- debug registers --------------------------------------------------------

def decode_dr7(value: int, options: int) -> tuple:
    _check_u64(value, "DR7")
    lib.ksi_decode_dr7(value, options, _scratch.dr7)
    return DR7_RECORD.unpack(_scratch.dr7_buf)


def decode_dr6(value: int) -> tuple:
    _check_u64(value, "DR6")
    lib.ksi_decode_dr6(value, _scratch.dr6)
    return DR6_RECORD.unpack(_scratch.dr6_buf)


def decode_dr7_batch(values: Sequence[int], options: int) -> memoryview:
    array = ffi.new("uint64_t[]", list(values))
    n = len(values)
    out = ffi.new("ksi_dr7[]", max(n, 1))
    lib.ksi_decode_dr7_batch(array, n, options, out)
    return _rows(out, n, "ksi_dr7")


def encode_dr7(requests: Sequence[Tuple[int, int, int, int, Optional[int]]],
               options: int) -> int:
    """requests: (slot, condition, length, scope, address-or-None) tuples."""
    n = len(requests)
    array = ffi.new("ksi_dr7_request[]", max(n, 1))
    for i, (slot, condition, length, scope, address) in enumerate(requests):
        for value, what in ((slot, "slot"), (length, "length"), (address or 0, "address")):
            if not 0 <= value <= U64_MAX:
                raise EncodeError("breakpoint %d: %s %r is out of range" % (i, what, value), i)
        array[i] = (slot, condition, length, scope, address or 0, address is not None)
    dr7 = ffi.new("uint64_t *")
    failed = ffi.new("size_t *")
    status = lib.ksi_encode_dr7(array, n, options, dr7, failed)
    if status:
        index = failed[0]
        raise EncodeError("breakpoint %d (slot %d): %s" % (index, requests[index][0],
                                                           status_message(status)), index)
    return dr7[0]


# Constants re-exported for the value layer, which never touches lib itself.
MODE_LEGACY = lib.KSI_MODE_LEGACY
MODE_LONG = lib.KSI_MODE_LONG
TABLE_FLAT = lib.KSI_TABLE_FLAT
TABLE_SEGMENTS = lib.KSI_TABLE_SEGMENTS
TABLE_INTERRUPTS = lib.KSI_TABLE_INTERRUPTS
PAGING_MODES = {"32": lib.KSI_PAGING_32BIT, "pae": lib.KSI_PAGING_PAE,
                "4level": lib.KSI_PAGING_4LEVEL, "5level": lib.KSI_PAGING_5LEVEL}
PAGING_OPTION_PSE = lib.KSI_PO_PSE
PAGING_OPTION_NXE = lib.KSI_PO_NXE
PAGING_OPTION_WP = lib.KSI_PO_WP
DR_OPTION_LONG_MODE = lib.KSI_DO_LONG_MODE
DR_OPTION_CR4_DE = lib.KSI_DO_CR4_DE
DR_OPTION_LE = lib.KSI_DO_LE
DR_OPTION_GE = lib.KSI_DO_GE
DR_OPTION_GD = lib.KSI_DO_GD


def enum_values(prefix: str) -> dict:
    """Every C enum constant whose name starts with prefix, name -> value."""
    return {name: getattr(lib, name) for name in dir(lib) if name.startswith(prefix)}
