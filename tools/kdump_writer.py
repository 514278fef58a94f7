"""Write compressed kdumps (plain and flattened) from a real one's pieces.

Used by tools/make_kdump_fixture.py (trimming real dumps, recompressing their
pages) and by the tests' broken-input builders. The header blocks (the
disk_dump_header, the kdump_sub_header and the notes / VMCOREINFO they point
to) are copied byte for byte; the writer lays out the bitmaps, the page
descriptors and the page data after them, the way makedumpfile does.
"""
import random
import struct
from typing import Dict, List, Optional, Sequence, Tuple

PAGE_DESC = struct.Struct("<QIIQ")
FLAT_SIGNATURE = b"makedumpfile\0\0\0\0"


def write_kdump(head: bytes, block: int, bitmap_blocks: int, valid: bytes,
                pages: Dict[int, Tuple[bytes, int, int]], status: Optional[int] = None,
                word_size: int = 8) -> bytes:
    """A plain kdump.

    Args:
        head: the first (1 + sub_hdr_size) blocks of a real kdump.
        valid: the valid-pages bitmap (half of bitmap_blocks blocks).
        pages: pfn -> (stored bytes, descriptor flags, page_flags).
        status: a new disk_dump_header.status (the compression kind), or keep it.
    """
    head = bytearray(head)
    if status is not None:
        struct.pack_into("<I", head, 424 if word_size == 8 else 412, status)
    half = bitmap_blocks * block // 2
    dumped = bytearray(half)
    for pfn in pages:
        dumped[pfn // 8] |= 1 << (pfn % 8)
    out = bytearray(head)
    out += valid.ljust(half, b"\0")[:half] + bytes(dumped)
    desc_at = len(out)
    order = sorted(pages)
    data_at = desc_at + PAGE_DESC.size * len(order)
    descs, data = bytearray(), bytearray()
    for pfn in order:
        stored, flags, page_flags = pages[pfn]
        descs += PAGE_DESC.pack(data_at + len(data), len(stored), flags, page_flags)
        data += stored
    return bytes(out + descs + data)


def flatten(plain: bytes, piece: int = 16384, seed: int = 1) -> bytes:
    """The flattened form of a plain file: records of at most ``piece`` bytes,
    the header records first and the rest in a shuffled order (makedumpfile
    writes descriptors and page data interleaved, so offsets go back and forth)."""
    records: List[Tuple[int, bytes]] = []
    for at in range(0, len(plain), piece):
        records.append((at, plain[at:at + piece]))
    first, rest = records[:1], records[1:]
    random.Random(seed).shuffle(rest)
    out = bytearray(FLAT_SIGNATURE + struct.pack(">qq", 1, 1))
    out += bytes(4096 - len(out))
    for offset, data in first + rest:
        out += struct.pack(">qq", offset, len(data)) + data
    out += struct.pack(">qq", -1, -1)
    return bytes(out)


def read_pieces(memory) -> Tuple[bytes, int, int, bytes, Dict[int, Tuple[bytes, int, int]]]:
    """(head blocks, block, bitmap_blocks, valid bitmap, pfn -> (stored, flags, page_flags))
    of a kdump opened with ksinspect (plain or flattened)."""
    info = memory.container
    reader = memory._reader
    h = info.header
    head = reader.f.read(0, h.block_size * (1 + h.sub_hdr_size), "head")
    half = h.bitmap_blocks * h.block_size // 2
    valid = reader.f.read(h.block_size * (1 + h.sub_hdr_size), half, "valid bitmap")
    pages = {}
    for run in memory.runs:
        for pa in range(run.start, run.end, h.block_size):
            pfn = pa // h.block_size
            offset, size, flags, page_flags = reader.descriptor(pfn)
            pages[pfn] = (reader.f.read(offset, size, "page"), flags, page_flags)
    return head, h.block_size, h.bitmap_blocks, valid, pages


def keep(pages: Dict[int, Tuple[bytes, int, int]], pfns: Sequence[int]):
    wanted = set(pfns)
    return {pfn: v for pfn, v in pages.items() if pfn in wanted}
