"""The boundary to paging-structure entries (``csrc/ksi_paging.c``)."""
import threading

from . import (ffi, layout, lib, percall, check_u64 as _check_u64, new_array as _new_array,
               raise_for as _raise_for, rows as _rows)
from ..errors import DecodeError, TruncatedDataError

PTE_FIELDS, PTE_RECORD = layout("ksi_pte")
PAGING_MODES = {"32": lib.KSI_PAGING_32BIT, "pae": lib.KSI_PAGING_PAE,
                "4level": lib.KSI_PAGING_4LEVEL, "5level": lib.KSI_PAGING_5LEVEL}
PAGING_OPTION_PSE = lib.KSI_PO_PSE
PAGING_OPTION_NXE = lib.KSI_PO_NXE
PAGING_OPTION_WP = lib.KSI_PO_WP


class _Scratch(threading.local):
    """Per-thread output structs: C releases the GIL, so they are not shared."""

    def __init__(self):
        self.pte = ffi.new("ksi_pte *")
        self.pte_buf = ffi.buffer(self.pte)


_scratch = _Scratch()


def pat_default() -> int:
    return lib.ksi_pat_default()


def paging_levels(mode: int) -> int:
    return lib.ksi_paging_levels(mode)


_decode_pte = lib.ksi_decode_pte
_unpack_pte = PTE_RECORD.unpack
# ksi_paging_config structs by (MAXPHYADDR, IA32_PAT, options): read-only once
# filled, so threads share them; setting three cdata fields per decode cost
# more than the decode.
_configs: dict = {}
# The same configurations' addresses, for the per-call glue (which takes them as ints).
_addresses: dict = {}
_fast_decode = percall.decode_pte if percall is not None else None


def _config(maxphyaddr: int, pat: int, options: int):
    key = (maxphyaddr, pat, options)
    config = _configs.get(key)
    if config is None:
        try:
            config = ffi.new("ksi_paging_config *", key)
        except OverflowError:
            _check_u64(pat, "IA32_PAT")
            raise DecodeError("MAXPHYADDR %r is out of range" % (maxphyaddr,)) from None
        except TypeError:
            raise DecodeError("paging configuration %r is not three integers" % (key,)) from None
        if len(_configs) >= 256:
            _configs.clear()
            _addresses.clear()
        _configs[key] = config
        _addresses[key] = int(ffi.cast("uintptr_t", config))
    return config


def decode_pte(value: int, mode: int, level: int, maxphyaddr: int, pat: int,
               options: int) -> tuple:
    key = (maxphyaddr, pat, options)
    if _fast_decode is not None:
        address = _addresses.get(key)
        if address is None:
            _config(maxphyaddr, pat, options)
            address = _addresses[key]
        out = _fast_decode(value, address, mode, level)
        if out.__class__ is bytes:
            return _unpack_pte(out)
        # None (an argument the checked path below refuses) or a status: the same call.
    config = _configs.get(key) or _config(maxphyaddr, pat, options)
    scratch = _scratch
    try:
        status = _decode_pte(value, config, mode, level, scratch.pte)
    except OverflowError:
        _check_u64(value, "paging entry")
        raise
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


