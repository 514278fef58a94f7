"""LiME images (Linux Memory Extractor, "lime" format).

Layout (LiME's Documentation/README.md, "lime" format): a sequence of ranges,
each a 32-byte header -- uint32 magic 0x4C694D45 ("EMiL" on disk), uint32
version (1), uint64 s_addr, uint64 e_addr (inclusive), 8 reserved bytes --
followed by the range's e_addr - s_addr + 1 bytes. Little-endian.
"""
import struct

from ..errors import ImageFormatError
from ._parsed import MAX_LIME_RANGES, ParsedImage

LIME_MAGIC = 0x4C694D45
LIME_SIGNATURE = LIME_MAGIC.to_bytes(4, "little")     # b"EMiL": an image's first bytes
LIME_VERSION = 1
_HEADER = struct.Struct("<IIQQ8x")


def parse(buf, size: int, name: str) -> ParsedImage:
    """Parse every range header of a LiME image.

    Raises:
        ImageFormatError: a header with a bad magic or version, a range whose
            end is below its start, a range that claims more bytes than the
            file has, or trailing bytes too short for a header.
    """
    parsed = ParsedImage(format="lime", description="LiME, version 1")
    pos = 0
    while pos < size:
        number = len(parsed.runs)
        if size - pos < _HEADER.size:
            after = " after LiME range %d" % (number - 1) if number else ""
            raise ImageFormatError("%s: %d bytes at offset %#x%s are too short for a LiME range "
                                   "header (32 bytes)" % (name, size - pos, pos, after))
        magic, version, s_addr, e_addr = _HEADER.unpack_from(buf, pos)
        if magic != LIME_MAGIC:
            raise ImageFormatError("%s: LiME range %d header at offset %#x has magic %#010x, "
                                   "not %#010x ('EMiL')" % (name, number, pos, magic, LIME_MAGIC))
        if version != LIME_VERSION:
            raise ImageFormatError("%s: LiME range %d header at offset %#x has version %d; only "
                                   "version 1 exists" % (name, number, pos, version))
        if e_addr < s_addr:
            raise ImageFormatError("%s: LiME range %d header at offset %#x ends (e_addr %#x) "
                                   "below its start (s_addr %#x)" % (name, number, pos, e_addr,
                                                                    s_addr))
        length = e_addr - s_addr + 1
        data = pos + _HEADER.size
        if length > size - data:
            raise ImageFormatError("%s: LiME range %d (%#x-%#x) claims %d bytes at offset %#x "
                                   "but the file has only %d bytes left" % (
                                       name, number, s_addr, e_addr, length, data, size - data))
        if number >= MAX_LIME_RANGES:
            raise ImageFormatError("%s: more than %d LiME ranges" % (name, MAX_LIME_RANGES))
        parsed.runs.append((s_addr, length, data))
        pos = data + length
    return parsed
