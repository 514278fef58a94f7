"""A typed view of a Windows structure over bytes, by layout.

``Struct(layout, "_PEB", data)`` reads members by name: ``s["Ldr"]``,
``s["ActiveProcessLinks"]["Flink"]``. Names are looked up in the layout
only; there is no attribute magic, so a member the build does not have is
an :class:`~ksinspect.errors.UnknownFieldError` naming the structure, the
member and the layout, never a silent ``None``. ``data`` may hold only the
start of the structure: reading a member beyond it raises
:class:`~ksinspect.errors.TruncatedDataError`.
"""
import struct as _struct
from typing import Any, Iterator, List, Optional, Tuple

from ..errors import TruncatedDataError, UnknownFieldError
from ..views.html import html_pre
from .layout import (KIND_ARRAY, KIND_CHARS, KIND_FLOAT, KIND_POINTER, KIND_STRUCT, Field,
                     Layout, StructLayout)


class Struct:
    """Named members of one structure, decoded from little-endian bytes.

    Args:
        layout: the build's :class:`Layout`.
        name: the structure name, e.g. ``_PEB``.
        data: the structure's bytes (at least up to the members read).
        address: where the bytes were read from, for display and for the
            addresses of embedded members.

    Raises:
        UnknownStructError: the layout has no such structure.
    """

    __slots__ = ("layout", "name", "address", "_struct", "_data")

    def __init__(self, layout: Layout, name: str, data: bytes, address: Optional[int] = None,
                 _shape: Optional[StructLayout] = None):
        self.layout = layout
        self.name = name
        self.address = address
        self._struct = _shape if _shape is not None else layout.struct(name)
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        if self._struct.size is not None and len(view) > self._struct.size:
            view = view[:self._struct.size]
        self._data = view

    # -- description ---------------------------------------------------
    @property
    def size(self) -> Optional[int]:
        """sizeof the structure in this build (None when the layout does not know it)."""
        return self._struct.size

    @property
    def raw(self) -> bytes:
        return bytes(self._data)

    @property
    def field_names(self) -> Tuple[str, ...]:
        """Member names in offset order."""
        return tuple(self._struct.fields)

    def __contains__(self, name: object) -> bool:
        return name in self._struct.fields

    def field(self, name: str) -> Field:
        """The layout's description of member ``name``.

        Raises:
            UnknownFieldError: the structure has no such member in this layout.
        """
        try:
            return self._struct.fields[name]
        except KeyError:
            return self.layout.field(self.name, name) if self.name in self.layout.structs \
                else self._unknown(name)

    def _unknown(self, name: str):
        raise UnknownFieldError("%s has no field %s in layout %s (it is not described there)" % (
            self.name, name, self.layout.name), struct=self.name, field=name,
            layout=self.layout.name)

    def offset_of(self, name: str) -> int:
        return self.field(name).offset

    def address_of(self, name: str) -> Optional[int]:
        """Virtual address of member ``name`` (None when the structure has no address)."""
        return None if self.address is None else self.address + self.field(name).offset

    # -- reading -------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        """Member ``name``: an int, a float, bytes (``char[N]``), a list (arrays)
        or a nested :class:`Struct` (embedded structures).

        Raises:
            UnknownFieldError: no such member in this build's layout.
            TruncatedDataError: the data ends before the member does.
        """
        return self._read(self.field(name))

    def get(self, name: str, default: Any = None) -> Any:
        """Member ``name``, or ``default`` when this build's layout has no such member.

        Raises:
            TruncatedDataError: the member exists but the data ends before it does.
        """
        spec = self._struct.fields.get(name)
        return default if spec is None else self._read(spec)

    def items(self) -> Iterator[Tuple[str, Any]]:
        """(name, value) for every member that lies inside the data."""
        for spec in self._struct.fields.values():
            try:
                yield spec.name, self._read(spec)
            except TruncatedDataError:
                continue

    def _read(self, spec: Field) -> Any:
        return self._value(spec.type, spec.offset, spec)

    def _bytes(self, offset: int, size: int, what: str) -> memoryview:
        end = offset + size
        if end > len(self._data):
            where = "" if self.address is None else " at %#x" % self.address
            raise TruncatedDataError("%s%s.%s needs bytes %#x..%#x but only %#x bytes were "
                                     "read (layout %s)" % (self.name, where, what, offset,
                                                           end, len(self._data),
                                                           self.layout.name))
        return self._data[offset:end]

    def _value(self, type_name: str, offset: int, spec: Field) -> Any:
        info = self.layout.type_info(type_name)
        if info.kind == KIND_STRUCT:
            shape = self.layout.structs.get(type_name)
            if shape is None:
                # A structure this layout does not describe (e.g. _EX_PUSH_LOCK): opaque.
                shape = StructLayout(type_name, None, {})
            # Like the outer view, the embedded one may hold only a prefix of its bytes.
            if offset >= len(self._data):
                self._bytes(offset, 1, spec.name)
            start = offset
            address = None if self.address is None else self.address + offset
            return Struct(self.layout, type_name, self._data[start:], address, _shape=shape)
        if info.kind == KIND_ARRAY:
            element = self.layout.type_info(info.element)
            if element.size is None:
                raise TruncatedDataError("%s.%s: array of %s, whose size layout %s does not "
                                         "give" % (self.name, spec.name, info.element,
                                                   self.layout.name))
            self._bytes(offset, element.size * info.count, spec.name)
            return [self._value(info.element, offset + i * element.size, spec)
                    for i in range(info.count)]
        raw = self._bytes(offset, info.size, spec.name)
        if info.kind == KIND_CHARS:
            return bytes(raw)
        if info.kind == KIND_FLOAT:
            return _struct.unpack("<f" if info.size == 4 else "<d", raw)[0]
        value = int.from_bytes(raw, "little", signed=info.signed and not spec.is_bitfield)
        if spec.is_bitfield and info.kind != KIND_POINTER:
            value = (value >> spec.bit_position) & ((1 << spec.bit_length) - 1)
            if info.signed and spec.bit_length and value >> (spec.bit_length - 1):
                value -= 1 << spec.bit_length
        return value

    # -- presentation --------------------------------------------------
    def __repr__(self) -> str:
        where = "" if self.address is None else " at %#x" % self.address
        return "<Struct %s%s, layout %s, %d bytes>" % (self.name, where, self.layout.name,
                                                       len(self._data))

    def __str__(self) -> str:
        where = "" if self.address is None else " at %#x" % self.address
        return "%s%s (layout %s)" % (self.name, where, self.layout.name)

    def explain(self, indent: str = "") -> str:
        """Every member: offset, name, type and value (hex), nested structures indented."""
        lines = [] if indent else [
            str(self),
            "Source: %s" % (self._struct.source or self.layout.provenance),
            "sizeof %s = %s" % (self.name, "unknown" if self.size is None else "%#x" % self.size),
            ""]
        if not self._struct.fields:
            lines.append(indent + "  (no members described by this layout)")
        for spec in self._struct.fields.values():
            head = "%s  +%#05x %-28s %-26s" % (indent, spec.offset, spec.name,
                                               spec.describe_type())
            try:
                value = self._read(spec)
            except TruncatedDataError:
                lines.append(head + " (beyond the data read)")
                continue
            if isinstance(value, Struct):
                lines.append(head)
                lines.append(value.explain(indent + "    "))
            else:
                lines.append(head + " " + _show(value))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Members inside the data: ints, floats, hex strings for bytes, nested dicts."""
        return {name: _plain(value) for name, value in self.items()}

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return "%#x" % value if value >= 0 else "-%#x" % -value
    if isinstance(value, bytes):
        return "%s %r" % (value.hex(" "), value.split(b"\0", 1)[0].decode("latin-1"))
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) if not isinstance(v, Struct) else repr(v)
                               for v in value) + "]"
    return repr(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Struct):
        return value.to_dict()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def read_struct(memory: Any, address: int, layout: Any, name: str,
                fields: Optional[List[str]] = None) -> Struct:
    """Read the structure ``name`` at ``address`` from ``memory.read(address, size)``.

    Only the bytes up to the end of the last member needed are read (the
    whole structure when ``fields`` is None and its size is known), so a
    structure at the end of a mapped page can still be decoded. The order
    before this release, ``read_struct(memory, layout, name, address)``, is
    accepted for one release, with a DeprecationWarning.

    Raises:
        InvalidAddressError: from ``memory.read``.
        UnknownStructError, UnknownFieldError: the layout lacks the structure or a member.
        TypeError: the arguments are neither order.
    """
    from ._api import address_and_layout, is_layout
    from .layout_files import load_layout
    if is_layout(address) and isinstance(layout, str) and isinstance(name, int) and \
            not isinstance(name, bool):
        import warnings
        warnings.warn("read_struct(memory, layout, name, address) is the old argument order; "
                      "use read_struct(memory, address, layout, name): the old order stops "
                      "working in the next release", DeprecationWarning, stacklevel=2)
        address, layout, name = name, address, layout
    address, layout = address_and_layout("read_struct", address, layout)
    layout = load_layout(layout)
    shape = layout.struct(name)
    wanted = [layout.field(name, f) for f in fields] if fields is not None \
        else list(shape.fields.values())
    end = 0
    for spec in wanted:
        size = layout.type_info(spec.type).size
        end = max(end, spec.offset + (size if size is not None else 0))
    if fields is None and shape.size is not None:
        end = max(end, shape.size)
    return Struct(layout, name, memory.read(address, end), address)
