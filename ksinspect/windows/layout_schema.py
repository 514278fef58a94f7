"""Schema checks for layout files and Volatility 3 ISF files given by the user.

A layout file is data that drives reads: an offset of ``Infinity``, a
``null`` size, ``metadata`` that is a list, a structure that contains
itself, or an ``_EPROCESS`` of 4 GiB would otherwise surface as a bare
``OverflowError``, ``TypeError``, ``AttributeError`` or ``RecursionError``
deep in a walk, or as gigabytes of memory. Every value is checked here, on
load, against the shape the format defines, and the first problem is
raised as :class:`~ksinspect.errors.UnknownLayoutError` naming the file and
the member (``file: _EPROCESS.UniqueProcessId: offset is inf, not an
integer``).

Rules: integers are JSON integers (not floats, not booleans), within the
ranges below; strings are strings of sane length; a structure embeds
others (by value, or as array elements) without a cycle and at most
:data:`MAX_NESTING` deep; type descriptors of an ISF nest at most
:data:`MAX_TYPE_DEPTH` deep. The JSON's own nesting is bounded by the parser
(``json`` raises RecursionError, reported by
:mod:`ksinspect.windows.layout_files`).
"""
import re
from typing import Any, Dict, List, Optional

from ..errors import UnknownLayoutError

__all__ = ["MAX_STRUCT_SIZE", "MAX_ARRAY_COUNT", "MAX_NESTING", "MAX_TYPE_DEPTH",
           "validate_layout_document", "validate_isf_document", "check_embedding"]

#: The largest structure a layout may describe. Windows kernel structures are
#: at most tens of KiB (_KPRCB, among the largest, is under 64 KiB on x64);
#: the decoders read a structure at a time, so this bounds their memory.
MAX_STRUCT_SIZE = 16 << 20
MAX_OFFSET = 1 << 32
MAX_ARRAY_COUNT = 1 << 20
MAX_NESTING = 64          # structures embedded in structures
MAX_TYPE_DEPTH = 32       # ISF type descriptors (pointer to array of ...)
MAX_NAME = 512
_ARRAY = re.compile(r"^(.+)\[(\d+)\]$")


class _Checker:
    def __init__(self, path: str):
        self.path = path

    def fail(self, where: str, problem: str) -> UnknownLayoutError:
        return UnknownLayoutError("%s: %s: %s" % (self.path, where, problem), requested=self.path)

    def mapping(self, value: Any, where: str) -> Dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "is %s, not a JSON object" % _kind(value))
        return value

    def integer(self, value: Any, where: str, low: int, high: int) -> int:
        if type(value) is not int:
            raise self.fail(where, "is %s, not an integer" % _show(value))
        if not low <= value <= high:
            raise self.fail(where, "is %d, outside %d..%d" % (value, low, high))
        return value

    def text(self, value: Any, where: str, optional: bool = False,
             limit: int = MAX_NAME) -> Optional[str]:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.fail(where, "is %s, not a string" % _show(value))
        if len(value) > limit:
            raise self.fail(where, "is a string of %d characters (at most %d)" % (
                len(value), limit))
        return value

    def name(self, value: Any, where: str) -> str:
        text = self.text(value, where)
        if not text:
            raise self.fail(where, "is an empty name")
        return text


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value),
                                                                          type(value).__name__)


def _show(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value) if isinstance(value, int) and abs(value) < 1 << 64 else \
            ("%s %r" % (_kind(value), value) if isinstance(value, float) else "a huge integer")
    return _kind(value)


