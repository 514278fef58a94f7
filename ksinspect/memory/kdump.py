"""Compressed kdump: makedumpfile's "diskdump" format (``KDUMP   `` /
``DISKDUMP``), plain or flattened, as physical memory.

What Linux distributions write to /var/crash (makedumpfile ``-c`` zlib,
``-l`` LZO, ``-p`` snappy, ``-z`` zstd) and what QEMU writes with
``dump-guest-memory -z``. Learned from makedumpfile's ``diskdump_mod.h``,
QEMU's ``dump.c``/``dump.h`` and crash's ``diskdump.c``; the layout, block
by block (a block is ``block_size`` bytes, the page size):

* block 0: ``disk_dump_header`` -- signature, header_version, the utsname,
  a timestamp, status (the compression kind), block_size, sub_hdr_size,
  bitmap_blocks, max_mapnr, nr_cpus. The 64-bit writers' timestamp is 16
  bytes, the 32-bit writers' 8 (status at +424 or +412);
* block 1..: ``kdump_sub_header`` -- phys_base, dump_level, split, the
  offsets and sizes of VMCOREINFO, the ELF notes and eraseinfo, and from
  header_version 6 the 64-bit max_mapnr;
* ``bitmap_blocks`` blocks: two bitmaps of equal size, the valid pages then
  the dumped pages (bit ``pfn % 8`` of byte ``pfn / 8``);
* one 24-byte ``page_desc {offset, size, flags, page_flags}`` per dumped
  page, in pfn order: the descriptor of a pfn is number rank(pfn) in the
  dumped bitmap (built once in C, ``csrc/ksi_kdump.c``);
* the pages, each compressed on its own (flags 0x1 zlib, 0x2 LZO1X, 0x4
  snappy, 0x20 zstd) or stored raw (flags 0, size == block_size).

The flattened format (``makedumpfile -F``; QEMU 7.2's only kdump output) is
a 4096-byte ``makedumpfile`` header then records ``{offset, size}``
(big-endian int64) each followed by ``size`` bytes for that offset of the
plain file, ending with -1/-1: its records are indexed once (in C), the file
is never rewritten.

Pages are decompressed on demand into a bounded LRU cache
(:data:`DEFAULT_CACHE_PAGES`). Every header value is checked against the
file; a page that decompresses to anything but one block, a descriptor
outside the file and a decompression bomb are one-line
:class:`~ksinspect.errors.KdumpFormatError` messages.
"""
import bisect
import os
import re
import struct
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .._native import kdump as native
from ..errors import ImageFormatError, KdumpFormatError, MissingDecompressorError
from . import elf
from ._parsed import KDUMP_FLAT_SIGNATURE as FLAT_SIGNATURE
from ._parsed import ParsedImage

DEFAULT_CACHE_PAGES = 1024          # decompressed pages kept (4 MiB with 4 KiB blocks)
MAX_BITMAP = 1 << 31                # bytes of one bitmap (2^34 pfns: 64 TiB of 4 KiB pages)
MAX_NOTES = 1 << 20
PAGE_DESC = struct.Struct("<QIIQ")

ZLIB, LZO, SNAPPY, INCOMPLETE, ZSTD = 0x1, 0x2, 0x4, 0x8, 0x20
COMPRESSIONS = {ZLIB: "zlib", LZO: "lzo", SNAPPY: "snappy", ZSTD: "zstd"}
_UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")


@dataclass(frozen=True)
class DiskDumpHeader:
    """``disk_dump_header`` (diskdump_mod.h)."""

    signature: str
    header_version: int
    utsname: Dict[str, str]
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    total_ram_blocks: int
    device_blocks: int
    written_blocks: int
    current_cpu: int
    nr_cpus: int
    word_size: int          # 8 for a 64-bit writer, 4 for a 32-bit one

    @property
    def compression(self) -> str:
        kinds = [name for bit, name in COMPRESSIONS.items() if self.status & bit]
        return "+".join(kinds) or "none"

    def to_dict(self) -> dict:
        return {"signature": self.signature, "header_version": self.header_version,
                "utsname": dict(self.utsname), "status": self.status,
                "compression": self.compression, "incomplete": bool(self.status & INCOMPLETE),
                "block_size": self.block_size, "sub_hdr_size": self.sub_hdr_size,
                "bitmap_blocks": self.bitmap_blocks, "max_mapnr": self.max_mapnr,
                "total_ram_blocks": self.total_ram_blocks, "nr_cpus": self.nr_cpus,
                "current_cpu": self.current_cpu, "word_size": self.word_size}


