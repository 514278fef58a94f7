"""What a format parser found in an image, before it becomes a PhysicalMemory."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .cpu import CpuState

# Caps on counts read from headers: a hostile header cannot make us loop or
# allocate beyond these (every count is also checked against the file size).
MAX_SEGMENTS = 1 << 20
MAX_NOTES = 1 << 17
MAX_LIME_RANGES = 1 << 20


@dataclass
class Layout:
    format: str
    description: str
    runs: List[Tuple[int, int, int]] = field(default_factory=list)   # (start, length, offset)
    absent: List[Tuple[int, int]] = field(default_factory=list)       # (start, length)
    cpus: List[CpuState] = field(default_factory=list)
    prstatus: List[Dict[str, int]] = field(default_factory=list)
    vmcoreinfo: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    machine: Optional[int] = None
