"""The one boundary to the privileged-instruction probe of the C core
(``csrc/ksi_cpu_probe.c``): encodings and one run per call, as plain ints.

The probe replaces signal handlers for the duration of a call and is not
thread-safe: :mod:`ksinspect.live.cpu_probe` runs each probe in a forked child.
"""
from typing import Tuple

from . import ffi, layout as _layout, lib, raise_for as _raise_for

PROBE_FIELDS, PROBE_RECORD = _layout("ksi_cpu_probe")
COUNT = lib.KSI_PI_COUNT
INSTRUCTIONS = {name[len("KSI_PI_"):].lower(): getattr(lib, name) for name in dir(lib)
                if name.startswith("KSI_PI_") and name != "KSI_PI_COUNT"}


def encoding(instruction: int) -> bytes:
    out = ffi.new("uint8_t[]", 16)
    length = ffi.new("size_t *")
    status = lib.ksi_cpu_probe_encoding(instruction, out, 16, length)
    if status:
        _raise_for(status, "instruction %r" % (instruction,))
    return bytes(ffi.buffer(out, length[0]))


def run(instruction: int) -> Tuple[int, ...]:
    """Execute it here, now (call only in a process of its own); the ksi_cpu_probe fields."""
    result = ffi.new("ksi_cpu_probe *")
    status = lib.ksi_cpu_probe_run(instruction, result)
    if status:
        _raise_for(status, "probe of instruction %r" % (instruction,))
    return PROBE_RECORD.unpack(ffi.buffer(result))

