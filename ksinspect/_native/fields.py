"""The one boundary to the field extractor of the C core (``csrc/ksi_fields.c``).

Only this module calls ``ksi_extract_fields``: it builds the spec array,
passes the buffer zero-copy (bytes, bytearray, mmap, memoryview), checks the
status and hands back Python arrays. Callers never see cdata.
"""
from array import array
from typing import Any, Sequence, Tuple

from . import ffi, lib, raise_for as _raise_for
from ..errors import DecodeError

SIGNED = lib.KSI_FIELD_SIGNED
STATUS_OK = lib.KSI_OK
STATUS_TRUNCATED = lib.KSI_ERR_TRUNCATED

# (offset, size, signed, bit_position, bit_length); bit_length 0 = whole value.
FieldSpec = Tuple[int, int, bool, int, int]


def extract(data: Any, specs: Sequence[FieldSpec], starts: Sequence[int]
            ) -> Tuple[array, bytes]:
    """Read every field of every record in one C call.

    Args:
        data: the buffer (anything exposing the buffer protocol).
        specs: the fields, as (offset, size, signed, bit_position, bit_length).
        starts: byte offsets of the records in ``data``.

    Returns:
        (values, status): ``values`` an ``array('Q')`` of len(starts) *
        len(specs), row-major (signed fields in two's complement);
        ``status`` one byte per record, STATUS_OK or STATUS_TRUNCATED.

    Raises:
        DecodeError: a spec is invalid (size not 1/2/4/8, bit range outside it)
            or a start is negative / wider than 64 bits.
    """
    count = len(specs)
    table = ffi.new("ksi_field_spec[]", max(count, 1))
    for i, (offset, size, signed, bit_position, bit_length) in enumerate(specs):
        if not 0 <= offset < 1 << 32:
            raise DecodeError("field %d: offset %r does not fit in 32 bits" % (i, offset))
        table[i] = (offset, size, SIGNED if signed else 0, bit_position, bit_length)
    try:
        starts_array = starts if isinstance(starts, array) and starts.typecode == "Q" \
            else array("Q", starts)
    except OverflowError:
        raise DecodeError("record start offsets must be integers in 0..2**64-1") from None
    records = len(starts_array)
    values = array("Q", (0,)) * (records * count) if records and count else array("Q")
    status = bytearray(records)
    view = ffi.from_buffer(data)
    rc = lib.ksi_extract_fields(
        ffi.cast("const uint8_t *", view), len(view), table, count,
        ffi.cast("const uint64_t *", ffi.from_buffer(starts_array)) if records else ffi.NULL,
        records,
        ffi.cast("uint64_t *", ffi.from_buffer(values, require_writable=True))
        if len(values) else ffi.NULL,
        ffi.cast("uint8_t *", ffi.from_buffer(status, require_writable=True))
        if records else ffi.NULL)
    if rc != lib.KSI_OK:
        _raise_for(rc, "field extraction")
    return values, bytes(status)
