"""Windows structure layouts as data: field offsets, types and sizes per build.

This module is the model (:class:`Layout`, :class:`StructLayout`,
:class:`Field`, the type strings) and nothing that reads files: finding,
loading and checking layout files (the shipped ones, a user's JSON, a
Volatility 3 ISF) is :mod:`ksinspect.windows.layout_files`.

Type strings are the layout files' own: ``uint8`` .. ``int64``, ``pointer``,
a structure name (embedded by value), ``elem[N]`` for arrays (``char[N]``
for bytes). An array of arrays is written ``elem[N][M]``: M elements of
``elem[N]``.
"""
import difflib
import re
from dataclasses import dataclass, field as dataclass_field
from typing import Dict, Mapping, Optional

from ..errors import UnknownFieldError, UnknownLayoutError, UnknownStructError

PROVENANCE = "ksinspect/windows/layouts/README.md"

SCALAR_SIZES = {"uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "uint32": 4, "int32": 4,
                "uint64": 8, "int64": 8, "float32": 4, "float64": 8}
SIGNED = frozenset(("int8", "int16", "int32", "int64"))
FLOATS = frozenset(("float32", "float64"))
_ARRAY = re.compile(r"^(.+)\[(\d+)\]$")

KIND_INT = "int"            # an integer (or enum, or bit-field) read little-endian
KIND_FLOAT = "float"
KIND_POINTER = "pointer"
KIND_STRUCT = "struct"      # embedded by value
KIND_ARRAY = "array"
KIND_CHARS = "chars"        # char[N]: bytes


@dataclass(frozen=True)
class TypeInfo:
    """What a type string means in one layout.

    Attributes:
        name: the type string (``uint32``, ``pointer``, ``_LIST_ENTRY``, ``char[15]``).
        kind: one of ``int``, ``float``, ``pointer``, ``struct``, ``array``, ``chars``.
        size: size in bytes, or None when the layout does not know it (a
            structure it does not describe, or one whose size is null).
        signed: for integers.
        element: for arrays, the element's type string.
        count: for arrays and ``char[N]``, the number of elements.
    """

    name: str
    kind: str
    size: Optional[int]
    signed: bool = False
    element: Optional[str] = None
    count: Optional[int] = None


@dataclass(frozen=True)
class Field:
    """One member of a structure.

    Attributes:
        name: Microsoft's member name (from the PDB).
        offset: byte offset from the start of the structure.
        type: the type string (see the module docstring).
        target: for pointers, what they point to, when the source says.
        bit_position, bit_length: for bit-fields (bits counted from bit 0 of
            the ``type`` read at ``offset``).
        enum: the enum type name for enum-typed members.
    """

    name: str
    offset: int
    type: str
    target: Optional[str] = None
    bit_position: Optional[int] = None
    bit_length: Optional[int] = None
    enum: Optional[str] = None

    @property
    def is_bitfield(self) -> bool:
        return self.bit_length is not None

    def describe_type(self) -> str:
        text = self.type
        if self.target:
            text += " -> " + self.target
        if self.is_bitfield:
            text += " bits %d:%d" % (self.bit_position + self.bit_length - 1, self.bit_position)
        if self.enum:
            text += " (enum %s)" % self.enum
        return text


@dataclass(frozen=True)
class StructLayout:
    """A structure of one layout: its size and the members kept.

    Attributes:
        size: sizeof in bytes, or None when the source does not give it.
        fields: members by name, in offset order.
        note: why the size is missing or what is special, when the data says.
        source: where this structure's numbers come from, when it differs
            from the layout file's.
    """

    name: str
    size: Optional[int]
    fields: Mapping[str, Field]
    note: Optional[str] = None
    source: Optional[str] = None


