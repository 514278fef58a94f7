"""Windows structure layouts as data: field offsets, types and sizes per build.

The layouts shipped in ``ksinspect/windows/layouts/`` were read from
PDB-derived public sources (Vergilius, Volatility 2 vtypes, JPCERT's
Volatility 3 ISF files); their ``README.md`` gives the source of every file
and ``CROSSCHECK.md`` how they were checked against each other. A Volatility 3
ISF file for an exact build can be loaded into the same model
(:func:`ksinspect.windows.isf.load_isf`).

Type strings are the layout files' own: ``uint8`` .. ``int64``, ``pointer``,
a structure name (embedded by value), ``elem[N]`` for arrays (``char[N]``
for bytes). An array of arrays is written ``elem[N][M]``: M elements of
``elem[N]``.
"""
import difflib
import json
import os
import re
from dataclasses import dataclass, field as dataclass_field
from functools import lru_cache
from importlib import resources
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import UnknownFieldError, UnknownLayoutError, UnknownStructError

LAYOUT_PACKAGE = "ksinspect.windows.layouts"
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


def available_layouts() -> List[str]:
    """Names of the shipped layouts, sorted by architecture then NT version."""
    return list(_shipped_names())


@lru_cache(maxsize=1)
def _shipped_names() -> Tuple[str, ...]:
    names = [entry.name[:-5] for entry in resources.files(LAYOUT_PACKAGE).iterdir()
             if entry.name.endswith(".json")]
    return tuple(sorted(names, key=_sort_key))


def _sort_key(name: str):
    arch = name.rsplit("-", 1)[-1]
    build = name.split("-")[-2]
    numbers = tuple(int(part) for part in build.split(".") if part.isdigit())
    return (arch, numbers, name)


@lru_cache(maxsize=None)
def _load_shipped(name: str) -> Layout:
    text = resources.files(LAYOUT_PACKAGE).joinpath(name + ".json").read_text("utf-8")
    return layout_from_dict(json.loads(text), name)


@lru_cache(maxsize=1)
def _shipped_versions() -> Dict[str, Tuple[str, str]]:
    """name -> (nt_version, arch), read once from every shipped file."""
    return {name: (_load_shipped(name).nt_version or "", _load_shipped(name).arch)
            for name in _shipped_names()}


def _tokens(name: str, nt_version: str) -> List[str]:
    tokens = name.lower().split("-")
    return tokens + [nt_version.lower()]


def _token_matches(query: str, tokens: Sequence[str]) -> bool:
    for token in tokens:
        if token == query:
            return True
        # A dotted prefix of a version: "19041" matches "19041.264", "10.0.19041" "10.0.19041.264".
        if "." in token and token.startswith(query + "."):
            return True
    return False


def _release(name: str) -> str:
    """The name without its build.revision: the release and arch."""
    parts = name.split("-")
    return "-".join(parts[:-2] + parts[-1:])


