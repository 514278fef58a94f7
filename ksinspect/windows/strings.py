"""Counted strings of Windows (``_UNICODE_STRING``, and its WoW64 32-bit view), read safely.

A ``UNICODE_STRING`` is ``{USHORT Length; USHORT MaximumLength; PWSTR Buffer}``
(Length and MaximumLength in bytes, not characters; the text need not end
with NUL): see "UNICODE_STRING structure" in the Windows documentation
(ntdef.h / winternl.h). In the x64 kernel's PDB the 32-bit view used by
WoW64 processes is ``_STRING32`` (``UNICODE_STRING32`` is a typedef of it),
with a 4-byte Buffer.

Everything in a dump is hostile: a Length larger than MaximumLength, an odd
Length, a NULL or unmapped Buffer and unpaired UTF-16 surrogates are all
reported as findings on the value; none raises.
"""
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from ..errors import DecodeError, InvalidAddressError, TruncatedDataError
from ..views.html import html_pre
from ..findings import Finding, finding_dicts
from .layout import Layout
from .struct import Struct

# Length is a USHORT: no counted string can hold more than 0xffff bytes.
MAX_STRING_BYTES = 0xFFFF
SOURCE = "UNICODE_STRING (ntdef.h / winternl.h): Length and MaximumLength in bytes, Buffer PWSTR"


