"""The boundary to selectors, descriptors and descriptor tables (``csrc/ksi_segment.c``)."""
import threading
from typing import Optional

from . import (ffi, layout, lib, percall, check_u64 as _check_u64, new_array as _new_array,
               raise_for as _raise_for, rows as _rows)
from ..errors import DecodeError

SELECTOR_FIELDS, SELECTOR_RECORD = layout("ksi_selector")
DESCRIPTOR_FIELDS, DESCRIPTOR_RECORD = layout("ksi_descriptor")
MODE_LEGACY = lib.KSI_MODE_LEGACY
MODE_LONG = lib.KSI_MODE_LONG
TABLE_FLAT = lib.KSI_TABLE_FLAT
TABLE_SEGMENTS = lib.KSI_TABLE_SEGMENTS
TABLE_INTERRUPTS = lib.KSI_TABLE_INTERRUPTS


class _Scratch(threading.local):
    """Per-thread output structs: C releases the GIL, so they are not shared."""

    def __init__(self):
        self.descriptor = ffi.new("ksi_descriptor *")
        self.descriptor_buf = ffi.buffer(self.descriptor)
        self.selector = ffi.new("ksi_selector *")
        self.selector_buf = ffi.buffer(self.selector)


_scratch = _Scratch()


def decode_selector(value: int) -> tuple:
    if not 0 <= value <= 0xFFFF:
        raise DecodeError("selector %#x does not fit in 16 bits" % value)
    lib.ksi_decode_selector(value, _scratch.selector)
    return SELECTOR_RECORD.unpack(_scratch.selector_buf)


# --- descriptors -----------------------------------------------------------

_decode_descriptor = lib.ksi_decode_descriptor
_unpack_descriptor = DESCRIPTOR_RECORD.unpack
_fast_decode = percall.decode_descriptor if percall is not None else None


def decode_descriptor(lo: int, hi: Optional[int], mode: int) -> tuple:
    """Decode one descriptor; returns the ksi_descriptor fields in order."""
    if _fast_decode is not None:
        out = _fast_decode(lo, hi, mode)
        if out.__class__ is bytes:
            return _unpack_descriptor(out)
        # None (an argument the checked path below refuses) or a status: the same call.
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


