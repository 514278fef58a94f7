"""Sources of physical memory (DESIGN.md layer 3).

:func:`open_image` detects the format of a memory image -- raw, LiME, ELF
core from QEMU ``dump-guest-memory`` or kdump, compressed kdump (makedumpfile's
or QEMU's ``dump-guest-memory -z``), Windows minidump, and ``.xz``/``.gz`` of
any of them -- and returns a :class:`PhysicalMemory`: the run table the C
page walker reads through, a bounds-checked ``read(pa, n)`` and, where the
format carries it, the :class:`CpuState` (CR0-CR4, GDTR, IDTR, segment
caches) that says which paging mode is in force. An uncompressed file is
mmapped, never read whole.
"""
from .cpu import CpuState, SegmentCache
from .image import (FORMATS, MAX_DECOMPRESSED, PhysicalMemory, Run, open_image,
                    open_image_bytes)
from .qemu_registers import parse_info_registers, read_info_registers

__all__ = ["CpuState", "FORMATS", "MAX_DECOMPRESSED", "PhysicalMemory", "Run", "SegmentCache",
           "open_image", "open_image_bytes", "parse_info_registers", "read_info_registers"]
