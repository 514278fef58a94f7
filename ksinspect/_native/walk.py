"""The one boundary to the page walker of the C core (``csrc/ksi_walk.c``).

Only this module calls the ``ksi_translate*``, ``ksi_mappings``,
``ksi_physical_to_virtual``, ``ksi_read_virtual`` and ``ksi_phys_*``
functions: it builds the physical-memory accessor from a memory object,
checks arguments, calls C, turns a status into a named exception and hands
back plain ints, tuples, bytes and memoryviews. Callers never see cdata.

The compiled module is imported through :mod:`ksinspect._native`, so the
build-version check there also covers these functions.
"""
import functools
import threading
from array import array
from typing import Any, Callable, Optional, Sequence, Tuple

from . import (U64_MAX, ffi, layout as _layout, lib, new_array as _new_array, percall,
               raise_for as _raise_for, rows as _rows)
from ..errors import DecodeError, ImageFormatError, InvalidAddressError, KsinspectError

TRANSLATION_FIELDS, TRANSLATION_RECORD = _layout("ksi_translation")
BRIEF_FIELDS, BRIEF_RECORD = _layout("ksi_translation_brief")
MAPPING_FIELDS, MAPPING_RECORD = _layout("ksi_mapping")
CURSOR_FIELDS, CURSOR_RECORD = _layout("ksi_walk_cursor")
GEOMETRY_FIELDS, GEOMETRY_RECORD = _layout("ksi_paging_geometry")

REASON_OK = lib.KSI_WALK_OK
REASON_NOT_PRESENT = lib.KSI_WALK_NOT_PRESENT
REASON_NOT_IN_IMAGE = lib.KSI_WALK_NOT_IN_IMAGE
REASON_RESERVED = lib.KSI_WALK_RESERVED
REASON_NON_CANONICAL = lib.KSI_WALK_NON_CANONICAL
REASON_TOO_WIDE = lib.KSI_WALK_TOO_WIDE
RIGHT_WRITABLE = lib.KSI_WR_WRITABLE
RIGHT_USER = lib.KSI_WR_USER
RIGHT_NX = lib.KSI_WR_NX
OPTION_IGNORE_RESERVED = lib.KSI_WO_IGNORE_RESERVED
OPTION_MERGE_RIGHTS = lib.KSI_WO_MERGE_RIGHTS
STATE_DONE = lib.KSI_CS_DONE
STATE_CAPPED = lib.KSI_CS_CAPPED
STATE_PENDING = lib.KSI_CS_PENDING
# ksinspect._percall, or None (then AddressSpace runs its Python path; tests
# set this to None to race the two).
PERCALL = percall


def reason_text(reason: int) -> str:
    return ffi.string(lib.ksi_walk_reason_text(reason)).decode("ascii")


REASON_TEXT = {code: reason_text(code) for code in (
    REASON_OK, REASON_NOT_PRESENT, REASON_NOT_IN_IMAGE, REASON_RESERVED, REASON_NON_CANONICAL,
    REASON_TOO_WIDE)}


def table_root(cr3: int, mode: int) -> int:
    return lib.ksi_table_root(cr3, mode)


def geometry(mode: int) -> dict:
    """The C walker's table for one mode (ksi_paging_geometry fields by name)."""
    out = ffi.new("ksi_paging_geometry *")
    status = lib.ksi_paging_geometry_of(mode, out)
    if status:
        _raise_for(status, "paging mode %d" % mode)
    return dict(zip(GEOMETRY_FIELDS, GEOMETRY_RECORD.unpack(ffi.buffer(out))))


class _Scratch(threading.local):
    def __init__(self):
        self.translation = ffi.new("ksi_translation *")
        self.translation_buf = ffi.buffer(self.translation)
        self.page = ffi.new("ksi_translation_brief *")
        self.page_buf = ffi.buffer(self.page)
        self.offset = ffi.new("uint64_t *")
        self.done = ffi.new("size_t *")
        self.count = ffi.new("size_t *")


_scratch = _Scratch()


