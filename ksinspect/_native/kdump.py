"""The one boundary to the kdump part of the C core (``csrc/ksi_kdump.c``).

Only this module calls ``ksi_kdump_*``, ``ksi_lzo1x_decompress`` and
``ksi_snappy_decompress``: it checks lengths, passes buffers zero-copy
(``ffi.from_buffer``), checks the status and hands back plain ints and bytes.
Callers never see cdata, except the (read function, context) pair that
:class:`PageReader` hands the C walker (``_native/walk.py``). It also finds
the system's libz and libzstd (by soname, through ctypes) whose functions the
C page reader calls.
"""
import ctypes
import sys
import weakref
from array import array
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import U64_MAX, ffi, lib, status_message

RANK_BITS = lib.KSI_KDUMP_RANK_BITS
FLAT_HEADER = lib.KSI_KDUMP_FLAT_HEADER


class PageIndex:
    """The rank table of a dumped-pages bitmap: pfn -> descriptor number.

    Args:
        bitmap: the bitmap (bytes-like; kept alive here).

    Raises:
        ValueError: the C core refused the bitmap (it cannot, for a bytes-like).
    """

    def __init__(self, bitmap: Any):
        self._bitmap = bitmap
        self._view = ffi.from_buffer(bitmap)
        self.bitmap_bytes = len(self._view)
        self._nranks = int(lib.ksi_kdump_rank_entries(self.bitmap_bytes))
        self._ranks = ffi.new("uint64_t[]", max(self._nranks, 1))
        total = ffi.new("uint64_t *")
        status = lib.ksi_kdump_build_ranks(self._view, self.bitmap_bytes, self._ranks,
                                           self._nranks, total)
        if status:
            raise ValueError("kdump bitmap: " + status_message(status))
        self.dumped = int(total[0])
        self._one_pfn = ffi.new("uint64_t[1]")
        self._one_index = ffi.new("uint64_t[1]")
        self._one_found = ffi.new("uint8_t[1]")

    @property
    def pfn_limit(self) -> int:
        """One past the last pfn the bitmap can describe."""
        return self.bitmap_bytes * 8

    def index(self, pfn: int) -> Optional[int]:
        """The descriptor number of ``pfn``, or None when the page is not dumped."""
        if not 0 <= pfn <= U64_MAX:
            return None
        self._one_pfn[0] = pfn
        lib.ksi_kdump_lookup(self._view, self.bitmap_bytes, self._ranks, self._nranks,
                             self._one_pfn, 1, self._one_index, self._one_found)
        return int(self._one_index[0]) if self._one_found[0] else None

    def index_many(self, pfns: List[int]) -> List[Optional[int]]:
        """Batch form of :meth:`index` (one C call)."""
        n = len(pfns)
        if not n:
            return []
        c_pfns = ffi.new("uint64_t[]", [p if 0 <= p <= U64_MAX else U64_MAX for p in pfns])
        out = ffi.new("uint64_t[]", n)
        found = ffi.new("uint8_t[]", n)
        lib.ksi_kdump_lookup(self._view, self.bitmap_bytes, self._ranks, self._nranks, c_pfns,
                             n, out, found)
        return [int(out[i]) if found[i] else None for i in range(n)]

    def runs(self, chunk: int = 4096) -> List[Tuple[int, int]]:
        """Every run of dumped pfns: (first pfn, count)."""
        nxt = ffi.new("uint64_t *")
        starts = ffi.new("uint64_t[]", chunk)
        lengths = ffi.new("uint64_t[]", chunk)
        count = ffi.new("size_t *")
        result: List[Tuple[int, int]] = []
        while nxt[0] < self.pfn_limit:
            lib.ksi_kdump_runs(self._view, self.bitmap_bytes, nxt, starts, lengths, chunk, count)
            n = int(count[0])
            result.extend(zip(array("Q", bytes(ffi.buffer(starts, 8 * n))),
                              array("Q", bytes(ffi.buffer(lengths, 8 * n)))))
            if n < chunk:
                break
        return result


