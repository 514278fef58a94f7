"""The one boundary to the control-register decoders of the C core
(``csrc/ksi_control.c``): CR0, CR4, IA32_EFER, RFLAGS, the page-fault error
code and the operating mode they select.

Only this module calls ``ksi_decode_control*``, ``ksi_control_layout`` and
``ksi_cpu_operating_mode``; callers get plain tuples of ints. The compiled
module is imported through :mod:`ksinspect._native`, so its build-version
check covers these functions too.
"""
import threading
from array import array
from typing import Sequence, Tuple

from . import (check_u64 as _check_u64, ffi, layout as _layout, lib, new_array as _new_array,
               raise_for as _raise_for, rows as _rows)
from ..errors import DecodeError

CONTROL_FIELDS, CONTROL_RECORD = _layout("ksi_control")
CPU_STATE_FIELDS, CPU_STATE_RECORD = _layout("ksi_cpu_state")

REGISTERS = {"cr0": lib.KSI_REG_CR0, "cr4": lib.KSI_REG_CR4, "efer": lib.KSI_REG_EFER,
             "rflags": lib.KSI_REG_RFLAGS, "pf": lib.KSI_REG_PF_ERROR}


class _Scratch(threading.local):
    def __init__(self):
        self.control = ffi.new("ksi_control *")
        self.control_buf = ffi.buffer(self.control)
        self.state = ffi.new("ksi_cpu_state *")
        self.state_buf = ffi.buffer(self.state)
        self.defined = ffi.new("uint64_t *")
        self.one = ffi.new("uint64_t *")


_scratch = _Scratch()


def layout(kind: int) -> Tuple[int, int]:
    """(defined bits, bits that must read 1) of one register."""
    status = lib.ksi_control_layout(kind, _scratch.defined, _scratch.one)
    if status:
        _raise_for(status, "register kind %r" % (kind,))
    return _scratch.defined[0], _scratch.one[0]


def decode(kind: int, value: int, what: str) -> tuple:
    """The ksi_control fields of one value, in CONTROL_FIELDS order."""
    _check_u64(value, what)
    status = lib.ksi_decode_control(kind, value, _scratch.control)
    if status:
        _raise_for(status, what)
    return CONTROL_RECORD.unpack(_scratch.control_buf)


def decode_batch(kind: int, values: Sequence[int], what: str) -> memoryview:
    """Decode many values in one C call; rows in CONTROL_RECORD format."""
    if isinstance(values, array) and values.typecode == "Q":
        source = ffi.from_buffer("uint64_t[]", values)       # zero copy
    else:
        try:
            source = ffi.new("uint64_t[]", list(values))
        except (OverflowError, TypeError):
            raise DecodeError("%s: a value is not an integer in 0..2**64-1" % what) from None
    n = len(values)
    out, mapping = _new_array("ksi_control", n)
    status = lib.ksi_decode_control_batch(kind, source, n, out)
    if status:
        _raise_for(status, what)
    return _rows(mapping if mapping is not None else out, n, "ksi_control")


def operating_mode(cr0: int, cr4: int, efer: int, rflags: int, cs_long: bool) -> tuple:
    """The ksi_cpu_state fields (mode, paging, address_bits, anomalies)."""
    for value, what in ((cr0, "CR0"), (cr4, "CR4"), (efer, "IA32_EFER"), (rflags, "RFLAGS")):
        _check_u64(value, what)
    lib.ksi_cpu_operating_mode(cr0, cr4, efer, rflags, 1 if cs_long else 0, _scratch.state)
    return CPU_STATE_RECORD.unpack(_scratch.state_buf)