class Cursor:
    """Where a resumable enumeration stands (opaque; read its fields as ints)."""

    __slots__ = ("_c", "_buf", "first", "last")

    def __init__(self, first: int, last: int, max_entries: int):
        self._c = ffi.new("ksi_walk_cursor *")
        self._buf = ffi.buffer(self._c)
        self._c.max_entries = max_entries
        self.first = first
        self.last = last

    def fields(self) -> dict:
        return dict(zip(CURSOR_FIELDS, CURSOR_RECORD.unpack(self._buf)))

    @property
    def next_va(self) -> int:
        return int(self._c.next_va)

    @property
    def entries_read(self) -> int:
        return int(self._c.entries_read)

    @property
    def max_entries(self) -> int:
        return int(self._c.max_entries)

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        self._c.max_entries = value

    @property
    def tables_missing(self) -> int:
        return int(self._c.tables_missing)

    @property
    def reserved_skipped(self) -> int:
        return int(self._c.reserved_skipped)

    @property
    def done(self) -> bool:
        return bool(self._c.state & STATE_DONE)

    @property
    def capped(self) -> bool:
        return bool(self._c.state & STATE_CAPPED)

    @property
    def pending(self) -> bool:
        """A merged range is held back (it may still grow, or waits for room)."""
        return bool(self._c.state & STATE_PENDING)


