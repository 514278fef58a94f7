"""Symbols of a PE file: its COFF symbol table (mingw and clang keep one in
executables unless stripped; MSVC puts symbols in a PDB instead).

IMAGE_FILE_HEADER.PointerToSymbolTable / NumberOfSymbols locate 18-byte
IMAGE_SYMBOL records (Name[8] or a string-table offset, Value, SectionNumber,
Type, StorageClass, NumberOfAuxSymbols), followed by the string table (its
first DWORD is its size). A symbol's RVA is its section's VirtualAddress plus
its Value (Microsoft "PE Format", "COFF Symbol Table").
"""
import struct
from typing import Dict

from ..errors import DecodeError

IMAGE_SYM_CLASS_EXTERNAL = 2
IMAGE_SYM_CLASS_STATIC = 3
MAX_SYMBOLS = 1 << 20


def coff_symbols(data: bytes) -> Dict[str, int]:
    """name -> RVA of the functions and variables in a PE file's COFF table
    (empty when it has none).

    Raises:
        DecodeError: the bytes are not a PE file.
    """
    if data[:2] != b"MZ" or len(data) < 0x40:
        raise DecodeError("not a PE file: no MZ signature")
    lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    if data[lfanew:lfanew + 4] != b"PE\0\0":
        raise DecodeError("not a PE file: e_lfanew %#x does not lead to PE\\0\\0" % lfanew)
    sections, _, table, count, opt_size = struct.unpack_from("<2xHIIIH", data, lfanew + 4)
    section_rvas = []
    first = lfanew + 24 + opt_size
    for i in range(sections):
        at = first + 40 * i
        if at + 40 > len(data):
            break
        section_rvas.append(struct.unpack_from("<I", data, at + 12)[0])
    if not table or not count or count > MAX_SYMBOLS or table + 18 * count > len(data):
        return {}
    strings = table + 18 * count
    found: Dict[str, int] = {}
    i = 0
    while i < count:
        at = table + 18 * i
        raw_name, value, section, _, klass, aux = struct.unpack_from("<8sIhHBB", data, at)
        i += 1 + aux
        if klass not in (IMAGE_SYM_CLASS_EXTERNAL, IMAGE_SYM_CLASS_STATIC) or not \
                0 < section <= len(section_rvas):
            continue
        if raw_name[:4] == b"\0\0\0\0":
            offset = strings + struct.unpack_from("<I", raw_name, 4)[0]
            end = data.find(b"\0", offset, offset + 4096)
            name = data[offset:end if end >= 0 else offset].decode("ascii", "replace")
        else:
            name = raw_name.split(b"\0", 1)[0].decode("ascii", "replace")
        if not name or name.startswith("."):
            continue                      # section symbols (.text, .bss...)
        found.setdefault(name, section_rvas[section - 1] + value)
    return found