@dataclass(frozen=True)
class Layout:
    """Offsets and sizes of Windows structures for one build and architecture.

    Attributes:
        name: the file stem, e.g. ``win10-1507-10240.16384-x64``.
        os: the release in words.
        arch: ``x86`` or ``x64``.
        pointer_size: 4 or 8.
        nt_version: the kernel build the numbers belong to.
        source: where the numbers were read (repository, commit, path).
        structs: structures by name.
        path: the file it was read from, if not a shipped one.
        note: how an alias was resolved, when it matched several revisions.
    """

    name: str
    os: str
    arch: str
    pointer_size: int
    nt_version: Optional[str]
    source: str
    structs: Mapping[str, StructLayout]
    path: Optional[str] = None
    note: Optional[str] = dataclass_field(default=None, compare=False)
    _types: Dict[str, TypeInfo] = dataclass_field(default_factory=dict, compare=False,
                                                  repr=False)

    def has_struct(self, name: str) -> bool:
        return name in self.structs

    def struct(self, name: str) -> StructLayout:
        """The structure ``name``.

        Raises:
            UnknownStructError: the layout has no such structure.
        """
        try:
            return self.structs[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.structs), n=3, cutoff=0.6)
            hint = " (did you mean %s?)" % ", ".join(close) if close else ""
            raise UnknownStructError("layout %s has no structure %s%s" % (
                self.name, name, hint), struct=name, layout=self.name) from None

    def field(self, struct: str, name: str) -> Field:
        """Member ``name`` of structure ``struct``.

        Raises:
            UnknownStructError, UnknownFieldError: no such structure or member.
        """
        fields = self.struct(struct).fields
        try:
            return fields[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(fields), n=3, cutoff=0.6)
            hint = " (did you mean %s?)" % ", ".join(close) if close else ""
            raise UnknownFieldError("%s has no field %s in layout %s%s" % (
                struct, name, self.name, hint), struct=struct, field=name,
                layout=self.name) from None

    def offset(self, struct: str, name: str) -> int:
        return self.field(struct, name).offset

    def sizeof(self, type_name: str) -> Optional[int]:
        """Size in bytes of a structure or type string; None when unknown.

        Raises:
            UnknownStructError: a structure name this layout does not describe.
        """
        info = self.type_info(type_name)
        if info.kind == KIND_STRUCT and type_name not in self.structs:
            self.struct(type_name)
        return info.size

    def type_info(self, type_name: str) -> TypeInfo:
        """Parse a type string against this layout (size of pointers and structures)."""
        return _type_info(self, type_name)

    @property
    def provenance(self) -> str:
        where = self.path or "%s/%s.json" % (PROVENANCE.rsplit("/", 1)[0], self.name)
        return "%s (%s); %s" % (where, self.os, self.source)

    def summary(self) -> dict:
        return {"name": self.name, "os": self.os, "arch": self.arch,
                "pointer_size": self.pointer_size, "nt_version": self.nt_version,
                "structs": len(self.structs)}

    def __str__(self) -> str:
        return "layout %s: %s, %s, %d structures" % (self.name, self.os, self.arch,
                                                      len(self.structs))

    def __repr__(self) -> str:
        return "Layout(name=%r, arch=%r, nt_version=%r)" % (self.name, self.arch,
                                                             self.nt_version)

    def __hash__(self) -> int:
        return hash((self.name, self.path))


def _type_info(layout: Layout, type_name: str) -> TypeInfo:
    cache = layout._types
    info = cache.get(type_name)
    if info is not None:
        return info
    if type_name in SCALAR_SIZES:
        kind = KIND_FLOAT if type_name in FLOATS else KIND_INT
        info = TypeInfo(type_name, kind, SCALAR_SIZES[type_name], type_name in SIGNED)
    elif type_name == "pointer":
        info = TypeInfo(type_name, KIND_POINTER, layout.pointer_size)
    else:
        match = _ARRAY.match(type_name)
        if match:
            element, count = match.group(1), int(match.group(2))
            if element == "char":
                info = TypeInfo(type_name, KIND_CHARS, count, element="char", count=count)
            else:
                element_size = _type_info(layout, element).size
                size = None if element_size is None else element_size * count
                info = TypeInfo(type_name, KIND_ARRAY, size, element=element, count=count)
        else:
            struct = layout.structs.get(type_name)
            info = TypeInfo(type_name, KIND_STRUCT, None if struct is None else struct.size)
    cache[type_name] = info
    return info


def layout_from_dict(data: dict, name: str, path: Optional[str] = None) -> Layout:
    """Build a :class:`Layout` from the JSON schema of the shipped files.

    Raises:
        UnknownLayoutError: the document does not follow the schema.
    """
    try:
        structs = {}
        for struct_name, body in data["structs"].items():
            fields = {}
            for field_name, spec in sorted(body["fields"].items(),
                                           key=lambda item: item[1]["offset"]):
                fields[field_name] = Field(
                    field_name, int(spec["offset"]), str(spec["type"]), spec.get("target"),
                    spec.get("bit_position"), spec.get("bit_length"), spec.get("enum"))
            structs[struct_name] = StructLayout(struct_name, body.get("size"), fields,
                                                body.get("note"), body.get("source"))
        pointer_size = int(data["pointer_size"])
        if pointer_size not in (4, 8):
            raise ValueError("pointer_size %d is not 4 or 8" % pointer_size)
        return Layout(name, str(data["os"]), str(data["arch"]), pointer_size,
                      data.get("nt_version"), str(data.get("source", "")), structs, path)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnknownLayoutError("%s is not a ksinspect layout file (%s: %s)" % (
            path or name, type(exc).__name__, exc), requested=path or name) from None


# Names that moved to layout_files (issue 15): still reachable here for one
# release, with a DeprecationWarning. Looked up by name at first use, so the
# model does not import its loader (no import circle; tests/test_layers.py).
_MOVED = frozenset(("available_layouts", "load_layout", "resolve_layout_name",
                    "closest_layouts", "check_member_bounds", "check_member_kinds",
                    "LAYOUT_PACKAGE"))


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    import importlib
    import warnings
    warnings.warn("ksinspect.windows.layout.%s moved to ksinspect.windows.layout_files.%s"
                  % (name, name), DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(__name__ + "_files"), name)