class Walker:
    """A ksi_phys over one memory object plus CR3, mode and configuration.

    The memory object either has ``runs`` (sorted, each with ``start``,
    ``length``, ``offset``) and ``buffer`` (bytes-like, read zero-copy), or
    only ``read(pa, n)``, which C then calls back for every read.

    Raises:
        ImageFormatError: the run table is unsorted, overlapping or outside the buffer.
        DecodeError: a value does not fit its field.
    """

    def __init__(self, memory: Any, cr3: int, mode: int, maxphyaddr: int, pat: int,
                 options: int, missing_errors: Tuple[type, ...] = ()):
        for value, what in ((cr3, "CR3"), (pat, "IA32_PAT")):
            if not 0 <= value <= U64_MAX:
                raise DecodeError("%s %#x does not fit in 64 bits" % (what, value))
        self._phys = ffi.new("ksi_phys *")
        self._keep = []
        runs = getattr(memory, "runs", None)
        buffer = getattr(memory, "buffer", None)
        if runs is not None and buffer is not None:
            view = ffi.from_buffer(buffer)
            table = ffi.new("ksi_run[]", max(len(runs), 1))
            for i, run in enumerate(runs):
                try:
                    table[i] = (run.start, run.length, run.offset)
                except OverflowError:
                    raise ImageFormatError("run %d (%#x, %#x bytes at offset %#x) does not fit "
                                           "in 64 bits" % (i, run.start, run.length,
                                                           run.offset)) from None
            self._keep += [view, table]
            self._phys.base = ffi.cast("const uint8_t *", view)
            self._phys.base_length = len(view)
            self._phys.runs = table
            self._phys.run_count = len(runs)
            # Bytes that cannot change: a walk over them may be remembered.
            self.mapped_image = memoryview(buffer).readonly
        elif callable(getattr(memory, "native_source", None)) and memory.native_source():
            # A C reader (a compressed kdump's page cache): no Python per read; a broken
            # page it meets is raised after the C call, as the callback's would be.
            read_fn, context, take_failure = memory.native_source()
            self._keep.append(context)
            self._phys.read = read_fn
            self._phys.read_context = context
            self._failure = None
            self._native_failure = take_failure
            self.mapped_image = False
        elif callable(getattr(memory, "read", None)):
            self._install_callback(memory.read, missing_errors)
            self.mapped_image = False
        else:
            raise DecodeError("%r is not a source of physical memory (it needs runs and "
                              "buffer, or read(pa, n))" % (memory,))
        status = lib.ksi_phys_validate(self._phys)
        if status:
            raise ImageFormatError("the image's run table is not sorted, overlaps itself or "
                                   "points outside the file")
        self.cr3 = cr3
        self.mode = mode
        self._config = ffi.new("ksi_paging_config *", (maxphyaddr, pat, options))
        self._options = options
        self._local = threading.local()

    def _install_callback(self, read: Callable[[int, int], bytes],
                          missing_errors: Tuple[type, ...]) -> None:
        expected = missing_errors + (LookupError, ValueError, OSError)
        self._failure: Optional[BaseException] = None

        def callback(_context, pa, out, n):
            try:
                data = read(pa, n)
            except missing_errors:
                return 1
            except KsinspectError as exc:
                # Broken data (a kdump page that does not decompress), not missing data:
                # the walk stops here and the error is raised after the C call.
                if self._failure is None:
                    self._failure = exc
                return 1
            except expected:
                return 1
            if len(data) != n:
                return 1
            ffi.memmove(out, data, n)
            return 0

        handle = ffi.callback("int(void *, uint64_t, uint8_t *, size_t)", callback, error=1)
        self._keep.append(handle)
        self._phys.read = handle

    _native_failure: Optional[Callable[[], Optional[BaseException]]] = None

    def _take_failure(self) -> Optional[BaseException]:
        """The data error a read callback met during the last C call (and forget it)."""
        failure = getattr(self, "_failure", None)
        if failure is not None:
            self._failure = None
        elif self._native_failure is not None:
            failure = self._native_failure()
        return failure

    def _raise_failure(self) -> None:
        """Raise the data error a read callback met during the last C call, if any."""
        failure = self._take_failure()
        if failure is not None:
            raise failure

    # -- physical memory --------------------------------------------------------------

    def phys_read(self, pa: int, n: int) -> Tuple[bytes, int]:
        """(the bytes read, how many) -- fewer than n when some byte is missing."""
        if not 0 <= pa <= U64_MAX:
            return b"", 0
        out = ffi.new("uint8_t[]", max(n, 1))
        lib.ksi_phys_read(self._phys, pa, out, n, _scratch.done)
        self._raise_failure()
        done = _scratch.done[0]
        return ffi.buffer(out, done)[:], done

    # -- translation ------------------------------------------------------------------

    def translate(self, va: int) -> tuple:
        """One walk: the ksi_translation fields (TRANSLATION_FIELDS order)."""
        scratch = _scratch
        try:
            status = lib.ksi_translate(self._phys, self.cr3, self.mode, self._config, va,
                                       scratch.translation)
        except OverflowError:
            raise DecodeError("linear address %r does not fit in 64 bits" % (va,)) from None
        self._raise_failure()
        if status:
            _raise_for(status, "translate %#x" % va)
        return TRANSLATION_RECORD.unpack(scratch.translation_buf)

    def page_lookup(self) -> Callable[[int], tuple]:
        """A function va -> the ksi_translation_brief fields (BRIEF_FIELDS order)
        of one uncached walk, then the page's offset in the image buffer
        (U64_MAX: not wholly in it), with the C call's fixed arguments bound
        once (the per-call path of a page cache: attribute lookups cost more
        than the walk)."""
        call, unpack = lib.ksi_translate_page, BRIEF_RECORD.unpack
        phys, cr3, mode, config = self._phys, self.cr3, self.mode, self._config

        raise_failure = self._raise_failure

        def lookup(va: int) -> tuple:
            scratch = _scratch
            status = call(phys, cr3, mode, config, va, scratch.page, scratch.offset)
            raise_failure()
            if status:
                _raise_for(status, "translate %#x" % va)
            return unpack(scratch.page_buf) + (scratch.offset[0],)
        return lookup

    def packed_lookup(self) -> Callable[[int], int]:
        """A C callable va -> the walk packed in one int (see ksi_translate_packed
        in csrc/ksi_walk.h; PACKED_ERROR cannot happen: the walker was checked)."""
        packed = functools.partial(lib.ksi_translate_packed, self._phys, self.cr3, self.mode,
                                   self._config)
        if not hasattr(self, "_failure"):         # no read callback: nothing to re-raise
            return packed
        raise_failure = self._raise_failure

        def lookup(va: int) -> int:
            result = packed(va)
            raise_failure()
            return result
        return lookup

    def page_cache(self, max_pages: int, watched: Optional[Tuple[int, int]],
                   translation: type, space: Any, translate_miss: Callable[[int], Any],
                   read_miss: Callable[[int, int], bytes]) -> Any:
        """The C hot path of one AddressSpace (ksinspect._percall.PageCache), or
        None when the glue is not built or the memory is read through a callback.

        Its ``translate(va)`` and ``read(va, n)`` answer from the pages it
        remembers (walking a page the first time), and hand every other case to
        translate_miss / read_miss. watched: (file descriptor, size) of the
        mapped file, checked before each touch of the mapping.
        """
        if PERCALL is None or not self.mapped_image:
            return None
        fd, size = watched if watched is not None else (-1, 0)
        return PERCALL.PageCache(int(ffi.cast("uintptr_t", self._phys)),
                                 int(ffi.cast("uintptr_t", self._config)), self.cr3,
                                 self.mode, max_pages, fd, size, translation, space,
                                 translate_miss, read_miss, self)

    def translate_pas(self, vas: Any, out: Any, unmapped: int) -> Any:
        """Physical addresses of vas into out (both uint64 buffers, read and
        written in place; they may be the same buffer). Returns out."""
        source = _u64_buffer(vas)
        target = _u64_buffer(out, writable=True)
        count = len(source)
        if len(target) < count:
            raise DecodeError("physical addresses: the output holds %d addresses, the input %d"
                              % (len(target), count))
        c_vas = ffi.from_buffer("uint64_t[]", source) if count else ffi.NULL
        c_pas = ffi.from_buffer("uint64_t[]", target, require_writable=True) if count \
            else ffi.NULL
        status = lib.ksi_translate_pas(self._phys, self.cr3, self.mode, self._config, c_vas,
                                       count, c_pas, unmapped)
        failure = self._take_failure()
        if failure is not None:
            del c_vas, c_pas, source, target
            raise failure
        if status:
            _raise_for(status, "translate %d addresses" % count)
        return out

    def translate_many(self, vas: Any) -> Tuple[memoryview, Any]:
        """Translate a batch in one call.

        Args:
            vas: a buffer of native uint64 (``array('Q')``, a ``'Q'``
                memoryview: read zero-copy) or an iterable of ints.

        Returns:
            (rows, keep): the ksi_translation_brief structs (BRIEF_RECORD per
            row) and the input as a uint64 buffer (index it to get the VAs).
        """
        source = _u64_buffer(vas)
        count = len(source)
        out, mapping = _new_array("ksi_translation_brief", count)
        c_vas = ffi.from_buffer("uint64_t[]", source) if count else ffi.NULL
        status = lib.ksi_translate_many(self._phys, self.cr3, self.mode, self._config, c_vas,
                                        count, ffi.NULL, out)
        failure = self._take_failure()
        if failure is not None:
            # Drop the buffers first: a traceback frame holding an exported buffer of
            # the output mapping makes the garbage collector clear it while exported.
            del out, mapping, c_vas, source
            raise failure
        if status:
            _raise_for(status, "translate %d addresses" % count)
        return _rows(mapping if mapping is not None else out, count,
                     "ksi_translation_brief"), source

    def read_virtual(self, va: int, n: int) -> Tuple[bytes, Optional[tuple]]:
        """(bytes read, None) or (the bytes before the failure, the failing walk's fields)."""
        if n < 0:
            raise DecodeError("read: negative length %d" % n)
        out = ffi.new("uint8_t[]", max(n, 1))
        failure = ffi.new("ksi_translation *")
        try:
            status = lib.ksi_read_virtual(self._phys, self.cr3, self.mode, self._config, va,
                                          out, n, _scratch.done, failure)
        except OverflowError:
            raise DecodeError("linear address %r does not fit in 64 bits" % (va,)) from None
        self._raise_failure()
        if status:
            _raise_for(status, "read %d bytes at %#x" % (n, va))
        done = _scratch.done[0]
        data = ffi.buffer(out, done)[:]
        if done == n:
            return data, None
        return data, TRANSLATION_RECORD.unpack(ffi.buffer(failure))

    # -- enumeration ------------------------------------------------------------------

    def cursor(self, first: int, last: int, max_entries: int) -> Cursor:
        for value, what in ((first, "start"), (last, "end"), (max_entries, "max_entries")):
            if not 0 <= value <= U64_MAX:
                raise DecodeError("%s %#x does not fit in 64 bits" % (what, value))
        if max_entries < 1:
            # The C cursor reads 0 as "no cap", which a self-referencing PML4
            # (2^36 paths) turns into a walk of days: every walk has a cap.
            raise DecodeError("max_entries must be at least 1: there is no unlimited walk "
                              "(tables that map themselves describe 2^36 paths)")
        if first > last:
            raise DecodeError("range start %#x is after its end %#x" % (first, last))
        return Cursor(first, last, max_entries)

    def mappings(self, cursor: Cursor, capacity: int, merge_rights: bool = False,
                 fresh: bool = False) -> memoryview:
        """The next chunk of merged ranges (MAPPING_RECORD per row); see Cursor.done.

        The memoryview stays valid until this thread's next call on this
        walker, or for good with ``fresh`` (a new output array for this call).
        """
        config = self._config
        if merge_rights:
            config = ffi.new("ksi_paging_config *", (config.maxphyaddr, config.pat_msr,
                                                     config.options | OPTION_MERGE_RIGHTS))
        mapping = None
        if fresh:
            out, mapping = _new_array("ksi_mapping", capacity)
        else:
            out = self._output(capacity)
        status = lib.ksi_mappings(self._phys, self.cr3, self.mode, config, cursor.first,
                                  cursor.last, cursor._c, out, capacity, _scratch.count)
        failure = self._take_failure()
        if failure is not None:
            del out, mapping
            raise failure
        if status:
            _raise_for(status, "mappings")
        return _rows(mapping if mapping is not None else out, _scratch.count[0], "ksi_mapping")

    def _output(self, capacity: int):
        """A ksi_mapping array of at least capacity rows, reused between calls
        (the rows a call returns are valid until this thread's next call: C
        runs without the GIL, so each thread has its own)."""
        local = self._local
        held = getattr(local, "out", None)
        if held is None or held[0] < capacity:
            held = (capacity, ffi.new("ksi_mapping[]", max(capacity, 1)))
            local.out = held
        return held[1]

    def physical_to_virtual(self, pa: int, cursor: Cursor, capacity: int) -> memoryview:
        """The next chunk of pages that map pa (MAPPING_RECORD per row)."""
        if not 0 <= pa <= U64_MAX:
            raise DecodeError("physical address %r does not fit in 64 bits" % (pa,))
        out = ffi.new("ksi_mapping[]", max(capacity, 1))
        status = lib.ksi_physical_to_virtual(self._phys, self.cr3, self.mode, self._config, pa,
                                             cursor._c, out, capacity, _scratch.count)
        self._raise_failure()
        if status:
            _raise_for(status, "physical to virtual")
        return _rows(out, _scratch.count[0], "ksi_mapping")


