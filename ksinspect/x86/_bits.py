"""Bit fields and explanations shared by every x86 value type.

A value lists its fields (:class:`BitField`) once; ``explain()``, the bit
string and the notebook view are all drawn from that one list.
"""
import enum
import html
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Type


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


def html_pre(text: str) -> str:
    """A notebook view that is safe for untrusted text."""
    return "<pre>%s</pre>" % html.escape(text)


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


class Drawable:
    """Mixin: a value with ``explanation_parts()`` draws itself.

    ``to_svg()`` is a standalone bit-field diagram (for slides), and
    ``_repr_html_()`` the notebook view (diagram + field table); ``str()``
    and ``explain()`` stay the plain-text forms. The drawing code lives in
    :mod:`ksinspect.render`, imported on first use: it depends on nothing
    above this module, so no import cycle arises.
    """

    def explanation_parts(self) -> Explanation:   # pragma: no cover - overridden
        raise NotImplementedError

    def explain(self) -> str:
        """Field by field, with the bits, the meaning and the manual section."""
        return self.explanation_parts().text()

    def to_svg(self) -> str:
        """The bit-field diagram as a standalone SVG document."""
        from ..render.bitfield_svg import bitfield_svg
        return bitfield_svg(self.explanation_parts())

    def _repr_html_(self) -> str:
        from ..render.html import explanation_html
        return explanation_html(self.explanation_parts())


def kebab(name: str) -> str:
    return name.lower().replace("_", "-")


def flag_names(value: int, flag_type: Type[enum.IntFlag]) -> List[str]:
    """Names of the set members of a flag value, in bit order, kebab-case.

    Bits that no member names are kept as ``bit-N`` so nothing is lost.
    """
    names = []
    remaining = int(value)
    for member in flag_type:
        if member.value & remaining == member.value and member.value:
            names.append(kebab(member.name))
            remaining &= ~member.value
    bit = 0
    while remaining:
        if remaining & 1:
            names.append("bit-%d" % bit)
        remaining >>= 1
        bit += 1
    return names


class FlagCache:
    """Fast int -> IntFlag conversion for hot decode paths."""

    def __init__(self, flag_type: Type[enum.IntFlag]):
        self._type = flag_type
        self._cache: Dict[int, enum.IntFlag] = {}

    def __call__(self, value: int) -> enum.IntFlag:
        flag = self._cache.get(value)
        if flag is None:
            flag = self._cache[value] = self._type(value)
        return flag
