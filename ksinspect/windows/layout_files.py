"""Layout files: the shipped layouts found by name, alias or NT version, a
user's file loaded (a ksinspect layout JSON or a Volatility 3 ISF, through
:mod:`ksinspect.windows.isf`, the only user of that module), and every file
checked before it is used (its schema, members inside their structures,
member kinds as Windows declares them).

The layouts shipped in ``ksinspect/windows/layouts/`` were read from
PDB-derived public sources (Vergilius, Volatility 2 vtypes, JPCERT's
Volatility 3 ISF files); their ``README.md`` gives the source of every file
and ``CROSSCHECK.md`` how they were checked against each other. Choosing the
layout for a Windows version (:func:`choose_layout`) lives here too.
"""
import difflib
import json
import math
import os
from functools import lru_cache
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import UnknownLayoutError
from ..text_input import read_text_input
from . import layout_schema
from .isf import layout_from_isf
from .layout import (KIND_CHARS, KIND_FLOAT, KIND_INT, KIND_POINTER, KIND_STRUCT, PROVENANCE,
                     Layout, layout_from_dict)

LAYOUT_PACKAGE = "ksinspect.windows.layouts"


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


def _build_of(name: str) -> Tuple[int, ...]:
    """(build, revision) from a layout file name ``<release>-<build>.<rev>-<arch>``."""
    return tuple(int(part) for part in name.split("-")[-2].split(".") if part.isdigit())


def _major_minor(layout: Layout) -> Tuple[int, ...]:
    return tuple(int(p) for p in (layout.nt_version or "0.0").split()[0].split(".")[:2]
                 if p.isdigit())


def choose_layout(major: int, minor: int, build: int, arch: str,
                  found_in: str = "the PEB's OS version") -> Tuple[Layout, str]:
    """The shipped layout for Windows *major.minor.build* on *arch*, and a note
    saying why (*found_in*: where the version was read, for the note).

    The earliest revision of that build is taken when several exist; for a
    build that has no layout, the nearest earlier build of the same
    major.minor version (the user-mode structures read here rarely move
    within a version), else the nearest build of all.
    """
    wanted = "%d.%d.%d" % (major, minor, build)
    names = [n for n in available_layouts() if n.endswith("-" + arch)]
    if not names:
        raise DecodeError("no %s layouts are shipped" % arch)
    exact = [n for n in names if _build_of(n)[:1] == (build,)]
    if exact:
        chosen = exact[0]
        note = "layout %s chosen from %s %s" % (chosen, found_in, wanted)
        if len(exact) > 1:
            note += " (the earliest revision; also %s)" % ", ".join(exact[1:])
        return load_layout(chosen), note
    same_version = [n for n in names if _major_minor(load_layout(n)) == (major, minor)]
    pool = same_version or names
    earlier = [n for n in pool if _build_of(n)[:1] <= (build,)]
    chosen = max(earlier, key=_build_of) if earlier else \
        min(pool, key=lambda n: abs(_build_of(n)[0] - build))
    return load_layout(chosen), (
        "no layout for %s %s; using the nearest, %s%s: pass a layout "
        "to override" % (found_in, wanted, chosen,
                         "" if same_version else " (another Windows version)"))


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
            width = layout.type_info(member.type).size
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
    kind = layout.type_info(type_name).kind
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


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("%s is not a finite number" % text)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError("%s is not a number a layout can hold" % name)


def parse_json_document(data: bytes, path: str) -> Any:
    """JSON from the bytes of a layout file: UTF-8, no NaN / Infinity (nor a
    float that overflows to one), nesting within the parser's recursion limit.

    Raises:
        UnknownLayoutError: naming the file and what is wrong.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnknownLayoutError("layout file %s is not UTF-8 text (byte %#x at offset %d)" % (
            path, data[exc.start], exc.start), requested=path) from None
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise UnknownLayoutError("layout file %s: the JSON is nested too deeply to be a layout"
                                 % path, requested=path) from None
    except ValueError as exc:
        raise UnknownLayoutError("layout file %s is not valid JSON: %s" % (path, exc),
                                 requested=path) from None


def open_json_document(path: str) -> Any:
    """Read a JSON file, decompressing ``.xz`` / ``.gz`` by their magic bytes.

    Raises:
        UnknownLayoutError: the file cannot be read or is not JSON.
    """
    data = read_text_input(path, "layout", lambda message: UnknownLayoutError(
        message, requested=path), "layout file")
    return parse_json_document(data, path)


def load_isf(path: str) -> Layout:
    """Load a Volatility 3 ISF file (``.json``, ``.json.xz``, ``.json.gz``) as
    it is: its schema is checked, but not that every member fits its structure
    or has the kind Windows declares, as :func:`load_layout` checks. Real
    files fail those (Volatility's hand-made ``wow64.json`` types the 32-bit
    ``_ERESOURCE.SpinLock`` as 8 bytes at offset 52 of 56), and comparing such
    a file with other sources is what this reader is for; read a file the
    decoders will use with :func:`load_layout`.

    Raises:
        UnknownLayoutError: the file is missing, not JSON, or not an ISF.
    """
    return _load_path(os.fspath(path), isf_only=True)


def _load_path(path: str, isf_only: bool = False) -> Layout:
    document = open_json_document(path)
    stem = os.path.basename(path)
    for suffix in (".xz", ".gz", ".json"):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
    if isinstance(document, dict) and "user_types" in document:
        layout_schema.validate_isf_document(document, path)
        layout = layout_from_isf(document, stem, path)
    elif isinstance(document, dict) and "structs" in document and not isf_only:
        layout_schema.validate_layout_document(document, path)
        layout = layout_from_dict(document, stem, path)
    else:
        layout = None
    if layout is not None and isf_only:
        return layout
    if layout is not None:
        layout_schema.check_embedding(layout, path)
        return check_member_kinds(check_member_bounds(layout, path), path)
    if isf_only:
        raise UnknownLayoutError("%s is not a Volatility 3 ISF (no 'user_types')" % path,
                                 requested=path)
    raise UnknownLayoutError("%s is neither a ksinspect layout file nor a Volatility 3 ISF "
                             "(no 'structs' or 'user_types')" % path, requested=path)
