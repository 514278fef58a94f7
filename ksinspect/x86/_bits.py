"""What every x86 value type shares: flag names, fast flag conversion, and
the Drawable mixin that hands a value's explanation to the views.

The explanation model itself (BitField, Explanation) lives in
:mod:`ksinspect.views.explanation`; it is re-exported here for the value
modules of this package. Other layers import it from views (it is lower),
and ``flag_names`` / ``Drawable`` from :mod:`ksinspect.x86`, not from this
private module.
"""
import enum
from typing import Dict, List, Type

from ..views.explanation import BitField, Explanation, bit_string, explanation, field
from ..views.bitfield_svg import bitfield_svg
from ..views.html import explanation_html

__all__ = ["BitField", "Drawable", "Explanation", "FlagCache", "bit_string", "explanation",
           "field", "flag_names", "kebab"]


class Drawable:
    """Mixin: a value with ``explanation_parts()`` draws itself.

    ``to_svg()`` is a standalone bit-field diagram (for slides), and
    ``_repr_html_()`` the notebook view (diagram + field table); ``str()``
    and ``explain()`` stay the plain-text forms. Each is one call into
    :mod:`ksinspect.views`, which imports no value module.
    """

    def explanation_parts(self) -> Explanation:   # pragma: no cover - overridden
        raise NotImplementedError

    def explain(self) -> str:
        """Field by field, with the bits, the meaning and the manual section."""
        return self.explanation_parts().text()

    def to_svg(self) -> str:
        """The bit-field diagram as a standalone SVG document."""
        return bitfield_svg(self.explanation_parts())

    def _repr_html_(self) -> str:
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