def record_views(cls: type, rows: memoryview, size: int) -> Optional[list]:
    """[cls((view, i)) for each size-byte record of rows], built in C, where
    view is a slice of rows holding record i (cls: a tuple subclass whose
    instances hold no reference back to themselves); None without the glue."""
    if PERCALL is None:
        return None
    return PERCALL.record_views(cls, rows, size)


def _u64_buffer(vas: Any, writable: bool = False):
    """A uint64 buffer of the addresses, zero-copy when vas already is one
    (``array('Q')``, a numpy uint64 array, a ``'Q'`` memoryview); with
    ``writable``, vas must be such a buffer and writable."""
    try:
        view = memoryview(vas)
    except TypeError:
        view = None
    if writable and (view is None or view.readonly or view.itemsize != 8
                     or view.format not in ("Q", "=Q", "<Q", "L", "=L", "<L")
                     or not view.c_contiguous or view.ndim != 1):
        raise DecodeError("physical addresses: the output must be a writable, contiguous "
                          "buffer of native uint64 (array('Q'), a numpy uint64 array)")
    if view is not None and view.format in ("Q", "=Q", "<Q") and view.itemsize == 8 \
            and view.c_contiguous and view.ndim == 1:
        return view
    if view is not None and view.format in ("L", "=L", "<L") and view.itemsize == 8 \
            and view.c_contiguous and view.ndim == 1:
        return view.cast("B").cast("Q")
    if isinstance(vas, (bytes, bytearray, memoryview)):
        raise DecodeError("linear addresses: a buffer must hold native uint64 ('Q') items")
    values = vas if isinstance(vas, (list, tuple, range)) else list(vas)
    try:
        return array("Q", values)
    except OverflowError:
        # As AddressSpace.translate() says of one address that does not fit.
        bad = next(v for v in values if not 0 <= v <= U64_MAX)
        raise InvalidAddressError("linear address %#x does not fit in 64 bits" % bad,
                                  address=bad) from None
    except TypeError as exc:
        raise DecodeError("linear addresses must be integers: %s" % exc) from None


__all__: Sequence[str] = [
    "BRIEF_FIELDS", "BRIEF_RECORD", "CURSOR_FIELDS", "Cursor", "GEOMETRY_FIELDS",
    "MAPPING_FIELDS", "geometry",
    "MAPPING_RECORD", "REASON_TEXT", "TRANSLATION_FIELDS", "TRANSLATION_RECORD", "Walker",
    "reason_text", "table_root",
]
