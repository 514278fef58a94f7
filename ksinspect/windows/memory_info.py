"""MEMORY_BASIC_INFORMATION (what VirtualQueryEx says about a region), decoded
from its bytes, and the PAGE_* / MEM_* constants with their names.

x64 layout (winnt.h, 48 bytes): BaseAddress +0x00, AllocationBase +0x08,
AllocationProtect +0x10 (DWORD), PartitionId +0x14 (WORD, Windows 10 1709+;
padding before), RegionSize +0x18, State +0x20, Protect +0x24, Type +0x28.

Sources: Microsoft Learn "MEMORY_BASIC_INFORMATION", "Memory Protection
Constants" (PAGE_GUARD: "any attempt to access the page raises a
STATUS_GUARD_PAGE_VIOLATION exception and turns off the guard page status"),
"VirtualQueryEx", "Creating Guard Pages".
"""
import enum
import struct
from dataclasses import dataclass
from typing import Any, Dict, List

from ..errors import DecodeError, TruncatedDataError
from ..views.html import html_pre

MBI_SIZE = 48

# The access part of a protection (exactly one of these).
PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
PAGE_EXECUTE = 0x10
PAGE_EXECUTE_READ = 0x20
PAGE_EXECUTE_READWRITE = 0x40
PAGE_EXECUTE_WRITECOPY = 0x80
# Modifiers.
PAGE_GUARD = 0x100
PAGE_NOCACHE = 0x200
PAGE_WRITECOMBINE = 0x400

_ACCESS = {PAGE_NOACCESS: ("PAGE_NOACCESS", "---"), PAGE_READONLY: ("PAGE_READONLY", "r--"),
           PAGE_READWRITE: ("PAGE_READWRITE", "rw-"), PAGE_WRITECOPY: ("PAGE_WRITECOPY", "rc-"),
           PAGE_EXECUTE: ("PAGE_EXECUTE", "--x"), PAGE_EXECUTE_READ: ("PAGE_EXECUTE_READ", "r-x"),
           PAGE_EXECUTE_READWRITE: ("PAGE_EXECUTE_READWRITE", "rwx"),
           PAGE_EXECUTE_WRITECOPY: ("PAGE_EXECUTE_WRITECOPY", "rcx")}
_MODIFIERS = {PAGE_GUARD: "PAGE_GUARD", PAGE_NOCACHE: "PAGE_NOCACHE",
              PAGE_WRITECOMBINE: "PAGE_WRITECOMBINE"}
# The same protection without its write right (a write-only memory breakpoint).
_WITHOUT_WRITE = {PAGE_READWRITE: PAGE_READONLY, PAGE_WRITECOPY: PAGE_READONLY,
                  PAGE_EXECUTE_READWRITE: PAGE_EXECUTE_READ,
                  PAGE_EXECUTE_WRITECOPY: PAGE_EXECUTE_READ}


class MemState(enum.IntEnum):
    MEM_COMMIT = 0x1000
    MEM_RESERVE = 0x2000
    MEM_FREE = 0x10000


class MemType(enum.IntEnum):
    MEM_PRIVATE = 0x20000
    MEM_MAPPED = 0x40000
    MEM_IMAGE = 0x1000000


def protection_text(value: int) -> str:
    """PAGE_READWRITE|PAGE_GUARD; 0 (no access information: a reserved or free region)."""
    if value == 0:
        return "0"
    parts = []
    base = value & 0xFF
    if base in _ACCESS:
        parts.append(_ACCESS[base][0])
    elif base:
        parts.append("access %#x" % base)
    parts += [name for bit, name in _MODIFIERS.items() if value & bit]
    unknown = value & ~0x7FF
    if unknown:
        parts.append("%#x" % unknown)
    return "|".join(parts)


def protection_rights(value: int) -> str:
    """rwx-style rights of a protection (c = copy-on-write), as /proc/PID/maps shows them."""
    return _ACCESS.get(value & 0xFF, ("", "???"))[1]


def writable(value: int) -> bool:
    return (value & 0xFF) in _WITHOUT_WRITE