@dataclass(frozen=True)
class KdumpSubHeader:
    """``kdump_sub_header``: fields exist from the header_version noted."""

    phys_base: int
    dump_level: int
    split: int
    start_pfn: int
    end_pfn: int
    offset_vmcoreinfo: int      # v3
    size_vmcoreinfo: int
    offset_note: int            # v4
    size_note: int
    offset_eraseinfo: int       # v5
    size_eraseinfo: int
    max_mapnr_64: Optional[int]  # v6

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class KdumpInfo:
    """What :func:`parse` found; ``PhysicalMemory.container`` of a kdump."""

    header: DiskDumpHeader
    sub: KdumpSubHeader
    flattened: bool
    records: int
    max_mapnr: int
    dumped_pages: int
    valid_pages: int
    phys_base: Optional[int]
    phys_base_source: str
    vmcoreinfo: Optional[str]
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"header": self.header.to_dict(), "sub_header": self.sub.to_dict(),
                "flattened": self.flattened, "records": self.records,
                "max_mapnr": self.max_mapnr, "dumped_pages": self.dumped_pages,
                "valid_pages": self.valid_pages, "phys_base": self.phys_base,
                "phys_base_source": self.phys_base_source, "notes": list(self.notes)}


# -- the file: plain, or flattened records ---------------------------------------------

class _Plain:
    """Offsets of the plain (unflattened) file: the mmap itself."""

    def __init__(self, buf: Any, size: int, name: str):
        self.buf, self.size, self.name = buf, size, name
        self.records = 0

    def read(self, offset: int, n: int, what: str) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise KdumpFormatError("%s: %s at file offset %#x, %d bytes, runs past the end of "
                                   "the file (%d bytes)" % (self.name, what, offset, n, self.size))
        return bytes(self.buf[offset:offset + n])


