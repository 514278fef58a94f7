"""The explanation model every value draws from: bit fields and explanations.

A value lists its fields (:class:`BitField`) once, in an :class:`Explanation`
(title, manual section, fields, notes); ``explain()``, the bit string, the
bit-field SVG (:mod:`.bitfield_svg`) and the notebook view (:mod:`.html`)
are all drawn from that one list. This module imports nothing of ksinspect:
the values import it, never the other way.
"""
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["BitField", "Explanation", "bit_string", "explanation", "field"]


@dataclass(frozen=True)
class BitField:
    """One field of a register or table entry, as the manual draws it.

    Attributes:
        name: the manual's name of the field (``DPL``, ``Base 31:24``).
        msb: most significant bit, counted across the whole value
            (bits 64-127 are the upper qword of a 16-byte descriptor).
        lsb: least significant bit.
        value: the field's value.
        meaning: what that value means here, in one sentence.
    """

    name: str
    msb: int
    lsb: int
    value: int
    meaning: str

    @property
    def width(self) -> int:
        return self.msb - self.lsb + 1

    @property
    def bits(self) -> str:
        """The field's value in binary, as wide as the field."""
        return format(self.value, "0%db" % self.width)

    @property
    def span(self) -> str:
        return str(self.msb) if self.msb == self.lsb else "%d:%d" % (self.msb, self.lsb)

    @property
    def mask(self) -> int:
        """The field's bits within the whole value."""
        return ((1 << self.width) - 1) << self.lsb

    @property
    def role(self) -> str:
        """``"reserved"`` (the manual fixes its value: Reserved, Zero),
        ``"ignored"`` (free for software) or ``"field"``."""
        return _ROLES.get(self.name, "field")


# The manual's names for bits that carry no meaning of their own.
_ROLES = {"Reserved": "reserved", "Zero": "reserved", "Ignored": "ignored"}


def field(raw: int, msb: int, lsb: int, name: str, meaning: str, base_bit: int = 0) -> BitField:
    """Cut bits msb..lsb (relative to ``raw``) and label them.

    ``base_bit`` shifts the displayed bit numbers, e.g. 64 for an upper qword.
    """
    value = (raw >> lsb) & ((1 << (msb - lsb + 1)) - 1)
    return BitField(name, msb + base_bit, lsb + base_bit, value, meaning)


def bit_string(fields: Sequence[BitField]) -> str:
    """The value's bits, most significant first, split at field boundaries."""
    return " ".join(f.bits for f in sorted(fields, key=lambda f: -f.msb))


def explanation(title: str, source: str, fields: Sequence[BitField],
                notes: Iterable[str] = ()) -> str:
    """Render the field-by-field explanation shared by every value."""
    ordered = sorted(fields, key=lambda f: -f.msb)
    name_width = max(len(f.name) for f in ordered)
    span_width = max(len(f.span) for f in ordered)
    value_width = max(len(hex(f.value)) for f in ordered)
    lines = [title, "Source: " + source, "Bits: " + bit_string(ordered), ""]
    for f in ordered:
        lines.append("  %-*s  %-*s  %-*s  %s" % (span_width, f.span, name_width, f.name,
                                              value_width, hex(f.value), f.meaning))
    notes = list(notes)
    if notes:
        lines.append("")
        lines.extend("Note: " + note for note in notes)
    return "\n".join(lines)


@dataclass(frozen=True)
class Explanation:
    """What ``explain()`` prints, as data: the renderers draw from the same parts.

    Attributes:
        title: the value in one line.
        source: the manual section the layout comes from.
        fields: the bit fields (one list per value: the single source of the layout).
        notes: rules and anomalies worth a sentence each.
        anomaly_bits: a mask of the bits that break a rule (drawn highlighted).
    """

    title: str
    source: str
    fields: Sequence[BitField]
    notes: Sequence[str] = ()
    anomaly_bits: int = 0

    @property
    def bit_width(self) -> int:
        """16, 32, 64 or 128: the register or entry size the fields cover."""
        top = max(f.msb for f in self.fields) + 1
        for width in (16, 32, 64, 128):
            if top <= width:
                return width
        return top

    def text(self) -> str:
        return explanation(self.title, self.source, self.fields, self.notes)