def guarded_protection(protection: int, access: str) -> int:
    """The protection a memory breakpoint gives a page: PAGE_GUARD added
    ("any"), or the write right taken away ("write").

    Raises:
        DecodeError: access is neither; or a write guard on a page that
            cannot be written (it would never fire).
    """
    if access == "any":
        return protection | PAGE_GUARD
    if access == "write":
        base = protection & 0xFF
        if base not in _WITHOUT_WRITE:
            raise DecodeError("the page is %s: it cannot be written, so a write guard would "
                              "never fire" % protection_text(protection))
        return (protection & ~0xFF) | _WITHOUT_WRITE[base]
    raise DecodeError("guard access %r must be 'any' or 'write'" % access)


def _enum_name(enum_type, value: int) -> str:
    try:
        return enum_type(value).name
    except ValueError:
        return "%#x" % value if value else "0"


@dataclass(frozen=True)
class MemoryBasicInformation:
    """One region as VirtualQueryEx describes it."""

    base: int
    allocation_base: int
    allocation_protect: int
    partition_id: int
    region_size: int
    state: int
    protect: int
    type: int
    raw: bytes = b""

    @classmethod
    def decode(cls, data: bytes) -> "MemoryBasicInformation":
        """Decode the 48 bytes of an x64 MEMORY_BASIC_INFORMATION.

        Raises:
            TruncatedDataError: fewer than 48 bytes.
        """
        if len(data) < MBI_SIZE:
            raise TruncatedDataError("MEMORY_BASIC_INFORMATION is %d bytes, got %d" % (
                MBI_SIZE, len(data)))
        base, alloc, alloc_prot, partition, size, state, prot, kind = struct.unpack_from(
            "<QQIHxxQIII", data, 0)
        return cls(base, alloc, alloc_prot, partition, size, state, prot, kind,
                   bytes(data[:MBI_SIZE]))

    @property
    def end(self) -> int:
        return self.base + self.region_size

    @property
    def committed(self) -> bool:
        return self.state == MemState.MEM_COMMIT

    @property
    def guarded(self) -> bool:
        return bool(self.protect & PAGE_GUARD)

    def contains(self, address: int) -> bool:
        return self.base <= address < self.end

    def to_dict(self) -> Dict[str, Any]:
        return {"base": self.base, "allocation_base": self.allocation_base,
                "allocation_protect": protection_text(self.allocation_protect),
                "region_size": self.region_size, "state": _enum_name(MemState, self.state),
                "protect": protection_text(self.protect), "type": _enum_name(MemType, self.type)}

    def __str__(self) -> str:
        return "%#x-%#x %s %s %s %s (allocated at %#x as %s)" % (
            self.base, self.end, protection_rights(self.protect), protection_text(self.protect),
            _enum_name(MemState, self.state), _enum_name(MemType, self.type),
            self.allocation_base, protection_text(self.allocation_protect))

    def explain(self) -> str:
        lines: List[str] = [str(self), "MEMORY_BASIC_INFORMATION (x64, 48 bytes; winnt.h, "
                            "Microsoft Learn \"MEMORY_BASIC_INFORMATION\")"]
        rows = [("BaseAddress", 0x00, "%#x (the region's first page)" % self.base),
                ("AllocationBase", 0x08, "%#x (VirtualAlloc's base, or the image base)"
                 % self.allocation_base),
                ("AllocationProtect", 0x10, "%#x %s (when allocated)" % (
                    self.allocation_protect, protection_text(self.allocation_protect))),
                ("PartitionId", 0x14, "%d" % self.partition_id),
                ("RegionSize", 0x18, "%#x (pages from BaseAddress with the same attributes)"
                 % self.region_size),
                ("State", 0x20, "%#x %s" % (self.state, _enum_name(MemState, self.state))),
                ("Protect", 0x24, "%#x %s" % (self.protect, protection_text(self.protect))),
                ("Type", 0x28, "%#x %s" % (self.type, _enum_name(MemType, self.type)))]
        lines += ["  %-17s +%#04x  %s" % row for row in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return html_pre(self.explain())