def flat_records(buf: Any, chunk: int = 65536) -> Tuple[List[Tuple[int, int, int]], Optional[str]]:
    """The records of a flattened file: [(offset, size, file position)], and the
    reason the scan stopped early (None when it reached the -1/-1 end record)."""
    view = ffi.from_buffer(buf)
    cursor = ffi.new("ksi_flat_cursor *")
    cursor.position = FLAT_HEADER
    out = ffi.new("ksi_flat_record[]", chunk)
    count = ffi.new("size_t *")
    records: List[Tuple[int, int, int]] = []
    raw = ffi.buffer(out)
    while not cursor.done:
        status = lib.ksi_kdump_flat_scan(view, len(view), cursor, out, chunk, count)
        n = int(count[0])
        values = array("Q", bytes(raw[:24 * n]))
        records.extend(zip(values[0::3], values[1::3], values[2::3]))
        if status:
            at = int(cursor.position)
            if status == lib.KSI_ERR_TRUNCATED:
                return records, "the record at file offset %#x runs past the end of the file " \
                                "(%d bytes) before the -1/-1 end record" % (at, len(view))
            return records, "the record at file offset %#x has a negative or overflowing " \
                            "offset or size" % at
    return records, None


# Why each decoder failed, by C status (``%(capacity)d``: the room it was given).
_LZO_FAILURES = {
    lib.KSI_ERR_TRUNCATED: "the LZO data ends inside an instruction or before its end marker",
    lib.KSI_ERR_CAPACITY: "the LZO data decompresses to more than %(capacity)d bytes",
    lib.KSI_ERR_OUT_OF_RANGE: "an LZO match reaches before the start of the output",
    lib.KSI_ERR_BAD_ARGUMENT: "bytes follow the LZO end marker"}
_SNAPPY_FAILURES = {
    lib.KSI_ERR_TRUNCATED: "the snappy data ends inside an element or its length",
    lib.KSI_ERR_CAPACITY: "the snappy data decompresses to more than %(capacity)d bytes",
    lib.KSI_ERR_OUT_OF_RANGE: "a snappy copy reaches before the start of the output",
    lib.KSI_ERR_BAD_ARGUMENT: "the snappy length preamble does not match the data"}


def _decompress(function, data: Any, capacity: int, failures: Dict[int, str]
                ) -> Tuple[Optional[bytes], str]:
    src = ffi.from_buffer(data)
    out = ffi.new("uint8_t[]", max(capacity, 1))
    length = ffi.new("size_t *")
    status = function(src, len(src), out, capacity, length)
    if status:
        why = failures.get(status)
        return None, why % {"capacity": capacity} if why else status_message(status)
    return bytes(ffi.buffer(out, int(length[0]))), ""


def lzo1x_decompress(data: Any, capacity: int) -> Tuple[Optional[bytes], str]:
    """(the decompressed bytes, "") or (None, why it failed)."""
    return _decompress(lib.ksi_lzo1x_decompress, data, capacity, _LZO_FAILURES)


def snappy_decompress(data: Any, capacity: int) -> Tuple[Optional[bytes], str]:
    """(the decompressed bytes, "") or (None, why it failed): the C core's snappy."""
    return _decompress(lib.ksi_snappy_decompress, data, capacity, _SNAPPY_FAILURES)


# -- the page reader -----------------------------------------------------------------

ZLIB, LZO, SNAPPY, ZSTD = lib.KSI_KDUMP_ZLIB, lib.KSI_KDUMP_LZO, lib.KSI_KDUMP_SNAPPY, \
    lib.KSI_KDUMP_ZSTD
MAX_CACHE_PAGES = lib.KSI_KDUMP_MAX_CACHE_PAGES

_LIBRARY_NAMES = {
    "zlib": {"linux": ["libz.so.1"], "darwin": ["libz.1.dylib", "libz.dylib"],
             "win32": ["zlib1.dll", "zlib.dll"]},
    "zstd": {"linux": ["libzstd.so.1"], "darwin": ["libzstd.1.dylib", "libzstd.dylib"],
             "win32": ["libzstd.dll", "zstd.dll"]},
}
_system: Optional[Dict[str, Any]] = None