def resolve_layout_name(query: str, arch: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """The shipped layout a name, alias or version means, and a note if it was a choice.

    ``query`` is matched word by word (words separated by ``-``) against the
    words of the file names and their NT version: ``win7-sp1-x64``,
    ``10.0.19041-x64``, ``19045``, ``win11-24h2`` all work. When several
    revisions of one release match, the earliest is taken and the note says
    which later ones exist (layouts change inside a release: see README.md).

    Raises:
        UnknownLayoutError: nothing matches, or several releases do.
    """
    names = _shipped_names()
    wanted = query.strip().lower()
    if arch is not None:
        arch = arch.lower()
        if arch not in ("x86", "x64"):
            raise UnknownLayoutError("architecture %r is not x86 or x64" % arch, requested=query)
    if wanted in names and (arch is None or wanted.endswith("-" + arch)):
        return wanted, None
    words = [w for w in wanted.replace(" ", "-").split("-") if w]
    if arch is not None:
        words.append(arch)
    versions = _shipped_versions()
    matches = [name for name in names
               if words and all(_token_matches(w, _tokens(name, versions[name][0])) for w in words)]
    releases = sorted({_release(m) for m in matches})
    asked = query if arch is None else "%s (%s)" % (query, arch)
    if len(releases) == 1:
        chosen = matches[0]
        note = None
        if len(matches) > 1:
            note = ("%r matches %d revisions of one release; using the earliest, %s (others: %s; "
                    "layouts can change inside a release, see %s)" % (
                        asked, len(matches), chosen, ", ".join(matches[1:]), PROVENANCE))
        return chosen, note
    if len(releases) > 1:
        raise UnknownLayoutError("Windows layout %r is ambiguous: it matches %s" % (
            asked, ", ".join(matches)), requested=query, candidates=matches)
    close = closest_layouts(query if arch is None else "%s-%s" % (query, arch))
    raise UnknownLayoutError("no Windows layout for build %r; closest: %s (`ksinspect layouts` "
                             "lists all %d)" % (asked, ", ".join(close), len(names)),
                             requested=query, candidates=close)


def closest_layouts(query: str, count: int = 5) -> List[str]:
    """The shipped layouts whose name or NT version looks most like ``query``."""
    wanted = query.strip().lower()
    scored = []
    for name, (version, arch) in _shipped_versions().items():
        score = max(difflib.SequenceMatcher(None, wanted, form).ratio()
                    for form in (name, _release(name), "%s-%s" % (version, arch)))
        scored.append((-score, _sort_key(name), name))
    return [name for _, _, name in sorted(scored)[:count]]


def _looks_like_path(text: str) -> bool:
    return (os.sep in text or "/" in text or text.endswith((".json", ".xz", ".gz"))
            or os.path.isfile(text))


def load_layout(name_or_path: str, arch: Optional[str] = None) -> Layout:
    """A layout by shipped name, alias, NT version, or path to a JSON file.

    A path may hold a ksinspect layout file or a Volatility 3 ISF
    (``.json``, ``.json.xz``, ``.json.gz``).

    Args:
        name_or_path: e.g. ``win10-1507-10240.16384-x64``, ``win7-sp1-x64``,
            ``10.0.19041``, or a file path.
        arch: ``x86`` or ``x64``, to narrow an alias.

    Raises:
        UnknownLayoutError: no such layout or file, or one that cannot be read.
    """
    if isinstance(name_or_path, Layout):
        return name_or_path
    text = os.fspath(name_or_path)
    if _looks_like_path(text):
        return _load_path(text)
    name, note = resolve_layout_name(text, arch)
    layout = _load_shipped(name)
    if note is None:
        return layout
    return Layout(layout.name, layout.os, layout.arch, layout.pointer_size, layout.nt_version,
                  layout.source, layout.structs, layout.path, note)


def check_member_bounds(layout: Layout, source: str) -> Layout:
    """The layout, once every member lies inside its structure.

    A file given by the user may say anything; a member at a negative
    offset, past 2^32, or ending past its structure's size would make every
    read of it a quiet lie (bytes of the neighbouring memory), so it is
    refused here. (The shipped layouts all pass; tests/test_windows_layout.py.)

    Raises:
        UnknownLayoutError: naming the file, the structure and the member.
    """
    for struct in layout.structs.values():
        size = struct.size
        if size is not None and (not isinstance(size, int) or not 0 <= size < 1 << 32):
            raise UnknownLayoutError("%s: %s has size %r, not a byte count" % (
                source, struct.name, size), requested=source)
        for member in struct.fields.values():
            width = _type_info(layout, member.type).size
            where = "%s: %s.%s at offset %r" % (source, struct.name, member.name, member.offset)
            if not 0 <= member.offset < 1 << 32:
                raise UnknownLayoutError("%s is outside 0..2^32-1" % where, requested=source)
            if size is not None and width is not None and member.offset + width > size:
                raise UnknownLayoutError("%s (%d bytes) ends past the structure's size %#x" % (
                    where, width, size), requested=source)
            if member.is_bitfield and (
                    not isinstance(member.bit_position, int) or member.bit_position < 0
                    or not isinstance(member.bit_length, int) or member.bit_length < 1
                    or (width is not None and member.bit_position + member.bit_length
                        > 8 * width)):
                raise UnknownLayoutError("%s: bits %r+%r do not fit its type %s" % (
                    where, member.bit_position, member.bit_length, member.type),
                    requested=source)
    return layout


def _kind_class(layout: Layout, type_name: str) -> str:
    """What decoders rely on about a member's type: a number (integer, enum or
    pointer: both read as integers), a float, bytes, an array, or which structure."""
    kind = _type_info(layout, type_name).kind
    if kind in (KIND_INT, KIND_POINTER):
        return "an integer or pointer"
    if kind == KIND_STRUCT:
        return "structure " + type_name
    return {KIND_FLOAT: "a float", KIND_CHARS: "a char array"}.get(kind, "an array")


@lru_cache(maxsize=1)
def _shipped_kinds() -> Mapping[Tuple[str, str], frozenset]:
    """(structure, member) -> the kind classes the shipped layouts give it."""
    kinds: Dict[Tuple[str, str], set] = {}
    for name in _shipped_names():
        layout = _load_shipped(name)
        for struct in layout.structs.values():
            for member in struct.fields.values():
                kinds.setdefault((struct.name, member.name), set()).add(
                    _kind_class(layout, member.type))
    return {key: frozenset(value) for key, value in kinds.items()}


def check_member_kinds(layout: Layout, source: str) -> Layout:
    """The layout, once every member the shipped layouts also have is of the
    same kind there (a number, bytes, an array, the same structure).

    The decoders read those members as the Windows headers declare them; a
    file that types _UNICODE_STRING.Length as a char array or _EPROCESS.Pcb
    as an integer describes some other structure.

    Raises:
        UnknownLayoutError: naming the file, the member, its type and the expected kind.
    """
    shipped = _shipped_kinds()
    for struct in layout.structs.values():
        for member in struct.fields.values():
            expected = shipped.get((struct.name, member.name))
            if expected is None:
                continue
            got = _kind_class(layout, member.type)
            if got not in expected:
                raise UnknownLayoutError("%s: %s.%s is %s (%s); Windows declares %s" % (
                    source, struct.name, member.name, member.type, got,
                    " or ".join(sorted(expected))), requested=source)
    return layout


def _load_path(path: str) -> Layout:
    from .isf import open_json_document, layout_from_isf

    document = open_json_document(path)
    stem = os.path.basename(path)
    for suffix in (".xz", ".gz", ".json"):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
    if isinstance(document, dict) and "user_types" in document:
        return check_member_kinds(check_member_bounds(layout_from_isf(document, stem, path),
                                                      path), path)
    if isinstance(document, dict) and "structs" in document:
        return check_member_kinds(check_member_bounds(layout_from_dict(document, stem, path),
                                                      path), path)
    raise UnknownLayoutError("%s is neither a ksinspect layout file nor a Volatility 3 ISF "
                             "(no 'structs' or 'user_types')" % path, requested=path)
