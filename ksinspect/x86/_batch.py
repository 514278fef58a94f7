"""Lazy sequences over the C core's batch output.

A batch decode is one C call that fills an array of structs. The array
stays in C memory; a value object is built only for the rows a caller
touches, and whole columns can be read without building any.
"""
import struct
from typing import Callable, Generic, Iterator, List, Sequence, Tuple, TypeVar, Union, overload

from ..views.html import batch_html

T = TypeVar("T")


class DecodedBatch(Sequence[T], Generic[T]):
    """Rows of a C batch decode, each turned into a value on access.

    Args:
        rows: the C output array's bytes, one ``record`` per row.
        fields: the C struct's member names, in order.
        record: the struct format of one row.
        make: builds the value of row ``i`` from its tuple of fields.
    """

    def __init__(self, rows: memoryview, fields: Sequence[str], record: struct.Struct,
                 make: Callable[[int, Tuple[int, ...]], T]):
        self._rows = rows
        self._fields = tuple(fields)
        self._record = record
        self._make = make

    def __len__(self) -> int:
        return len(self._rows) // self._record.size

    def _row(self, i: int) -> Tuple[int, ...]:
        return self._record.unpack_from(self._rows, i * self._record.size)

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> List[T]: ...

    def __getitem__(self, i: Union[int, slice]):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("batch index %d out of range (%d rows)" % (i, n))
        return self._make(i, self._row(i))

    def __iter__(self) -> Iterator[T]:
        for i, row in enumerate(self._record.iter_unpack(self._rows)):
            yield self._make(i, row)

    def column(self, name: str) -> List[int]:
        """Every row's value of one C field (e.g. ``"kind"``, ``"frame"``), without building values."""
        try:
            index = self._fields.index(name)
        except ValueError:
            raise KeyError("no field %r (fields: %s)" % (name, ", ".join(self._fields))) from None
        return [row[index] for row in self._record.iter_unpack(self._rows)]

    def __repr__(self) -> str:
        return "<%s of %d rows>" % (type(self).__name__, len(self))

    def _repr_html_(self) -> str:
        """A notebook table, one escaped line per row (the first rows of a big batch)."""
        return batch_html(self, repr(self))
