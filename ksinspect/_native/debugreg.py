"""The boundary to the debug registers (``csrc/ksi_debugreg.c``)."""
import threading
from typing import Optional, Sequence, Tuple

from . import U64_MAX, ffi, layout, lib, status_message, check_u64 as _check_u64, rows as _rows
from ..errors import EncodeError

DR7_FIELDS, DR7_RECORD = layout("ksi_dr7")
DR6_FIELDS, DR6_RECORD = layout("ksi_dr6")
DR_OPTION_LONG_MODE = lib.KSI_DO_LONG_MODE
DR_OPTION_CR4_DE = lib.KSI_DO_CR4_DE
DR_OPTION_LE = lib.KSI_DO_LE
DR_OPTION_GE = lib.KSI_DO_GE
DR_OPTION_GD = lib.KSI_DO_GD


class _Scratch(threading.local):
    """Per-thread output structs: C releases the GIL, so they are not shared."""

    def __init__(self):
        self.dr7 = ffi.new("ksi_dr7 *")
        self.dr7_buf = ffi.buffer(self.dr7)
        self.dr6 = ffi.new("ksi_dr6 *")
        self.dr6_buf = ffi.buffer(self.dr6)


_scratch = _Scratch()


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