def validate_layout_document(document: Any, path: str) -> None:
    """Check a ksinspect layout file (the shipped files' schema).

    Raises:
        UnknownLayoutError: naming the file and the member at fault.
    """
    check = _Checker(path)
    top = check.mapping(document, "the document")
    check.text(top.get("os"), "os", limit=4096)
    arch = check.text(top.get("arch"), "arch")
    if arch not in ("x86", "x64"):
        raise check.fail("arch", "is %r, not x86 or x64" % arch)
    pointer = top.get("pointer_size")
    if type(pointer) is not int or pointer not in (4, 8):
        raise check.fail("pointer_size", "is %s, not 4 or 8" % _show(pointer))
    check.text(top.get("nt_version"), "nt_version", optional=True)
    check.text(top.get("source", ""), "source", limit=1 << 16)
    structs = check.mapping(top.get("structs"), "structs")
    for struct_name, body in structs.items():
        check.name(struct_name, "a structure name")
        body = check.mapping(body, struct_name)
        if body.get("size") is not None:
            check.integer(body["size"], struct_name + ".size", 0, MAX_STRUCT_SIZE)
        for key in ("note", "source"):
            check.text(body.get(key), "%s.%s" % (struct_name, key), optional=True, limit=1 << 16)
        fields = check.mapping(body.get("fields"), struct_name + ".fields")
        for field_name, spec in fields.items():
            where = "%s.%s" % (struct_name, check.name(field_name, struct_name + " member name"))
            spec = check.mapping(spec, where)
            check.integer(spec.get("offset"), where + " offset", 0, MAX_OFFSET - 1)
            type_name = check.name(spec.get("type"), where + " type")
            _check_type_string(check, type_name, where)
            check.text(spec.get("target"), where + " target", optional=True)
            check.text(spec.get("enum"), where + " enum", optional=True)
            _check_bits(check, spec.get("bit_position"), spec.get("bit_length"), where)


def _check_type_string(check: _Checker, type_name: str, where: str) -> None:
    count = 1
    inner = type_name
    while True:
        match = _ARRAY.match(inner)
        if match is None:
            break
        inner, n = match.group(1), int(match.group(2))
        count *= max(n, 1)
        if n > MAX_ARRAY_COUNT or count > MAX_ARRAY_COUNT:
            raise check.fail(where, "type %s has more than %d elements" % (
                type_name, MAX_ARRAY_COUNT))


def _check_bits(check: _Checker, position: Any, length: Any, where: str) -> None:
    if position is None and length is None:
        return
    if position is None or length is None:
        raise check.fail(where, "has bit_position %s and bit_length %s: give both or neither"
                         % (_show(position), _show(length)))
    check.integer(position, where + " bit_position", 0, 63)
    check.integer(length, where + " bit_length", 1, 64)


def validate_isf_document(document: Any, path: str) -> None:
    """Check a Volatility 3 ISF document's shape (the parts ksinspect reads).

    Raises:
        UnknownLayoutError: naming the file and the member at fault.
    """
    check = _Checker(path)
    top = check.mapping(document, "the document")
    if "metadata" in top and top["metadata"] is not None:
        metadata = check.mapping(top["metadata"], "metadata")
        for key in ("format",):
            if key in metadata:
                check.text(metadata[key], "metadata." + key)
        if metadata.get("producer") is not None:
            producer = check.mapping(metadata["producer"], "metadata.producer")
            for key in ("name", "version"):
                if key in producer:
                    check.text(producer[key], "metadata.producer." + key)
        if metadata.get("windows") is not None:
            windows = check.mapping(metadata["windows"], "metadata.windows")
            for key in ("major", "minor", "build"):
                if key in windows:
                    check.integer(windows[key], "metadata.windows." + key, 0, 1 << 32)
            if windows.get("pdb") is not None:
                pdb = check.mapping(windows["pdb"], "metadata.windows.pdb")
                if "machine_type" in pdb:
                    check.integer(pdb["machine_type"], "metadata.windows.pdb.machine_type", 0,
                                  0xFFFF)
                for key in ("database", "GUID"):
                    if key in pdb:
                        check.text(pdb[key], "metadata.windows.pdb." + key)
                if "age" in pdb:
                    check.integer(pdb["age"], "metadata.windows.pdb.age", 0, 1 << 32)
    bases = check.mapping(top.get("base_types") or {}, "base_types")
    for base_name, base in bases.items():
        where = "base_types." + check.name(base_name, "a base type name")
        base = check.mapping(base, where)
        check.integer(base.get("size"), where + ".size", 0, 16)
        check.text(base.get("kind"), where + ".kind")
        if "signed" in base and not isinstance(base["signed"], bool):
            raise check.fail(where + ".signed", "is %s, not true or false" % _kind(base["signed"]))
    enums = check.mapping(top.get("enums") or {}, "enums")
    for enum_name, enum in enums.items():
        where = "enums." + check.name(enum_name, "an enum name")
        enum = check.mapping(enum, where)
        check.name(enum.get("base"), where + ".base")
    types = check.mapping(top.get("user_types"), "user_types")
    for struct_name, body in types.items():
        check.name(struct_name, "a user type name")
        body = check.mapping(body, struct_name)
        if body.get("size") is not None:
            check.integer(body["size"], struct_name + ".size", 0, MAX_STRUCT_SIZE)
        fields = check.mapping(body.get("fields") or {}, struct_name + ".fields")
        for field_name, spec in fields.items():
            where = "%s.%s" % (struct_name, check.name(field_name, struct_name + " member name"))
            spec = check.mapping(spec, where)
            check.integer(spec.get("offset"), where + " offset", 0, MAX_OFFSET - 1)
            _check_descriptor(check, spec.get("type"), where)


