"""Segment selectors (Intel SDM vol. 3A 3.4.2, Figure 3-6)."""
import enum
from dataclasses import dataclass
from typing import List, Optional

from .._native import segment as _native
from ..errors import TruncatedDataError
from ._bits import BitField, Drawable, Explanation, field

SOURCE = "Intel SDM vol. 3A §3.4.2, Figure 3-6 (Segment Selector)"


class TableIndicator(enum.Enum):
    """The TI bit: which descriptor table the index points into."""

    GDT = "GDT"
    LDT = "LDT"


_TABLES = (TableIndicator.GDT, TableIndicator.LDT)


@dataclass(frozen=True)
class Selector(Drawable):
    """A 16-bit segment selector: index, table indicator and RPL.

    Build with :meth:`decode`; ``raw`` is the 16-bit value.
    """

    raw: int
    index: int
    table: TableIndicator
    rpl: int
    address: Optional[int] = None

    @classmethod
    def decode(cls, value: int, address: Optional[int] = None) -> "Selector":
        """Decode a selector value.

        Raises:
            DecodeError: the value does not fit in 16 bits.
        """
        raw, index, table, rpl = _native.decode_selector(value)
        return cls(raw, index, _TABLES[table], rpl, address)

    @classmethod
    def from_bytes(cls, data: bytes, address: Optional[int] = None) -> "Selector":
        """Decode a selector stored little-endian in two bytes."""
        if len(data) < 2:
            raise TruncatedDataError("selector: need 2 bytes, got %d" % len(data))
        return cls.decode(int.from_bytes(data[:2], "little"), address)

    @property
    def is_null(self) -> bool:
        """Index 0 of the GDT: the null selector (any RPL)."""
        return self.index == 0 and self.table is TableIndicator.GDT

    @property
    def offset(self) -> int:
        """Byte offset of the selected descriptor in its table."""
        return self.index * 8

    def __str__(self) -> str:
        return "selector %#06x: index %d (offset %#x) in the %s, RPL %d%s" % (
            self.raw, self.index, self.offset, self.table.value, self.rpl,
            " (null selector)" if self.is_null else "")

    def __repr__(self) -> str:
        return "Selector(raw=%#06x, index=%d, table=%s, rpl=%d)" % (
            self.raw, self.index, self.table.value, self.rpl)

    def fields(self) -> List[BitField]:
        return [
            field(self.raw, 15, 3, "Index",
                  "descriptor %d, at byte offset %#x of the table" % (self.index, self.offset)),
            field(self.raw, 2, 2, "TI", "0 = GDT, 1 = LDT: the %s" % self.table.value),
            field(self.raw, 1, 0, "RPL",
                  "requested privilege level %d; access needs max(CPL, RPL) <= DPL for data" % self.rpl),
        ]

    def explanation_parts(self) -> Explanation:
        notes = []
        if self.is_null:
            notes.append("A null selector may be loaded into DS, ES, FS or GS but faults (#GP) "
                         "when used to access memory; loading it into CS or SS faults (§3.4.2).")
        return Explanation(str(self), SOURCE, self.fields(), notes)

    def to_dict(self) -> dict:
        result = {"raw": self.raw, "index": self.index, "table": self.table.value, "rpl": self.rpl}
        if self.address is not None:
            result["address"] = self.address
        return result
