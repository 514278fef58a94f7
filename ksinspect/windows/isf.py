"""Volatility 3 ISF (Intermediate Symbol Format) JSON read into a :class:`Layout`.

An ISF file describes a PDB's types: ``base_types`` (name -> kind, size,
signed), ``user_types`` (struct/union name -> size and fields, each field an
offset and a type descriptor), ``enums`` (name -> base type and constants).
A type descriptor has a ``kind``: ``base``, ``pointer`` (``subtype``),
``struct``/``union``/``class`` (by ``name``), ``array`` (``count``,
``subtype``), ``bitfield`` (``bit_position``, ``bit_length``, ``type``),
``enum`` (by ``name``), ``function``.

This module turns a parsed ISF document into the layout model; reading and
checking the file (compressed ``.xz`` / ``.gz`` as Volatility and JPCERT ship
them) is :mod:`ksinspect.windows.layout_files`, its only importer.
"""
from typing import Any, Dict, Optional, Tuple

from ..errors import UnknownLayoutError
from .layout import Field, Layout, StructLayout

# C base types as PDBs name them, for ISF files whose base_types omit one that a
# field uses (Volatility's hand-made wow64.json uses "short" without listing it).
_C_BASE_TYPES = {
    "char": ("char", 1, True), "unsigned char": ("char", 1, False),
    "short": ("int", 2, True), "unsigned short": ("int", 2, False),
    "int": ("int", 4, True), "unsigned int": ("int", 4, False),
    "long": ("int", 4, True), "unsigned long": ("int", 4, False),
    "long long": ("int", 8, True), "unsigned long long": ("int", 8, False),
    "wchar": ("char", 2, False), "bool": ("bool", 1, False),
    "float": ("float", 4, True), "double": ("float", 8, True), "void": ("void", 0, False),
}

# PE machine types found in ISF metadata (windows.pdb.machine_type).
_MACHINES = {0x14C: "x86", 0x8664: "x64"}


class _IsfTypes:
    """Turns ISF type descriptors into the layout files' type strings."""

    def __init__(self, document: dict, path: str):
        self.base = document.get("base_types") or {}
        self.enums = document.get("enums") or {}
        self.path = path

    def scalar(self, base_name: str) -> str:
        base = self.base.get(base_name)
        if base is None and base_name in _C_BASE_TYPES:
            kind, size, signed = _C_BASE_TYPES[base_name]
            base = {"kind": kind, "size": size, "signed": signed}
        if base is None:
            raise ValueError("base type %r is not in base_types" % base_name)
        kind, size = base.get("kind"), int(base.get("size", 0))
        if kind == "float":
            if size not in (4, 8):
                raise ValueError("float base type %r has size %d" % (base_name, size))
            return "float%d" % (size * 8)
        if kind == "void" or size == 0:
            return "uint8"
        if size not in (1, 2, 4, 8):
            raise ValueError("base type %r has size %d" % (base_name, size))
        signed = bool(base.get("signed", False)) and kind != "bool"
        return "%sint%d" % ("" if signed else "u", size * 8)

    def convert(self, desc: dict) -> Tuple[str, Dict[str, Any]]:
        """(type string, extra Field keywords) for one type descriptor."""
        kind = desc.get("kind")
        if kind == "base":
            name = desc["name"]
            base = self.base.get(name, {})
            if base.get("kind") == "char" and int(base.get("size", 1)) == 1:
                return self.scalar(name), {"_char": True}
            return self.scalar(name), {}
        if kind == "pointer":
            return "pointer", {"target": self.target(desc.get("subtype") or {})}
        if kind in ("struct", "union", "class"):
            return desc["name"], {}
        if kind == "enum":
            enum = self.enums.get(desc["name"])
            if enum is None:
                raise ValueError("enum %r is not in enums" % desc["name"])
            return self.scalar(enum["base"]), {"enum": desc["name"]}
        if kind == "bitfield":
            inner, extra = self.convert(desc["type"])
            extra.pop("_char", None)
            extra.update(bit_position=int(desc["bit_position"]),
                         bit_length=int(desc["bit_length"]))
            return inner, extra
        if kind == "array":
            inner, extra = self.convert(desc["subtype"])
            if extra.pop("_char", False):
                inner = "char"
            return "%s[%d]" % (inner, int(desc["count"])), {}
        if kind == "function":
            return "uint8", {}
        raise ValueError("type kind %r is not one ISF defines" % kind)

    def target(self, desc: dict) -> Optional[str]:
        kind = desc.get("kind")
        if kind in ("struct", "union", "class", "enum"):
            return desc.get("name")
        if kind == "base":
            return self.scalar(desc["name"]) if desc.get("name") != "void" else None
        if kind == "pointer":
            return "pointer"
        if kind == "function":
            return "function"
        return None


def layout_from_isf(document: dict, name: str, path: str) -> Layout:
    """Build a :class:`Layout` from a parsed ISF document.

    Raises:
        UnknownLayoutError: a required part is missing or malformed.
    """
    try:
        types = _IsfTypes(document, path)
        pointer = types.base.get("pointer")
        if pointer is None:
            raise ValueError("base_types has no 'pointer' entry")
        pointer_size = int(pointer["size"])
        if pointer_size not in (4, 8):
            raise ValueError("pointer size %d is not 4 or 8" % pointer_size)
        structs = {}
        for struct_name, body in document["user_types"].items():
            fields = {}
            for field_name, spec in sorted(body.get("fields", {}).items(),
                                           key=lambda item: item[1]["offset"]):
                type_string, extra = types.convert(spec["type"])
                extra.pop("_char", None)
                fields[field_name] = Field(field_name, int(spec["offset"]), type_string,
                                           extra.get("target"), extra.get("bit_position"),
                                           extra.get("bit_length"), extra.get("enum"))
            structs[struct_name] = StructLayout(struct_name, body.get("size"), fields)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnknownLayoutError("%s is not a readable Volatility 3 ISF (%s: %s)" % (
            path, type(exc).__name__, exc), requested=path) from None
    metadata = document.get("metadata") or {}
    windows = metadata.get("windows") or {}
    pdb = windows.get("pdb") or {}
    arch = _MACHINES.get(pdb.get("machine_type"), "x64" if pointer_size == 8 else "x86")
    producer = metadata.get("producer") or {}
    described = "ISF %s" % name
    if pdb.get("database"):
        described = "%s %s-%s" % (pdb["database"], pdb.get("GUID", "?"), pdb.get("age", "?"))
    version = None
    if "major" in windows and "minor" in windows:
        version = "%s.%s" % (windows["major"], windows["minor"])
    source = "Volatility 3 ISF %s (format %s, produced by %s %s)" % (
        path, metadata.get("format", "?"), producer.get("name", "?"), producer.get("version", "?"))
    return Layout(name, described, arch, pointer_size, version, source, structs, path)
