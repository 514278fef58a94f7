"""The one boundary to the live helpers of the C core (``csrc/ksi_live.c``).

Only this module calls the ``ksi_live_*`` functions of ``ksinspect._core``:
it checks arguments, calls C, turns a status into a named exception and
returns plain Python ints, tuples and bytes. Callers never see cdata.

The compiled module is imported through :mod:`ksinspect._native`, so the
build-version check there also covers these functions.

SGDT, SIDT, SLDT and STR (:func:`sgdt` ...) fault with SIGSEGV in user mode
when UMIP is enforced and not emulated: call them only in a child process
(:mod:`ksinspect.live.linux` does).
"""
import errno as _errno
import os
from typing import Dict, List, Sequence, Tuple

from . import ffi, layout as _layout, lib, status_message
from ..errors import DecodeError, KsinspectError, LiveOSError, UnsupportedError

__all__ = [
    "LiveOSError", "supported", "features", "FEATURE_X86", "FEATURE_X86_64", "FEATURE_LINUX",
    "LAR_MASK", "LDT_ENTRIES", "LDT_ENTRY_SIZE", "SREG_FIELDS", "PROBE_FIELDS", "ES_LOAD_FIELDS",
    "read_sregs", "fs_gs_base", "lar", "lsl", "probe_selectors", "load_es", "read_ldt",
    "write_ldt", "sgdt", "sidt", "sldt", "str_",
]


def _fields(ctype: str) -> Tuple[str, ...]:
    return _layout(ctype)[0]


SREG_FIELDS = _fields("ksi_live_sregs")        # ("cs", "ds", "es", "fs", "gs", "ss")
PROBE_FIELDS = _fields("ksi_live_probe")
ES_LOAD_FIELDS = _fields("ksi_live_es_load")

FEATURE_X86 = lib.KSI_LF_X86
FEATURE_X86_64 = lib.KSI_LF_X86_64
FEATURE_LINUX = lib.KSI_LF_LINUX
LAR_MASK = lib.KSI_LIVE_LAR_MASK
LDT_ENTRIES = lib.KSI_LIVE_LDT_ENTRIES
LDT_ENTRY_SIZE = lib.KSI_LIVE_LDT_ENTRY_SIZE

_LDT_REQUEST_FIELDS = _fields("ksi_live_ldt_request")



def _raise_for(status: int, what: str, os_errno: int = 0) -> None:
    if os_errno and os_errno != _errno.ENOSYS:
        raise LiveOSError(os_errno, "%s: %s" % (what, os.strerror(os_errno)))
    message = "%s: %s" % (what, status_message(status))
    if status == lib.KSI_ERR_UNSUPPORTED:
        if os_errno == _errno.ENOSYS:
            message += " (the kernel does not provide this system call)"
        raise UnsupportedError(message)
    if status in (lib.KSI_ERR_OUT_OF_RANGE, lib.KSI_ERR_BAD_ARGUMENT):
        raise DecodeError(message)
    raise KsinspectError(message)


def _check_selector(selector: int) -> None:
    if not isinstance(selector, int) or not 0 <= selector <= 0xFFFF:
        raise DecodeError("selector %r does not fit in 16 bits" % (selector,))


def supported() -> bool:
    """True where the x86 helpers (segment registers, LAR, LSL) work."""
    return bool(lib.ksi_live_supported())


def features() -> int:
    """The FEATURE_* bits of this build."""
    return int(lib.ksi_live_features())


def read_sregs() -> Dict[str, int]:
    """CS, DS, ES, FS, GS, SS of the calling thread, name -> selector."""
    out = ffi.new("ksi_live_sregs *")
    status = lib.ksi_live_read_sregs(out)
    if status:
        _raise_for(status, "reading the segment registers")
    return {name: int(getattr(out, name)) for name in SREG_FIELDS}


def fs_gs_base() -> Tuple[int, int]:
    """(FS base, GS base) of the calling thread (x86-64 Linux, arch_prctl)."""
    fs = ffi.new("uint64_t *")
    gs = ffi.new("uint64_t *")
    err = ffi.new("uint64_t *")
    status = lib.ksi_live_fs_gs_base(fs, gs, err)
    if status:
        _raise_for(status, "arch_prctl(ARCH_GET_FS/ARCH_GET_GS)", int(err[0]))
    return int(fs[0]), int(gs[0])


def lar(selector: int) -> Tuple[bool, int]:
    """(valid, access rights masked with LAR_MASK) from the LAR instruction."""
    _check_selector(selector)
    ar = ffi.new("uint64_t *")
    valid = ffi.new("uint64_t *")
    status = lib.ksi_live_lar(selector, ar, valid)
    if status:
        _raise_for(status, "LAR %#x" % selector)
    return bool(valid[0]), int(ar[0])


def lsl(selector: int) -> Tuple[bool, int]:
    """(valid, byte-granular limit) from the LSL instruction."""
    _check_selector(selector)
    limit = ffi.new("uint64_t *")
    valid = ffi.new("uint64_t *")
    status = lib.ksi_live_lsl(selector, limit, valid)
    if status:
        _raise_for(status, "LSL %#x" % selector)
    return bool(valid[0]), int(limit[0])


