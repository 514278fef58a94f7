"""Symbols of an ELF64 executable (.symtab and .dynsym), and where a running
process has loaded it.

A small reader written from the System V ABI (gABI, chapter 4 "Object
Files": ELF header, section header table, symbol table, string table) for
little-endian ELF64, the only kind an x86-64 Linux process runs. Every
offset and size is checked against the file before it is used; a broken
file raises :class:`ksinspect.errors.ImageFormatError`.

Position-independent executables (``e_type == ET_DYN``) are loaded at a
random base: the *load bias* added to every symbol value is the start of
the executable's first mapping in ``/proc/PID/maps`` (the one at file
offset 0) minus the page-aligned virtual address the file asks for there
(proc(5), "/proc/pid/maps"). A fixed-address executable (``ET_EXEC``) has
bias 0.
"""
import bisect
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import DecodeError, ImageFormatError

ET_EXEC = 2
ET_DYN = 3
SHT_SYMTAB = 2
SHT_DYNSYM = 11
SHN_UNDEF = 0
STT_NAMES = {0: "notype", 1: "object", 2: "func", 3: "section", 4: "file", 5: "common",
             6: "tls", 10: "ifunc"}
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")       # Elf64_Ehdr
_SHDR = struct.Struct("<IIQQQQIIQQ")             # Elf64_Shdr
_PHDR = struct.Struct("<IIQQQQQQ")               # Elf64_Phdr
_SYM = struct.Struct("<IBBHQQ")                  # Elf64_Sym
PT_LOAD = 1
_MAX_SYMBOLS = 2_000_000


@dataclass(frozen=True)
class Symbol:
    """One defined symbol: its link-time value (add the load bias at run time)."""

    name: str
    value: int
    size: int
    kind: str        # func, object, notype, ifunc...
    table: str       # ".symtab" or ".dynsym"

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "size": self.size, "kind": self.kind,
                "table": self.table}


