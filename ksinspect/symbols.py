"""Symbol tables for naming addresses: System.map / kallsyms, and PE exports.

Used to resolve IDT handlers to ``symbol+offset`` and to know the kernel's
text range. A System.map and ``/proc/kallsyms`` share one format:
``ADDRESS TYPE NAME [MODULE]`` (nm(1) symbol types); ``.xz`` and ``.gz``
files are read transparently, through the bounded reader of
:mod:`ksinspect.text_input` (regular files only, at most 64 MiB).
"""
import bisect
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from .errors import KsinspectError
from .text_input import read_text_input

# nm types that name code or data at a real address; "A" (absolute) symbols
# such as per-CPU offsets are numbers, not places.
_PLACE_TYPES = set("TtWwDdBbRrVvGgSs")
_HEX = frozenset("0123456789abcdefABCDEF")


class SymbolError(KsinspectError, ValueError):
    """A symbol file cannot be read."""


def _hex_address(text: str) -> Optional[int]:
    if not text or len(text) > 16 or not set(text) <= _HEX:
        return None
    return int(text, 16)


def _shown(line: str) -> str:
    """A line of the file in a message: quoted, cut at 60 characters."""
    return '"%s"' % (line[:60] + ("..." if len(line) > 60 else ""))


@dataclass(frozen=True)
class Symbol:
    address: int
    name: str
    kind: str          # the nm type letter, or "export" for PE exports
    module: Optional[str] = None