class _Flat:
    """Offsets of the plain file a flattened file describes, mapped to its records."""

    def __init__(self, buf: Any, size: int, name: str):
        self.buf, self.name = buf, name
        if size < native.FLAT_HEADER + 16:
            raise KdumpFormatError("%s: a flattened kdump (makedumpfile header) of %d bytes has "
                                   "no room for records" % (name, size))
        kind, version = struct.unpack_from(">qq", buf, 16)
        if kind != 1:
            raise KdumpFormatError("%s: makedumpfile header type %d is not the flattened "
                                   "format (1)" % (name, kind))
        records, problem = native.flat_records(buf)
        if problem is not None:
            raise KdumpFormatError("%s: flattened kdump: %s" % (name, problem))
        records.sort()
        self.starts = array("Q")
        self.ends = array("Q")
        self.data = array("Q")
        for offset, n, data in records:
            if not n:
                continue
            if self.ends and offset < self.ends[-1]:
                raise KdumpFormatError(
                    "%s: flattened kdump: the records for plain-file offsets %#x-%#x and "
                    "%#x-%#x overlap" % (name, self.starts[-1], self.ends[-1], offset, offset + n))
            if self.ends and offset == self.ends[-1] and data == self.data[-1] + (
                    self.ends[-1] - self.starts[-1]):
                self.ends[-1] = offset + n          # adjacent in both files: one extent
                continue
            self.starts.append(offset)
            self.ends.append(offset + n)
            self.data.append(data)
        self.records = len(records)
        self.size = self.ends[-1] if self.ends else 0

    def read(self, offset: int, n: int, what: str) -> bytes:
        """Bytes of the plain file; gaps between records read as zeros, as in the file
        ``makedumpfile -R`` would write (it seeks past them)."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise KdumpFormatError("%s: %s at plain-file offset %#x, %d bytes, runs past the "
                                   "end of the flattened records (plain size %d bytes)" % (
                                       self.name, what, offset, n, self.size))
        parts = []
        at, end = offset, offset + n
        i = max(bisect.bisect_right(self.starts, at) - 1, 0)
        while at < end:
            while i < len(self.starts) and self.ends[i] <= at:
                i += 1
            if i >= len(self.starts) or self.starts[i] >= end:
                parts.append(bytes(end - at))
                break
            if self.starts[i] > at:
                parts.append(bytes(self.starts[i] - at))
                at = self.starts[i]
            take = min(end, self.ends[i]) - at
            pos = self.data[i] + at - self.starts[i]
            parts.append(bytes(self.buf[pos:pos + take]))
            at += take
        return b"".join(parts)


# -- headers ------------------------------------------------------------------------

def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _header(f, name: str) -> DiskDumpHeader:
    raw = f.read(0, 464, "the disk_dump_header")
    sig = raw[:8]
    version = struct.unpack_from("<i", raw, 8)[0]
    uts = {k: _cstr(raw[12 + 65 * i:12 + 65 * (i + 1)]) for i, k in enumerate(_UTS_FIELDS)}
    # The timestamp is a struct timeval: 16 bytes from a 64-bit writer, 8 from a 32-bit one.
    # Each layout is tried for a consistent set: a power-of-two block_size, at least one
    # bitmap block and a plausible sub-header size (a 32-bit header read at +424 puts
    # max_mapnr, itself often a power of two, where block_size would be).
    for word, at in ((8, 424), (4, 412)):
        fields = struct.unpack_from("<IiiIIIIIIi", raw, at)
        block, sub_blocks, bitmap = fields[1], fields[2], fields[3]
        if 512 <= block <= 1 << 20 and not block & (block - 1) and bitmap > 0 \
                and 0 <= sub_blocks < 1 << 16:
            break
    else:
        raise KdumpFormatError("%s: kdump header: no consistent block_size, sub_hdr_size and "
                               "bitmap_blocks at +424 (64-bit writer) or +412 (32-bit writer)"
                               % name)
    status, block, sub_hdr, bitmap_blocks, max_mapnr, ram, dev, written, cpu, cpus = fields
    if version < 1 or version > 64:
        raise KdumpFormatError("%s: kdump header_version %d is not one makedumpfile writes "
                               "(1-6 and later)" % (name, version))
    if sub_hdr < 0 or bitmap_blocks == 0:
        raise KdumpFormatError("%s: kdump header: sub_hdr_size %d blocks, bitmap_blocks %d"
                               % (name, sub_hdr, bitmap_blocks))
    return DiskDumpHeader(sig.decode("latin-1"), version, uts, status, block, sub_hdr,
                          bitmap_blocks, max_mapnr, ram, dev, written, cpu, cpus, word)


def _sub_header(f, h: DiskDumpHeader, name: str) -> KdumpSubHeader:
    if h.sub_hdr_size == 0:
        return KdumpSubHeader(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None)
    if h.word_size == 8:
        fmt, size = struct.Struct("<QIIQQQQQQQQQQQ"), 104
    else:
        fmt, size = struct.Struct("<IIIIIQIQIQIQQQ"), 80
    raw = f.read(h.block_size, fmt.size, "the kdump_sub_header")
    v = fmt.unpack(raw[:size])
    ver = h.header_version
    return KdumpSubHeader(v[0], v[1], v[2] if ver >= 2 else 0, v[3] if ver >= 2 else 0,
                          v[4] if ver >= 2 else 0, v[5] if ver >= 3 else 0,
                          v[6] if ver >= 3 else 0, v[7] if ver >= 4 else 0,
                          v[8] if ver >= 4 else 0, v[9] if ver >= 5 else 0,
                          v[10] if ver >= 5 else 0, v[13] if ver >= 6 else None)


def _arch_from_prstatus(notes: bytes) -> Optional[str]:
    """The architecture an NT_PRSTATUS note's size implies (struct elf_prstatus is 336
    bytes on x86_64, 144 on i386), for writers that leave utsname empty
    (makedumpfile without VMCOREINFO)."""
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, pos)
        owner = notes[pos + 12:pos + 12 + namesz].rstrip(b"\0")
        if owner == b"CORE" and kind == 1:
            return {336: "x86_64", 144: "i386"}.get(descsz)
        pos += 12 + (namesz + 3 & ~3) + (descsz + 3 & ~3)
        if not namesz and not descsz:
            break
    return None


_PHYS_BASE = re.compile(r"^NUMBER\(phys_base\)=(-?\d+)$", re.M)


def phys_base_of(vmcoreinfo: Optional[str]) -> Optional[int]:
    """VMCOREINFO's ``NUMBER(phys_base)`` (decimal; may be negative), or None."""
    if not vmcoreinfo:
        return None
    m = _PHYS_BASE.search(vmcoreinfo)
    return int(m.group(1)) if m else None