class ElfSymbols:
    """The defined symbols of one ELF64 file.

    Attributes:
        path: the file read.
        elf_type: ET_EXEC (2) or ET_DYN (3, PIE or shared object).
        link_base: the page-aligned virtual address of the first PT_LOAD
            (what file offset 0 maps to at link time).
    """

    def __init__(self, path: str, elf_type: int, link_base: int, symbols: List[Symbol],
                 loads: Sequence[Tuple[int, int, int]] = ()):
        self.path = path
        self.loads = list(loads)      # (p_vaddr, p_offset, p_filesz) of each PT_LOAD
        self.elf_type = elf_type
        self.link_base = link_base
        self._by_name: Dict[str, Symbol] = {}
        for sym in symbols:          # .symtab first: it wins over .dynsym
            self._by_name.setdefault(sym.name, sym)
        ranked = sorted((s for s in self._by_name.values() if s.kind in ("func", "object", "ifunc")),
                        key=lambda s: s.value)
        self._sorted = ranked
        self._values = [s.value for s in ranked]

    @property
    def pie(self) -> bool:
        return self.elf_type == ET_DYN

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def lookup(self, name: str) -> Symbol:
        try:
            return self._by_name[name]
        except KeyError:
            raise DecodeError("symbol %r is not in %s (.symtab/.dynsym)" % (name, self.path)) from None

    def containing(self, value: int) -> Optional[Tuple[Symbol, int]]:
        """The function or object whose link-time range holds value, and the offset."""
        i = bisect.bisect_right(self._values, value) - 1
        if i < 0:
            return None
        sym = self._sorted[i]
        offset = value - sym.value
        if offset < max(sym.size, 1):
            return sym, offset
        return None

    def file_offset(self, value: int) -> Optional[int]:
        """Where a link-time address is stored in the file (None if not in any PT_LOAD)."""
        for vaddr, offset, filesz in self.loads:
            if vaddr <= value < vaddr + filesz:
                return value - vaddr + offset
        return None

    @classmethod
    def from_file(cls, path: str) -> "ElfSymbols":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ImageFormatError("%s: cannot read: %s" % (path, exc.strerror)) from None
        return cls.from_bytes(data, path)

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "<bytes>") -> "ElfSymbols":
        def broken(why: str) -> ImageFormatError:
            return ImageFormatError("%s: not a usable ELF64 file: %s" % (path, why))

        if len(data) < _EHDR.size or data[:4] != b"\x7fELF":
            raise broken("no ELF magic")
        if data[4] != 2 or data[5] != 1:
            raise broken("only little-endian ELF64 is read (EI_CLASS=%d, EI_DATA=%d)"
                         % (data[4], data[5]))
        (_, e_type, _, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum, e_shentsize,
         e_shnum, _) = _EHDR.unpack_from(data, 0)

        def table(offset: int, entsize: int, count: int, st: struct.Struct, what: str):
            if count and (entsize < st.size or offset + entsize * count > len(data)):
                raise broken("%s table (%d x %d bytes at %#x) is outside the file"
                             % (what, count, entsize, offset))
            return [st.unpack_from(data, offset + i * entsize) for i in range(count)]

        loads = [p for p in table(e_phoff, e_phentsize, e_phnum, _PHDR, "program header")
                 if p[0] == PT_LOAD]
        link_base = min(((p[3] - p[2]) & ~0xFFF for p in loads), default=0)
        sections = table(e_shoff, e_shentsize, e_shnum, _SHDR, "section header")
        symbols: List[Symbol] = []
        for wanted, label in ((SHT_SYMTAB, ".symtab"), (SHT_DYNSYM, ".dynsym")):
            for sh in sections:
                if sh[1] != wanted:
                    continue
                _, _, _, _, off, size, link, _, _, entsize = sh
                if link >= len(sections):
                    raise broken("%s links to string table %d of %d" % (label, link, len(sections)))
                str_off, str_size = sections[link][4], sections[link][5]
                if str_off + str_size > len(data) or off + size > len(data):
                    raise broken("%s or its string table is outside the file" % label)
                if entsize < _SYM.size:
                    raise broken("%s entry size %d" % (label, entsize))
                count = min(size // entsize, _MAX_SYMBOLS)
                strings = data[str_off:str_off + str_size]
                for i in range(1, count):
                    st_name, st_info, _, st_shndx, st_value, st_size = _SYM.unpack_from(
                        data, off + i * entsize)
                    if st_shndx == SHN_UNDEF or st_name >= len(strings):
                        continue
                    end = strings.find(b"\0", st_name)
                    name = strings[st_name:end if end >= 0 else len(strings)].decode(
                        "utf-8", "replace")
                    kind = STT_NAMES.get(st_info & 0xF, "type%d" % (st_info & 0xF))
                    if name and kind not in ("section", "file"):
                        symbols.append(Symbol(name, st_value, st_size, kind, label))
        return cls(path, e_type, link_base, symbols, [(p[3], p[2], p[5]) for p in loads])


def executable_path(pid: int) -> str:
    """The file a process runs (/proc/PID/exe)."""
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError as exc:
        raise ImageFormatError("process %d: cannot read /proc/%d/exe: %s"
                               % (pid, pid, exc.strerror)) from None


def load_bias(pid: int, elf: ElfSymbols, path: Optional[str] = None) -> int:
    """What to add to elf's link-time addresses in process pid.

    Raises:
        ImageFormatError: a PIE whose file is not in /proc/PID/maps.
    """
    if not elf.pie:
        return 0
    path = path or executable_path(pid)
    try:
        with open("/proc/%d/maps" % pid) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ImageFormatError("process %d: cannot read /proc/%d/maps: %s"
                               % (pid, pid, exc.strerror)) from None
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].replace(" (deleted)", "") == path and int(parts[2], 16) == 0:
            return int(parts[0].split("-")[0], 16) - elf.link_base
    raise ImageFormatError("process %d: %s is not mapped at file offset 0 in /proc/%d/maps"
                           % (pid, path, pid))


class ProcessSymbols:
    """The main executable's symbols placed at their run-time addresses in one process."""

    def __init__(self, pid: int, path: Optional[str] = None):
        self.path = path or executable_path(pid)
        self.elf = ElfSymbols.from_file("/proc/%d/exe" % pid)
        self.elf.path = self.path
        self.bias = load_bias(pid, self.elf, self.path)

    def address(self, name: str) -> int:
        return self.elf.lookup(name).value + self.bias

    def describe(self, address: int) -> Optional[str]:
        """``name+0xoff`` for an address inside a known function or object."""
        found = self.elf.containing(address - self.bias)
        if found is None:
            return None
        sym, offset = found
        return sym.name if offset == 0 else "%s+%#x" % (sym.name, offset)