def _load(kind: str) -> Optional[ctypes.CDLL]:
    platform = "linux" if sys.platform.startswith("linux") else sys.platform
    for name in _LIBRARY_NAMES[kind].get(platform, []):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def system_decompressors() -> Dict[str, Any]:
    """The system's zlib ``uncompress`` and libzstd ``ZSTD_decompress`` /
    ``ZSTD_isError`` as C function pointers (looked up once; the ones that are
    not installed are absent): C decodes those pages without Python. Loaded by
    their ABI-stable sonames, never searched for."""
    global _system
    if _system is None:
        found: Dict[str, Any] = {}
        z = _load("zlib")
        if z is not None and hasattr(z, "uncompress"):
            found["zlib_uncompress"] = ffi.cast(
                "ksi_zlib_uncompress_fn", ctypes.cast(z.uncompress, ctypes.c_void_p).value)
            found["_zlib"] = z
        zs = _load("zstd")
        if zs is not None and all(hasattr(zs, f) for f in (
                "ZSTD_decompressDCtx", "ZSTD_isError", "ZSTD_createDCtx", "ZSTD_freeDCtx")):
            found["zstd_decompress"] = ffi.cast(
                "ksi_zstd_decompress_fn",
                ctypes.cast(zs.ZSTD_decompressDCtx, ctypes.c_void_p).value)
            found["zstd_is_error"] = ffi.cast(
                "ksi_zstd_is_error_fn", ctypes.cast(zs.ZSTD_isError, ctypes.c_void_p).value)
            zs.ZSTD_createDCtx.restype = ctypes.c_void_p
            zs.ZSTD_freeDCtx.argtypes = [ctypes.c_void_p]
            found["_zstd"] = zs
        _system = found
    return _system