def _check_descriptor(check: _Checker, desc: Any, where: str) -> None:
    """One ISF type descriptor, nested ones included (iteratively, bounded)."""
    pending = [(desc, 0)]
    count = 1
    while pending:
        node, depth = pending.pop()
        if depth > MAX_TYPE_DEPTH:
            raise check.fail(where, "type descriptors nest deeper than %d" % MAX_TYPE_DEPTH)
        node = check.mapping(node, where + " type")
        kind = check.text(node.get("kind"), where + " type kind")
        if kind in ("base", "struct", "union", "class", "enum"):
            check.name(node.get("name"), where + " type name")
        elif kind == "pointer":
            if node.get("subtype") is not None:
                pending.append((node["subtype"], depth + 1))
        elif kind == "array":
            n = check.integer(node.get("count"), where + " array count", 0, MAX_ARRAY_COUNT)
            count *= max(n, 1)
            if count > MAX_ARRAY_COUNT:
                raise check.fail(where, "arrays of more than %d elements" % MAX_ARRAY_COUNT)
            pending.append((node.get("subtype"), depth + 1))
        elif kind == "bitfield":
            _check_bits(check, node.get("bit_position"), node.get("bit_length"), where)
            pending.append((node.get("type"), depth + 1))
        elif kind != "function":
            raise check.fail(where, "type kind %r is not one ISF defines" % kind)


def check_embedding(layout: Any, path: str) -> None:
    """No structure embeds itself (directly, through others, or as array
    elements), and embedding chains are at most :data:`MAX_NESTING` deep.

    Raises:
        UnknownLayoutError: naming the file and the chain.
    """
    children: Dict[str, List[str]] = {}
    for struct in layout.structs.values():
        inner = []
        for member in struct.fields.values():
            type_name = member.type
            while True:
                match = _ARRAY.match(type_name)
                if match is None:
                    break
                type_name = match.group(1)
            if type_name in layout.structs:
                inner.append(type_name)
        children[struct.name] = inner
    depth: Dict[str, int] = {}          # finished: the longest chain below
    for root in children:
        if root in depth:
            continue
        # Iterative depth-first search with the current path (grey set).
        stack = [(root, iter(children[root]))]
        on_path = {root: 0}
        while stack:
            node, rest = stack[-1]
            child = next(rest, None)
            if child is None:
                stack.pop()
                del on_path[node]
                depth[node] = 1 + max((depth[c] for c in children[node]), default=0)
                if depth[node] > MAX_NESTING:
                    raise UnknownLayoutError("%s: %s embeds structures more than %d deep" % (
                        path, node, MAX_NESTING), requested=path)
                continue
            if child in on_path:
                chain = [n for n, _ in stack[on_path[child]:]] + [child]
                raise UnknownLayoutError("%s: %s contains itself (%s): a structure cannot "
                                         "embed itself by value" % (
                                             path, child, " -> ".join(chain)), requested=path)
            if child not in depth:
                on_path[child] = len(stack)
                stack.append((child, iter(children[child])))
