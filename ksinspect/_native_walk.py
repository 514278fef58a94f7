"""The one boundary to the page walker of the C core (``csrc/ksi_walk.c``).

Only this module calls the ``ksi_translate*``, ``ksi_mappings``,
``ksi_physical_to_virtual``, ``ksi_read_virtual`` and ``ksi_phys_*``
functions: it builds the physical-memory accessor from a memory object,
checks arguments, calls C, turns a status into a named exception and hands
back plain ints, tuples, bytes and memoryviews. Callers never see cdata.

The compiled module is imported through :mod:`ksinspect._native`, so the
build-version check there also covers these functions.
"""
import threading
from array import array
from typing import Any, Callable, Optional, Sequence, Tuple

from ._native import _layout, _new_array, _raise_for, _rows, ffi, lib
from .errors import DecodeError, ImageFormatError

TRANSLATION_FIELDS, TRANSLATION_RECORD = _layout("ksi_translation")
BRIEF_FIELDS, BRIEF_RECORD = _layout("ksi_translation_brief")
MAPPING_FIELDS, MAPPING_RECORD = _layout("ksi_mapping")
CURSOR_FIELDS, CURSOR_RECORD = _layout("ksi_walk_cursor")

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

U64_MAX = (1 << 64) - 1


def reason_text(reason: int) -> str:
    return ffi.string(lib.ksi_walk_reason_text(reason)).decode("ascii")


REASON_TEXT = {code: reason_text(code) for code in (
    REASON_OK, REASON_NOT_PRESENT, REASON_NOT_IN_IMAGE, REASON_RESERVED, REASON_NON_CANONICAL,
    REASON_TOO_WIDE)}


def table_root(cr3: int, mode: int) -> int:
    return lib.ksi_table_root(cr3, mode)


class _Scratch(threading.local):
    def __init__(self):
        self.translation = ffi.new("ksi_translation *")
        self.translation_buf = ffi.buffer(self.translation)
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
        elif callable(getattr(memory, "read", None)):
            self._install_callback(memory.read, missing_errors)
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

        def callback(_context, pa, out, n):
            try:
                data = read(pa, n)
            except expected:
                return 1
            if len(data) != n:
                return 1
            ffi.memmove(out, data, n)
            return 0

        handle = ffi.callback("int(void *, uint64_t, uint8_t *, size_t)", callback, error=1)
        self._keep.append(handle)
        self._phys.read = handle

    # -- physical memory --------------------------------------------------------------

    def phys_read(self, pa: int, n: int) -> Tuple[bytes, int]:
        """(the bytes read, how many) -- fewer than n when some byte is missing."""
        if not 0 <= pa <= U64_MAX:
            return b"", 0
        out = ffi.new("uint8_t[]", max(n, 1))
        lib.ksi_phys_read(self._phys, pa, out, n, _scratch.done)
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
        if status:
            _raise_for(status, "translate %#x" % va)
        return TRANSLATION_RECORD.unpack(scratch.translation_buf)

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
        if status:
            _raise_for(status, "physical to virtual")
        return _rows(out, _scratch.count[0], "ksi_mapping")


def _u64_buffer(vas: Any):
    """A uint64 buffer of the addresses, zero-copy when vas already is one."""
    try:
        view = memoryview(vas)
    except TypeError:
        view = None
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
        bad = next(v for v in values if not 0 <= v <= U64_MAX)
        raise DecodeError("linear address %r does not fit in 64 bits" % (bad,)) from None
    except TypeError as exc:
        raise DecodeError("linear addresses must be integers: %s" % exc) from None


__all__: Sequence[str] = [
    "BRIEF_FIELDS", "BRIEF_RECORD", "CURSOR_FIELDS", "Cursor", "MAPPING_FIELDS",
    "MAPPING_RECORD", "REASON_TEXT", "TRANSLATION_FIELDS", "TRANSLATION_RECORD", "Walker",
    "reason_text", "table_root",
]
