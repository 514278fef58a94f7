"""What a format parser found in an image (:class:`ParsedImage`), before
``open_image`` turns it into a PhysicalMemory; and the signatures and header
caps the parsers share."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .cpu import CpuState

# Caps on counts read from headers: a hostile header cannot make us loop or
# allocate beyond these (every count is also checked against the file size).
MAX_SEGMENTS = 1 << 20
MAX_NOTES = 1 << 17
MAX_LIME_RANGES = 1 << 20

# The first bytes of each format that is parsed by a module imported only
# when its image is opened (open_image detects the format from these).
KDUMP_SIGNATURES = (b"KDUMP   ", b"DISKDUMP")      # makedumpfile's header, 8 bytes
KDUMP_FLAT_SIGNATURE = b"makedumpfile\0\0\0\0"    # its flattened stream, 16 bytes
MINIDUMP_SIGNATURE = b"MDMP"                       # MINIDUMP_HEADER.Signature


def is_kdump(head: bytes) -> bool:
    return head[:8] in KDUMP_SIGNATURES or head[:16] == KDUMP_FLAT_SIGNATURE


def is_minidump(head: bytes) -> bool:
    return head[:4] == MINIDUMP_SIGNATURE


@dataclass
class ParsedImage:
    """One image as its format's parser read it: where each physical range
    is stored in the file (``runs``), the ranges it declares but does not
    hold (``absent``), the CPU state and notes it carries, what looked wrong.
    """

    format: str
    description: str
    runs: List[Tuple[int, int, int]] = field(default_factory=list)   # (start, length, offset)
    absent: List[Tuple[int, int]] = field(default_factory=list)       # (start, length)
    cpus: List[CpuState] = field(default_factory=list)
    prstatus: List[Dict[str, int]] = field(default_factory=list)
    vmcoreinfo: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    machine: Optional[int] = None
    container: Any = None      # a format's own decoded structures (minidump streams)
    reader: Any = None         # pages not stored flat (kdump): read(pa, n, missing)
