"""The typed Struct view and the C batch field extractor.

Bytes are packed here with ``struct`` at offsets written from winternl.h /
winnt.h (see test_windows_layout.py) or read from the layout JSON files
(their provenance: Microsoft's PDBs), never from the code under test.
"""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from ksinspect._native import fields as _native_fields
from ksinspect.errors import (DecodeError, TruncatedDataError, UnknownFieldError,
                              UnknownStructError)
from ksinspect.windows import Struct, load_layout
from ksinspect.windows.fields import extract_fields, resolve_field
from ksinspect.windows.layout import KIND_INT, KIND_POINTER

from builders.windows_image_builder import layout_json

X64 = load_layout("win10-22h2-19045.2965-x64")
X86 = load_layout("win10-22h2-19045.2965-x86")


def x64_peb_bytes():
    # winternl.h PEB on x64: BeingDebugged at 2, ImageBaseAddress 0x10, Ldr 0x18, ProcessParameters 0x20.
    data = bytearray(X64.sizeof("_PEB"))
    data[2] = 1
    struct.pack_into("<QQQ", data, 0x10, 0x7FF6A0000000, 0x7FFE1234A000, 0x1F5D0A41000)
    return bytes(data)


def test_reads_named_members():
    peb = Struct(X64, "_PEB", x64_peb_bytes(), address=0x7FF7FFFD3000)
    assert peb["BeingDebugged"] == 1
    assert peb["ImageBaseAddress"] == 0x7FF6A0000000
    assert peb["Ldr"] == 0x7FFE1234A000
    assert peb.get("ProcessParameters") == 0x1F5D0A41000
    assert peb.address_of("Ldr") == 0x7FF7FFFD3018
    assert peb.size == X64.sizeof("_PEB")
    assert peb.field_names[0] == "InheritedAddressSpace" and "Ldr" in peb
    offsets = [peb.offset_of(n) for n in peb.field_names]
    assert offsets == sorted(offsets)


def test_x86_pointers_are_four_bytes():
    data = bytearray(X86.sizeof("_PEB"))
    struct.pack_into("<III", data, 0x8, 0x400000, 0x77F05C40, 0x4A1A30)   # winternl.h x86
    peb = Struct(X86, "_PEB", bytes(data))
    assert (peb["ImageBaseAddress"], peb["Ldr"], peb["ProcessParameters"]) == (
        0x400000, 0x77F05C40, 0x4A1A30)


def test_nested_arrays_chars_bitfields_and_signed():
    layout = layout_json("win10-22h2-19045.2965-x64")
    ep = layout["structs"]["_EPROCESS"]["fields"]
    kp = layout["structs"]["_KPROCESS"]["fields"]
    data = bytearray(X64.sizeof("_EPROCESS"))
    links = ep["ActiveProcessLinks"]["offset"]
    struct.pack_into("<QQ", data, links, 0xFFFFA00011112448, 0xFFFFA00022222448)
    name = ep["ImageFileName"]["offset"]
    data[name:name + 15] = b"notepad.exe".ljust(15, b"\0")
    # _EX_FAST_REF Token: the low 4 bits are RefCnt on x64 (layouts README).
    struct.pack_into("<Q", data, ep["Token"]["offset"], 0xFFFFC0012345678B)
    # _LARGE_INTEGER CreateTime with HighPart negative: QuadPart int64, HighPart int32.
    struct.pack_into("<q", data, ep["CreateTime"]["offset"], -2)
    # _PS_PROTECTION: Type bits 0-2, Audit bit 3, Signer bits 4-7 (0x61 = Signer 6, Type 1).
    data[ep["Protection"]["offset"]] = 0x61
    struct.pack_into("<Q", data, kp["DirectoryTableBase"]["offset"], 0x1AD000)
    s = Struct(X64, "_EPROCESS", bytes(data))
    assert s["ActiveProcessLinks"]["Flink"] == 0xFFFFA00011112448
    assert s["ActiveProcessLinks"]["Blink"] == 0xFFFFA00022222448
    assert s["ActiveProcessLinks"].address is None
    assert s["ImageFileName"] == b"notepad.exe\0\0\0\0"
    assert s["Token"]["RefCnt"] == 0xB
    assert s["Token"]["Object"] == 0xFFFFC0012345678B
    assert s["CreateTime"]["QuadPart"] == -2
    assert s["CreateTime"]["HighPart"] == -1
    assert s["CreateTime"]["LowPart"] == 0xFFFFFFFE
    assert (s["Protection"]["Signer"], s["Protection"]["Audit"], s["Protection"]["Type"]) == (
        6, 0, 1)
    assert s["Pcb"]["DirectoryTableBase"] == 0x1AD000
    assert s["Pcb"].field_names[0] == "Header"
    # An embedded structure the layout does not describe is opaque, not an error.
    assert s["ProcessLock"].field_names == ()