# -- decompressors -------------------------------------------------------------------

def _cramjam(kind: str):
    try:
        import cramjam
    except ImportError:
        raise MissingDecompressorError(
            "its pages are %s-compressed and no %s decompressor is installed here: pip "
            "install cramjam (or pip install 'ksinspect[kdump]')" % (kind, kind), kind,
            "cramjam") from None
    return cramjam


def _zlib(data: bytes, block: int) -> bytes:
    # The stored size is at most one block, and deflate expands at most ~1032:1, so the
    # output is bounded (about 4 MiB for 4 KiB blocks) before the length check.
    return zlib.decompress(data)


def _lzo(data: bytes, block: int) -> bytes:
    out, why = native.lzo1x_decompress(data, block + 1)
    if out is None:
        raise ValueError(why)
    return out


def _snappy(data: bytes, block: int) -> bytes:
    out, why = native.snappy_decompress(data, block + 1)
    if out is None:
        raise ValueError(why)
    return out


def _decompress_any(kind: int, data: bytes, capacity: int) -> bytes:
    """The C reader's fallback for zlib / zstd pages when the system has no libz /
    libzstd (Windows): the same decoders as :meth:`PageReader.page`."""
    return _DECOMPRESS[kind](data, capacity)


def _into(fn, data: bytes, block: int) -> bytes:
    """cramjam's *_into decompressors write into a fixed buffer of one block and a
    byte, so a bomb fails instead of growing."""
    out = bytearray(block + 1)
    n = fn(data, out)
    return bytes(out[:n])


def _zstd(data: bytes, block: int) -> bytes:
    return _into(_cramjam("zstd").zstd.decompress_into, data, block)


_DECOMPRESS = {ZLIB: _zlib, LZO: _lzo, SNAPPY: _snappy, ZSTD: _zstd}


# -- the memory ----------------------------------------------------------------------

def cache_pages_setting() -> int:
    """The page-cache size: ``KSINSPECT_KDUMP_CACHE_PAGES`` or DEFAULT_CACHE_PAGES.

    Raises:
        KdumpFormatError: the variable is not a whole number.
    """
    text = os.environ.get("KSINSPECT_KDUMP_CACHE_PAGES")
    if text is None or not text.strip():
        return DEFAULT_CACHE_PAGES
    try:
        return int(text)
    except ValueError:
        raise KdumpFormatError("KSINSPECT_KDUMP_CACHE_PAGES=%r is not a number of pages (1 to "
                               "%d)" % (text, native.MAX_CACHE_PAGES)) from None


