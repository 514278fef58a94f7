"""WinDbg's ways of showing memory and paging entries, for readers who know them.

* :func:`pte_flags` -- the status letters of ``!pte`` (``pfn 1a907
  ---DA--UWEV``). Microsoft documents each letter and the bit it reads in
  the ``!pte`` page ("the status bits for the PDE and the PTE",
  https://learn.microsoft.com/en-us/windows-hardware/drivers/debuggercmds/-pte):
  0x200 ``C`` copy on write (a Windows software bit), 0x100 ``G`` global,
  0x80 ``L`` large page ("only occurs in PDEs, never in PTEs"), 0x40 ``D``
  dirty, 0x20 ``A`` accessed, 0x10 ``N`` cache disabled, 0x8 ``T``
  write-through, 0x4 ``U`` user or ``K`` kernel (owner), 0x2 ``W`` writable
  or ``R`` read-only, 0x1 ``V`` valid, and ``E`` executable ("for platforms
  that do not support a hardware execute/noexecute bit ... the E is always
  displayed"). WinDbg prints them in the order ``C G L D A N T U/K W/R E V``
  (its x64 output reads ``---DA--UWEV``: C, G and L clear, then D and A, N
  and T clear, user, writable, executable, valid); a letter's bit is the
  SDM's bit of the same value (vol. 3A Tables 4-14 to 4-20: R/W bit 1,
  U/S 2, PWT 3, PCD 4, A 5, D 6, PS 7, G 8, XD 63).
* :func:`address_text` -- an address as WinDbg prints it: 8 hex digits on
  a 32-bit target, 16 with a backtick between the halves on a 64-bit one.
* :func:`dump_lines` and :func:`dps_line` -- ``dd`` / ``dq`` lines
  (the address of the first unit, two spaces, then the units, four dwords
  or two qwords a line, little-endian) and ``dps`` lines (one pointer-sized
  value a line, then its symbol); "if you attempt to display an invalid
  address, its contents are shown as question marks" (the ``d*`` page).

Only integers and strings come in; nothing here reads memory.
"""
from typing import Iterable, List, Optional, Sequence, Tuple

__all__ = ["UNITS_PER_LINE", "address_text", "dps_line", "dump_lines", "join_flags",
           "pte_flags", "value_text"]

UNITS_PER_LINE = {4: 4, 8: 2}        # dd: four dwords a line, dq: two qwords


def pte_flags(entry: int, large: bool, nx_capable: bool) -> str:
    """The eleven ``!pte`` letters of a present paging entry.

    Args:
        entry: the entry's value.
        large: whether the entry maps a large page (L reads bit 7 only there:
            bit 7 of a PTE is PAT, and of a PML4E reserved).
        nx_capable: whether bit 63 is execute-disable (IA32_EFER.NXE=1 outside
            32-bit paging); without it ``E`` is always shown, as WinDbg does.
    """
    def letter(bit: int, shown: str, clear: str = "-") -> str:
        return shown if entry >> bit & 1 else clear

    return "".join((
        letter(9, "C"), letter(8, "G"), "L" if large else "-", letter(6, "D"), letter(5, "A"),
        letter(4, "N"), letter(3, "T"), letter(2, "U", "K"), letter(1, "W", "R"),
        "-" if nx_capable and entry >> 63 & 1 else "E", letter(0, "V")))


def address_text(address: int, bits: int) -> str:
    """``fffff800`01234567`` (bits=64) or ``c0001000`` (bits=32)."""
    if bits == 32:
        return "%08x" % (address & 0xFFFF_FFFF)
    return "%08x`%08x" % (address >> 32 & 0xFFFF_FFFF, address & 0xFFFF_FFFF)


def value_text(value: Optional[int], size: int) -> str:
    """One unit: 8 hex digits (dword), ``xxxxxxxx`xxxxxxxx`` (qword), or its
    question marks when the memory cannot be read."""
    if size == 4:
        return "????????" if value is None else "%08x" % value
    return "????????`????????" if value is None else address_text(value, 64)


def dump_lines(units: Sequence[Tuple[int, Optional[int]]], size: int,
               address_bits: int) -> List[str]:
    """``dd`` (size 4) or ``dq`` (size 8) lines for (address, value) units,
    value None where unreadable; a line starts at every UNITS_PER_LINE-th unit."""
    per_line = UNITS_PER_LINE[size]
    lines = []
    for first in range(0, len(units), per_line):
        row = units[first:first + per_line]
        lines.append("%s  %s" % (address_text(row[0][0], address_bits),
                                 " ".join(value_text(v, size) for _a, v in row)))
    return lines


def dps_line(address: int, value: Optional[int], size: int, address_bits: int,
             symbol: Optional[str] = None) -> str:
    """One ``dps`` line: address, the pointer, and its symbol when it has one."""
    text = "%s  %s" % (address_text(address, address_bits), value_text(value, size))
    return text + (" " + symbol if symbol else "")


def join_flags(parts: Iterable[Optional[str]], missing: str = "not valid") -> str:
    """Per-level strings joined with ``/`` (a level that is not present: ``not valid``)."""
    return "/".join(missing if p is None else p for p in parts)
