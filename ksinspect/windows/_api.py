"""The one argument order of the Windows readers, checked at the door.

Every reader takes ``(memory, address, layout, ...)``: where to read, what
to read, and the build's layout (a :class:`~.layout.Layout` or a name
:func:`~.layout_files.load_layout` accepts). A few readers took ``(memory,
layout, address)`` before (``read_eprocess``, ``read_struct``,
``walk_processes``; ``decode_eprocess`` took ``(layout, data)``): as a
layout is never an integer and an address never a layout, that old order is
recognised and still accepted for one release, with a DeprecationWarning;
anything else that is not an address where the address goes is a TypeError
naming the order.
"""
import warnings
from typing import Any, Tuple

from .layout import Layout

__all__ = ["address_and_layout", "is_layout", "renamed_argument"]


def is_layout(value: Any) -> bool:
    """A Layout, or a name / path a layout is loaded from."""
    return isinstance(value, (Layout, str))


def _is_address(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def address_and_layout(function: str, address: Any, layout: Any,
                       old_order: bool = False) -> Tuple[int, Any]:
    """``(address, layout)`` as ``function(memory, address, layout)`` takes them.

    Args:
        function: the reader's name, for the messages.
        old_order: the reader took ``(memory, layout, address)`` in the
            previous release; that order is accepted with a DeprecationWarning.

    Raises:
        TypeError: the address is not an integer or the layout not a layout.
    """
    if _is_address(address) and (is_layout(layout) or layout is None):
        return address, layout
    if old_order and is_layout(address) and _is_address(layout):
        warnings.warn("%s(memory, layout, address) is the old argument order; use "
                      "%s(memory, address, layout): the old order stops working in the next "
                      "release" % (function, function), DeprecationWarning, stacklevel=3)
        return layout, address
    raise TypeError("%s(memory, address, layout, ...): the address must be an integer and the "
                    "layout a Layout or a layout name (got %s and %s)" % (
                        function, type(address).__name__, type(layout).__name__))


def renamed_argument(function: str, old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """The value of keyword ``new``, taken from ``old`` (with a DeprecationWarning)
    when only the old keyword was given (one keyword per idea: ``address=``,
    not ``base=``).

    Raises:
        TypeError: both were given, or neither.
    """
    if old_value is not None:
        if new_value is not None:
            raise TypeError("%s() got both %s= and %s= (the same argument; use %s=)"
                            % (function, old, new, new))
        warnings.warn("%s(%s=) is now %s(%s=); the old keyword stops working in the next "
                      "release" % (function, old, function, new), DeprecationWarning,
                      stacklevel=3)
        return old_value
    if new_value is None:
        raise TypeError("%s() missing required argument: %r" % (function, new))
    return new_value