def test_arrays():
    old = load_layout("win2003-sp2-3790.3959-x64")     # DirectoryTableBase is uint64[2] there
    data = bytearray(old.sizeof("_KPROCESS"))
    at = old.offset("_KPROCESS", "DirectoryTableBase")
    struct.pack_into("<QQ", data, at, 0x1234000, 0x5678000)
    assert Struct(old, "_KPROCESS", bytes(data))["DirectoryTableBase"] == [0x1234000, 0x5678000]
    server = load_layout("server2022-21h2-20348.169-x64")   # ApcListHead is _LIST_ENTRY[2]
    heads = Struct(server, "_KAPC_STATE", bytes(range(48)))["ApcListHead"]
    assert [h["Flink"] for h in heads] == [int.from_bytes(bytes(range(0, 8)), "little"),
                                           int.from_bytes(bytes(range(16, 24)), "little")]


def test_unknown_member_is_an_error_naming_struct_member_and_layout():
    peb = Struct(X64, "_PEB", x64_peb_bytes())
    with pytest.raises(UnknownFieldError) as info:
        peb["ImageBase"]
    assert info.value.struct == "_PEB" and info.value.field == "ImageBase"
    assert X64.name in str(info.value)
    with pytest.raises(LookupError):
        peb["Foo"]
    # No attribute magic: members are not attributes.
    with pytest.raises(AttributeError):
        peb.Ldr
    with pytest.raises(AttributeError):
        peb.anything = 1
    assert peb.get("NoSuchMember", "absent") == "absent"
    with pytest.raises(UnknownStructError):
        Struct(X64, "_NOPE", b"")


def test_truncated_data():
    peb = Struct(X64, "_PEB", x64_peb_bytes()[:0x1C], address=0x1000)
    assert peb["ImageBaseAddress"] == 0x7FF6A0000000
    with pytest.raises(TruncatedDataError) as info:
        peb["Ldr"]                    # 0x18..0x20 needs more than 0x1c bytes
    assert "Ldr" in str(info.value) and "0x1000" in str(info.value)
    with pytest.raises(TruncatedDataError):
        peb.get("ProcessParameters")
    assert "ImageBaseAddress" in peb.to_dict() and "Ldr" not in peb.to_dict()
    assert "(beyond the data read)" in peb.explain()


def test_explain_to_dict_and_html():
    peb = Struct(X64, "_PEB", x64_peb_bytes(), address=0x7FF7FFFD3000)
    text = peb.explain()
    assert "_PEB at 0x7ff7fffd3000" in text
    assert "+0x018 Ldr" in text and "0x7ffe1234a000" in text
    assert "Vergilius" in text                  # where the offsets come from
    assert peb.to_dict()["Ldr"] == 0x7FFE1234A000
    assert peb.to_dict()["CSDVersion"] == {"Length": 0, "MaximumLength": 0, "Buffer": 0}
    hostile = bytearray(X64.sizeof("_EPROCESS"))
    at = X64.offset("_EPROCESS", "ImageFileName")
    hostile[at:at + 8] = b"<b>x</b>"
    html = Struct(X64, "_EPROCESS", bytes(hostile))._repr_html_()
    assert "<b>" not in html and "&lt;b&gt;" in html


# -- C batch extraction ------------------------------------------------------------------------

def _scalar_paths(layout, struct_name, prefix="", depth=0):
    """Every integer/pointer member reachable through embedded structures."""
    for name, spec in layout.struct(struct_name).fields.items():
        info = layout.type_info(spec.type)
        if info.kind in (KIND_INT, KIND_POINTER):
            yield prefix + name
        elif info.kind == "struct" and layout.has_struct(spec.type) and depth < 3:
            yield from _scalar_paths(layout, spec.type, prefix + name + ".", depth + 1)


def _by_struct(s, path):
    value = s
    for part in path.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize("layout_name, struct_name", [
    ("win10-22h2-19045.2965-x64", "_EPROCESS"), ("win10-22h2-19045.2965-x86", "_EPROCESS"),
    ("winxp-sp3-2600.5512-x86", "_EPROCESS"), ("win11-24h2-26100.1742-x64", "_PEB"),
    ("win7-sp1-7601.17514-x64", "_LDR_DATA_TABLE_ENTRY"),
])
@settings(max_examples=15, deadline=None)
@given(data=st.binary(min_size=0, max_size=6000),
       starts=st.lists(st.integers(0, 6100), min_size=1, max_size=6))