class SymbolTable:
    """Sorted symbols with nearest-preceding lookup.

    Attributes:
        text_range: (first, last+1) of the kernel's text when the source says
            it (_stext/_etext in a System.map, the .text section of a PE);
            None otherwise.
        source: where the symbols came from.
    """

    def __init__(self, symbols: Iterable[Symbol], text_range: Optional[Tuple[int, int]] = None,
                 source: str = ""):
        self._symbols: List[Symbol] = sorted(symbols, key=lambda s: s.address)
        self._addresses = [s.address for s in self._symbols]
        self._by_name: Optional[dict] = None
        self.text_range = text_range
        self.source = source
        # (count, (line number, text) of the first) of the lines that were not symbols
        self.skipped: Tuple[int, Optional[Tuple[int, str]]] = (0, None)

    def __len__(self) -> int:
        return len(self._symbols)

    @classmethod
    def from_system_map(cls, path: str) -> "SymbolTable":
        """Read a System.map or a copy of /proc/kallsyms (optionally .xz/.gz).

        Raises:
            SymbolError: the file cannot be read or has no symbol lines.
        """
        path = os.fspath(path)
        data = read_text_input(path, "symbols", SymbolError, "symbol file")
        # A byte that is not ASCII makes its line one that is not a symbol
        # (a console's marker line); a binary file has no symbol line at all.
        return cls.parse_system_map(data.decode("ascii", "replace").splitlines(), source=path)

    @classmethod
    def parse_system_map(cls, lines: Iterable[str], source: str = "") -> "SymbolTable":
        """Symbols from ``ADDRESS TYPE NAME [MODULE]`` lines. Lines of another
        shape (a serial console's prompt or marker around a captured
        kallsyms) are skipped and counted in ``skipped`` (how many, and the
        first as (line number, text)); a file where no line is a symbol is
        refused.

        Raises:
            SymbolError: no line is a symbol line, or every address is zero.
        """
        symbols, names = [], {}
        skipped, first_skipped, parsed = 0, None, 0
        for number, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            address = _hex_address(parts[0]) if len(parts) >= 3 and len(parts[1]) == 1 else None
            if address is None:
                skipped += 1
                first_skipped = first_skipped or (number, line.strip())
                continue
            parsed += 1
            kind, name = parts[1], parts[2]
            module = parts[3].strip("[]") if len(parts) > 3 else None
            if address and kind in _PLACE_TYPES:
                symbols.append(Symbol(address, name, kind, module))
            names.setdefault(name, address)
        what = source or "symbols"
        if not parsed:
            raise SymbolError("%s: no line is a System.map / kallsyms symbol (ADDRESS TYPE "
                              "NAME)%s" % (what, "" if first_skipped is None else
                                           "; line %d reads %s" % (
                                               first_skipped[0], _shown(first_skipped[1]))))
        if not symbols:
            raise SymbolError("%s: no symbols with addresses (kallsyms read without "
                              "privilege shows only zeros)" % what)
        start = names.get("_stext", names.get("_text"))
        end = names.get("_etext")
        text = (start, end) if start and end and end > start else None
        table = cls(symbols, text, source)
        table.skipped = (skipped, first_skipped)
        return table

    def skipped_warning(self) -> Optional[str]:
        """One sentence on the lines that were not symbols, or None."""
        count, first = self.skipped
        if not count:
            return None
        return "%s: skipped %d line%s that %s not symbols (the first, line %d: %s)" % (
            self.source or "symbols", count, "" if count == 1 else "s",
            "is" if count == 1 else "are", first[0], _shown(first[1]))

    @classmethod
    def from_pe(cls, path: str, image_base: int) -> "SymbolTable":
        """Exports of a PE kernel image (e.g. ntoskrnl.exe) loaded at image_base.

        Raises:
            SymbolError: not a PE file, or it has no exports.
        """
        import pefile  # imported here: only this source needs it

        try:
            pe = pefile.PE(path, fast_load=True)
            pe.parse_data_directories(directories=[
                pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"]])
        except (OSError, pefile.PEFormatError) as exc:
            raise SymbolError("%s: not a readable PE image: %s" % (path, exc)) from None
        exports = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
        if exports is None:
            raise SymbolError("%s: the PE image has no export directory" % path)
        symbols = [Symbol(image_base + e.address, e.name.decode("ascii", "replace")
                          if e.name else "#%d" % e.ordinal, "export")
                   for e in exports.symbols if e.address]
        text = None
        for section in pe.sections:
            if section.Name.rstrip(b"\0") == b".text":
                start = image_base + section.VirtualAddress
                text = (start, start + max(section.Misc_VirtualSize, section.SizeOfRawData))
        return cls(symbols, text, path)

    def lookup(self, address: int) -> Optional[Tuple[Symbol, int]]:
        """The symbol at or before address and the offset from it, or None."""
        i = bisect.bisect_right(self._addresses, address) - 1
        if i < 0:
            return None
        symbol = self._symbols[i]
        return symbol, address - symbol.address

    def symbolize(self, address: int) -> Optional[str]:
        """``name+0xoff`` (``name`` when exact; ``[module]`` appended), or None."""
        found = self.lookup(address)
        if found is None:
            return None
        symbol, offset = found
        text = symbol.name if offset == 0 else "%s+%#x" % (symbol.name, offset)
        return text + (" [%s]" % symbol.module if symbol.module else "")

    def address_of(self, name: str) -> Optional[int]:
        """The address of the symbol called name (the lowest, when several
        share the name), or None."""
        if self._by_name is None:
            by_name: dict = {}
            for symbol in self._symbols:
                by_name.setdefault(symbol.name, symbol.address)
            self._by_name = by_name
        return self._by_name.get(name)

    def containing(self, address: int) -> Optional[Tuple[Symbol, int]]:
        """The symbol address lies in and the offset into it, or None.

        Without sizes (a System.map has none) a symbol is taken to reach up to
        the next symbol's address; the last symbol holds only its own
        address, and nothing lies before the first.
        """
        i = bisect.bisect_right(self._addresses, address) - 1
        if i < 0:
            return None
        symbol = self._symbols[i]
        if i + 1 == len(self._symbols) and address != symbol.address:
            return None
        return symbol, address - symbol.address

    def in_text(self, address: int) -> Optional[bool]:
        """Whether address is in the kernel text; None when the range is unknown."""
        if self.text_range is None:
            return None
        return self.text_range[0] <= address < self.text_range[1]