class PageReader:
    """A ksi_kdump_reader: physical reads of a kdump through a C LRU cache of
    decompressed pages (see csrc/ksi_kdump.h).

    Args:
        file: the whole file (bytes-like; kept alive here).
        extents: a flattened file's (plain start, plain end, file position)
            triples as one array('Q'), sorted; None for a plain file.
        plain_size: the plain file's size.
        index: the dumped-pages :class:`PageIndex`.
        desc_at: the plain-file offset of page descriptor 0.
        block: the block (page) size.
        cache_pages: decompressed pages kept (1..MAX_CACHE_PAGES).
        decompress: (kind, stored bytes, capacity) -> the page, for the zlib or
            zstd pages no system library decodes (None: such pages fail).
        decompressors: :func:`system_decompressors` or a subset.

    Raises:
        ValueError: the C core refused the geometry or the cache size.
    """

    def __init__(self, file: Any, extents: Optional[array], plain_size: int, index: PageIndex,
                 desc_at: int, block: int, cache_pages: int,
                 decompress: Optional[Callable[[int, bytes, int], bytes]] = None,
                 decompressors: Optional[Dict[str, Any]] = None):
        self.block = block
        self._arena_bytes(cache_pages)          # refuse a bad size before taking the buffer
        self._file = ffi.from_buffer(file)
        try:
            self._setup(extents, plain_size, index, desc_at, block, cache_pages, decompress,
                        decompressors)
        except BaseException:
            ffi.release(self._file)             # or the caller's mmap cannot be closed
            raise

    def _setup(self, extents, plain_size, index, desc_at, block, cache_pages, decompress,
               decompressors):
        self._index = index
        self._extents = ffi.from_buffer("uint64_t[]", extents) if extents is not None else None
        r = ffi.new("ksi_kdump_reader *")
        r.file = self._file
        r.file_length = len(self._file)
        if self._extents is not None:
            r.extents = self._extents
            r.extent_count = len(extents) // 3
        r.plain_size = plain_size
        r.bitmap = index._view
        r.bitmap_bytes = index.bitmap_bytes
        r.ranks = index._ranks
        r.nranks = index._nranks
        r.desc_at = desc_at
        r.block_size = block
        system = system_decompressors() if decompressors is None else decompressors
        for name in ("zlib_uncompress", "zstd_decompress", "zstd_is_error"):
            if name in system:
                setattr(r, name, system[name])
        if "_zstd" in system:
            # One decompression context per reader (the reader's lock serialises its use),
            # freed with the reader.
            zs = system["_zstd"]
            dctx = zs.ZSTD_createDCtx()
            if dctx:
                r.zstd_dctx = ffi.cast("void *", dctx)
                self._free_dctx = weakref.finalize(self, zs.ZSTD_freeDCtx, dctx)
        self._system = system
        self._hook = None
        if decompress is not None:
            self._hook = self._make_hook(decompress)
            r.decompress = self._hook
        self._r = r
        self._arena = None
        self.resize(cache_pages)
        self.read_fn = ffi.addressof(lib, "ksi_kdump_read_fn")
        self.context = ffi.cast("void *", r)

    @staticmethod
    def _make_hook(decompress: Callable[[int, bytes, int], bytes]):
        def hook(_context, kind, src, length, dst, capacity, out_length):
            try:
                page = decompress(int(kind), ffi.buffer(src, length)[:], int(capacity))
            except Exception:       # any failure: Python re-reads the page for the message
                return 1
            if len(page) > capacity:
                return 1
            ffi.memmove(dst, page, len(page))
            out_length[0] = len(page)
            return 0
        return ffi.callback("int(void *, uint32_t, const uint8_t *, size_t, uint8_t *, size_t, "
                            "size_t *)", hook, error=1)

    def _arena_bytes(self, cache_pages: int) -> int:
        need = int(lib.ksi_kdump_cache_bytes(cache_pages, self.block)) \
            if isinstance(cache_pages, int) and 0 < cache_pages <= MAX_CACHE_PAGES else 0
        if not need:
            raise ValueError("a kdump page cache of %r pages of %d bytes is not possible "
                             "(1 to %d pages)" % (cache_pages, self.block, MAX_CACHE_PAGES))
        return need

    def resize(self, cache_pages: int) -> None:
        """A new, empty cache of ``cache_pages`` pages (the counters restart)."""
        need = self._arena_bytes(cache_pages)
        arena = ffi.new("uint8_t[]", need)
        status = lib.ksi_kdump_reader_init(self._r, arena, need, cache_pages)
        if status:
            raise ValueError("kdump page reader: " + status_message(status))
        self._arena = arena
        self.cache_pages = cache_pages

    def read(self, pa: int, n: int) -> Tuple[bytes, int, int]:
        """(the bytes read, how many, status): status 0, MISSING (the page at
        pa + done is not dumped) or BROKEN (see :meth:`take_error`)."""
        out = ffi.new("uint8_t[]", max(n, 1))
        done = ffi.new("size_t *")
        status = lib.ksi_kdump_read(self._r, pa, out, n, done)
        got = int(done[0])
        return ffi.buffer(out, got)[:], got, status

    def take_error(self) -> Optional[Tuple[int, int]]:
        """(enum ksi_kdump_page_error, pfn) of the first broken page met since the
        last call, or None; and forget it."""
        r = self._r
        if not r.error:
            return None
        found = (int(r.error), int(r.error_pfn))
        r.error = 0
        return found

    def clear(self) -> None:
        lib.ksi_kdump_reader_clear(self._r)

    def stats(self) -> Dict[str, int]:
        """Cache slots and use, and the hit / miss / page-load counters."""
        r = self._r
        return {"slots": int(r.slots), "used": int(r.used), "hits": int(r.hits),
                "misses": int(r.misses), "loaded": int(r.decompressed)}


MISSING, BROKEN = lib.KSI_ERR_OUT_OF_RANGE, lib.KSI_ERR_TRUNCATED

__all__ = ["BROKEN", "FLAT_HEADER", "MISSING", "PageIndex", "PageReader", "RANK_BITS",
           "flat_records", "lzo1x_decompress", "snappy_decompress", "system_decompressors"]