def test_c_extraction_agrees_with_struct(layout_name, struct_name, data, starts):
    layout = load_layout(layout_name)
    paths = list(_scalar_paths(layout, struct_name))
    columns = extract_fields(layout, struct_name, paths, data, starts)
    for row, start in enumerate(starts):
        view = Struct(layout, struct_name, data[start:])
        complete = True
        for path in paths:
            try:
                expected = _by_struct(view, path)
            except TruncatedDataError:
                complete = False
                assert columns[path][row] == 0
                continue
            assert columns[path][row] == expected, (path, start)
        assert columns.valid[row] == complete


def test_extraction_rows_and_bounds():
    data = bytes(range(256))
    columns = extract_fields(X64, "_LIST_ENTRY", ["Flink", "Blink"], data, [0, 240, 250, 1 << 63])
    assert columns["Flink"][0] == int.from_bytes(data[0:8], "little")
    assert columns["Blink"][1] == int.from_bytes(data[248:256], "little")
    assert columns.valid == (True, True, False, False)
    assert columns["Flink"][2] == 0 and columns["Blink"][3] == 0
    assert columns.rows()[1]["start"] == 240
    with pytest.raises(KeyError):
        columns["Nope"]
    with pytest.raises(DecodeError, match="only integers"):
        extract_fields(X64, "_EPROCESS", ["ImageFileName"], data, [0])
    with pytest.raises(DecodeError, match="not a structure"):
        extract_fields(X64, "_EPROCESS", ["UniqueProcessId.Low"], data, [0])
    with pytest.raises(UnknownFieldError):
        extract_fields(X64, "_EPROCESS", ["Pcb.Nope"], data, [0])


def test_resolve_field_flattens_embedded_offsets():
    layout = layout_json("win10-22h2-19045.2965-x64")
    r = resolve_field(X64, "_EPROCESS", "Pcb.DirectoryTableBase")
    assert r.offset == layout["structs"]["_KPROCESS"]["fields"]["DirectoryTableBase"]["offset"]
    r = resolve_field(X64, "_EPROCESS", "ActiveProcessLinks.Blink")
    assert r.offset == layout["structs"]["_EPROCESS"]["fields"]["ActiveProcessLinks"]["offset"] + 8
    assert r.size == 8


@pytest.mark.parametrize("spec", [(0, 3, False, 0, 0), (0, 4, False, 30, 3),
                                  (0, 1, False, 0, 9), (0, 8, False, 64, 0)])
def test_c_rejects_bad_specs(spec):
    with pytest.raises(DecodeError):
        _native_fields.extract(b"\0" * 16, [spec], [0])


def test_c_signed_bitfields_and_empty_batches():
    values, status = _native_fields.extract(b"\xf0\x7f", [(0, 2, True, 4, 4), (0, 2, True, 0, 16),
                                                          (1, 1, False, 0, 0)], [0])
    assert list(values) == [(1 << 64) - 1, 0x7FF0, 0x7F] and status == b"\0"
    values, status = _native_fields.extract(b"", [(0, 8, False, 0, 0)], [])
    assert len(values) == 0 and status == b""
    values, status = _native_fields.extract(b"", [(0, 8, False, 0, 0)], [0])
    assert list(values) == [0] and status == bytes([_native_fields.STATUS_TRUNCATED])


def _reference_extract(data, specs, starts):
    """What ksi_extract_fields must give, written from its header comment."""
    values, status = [], []
    for start in starts:
        ok = True
        for offset, size, signed, bit_position, bit_length in specs:
            if start + offset + size > len(data):
                ok = False
                values.append(0)
                continue
            v = int.from_bytes(data[start + offset:start + offset + size], "little")
            width = 8 * size
            if bit_length:
                v = (v >> bit_position) & ((1 << bit_length) - 1)
                width = bit_length
            if signed and v >> (width - 1) & 1:
                v = (v - (1 << width)) & ((1 << 64) - 1)
            values.append(v)
        status.append(0 if ok else _native_fields.STATUS_TRUNCATED)
    return values, bytes(status)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64),
       specs=st.lists(st.tuples(st.one_of(st.integers(0, 80), st.integers(0, (1 << 32) - 1)),
                                st.sampled_from([1, 2, 3, 4, 8, 16]), st.booleans(),
                                st.integers(0, 70), st.integers(0, 70)), max_size=4),
       starts=st.lists(st.one_of(st.integers(0, 80), st.integers(0, (1 << 64) - 1)),
                       max_size=5))
def test_c_extraction_fuzz_against_the_reference(data, specs, starts):
    valid = all(size in (1, 2, 4, 8) and bit_position < 64 and bit_length <= 64
                and bit_position + bit_length <= 8 * size
                for _, size, _, bit_position, bit_length in specs)
    if not valid:
        with pytest.raises(DecodeError):
            _native_fields.extract(data, specs, starts)
        return
    values, status = _native_fields.extract(data, specs, starts)
    assert (list(values), status) == _reference_extract(data, specs, starts)
