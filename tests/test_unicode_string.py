"""UNICODE_STRING decoding on hostile input.

UNICODE_STRING is {USHORT Length; USHORT MaximumLength; PWSTR Buffer}, the
lengths in bytes (ntdef.h; the "UNICODE_STRING structure" page of the
Windows docs): Buffer at 8 on x64 and 4 on x86. WoW64's UNICODE_STRING32 is
_STRING32 in x64 PDBs (Buffer a ULONG at 4).
"""
import struct

import pytest

from ksinspect.errors import InvalidAddressError
from ksinspect.windows import load_layout
from ksinspect.windows.strings import (decode_utf16, read_unicode_string,
                                       read_unicode_string32)

from builders.windows_image_builder import VirtualMemory

X64 = load_layout("win10-22h2-19045.2965-x64")
X86 = load_layout("win10-22h2-19045.2965-x86")
HEADER = 0x10000
TEXT = 0x20000


def memory_with(length, maximum, buffer, payload=b"", x86=False):
    memory = VirtualMemory()
    if x86:
        memory.write(HEADER, struct.pack("<HHI", length, maximum, buffer))
    else:
        memory.write(HEADER, struct.pack("<HHIQ", length, maximum, 0, buffer))
    if payload:
        memory.write(TEXT, payload)
    return memory


def test_plain_string_x64_and_x86():
    payload = "C:\\Windows\\notepad.exe".encode("utf-16-le")
    s = read_unicode_string(memory_with(len(payload), len(payload) + 2, TEXT, payload),
                            HEADER, X64)
    assert s.text == "C:\\Windows\\notepad.exe" and s.findings == ()
    assert (s.length, s.maximum_length, s.buffer, s.address) == (len(payload),
                                                                  len(payload) + 2, TEXT, HEADER)
    assert s.raw == payload
    s = read_unicode_string(memory_with(4, 6, TEXT, "ab".encode("utf-16-le"), x86=True),
                            HEADER, X86)
    assert s.text == "ab"


def test_length_counts_bytes_not_the_terminator():
    payload = "abc\0junk".encode("utf-16-le")
    s = read_unicode_string(memory_with(6, 8, TEXT, payload), HEADER, X64)
    assert s.text == "abc"


def test_length_above_maximum_length_is_a_finding():
    payload = "abcd".encode("utf-16-le")
    s = read_unicode_string(memory_with(8, 4, TEXT, payload), HEADER, X64)
    assert s.text == "abcd"
    assert any("exceeds MaximumLength" in f for f in s.findings)


def test_odd_length():
    payload = "abc".encode("utf-16-le")
    s = read_unicode_string(memory_with(5, 8, TEXT, payload), HEADER, X64)
    assert s.text == "ab"
    assert len(s.raw) == 5
    assert [f for f in s.findings if "odd Length 0x5" in f]


def test_huge_length_reads_at_most_the_ushort_range_and_must_be_readable():
    memory = memory_with(0xFFFF, 0xFFFF, TEXT, "x".encode("utf-16-le") * 0x8000)
    s = read_unicode_string(memory, HEADER, X64)
    assert len(s.raw) == 0xFFFF and s.text == "x" * 0x7FFF
    s = read_unicode_string(memory, HEADER, X64, limit=0x100)
    assert s.text == "x" * 0x80 and any("limit" in f for f in s.findings)
    # The same Length over a buffer that ends early: unreadable, no exception.
    memory = memory_with(0xFFFE, 0xFFFE, TEXT, b"a\0" * 16)
    s = read_unicode_string(memory, HEADER, X64)
    assert s.text is None and not s.readable
    assert any("not readable" in f for f in s.findings)


def test_lone_surrogates_are_replaced_with_a_finding():
    payload = b"a\0" + struct.pack("<H", 0xD800) + b"b\0" + struct.pack("<H", 0xDC00)
    s = read_unicode_string(memory_with(len(payload), len(payload), TEXT, payload), HEADER, X64)
    assert s.text == "a\ufffdb\ufffd"
    assert any("invalid UTF-16" in f for f in s.findings)
    # A proper surrogate pair is one character, no finding.
    pair = "\U0001F600".encode("utf-16-le")
    s = read_unicode_string(memory_with(len(pair), len(pair), TEXT, pair), HEADER, X64)
    assert s.text == "\U0001F600" and s.findings == ()


def test_null_buffer():
    s = read_unicode_string(memory_with(0, 0, 0), HEADER, X64)
    assert s.text == "" and s.findings == ()
    s = read_unicode_string(memory_with(8, 8, 0), HEADER, X64)
    assert s.text is None and any("NULL" in f for f in s.findings)


def test_empty_string_with_a_buffer_reads_nothing():
    s = read_unicode_string(memory_with(0, 0x20, 0xDEAD0000), HEADER, X64)
    assert s.text == "" and s.findings == ()


def test_unreadable_header_raises():
    with pytest.raises(InvalidAddressError):
        read_unicode_string(VirtualMemory(), HEADER, X64)


def test_wow64_string32():
    memory = VirtualMemory()
    memory.write(HEADER, struct.pack("<HHI", 6, 8, TEXT))
    memory.write(TEXT, "C:\\".encode("utf-16-le"))
    assert read_unicode_string32(memory, HEADER, X64).text == "C:\\"      # _STRING32
    assert read_unicode_string32(memory, HEADER, X86).text == "C:\\"      # x86 _UNICODE_STRING


def test_decode_utf16_directly():
    assert decode_utf16("hé".encode("utf-16-le")) == ("hé", [])
    text, findings = decode_utf16(b"h\0i")
    assert text == "h" and "odd byte count" in findings[0]


def test_explain_and_html_escape():
    payload = "<script>".encode("utf-16-le")
    s = read_unicode_string(memory_with(len(payload), len(payload), TEXT, payload), HEADER, X64)
    assert "Length         0x10 (8 characters)" in s.explain()
    assert "<script>" not in s._repr_html_() and "&lt;script&gt;" in s._repr_html_()
    assert s.to_dict()["text"] == "<script>"
