"""The one boundary to the constraint scanner of the C core (``csrc/ksi_scan.c``).

Only this module calls ``ksi_scan*``: it packs a list of checks into a
``ksi_scan_spec``, validates it once, scans buffers (zero-copy, through
``ffi.from_buffer``) and hands back plain ints. Callers never see cdata.
"""
from array import array
from typing import Any, List, Sequence, Tuple

from . import U64_MAX, ffi, lib, raise_for as _raise_for
from ..errors import DecodeError

MASKED_EQUAL = lib.KSI_SCAN_MASKED_EQUAL
RANGE = lib.KSI_SCAN_RANGE
ALIGNED = lib.KSI_SCAN_ALIGNED
CSTRING = lib.KSI_SCAN_CSTRING
ZERO_OK = lib.KSI_SCAN_ZERO_OK



# (offset, length, kind, flags, a, b): one ksi_scan_check.
Check = Tuple[int, int, int, int, int, int]


class ScanSpec:
    """A validated ksi_scan_spec (and the check array it points to).

    Raises:
        DecodeError: the spec breaks a rule of ksi_scan_validate (alignment,
            a check outside the structure, an unknown kind...).
    """

    def __init__(self, size: int, align: int, anchor: Tuple[int, int, int],
                 checks: Sequence[Check]):
        self.size = size
        self.align = align
        self.anchor = anchor
        self.checks = tuple(checks)
        self._checks = ffi.new("ksi_scan_check[]", max(len(self.checks), 1))
        try:
            for i, check in enumerate(self.checks):
                self._checks[i] = check
            self._spec = ffi.new("ksi_scan_spec *", (size, align, anchor[0], anchor[1],
                                                     anchor[2], len(self.checks),
                                                     self._checks))
        except (OverflowError, TypeError) as exc:
            raise DecodeError("scan spec: a value does not fit its field: %s" % exc) from None
        status = lib.ksi_scan_validate(self._spec)
        if status:
            _raise_for(status, "scan spec (size %d, align %d, %d checks)" % (
                size, align, len(self.checks)))

    def match(self, data: Any) -> bool:
        """Whether the structure at the start of data passes every check."""
        view = ffi.from_buffer(data)
        return bool(lib.ksi_scan_match(view, len(view), self._spec))

    def scan(self, data: Any, base: int, start_limit: int, capacity: int = 4096
             ) -> Tuple[List[int], int]:
        """Every candidate in data (physical memory from ``base``) whose start
        offset is below ``start_limit``: (physical addresses, anchors seen).

        The C scan resumes with its cursor each time its output array fills.
        """
        if not 0 <= base <= U64_MAX:
            raise DecodeError("scan: base %#x does not fit in 64 bits" % base)
        view = ffi.from_buffer(data)
        cursor = ffi.new("ksi_scan_cursor *")
        out = ffi.new("uint64_t[]", capacity)
        count = ffi.new("size_t *")
        found: List[int] = []
        limit = min(max(start_limit, 0), U64_MAX)
        while True:
            status = lib.ksi_scan(view, len(view), base, limit, self._spec, cursor, out,
                                  capacity, count)
            if status:
                _raise_for(status, "scan")
            n = count[0]
            if n:
                found.extend(array("Q", bytes(ffi.buffer(out, 8 * n))))
            if cursor.done:
                return found, int(cursor.anchors)


__all__ = ["ALIGNED", "CSTRING", "Check", "MASKED_EQUAL", "RANGE", "ScanSpec", "ZERO_OK"]