def probe_selectors(selectors: Sequence[int]) -> List[Tuple[int, ...]]:
    """LAR and LSL on every selector in one C call.

    Returns:
        One tuple per selector in PROBE_FIELDS order: (selector, ar_valid,
        access_rights, limit_valid, limit).
    """
    values = list(selectors)
    for value in values:
        _check_selector(value)
    n = len(values)
    array = ffi.new("uint64_t[]", values or [0])
    out = ffi.new("ksi_live_probe[]", max(n, 1))
    status = lib.ksi_live_probe_selectors(array, n, out)
    if status:
        _raise_for(status, "probing %d selectors" % n)
    return [tuple(int(getattr(out[i], name)) for name in PROBE_FIELDS) for i in range(n)]


def load_es(selector: int) -> Dict[str, int]:
    """Load selector into ES, read it back, LAR/LSL it, restore ES.

    Raises:
        DecodeError: the selector would fault if loaded (not present, not
            readable, not visible at this privilege level); ES is untouched.
    """
    _check_selector(selector)
    out = ffi.new("ksi_live_es_load *")
    status = lib.ksi_live_load_es(selector, out)
    if status == lib.KSI_ERR_BAD_ARGUMENT:
        raise DecodeError("selector %#x cannot be loaded into ES: LAR says it is invalid, "
                          "not present, not readable or not accessible at this privilege "
                          "level" % selector)
    if status:
        _raise_for(status, "loading %#x into ES" % selector)
    return {name: int(getattr(out, name)) for name in ES_LOAD_FIELDS}


def read_ldt(size: int = LDT_ENTRIES * LDT_ENTRY_SIZE) -> bytes:
    """modify_ldt(0): up to size bytes of this process's LDT.

    Linux zero-fills past the end of the LDT and reports the full size, so
    the result has size bytes once an LDT exists and b"" before.
    """
    if not 0 <= size <= LDT_ENTRIES * LDT_ENTRY_SIZE:
        raise DecodeError("LDT read size %d is not within 0..%d"
                          % (size, LDT_ENTRIES * LDT_ENTRY_SIZE))
    buf = ffi.new("uint8_t[]", max(size, 1))
    nread = ffi.new("size_t *")
    err = ffi.new("uint64_t *")
    status = lib.ksi_live_read_ldt(buf, size, nread, err)
    if status:
        _raise_for(status, "modify_ldt(0) (read the LDT)", int(err[0]))
    return ffi.buffer(buf, nread[0])[:]


def write_ldt(entry_number: int, base_addr: int, limit: int, seg_32bit: int, contents: int,
              read_exec_only: int, limit_in_pages: int, seg_not_present: int, useable: int,
              lm: int) -> None:
    """modify_ldt(0x11): write one LDT entry (the fields of struct user_desc)."""
    values = (entry_number, base_addr, limit, seg_32bit, contents, read_exec_only,
              limit_in_pages, seg_not_present, useable, lm)
    for name, value in zip(_LDT_REQUEST_FIELDS, values):
        if not isinstance(value, int) or not 0 <= value < (1 << 64):
            raise DecodeError("LDT entry: %s=%r is not a non-negative integer" % (name, value))
    request = ffi.new("ksi_live_ldt_request *", values)
    err = ffi.new("uint64_t *")
    status = lib.ksi_live_write_ldt(request, err)
    if status == lib.KSI_ERR_OUT_OF_RANGE:
        raise DecodeError("LDT entry: a field is out of range (entry_number < %d, base_addr "
                          "32 bits, limit 20 bits, contents 0-3, flags 0 or 1): %r"
                          % (LDT_ENTRIES, dict(zip(_LDT_REQUEST_FIELDS, values))))
    if status:
        _raise_for(status, "modify_ldt(0x11) (write LDT entry %d)" % entry_number, int(err[0]))


def _table_register(fn, what: str) -> Tuple[int, int]:
    out = ffi.new("ksi_live_table_register *")
    status = fn(out)
    if status:
        _raise_for(status, what)
    return int(out.base), int(out.limit)


def sgdt() -> Tuple[int, int]:
    """(base, limit) of GDTR. May kill the process under UMIP: use a child."""
    return _table_register(lib.ksi_live_sgdt, "SGDT")


def sidt() -> Tuple[int, int]:
    """(base, limit) of IDTR. May kill the process under UMIP: use a child."""
    return _table_register(lib.ksi_live_sidt, "SIDT")


def _selector_register(fn, what: str) -> int:
    out = ffi.new("uint64_t *")
    status = fn(out)
    if status:
        _raise_for(status, what)
    return int(out[0])


def sldt() -> int:
    """LDTR selector. May kill the process under UMIP: use a child."""
    return _selector_register(lib.ksi_live_sldt, "SLDT")


def str_() -> int:
    """TR selector (the STR instruction). May kill the process under UMIP: use a child."""
    return _selector_register(lib.ksi_live_str, "STR")