def parse(buf: Any, size: int, name: str, cache_pages: Optional[int] = None):
    """Index a kdump: a ParsedImage whose ``container`` is the :class:`KdumpInfo` and
    whose ``reader`` reads pages through a cache of ``cache_pages`` pages
    (None: :func:`cache_pages_setting`).

    Raises:
        KdumpFormatError: a header, bitmap or record does not fit the file.
    """
    flat = bytes(buf[:16]) == FLAT_SIGNATURE
    f = _Flat(buf, size, name) if flat else _Plain(buf, size, name)
    h = _header(f, name)
    sub = _sub_header(f, h, name)
    block = h.block_size
    max_mapnr = sub.max_mapnr_64 if sub.max_mapnr_64 is not None else h.max_mapnr
    bitmap_at = block * (1 + h.sub_hdr_size)
    bitmap_len = h.bitmap_blocks * block
    if bitmap_len // 2 > MAX_BITMAP:
        raise KdumpFormatError("%s: kdump bitmaps of %d blocks are larger than %d bytes each"
                               % (name, h.bitmap_blocks, MAX_BITMAP))
    if bitmap_at + bitmap_len > f.size:
        raise KdumpFormatError("%s: the kdump bitmaps (%d blocks at offset %#x) run past the "
                               "end of the file (%d bytes)" % (name, h.bitmap_blocks, bitmap_at,
                                                               f.size))
    half = bitmap_len // 2
    if max_mapnr > half * 8:
        raise KdumpFormatError("%s: max_mapnr %d needs bitmaps of %d bytes; the header gives "
                               "%d" % (name, max_mapnr, (max_mapnr + 7) // 8, half))
    valid = native.PageIndex(f.read(bitmap_at, half, "the valid-pages bitmap"))
    dumped = native.PageIndex(f.read(bitmap_at + half, half, "the dumped-pages bitmap"))
    desc_at = bitmap_at + bitmap_len
    if desc_at + dumped.dumped * PAGE_DESC.size > f.size:
        raise KdumpFormatError("%s: %d page descriptors at offset %#x run past the end of the "
                               "file (%d bytes)" % (name, dumped.dumped, desc_at, f.size))
    parsed = ParsedImage(format="kdump", description="")
    notes_text = []
    vmcoreinfo = None
    if sub.size_note and sub.offset_note:
        if sub.size_note > MAX_NOTES:
            raise KdumpFormatError("%s: the ELF notes (%d bytes) are larger than %d"
                                   % (name, sub.size_note, MAX_NOTES))
        notes = f.read(sub.offset_note, sub.size_note, "the ELF notes")
        arch = {"x86_64": "x86_64", "i386": "i386", "i686": "i386"}.get(h.utsname["machine"]) \
            or _arch_from_prstatus(notes) or ("x86_64" if h.word_size == 8 else "i386")
        try:
            elf.parse_notes(notes, 0, len(notes), 0, arch, name, parsed, notes_text, 0)
        except ImageFormatError as exc:
            detail = str(exc)[len(name) + 2:] if str(exc).startswith(name + ": ") else str(exc)
            raise KdumpFormatError("%s: the dump's ELF notes (%d bytes at offset %#x): %s"
                                   % (name, sub.size_note, sub.offset_note, detail)) from None
        vmcoreinfo = parsed.vmcoreinfo
    if sub.size_vmcoreinfo and sub.offset_vmcoreinfo:
        if sub.size_vmcoreinfo > MAX_NOTES:
            raise KdumpFormatError("%s: VMCOREINFO of %d bytes is larger than %d"
                                   % (name, sub.size_vmcoreinfo, MAX_NOTES))
        vmcoreinfo = f.read(sub.offset_vmcoreinfo, sub.size_vmcoreinfo,
                            "VMCOREINFO").rstrip(b"\0").decode("latin-1")
    phys_base = phys_base_of(vmcoreinfo)
    source = "VMCOREINFO NUMBER(phys_base)"
    if phys_base is None:
        phys_base, source = sub.phys_base, "the sub-header (no VMCOREINFO value)"
    elif sub.phys_base != phys_base & ((1 << 64) - 1):
        parsed.warnings.append("the sub-header's phys_base %#x differs from VMCOREINFO's "
                               "NUMBER(phys_base) %#x, which is used (QEMU writes garbage "
                               "there)" % (sub.phys_base, phys_base & ((1 << 64) - 1)))
    if h.status & INCOMPLETE:
        parsed.warnings.append("the dump is marked incomplete (DUMP_DH_COMPRESSED_INCOMPLETE): "
                               "makedumpfile ran out of space; pages it did not write are absent")
    info = KdumpInfo(h, sub, flat, f.records, max_mapnr, dumped.dumped, valid.dumped, phys_base,
                     source, vmcoreinfo, notes_text)
    reader = PageReader(f, dumped, desc_at, block, name,
                        cache_pages_setting() if cache_pages is None else cache_pages)
    runs = [(start * block, count * block, None) for start, count in dumped.runs()
            if start < max_mapnr or not max_mapnr]
    parsed.runs = runs
    parsed.vmcoreinfo = vmcoreinfo
    parsed.container = info
    parsed.reader = reader
    parsed.description = "compressed kdump (%s%s, header version %d, %s, block %d), %d pages " \
                         "dumped of %d" % (h.signature.strip(), ", flattened" if flat else "",
                                           h.header_version, h.compression, block,
                                           dumped.dumped, max_mapnr)
    return parsed


class PageReader:
    """Decompressed pages on demand: reads go to the C page reader
    (:class:`ksinspect._native.kdump.PageReader`: rank, descriptor and
    decompression in C, an LRU cache of ``cache_pages`` pages); this class
    turns its statuses into errors and keeps, in :meth:`page`, the same
    decoding in Python, which names what is wrong with a broken page."""

    def __init__(self, f, index, desc_at: int, block: int, name: str, cache_pages: int):
        self.f, self.index, self.desc_at, self.block, self.name = f, index, desc_at, block, name
        self.shift = block.bit_length() - 1
        self.check = None        # PhysicalMemory.check_intact: a shrunk file would SIGBUS
        extents = None
        if isinstance(f, _Flat):
            extents = array("Q")
            for triple in zip(f.starts, f.ends, f.data):
                extents.extend(triple)
        try:
            self.native = native.PageReader(f.buf, extents, f.size, index, desc_at, block,
                                            cache_pages, _decompress_any)
        except ValueError as exc:
            raise KdumpFormatError("%s: %s" % (name, exc)) from None

    @property
    def cache_pages(self) -> int:
        return self.native.cache_pages

    def set_cache_pages(self, pages: int) -> None:
        """Replace the cache by an empty one of ``pages`` pages.

        Raises:
            KdumpFormatError: not 1 to 2^20 pages.
        """
        try:
            self.native.resize(pages)
        except ValueError as exc:
            raise KdumpFormatError("%s: %s" % (self.name, exc)) from None

    def stats(self) -> Dict[str, int]:
        return self.native.stats()

    def native_source(self):
        """(C read function, its context, take_failure) for the C walker: it reads
        this dump's page tables through the C cache, with no Python per read;
        take_failure() gives the error of a broken page met during a walk."""
        return self.native.read_fn, self.native.context, self.take_failure

    def take_failure(self) -> Optional[KdumpFormatError]:
        """The error for the first broken page the C reader met since the last call."""
        found = self.native.take_error()
        if found is None:
            return None
        return self._failure(found[1])

    def _failure(self, pfn: int) -> Exception:
        try:
            self.page(pfn)
        except (KdumpFormatError, MissingDecompressorError) as exc:
            return exc
        # The Python decoder read the page where C could not: not expected; still an error.
        return KdumpFormatError("%s: pfn %#x: the page does not decode" % (self.name, pfn))

    def descriptor(self, pfn: int) -> Optional[Tuple[int, int, int, int]]:
        i = self.index.index(pfn)
        if i is None:
            return None
        return PAGE_DESC.unpack(self.f.read(self.desc_at + i * PAGE_DESC.size, PAGE_DESC.size,
                                            "the page descriptor of pfn %#x" % pfn))

    def page(self, pfn: int) -> Optional[bytes]:
        """Page ``pfn`` decoded in Python, uncached (None when it is not dumped): the
        reference the C reader is tested against, and what names a broken page."""
        desc = self.descriptor(pfn)
        if desc is None:
            return None
        offset, size, flags, _page_flags = desc
        block = self.block
        where = "pfn %#x (page descriptor: offset %#x, size %d, flags %#x)" % (pfn, offset, size,
                                                                               flags)
        if size > block or size == 0 and flags:
            raise KdumpFormatError("%s: %s: a compressed size of %d is not below the block size "
                                   "%d" % (self.name, where, size, block)
                                   if size > block else "%s: %s: empty compressed page"
                                   % (self.name, where))
        data = self.f.read(offset, size, "the data of " + where)
        kind = flags & (ZLIB | LZO | SNAPPY | ZSTD)
        if kind == 0:
            page = data
        else:
            if kind not in _DECOMPRESS or kind & (kind - 1):
                raise KdumpFormatError("%s: %s: unknown compression flags" % (self.name, where))
            try:
                page = _DECOMPRESS[kind](data, block)
            except MissingDecompressorError as exc:
                raise MissingDecompressorError("%s: %s" % (self.name, exc), exc.compression,
                                               exc.package) from None
            except (zlib.error, ValueError, OSError, RuntimeError) as exc:
                raise KdumpFormatError("%s: %s: %s data does not decompress: %s" % (
                    self.name, where, COMPRESSIONS[kind], exc)) from None
            except Exception as exc:             # cramjam raises its own DecompressionError
                raise KdumpFormatError("%s: %s: %s data does not decompress into one block: %s" % (
                    self.name, where, COMPRESSIONS[kind], exc)) from None
        if len(page) != block:
            raise KdumpFormatError("%s: %s: decompresses to %s bytes, not one block (%d)" % (
                self.name, where, "more than %d" % block if len(page) > block else len(page),
                block))
        return page

    def read(self, pa: int, n: int, missing) -> bytes:
        """n bytes at pa (PhysicalMemory.read has checked the file is intact)."""
        data, done, status = self.native.read(pa, n)
        if done == n:
            return data
        if status == native.BROKEN:
            found = self.native.take_error()
            raise self._failure(found[1] if found else (pa + done) >> self.shift)
        raise missing(pa + done)