@dataclass(frozen=True)
class UnicodeString:
    """A decoded counted string.

    Attributes:
        text: the string (lone surrogates replaced by U+FFFD), or None when
            the buffer could not be read at all.
        raw: the bytes read from the buffer.
        length, maximum_length, buffer: the header's three members.
        address: where the header was read, when known.
        findings: what is wrong with it (:class:`~ksinspect.findings.Finding`: a
            sentence with a code).
    """

    text: Optional[str]
    raw: bytes
    length: int
    maximum_length: int
    buffer: int
    address: Optional[int] = None
    findings: Tuple[Finding, ...] = field(default=())

    @property
    def readable(self) -> bool:
        return self.text is not None

    def __str__(self) -> str:
        return self.text if self.text is not None else "<unreadable>"

    def explain(self) -> str:
        where = "" if self.address is None else " at %#x" % self.address
        lines = ["UNICODE_STRING%s" % where, "Source: " + SOURCE,
                 "  Length         %#x (%d characters)" % (self.length, self.length // 2),
                 "  MaximumLength  %#x" % self.maximum_length,
                 "  Buffer         %#x" % self.buffer,
                 "  text           %r" % (self.text,)]
        lines += ["Finding: " + f for f in self.findings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"text": self.text, "length": self.length, "maximum_length": self.maximum_length,
                "buffer": self.buffer, "findings": finding_dicts(self.findings)}

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


def decode_utf16(raw: bytes) -> Tuple[str, List[Finding]]:
    """UTF-16LE bytes to text; an odd trailing byte is dropped and unpaired
    surrogates become U+FFFD, each with a finding."""
    findings = []
    if len(raw) % 2:
        findings.append(Finding("string-odd-byte-count",
                                "odd byte count %d: the last byte is not part of a UTF-16 code "
                                "unit and was dropped" % len(raw)))
        raw = raw[:-1]
    try:
        return raw.decode("utf-16-le"), findings
    except UnicodeDecodeError as exc:
        text = raw.decode("utf-16-le", errors="replace")
        bad = sum(1 for i in range(0, len(raw), 2)
                  if 0xD800 <= int.from_bytes(raw[i:i + 2], "little") <= 0xDFFF) or 1
        findings.append(Finding("string-invalid-utf16", "invalid UTF-16 (unpaired surrogate at byte "
                                "%d%s): replaced by U+FFFD" % (
                                    exc.start, "" if bad == 1 else
                                    ", %d surrogate code units in all" % bad)))
        return text, findings


def _read(memory: Any, address: int, size: int) -> bytes:
    try:
        return memory.read(address, size)
    except DecodeError as exc:     # e.g. an address an AddressSpace rejects outright
        raise InvalidAddressError(str(exc), address=address) from None


def string_from_header(memory: Any, header: Struct, limit: int = MAX_STRING_BYTES
                       ) -> UnicodeString:
    """Read the text a ``_UNICODE_STRING`` / ``_STRING32`` header points to.

    Args:
        memory: anything with ``read(address, size) -> bytes`` raising
            InvalidAddressError for unreadable memory.
        header: the header, as a :class:`Struct` (embedded or read alone).
        limit: read at most this many bytes of text.

    Raises:
        TruncatedDataError: the header itself is incomplete.
    """
    length = header["Length"]
    maximum = header["MaximumLength"]
    buffer = header["Buffer"]
    for member, value in (("Length", length), ("MaximumLength", maximum), ("Buffer", buffer)):
        if not isinstance(value, int):      # a layout file that types it otherwise
            raise DecodeError("layout %s: %s.%s is %s, not an integer or pointer" % (
                header.layout.name, header.name, member,
                header.layout.field(header.name, member).type))
    findings = []
    if length > maximum:
        findings.append(Finding("string-length-exceeds-maximum",
                                "Length %#x exceeds MaximumLength %#x" % (length, maximum)))
    if length % 2:
        findings.append(Finding("string-odd-length",
                                "odd Length %#x: a UTF-16 string has an even byte count" % length))
    wanted = length
    if wanted > limit:
        findings.append(Finding("string-limit", "Length %#x is above the limit of %#x bytes; text "
                                "cut" % (length, limit)))
        wanted = limit
    if buffer == 0:
        if length:
            findings.append(Finding("string-null-buffer", "Buffer is NULL but Length is %#x" % length))
            return UnicodeString(None, b"", length, maximum, buffer, header.address,
                                 tuple(findings))
        return UnicodeString("", b"", length, maximum, buffer, header.address, tuple(findings))
    if wanted == 0:
        return UnicodeString("", b"", length, maximum, buffer, header.address, tuple(findings))
    try:
        raw = _read(memory, buffer, wanted)
    except InvalidAddressError as exc:
        findings.append(Finding("string-unreadable", "Buffer %#x (%#x bytes) is not readable: %s"
                                % (buffer, wanted, exc)))
        return UnicodeString(None, b"", length, maximum, buffer, header.address, tuple(findings))
    text, decode_findings = decode_utf16(raw)
    findings += [f for f in decode_findings if f.code != "string-odd-byte-count"]
    return UnicodeString(text, raw, length, maximum, buffer, header.address, tuple(findings))


def read_unicode_string(memory: Any, address: int, layout: Layout,
                        struct: str = "_UNICODE_STRING",
                        limit: int = MAX_STRING_BYTES) -> UnicodeString:
    """Read a counted string whose header is at ``address``.

    Args:
        struct: ``_UNICODE_STRING`` (pointer-sized Buffer of the layout) or
            ``_STRING32`` (WoW64's 32-bit view in x64 layouts).

    Raises:
        InvalidAddressError: the header itself cannot be read.
    """
    shape = layout.struct(struct)
    size = shape.size or max(f.offset + (layout.type_info(f.type).size or 0)
                             for f in shape.fields.values())
    header = Struct(layout, struct, _read(memory, address, size), address)
    try:
        return string_from_header(memory, header, limit)
    except TruncatedDataError as exc:
        raise InvalidAddressError(str(exc), address=address) from None


def read_unicode_string32(memory: Any, address: int, layout: Layout,
                          limit: int = MAX_STRING_BYTES) -> UnicodeString:
    """A WoW64 ``UNICODE_STRING32``: ``_STRING32`` in x64 layouts, ``_UNICODE_STRING`` in x86 ones."""
    struct = "_STRING32" if layout.has_struct("_STRING32") else "_UNICODE_STRING"
    if struct == "_UNICODE_STRING" and layout.pointer_size != 4:
        raise DecodeError("layout %s has no 32-bit string type (_STRING32)" % layout.name)
    return read_unicode_string(memory, address, layout, struct, limit)
