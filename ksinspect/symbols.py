"""Symbol tables for naming addresses: System.map / kallsyms, and PE exports.

Used to resolve IDT handlers to ``symbol+offset`` and to know the kernel's
text range. A System.map and ``/proc/kallsyms`` share one format:
``ADDRESS TYPE NAME [MODULE]`` (nm(1) symbol types); ``.xz`` and ``.gz``
files are read transparently.
"""
import bisect
import gzip
import lzma
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from .errors import KsinspectError

# nm types that name code or data at a real address; "A" (absolute) symbols
# such as per-CPU offsets are numbers, not places.
_PLACE_TYPES = set("TtWwDdBbRrVvGgSs")
_TEXT_TYPES = set("TtWw")


class SymbolError(KsinspectError, ValueError):
    """A symbol file cannot be read."""


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
        self.text_range = text_range
        self.source = source

    def __len__(self) -> int:
        return len(self._symbols)

    @classmethod
    def from_system_map(cls, path: str) -> "SymbolTable":
        """Read a System.map or a copy of /proc/kallsyms (optionally .xz/.gz).

        Raises:
            SymbolError: the file cannot be read or has no symbol lines.
        """
        try:
            with _open_text(path) as fh:
                return cls.parse_system_map(fh, source=path)
        except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as exc:
            raise SymbolError("%s: cannot read symbols: %s" % (path, exc)) from None

    @classmethod
    def parse_system_map(cls, lines: Iterable[str], source: str = "") -> "SymbolTable":
        symbols, names = [], {}
        for number, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 3 or len(parts[1]) != 1:
                raise SymbolError("%s:%d: not a System.map line: %r" % (source, number, line[:80]))
            try:
                address = int(parts[0], 16)
            except ValueError:
                raise SymbolError("%s:%d: bad address %r" % (source, number, parts[0])) from None
            kind, name = parts[1], parts[2]
            module = parts[3].strip("[]") if len(parts) > 3 else None
            if address and kind in _PLACE_TYPES:
                symbols.append(Symbol(address, name, kind, module))
            names.setdefault(name, address)
        if not symbols:
            raise SymbolError("%s: no symbols with addresses (kallsyms read without "
                              "privilege shows only zeros)" % (source or "symbols"))
        start = names.get("_stext", names.get("_text"))
        end = names.get("_etext")
        text = (start, end) if start and end and end > start else None
        return cls(symbols, text, source)

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
        for symbol in self._symbols:
            if symbol.name == name:
                return symbol.address
        return None

    def in_text(self, address: int) -> Optional[bool]:
        """Whether address is in the kernel text; None when the range is unknown."""
        if self.text_range is None:
            return None
        return self.text_range[0] <= address < self.text_range[1]


def _open_text(path):
    path = os.fspath(path)      # str or pathlib.Path
    if path.endswith(".xz"):
        return lzma.open(path, "rt", encoding="ascii")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="ascii")
    return open(path, encoding="ascii")
