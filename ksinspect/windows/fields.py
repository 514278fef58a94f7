"""Batch field extraction by layout, in the C core: many records, few fields, one call.

``extract_fields(layout, "_EPROCESS", ["UniqueProcessId",
"ActiveProcessLinks.Flink", "Pcb.DirectoryTableBase"], image, offsets)``
reads those members of every record starting at ``offsets`` in ``image``
(a buffer: bytes, mmap, memoryview) and returns them as columns. Member
paths go through embedded structures with dots. This is what a scan of
physical memory uses to decode its candidates; :class:`~.struct.Struct` is
the one-record, every-member view (the two are tested against each other).
"""
from array import array
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

from .._native import fields as _native_fields
from ..errors import DecodeError
from .layout import KIND_INT, KIND_POINTER, KIND_STRUCT, Layout
from .layout_files import load_layout


@dataclass(frozen=True)
class ResolvedField:
    """A member path flattened to an offset from the record's start and a scalar."""

    path: str
    offset: int
    size: int
    signed: bool
    bit_position: int
    bit_length: int


def resolve_field(layout: Layout, struct: str, path: str) -> ResolvedField:
    """Flatten ``"ActiveProcessLinks.Flink"`` to its offset, size and sign.

    Raises:
        UnknownStructError, UnknownFieldError: a part of the path does not exist.
        DecodeError: the member is not an integer or pointer (an array, bytes, a float).
    """
    offset = 0
    current = struct
    parts = path.split(".")
    for i, part in enumerate(parts):
        spec = layout.field(current, part)
        offset += spec.offset
        info = layout.type_info(spec.type)
        if i < len(parts) - 1:
            if info.kind != KIND_STRUCT:
                raise DecodeError("%s.%s is a %s, not a structure (layout %s)" % (
                    current, part, spec.type, layout.name))
            current = spec.type
            continue
        if info.kind not in (KIND_INT, KIND_POINTER):
            raise DecodeError("%s.%s is %s; only integers and pointers are extracted in "
                              "batch (layout %s)" % (current, part, spec.type, layout.name))
        return ResolvedField(path, offset, info.size, info.signed, spec.bit_position or 0,
                             spec.bit_length or 0)
    raise DecodeError("empty member path for %s" % struct)


class FieldColumns:
    """Extracted values, one column per member path.

    A column is an ``array`` of 64-bit integers (``'q'`` for signed members,
    ``'Q'`` otherwise): indexable like a list, without a Python int per
    value until one is read.

    Attributes:
        names: the member paths, in the order asked.
        starts: each record's start offset in the buffer.
    """

    __slots__ = ("names", "starts", "_status", "_columns")

    def __init__(self, names: Tuple[str, ...], starts: Sequence[int], status: bytes,
                 columns: Dict[str, array]):
        self.names = names
        self.starts = starts
        self._status = status
        self._columns = columns

    @property
    def valid(self) -> Tuple[bool, ...]:
        """Per record, False when some member lay past the end of the buffer (it reads 0)."""
        return tuple(s == _native_fields.STATUS_OK for s in self._status)

    def __getitem__(self, name: str) -> array:
        try:
            return self._columns[name]
        except KeyError:
            raise KeyError("no column %r (columns: %s)" % (name, ", ".join(self.names))) from None

    def __len__(self) -> int:
        return len(self.starts)

    def rows(self) -> List[Dict[str, Any]]:
        valid = self.valid
        return [dict({n: self._columns[n][i] for n in self.names}, start=self.starts[i],
                     valid=valid[i]) for i in range(len(self.starts))]


def _is_buffer(data: Any) -> bool:
    try:
        memoryview(data).release()
    except TypeError:
        return False
    return True


def _records_of_memory(memory: Any, addresses: Sequence[int], extent: int
                       ) -> Tuple[Any, List[int], List[bool]]:
    """(buffer, offsets in it, readable) for records at *addresses* of a memory.

    An image whose records each lie in one run of its mapped file is read in
    place (the offsets are translated to file offsets); otherwise each record's
    ``extent`` bytes are read with ``memory.read`` into one buffer, and a
    record that cannot be read whole is marked not readable (its values 0)."""
    buffer = getattr(memory, "buffer", None)
    run_at = getattr(memory, "run_at", None)
    if buffer is not None and run_at is not None:     # None: pages not stored flat
        offsets = []
        for address in addresses:
            run = run_at(address)
            if run is None or address + extent > run.end:
                break
            offsets.append(run.offset + address - run.start)
        else:
            return buffer, offsets, [True] * len(offsets)
    from ..errors import KsinspectError
    data = bytearray()
    offsets, readable = [], []
    for address in addresses:
        offsets.append(len(data))
        try:
            data += memory.read(address, extent)
            readable.append(True)
        except KsinspectError:
            data += bytes(extent)
            readable.append(False)
    return bytes(data), offsets, readable


def extract_fields(layout: Any, struct: str, fields: Sequence[str], data: Any,
                   offsets: Sequence[int]) -> FieldColumns:
    """Read ``fields`` of the ``struct`` records at ``offsets`` in ``data`` (one C call).

    Args:
        data: a buffer (bytes, mmap, memoryview: ``offsets`` are byte offsets
            in it), or a memory with ``read(address, n)``: an image from
            :func:`ksinspect.memory.open_image` (``offsets`` are physical
            addresses) or an :class:`~ksinspect.paging.AddressSpace` (virtual
            addresses). A record of a memory that cannot be read whole is not
            ``valid`` and reads 0.
        offsets: where each record starts.

    Raises:
        UnknownStructError, UnknownFieldError, DecodeError: see :func:`resolve_field`.
    """
    layout = load_layout(layout)
    resolved = [resolve_field(layout, struct, f) for f in fields]
    specs = [(r.offset, r.size, r.signed, r.bit_position, r.bit_length) for r in resolved]
    readable = None
    starts = offsets
    if not _is_buffer(data) and hasattr(data, "read"):
        extent = max((r.offset + r.size for r in resolved), default=0)
        data, starts, readable = _records_of_memory(data, list(offsets), extent)
    values, status = _native_fields.extract(data, specs, starts)
    if readable is not None and not all(readable):
        status = bytes(s if ok else _native_fields.STATUS_TRUNCATED
                       for s, ok in zip(status, readable))
    count = len(resolved)
    columns: Dict[str, array] = {}
    for i, r in enumerate(resolved):
        column = values[i::count] if count else array("Q")
        if r.signed:
            column = array("q", column.tobytes())
        columns[r.path] = column
    return FieldColumns(tuple(fields), offsets, status, columns)
