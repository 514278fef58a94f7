"""Windows structure layouts: shipped files, aliases, unknown builds, and the ISF reader.

Known offsets are taken from winternl.h (Windows SDK), which declares the
public prefix of these structures with Reserved padding:

* PEB: BYTE Reserved1[2]; BYTE BeingDebugged; BYTE Reserved2[1];
  PVOID Reserved3[2] (Mutant, ImageBaseAddress); PPEB_LDR_DATA Ldr;
  PRTL_USER_PROCESS_PARAMETERS ProcessParameters  ->  x64: 0x2, 0x10, 0x18,
  0x20; x86: 0x2, 0x8, 0xc, 0x10 (pointers are aligned to their size).
* PEB_LDR_DATA: BYTE Reserved1[8]; PVOID Reserved2[3]; LIST_ENTRY
  InMemoryOrderModuleList  ->  x64 0x20, x86 0x14.
* LDR_DATA_TABLE_ENTRY: PVOID Reserved1[2]; LIST_ENTRY InMemoryOrderLinks;
  PVOID Reserved2[2]; PVOID DllBase  ->  x64 0x10 / 0x30, x86 0x8 / 0x18.
* RTL_USER_PROCESS_PARAMETERS: BYTE Reserved1[16]; PVOID Reserved2[10];
  UNICODE_STRING ImagePathName; UNICODE_STRING CommandLine  ->  x64 0x60 /
  0x70, x86 0x38 / 0x40.
* TEB: PVOID Reserved1[12]; PPEB ProcessEnvironmentBlock  ->  x64 0x60,
  x86 0x30; NtTib.Self is the sixth pointer of NT_TIB (winnt.h): x64 0x30,
  x86 0x18.
"""
import gzip
import json
import lzma
import os
import shutil

import pytest

from ksinspect.errors import (KsinspectError, UnknownFieldError, UnknownLayoutError,
                              UnknownStructError)
from ksinspect.windows import Struct, available_layouts, load_isf, load_layout
from ksinspect.windows.layout_files import resolve_layout_name

from builders.windows_image_builder import LAYOUT_DIR

X64 = [n for n in available_layouts() if n.endswith("-x64")]
X86 = [n for n in available_layouts() if n.endswith("-x86")]

WINTERNL = {
    8: {("_PEB", "BeingDebugged"): 0x2, ("_PEB", "ImageBaseAddress"): 0x10,
        ("_PEB", "Ldr"): 0x18, ("_PEB", "ProcessParameters"): 0x20,
        ("_PEB_LDR_DATA", "InMemoryOrderModuleList"): 0x20,
        ("_LDR_DATA_TABLE_ENTRY", "InMemoryOrderLinks"): 0x10,
        ("_LDR_DATA_TABLE_ENTRY", "DllBase"): 0x30,
        ("_RTL_USER_PROCESS_PARAMETERS", "ImagePathName"): 0x60,
        ("_RTL_USER_PROCESS_PARAMETERS", "CommandLine"): 0x70,
        ("_TEB", "ProcessEnvironmentBlock"): 0x60, ("_NT_TIB", "Self"): 0x30,
        ("_UNICODE_STRING", "Buffer"): 0x8},
    4: {("_PEB", "BeingDebugged"): 0x2, ("_PEB", "ImageBaseAddress"): 0x8,
        ("_PEB", "Ldr"): 0xC, ("_PEB", "ProcessParameters"): 0x10,
        ("_PEB_LDR_DATA", "InMemoryOrderModuleList"): 0x14,
        ("_LDR_DATA_TABLE_ENTRY", "InMemoryOrderLinks"): 0x8,
        ("_LDR_DATA_TABLE_ENTRY", "DllBase"): 0x18,
        ("_RTL_USER_PROCESS_PARAMETERS", "ImagePathName"): 0x38,
        ("_RTL_USER_PROCESS_PARAMETERS", "CommandLine"): 0x40,
        ("_TEB", "ProcessEnvironmentBlock"): 0x30, ("_NT_TIB", "Self"): 0x18,
        ("_UNICODE_STRING", "Buffer"): 0x4},
}


def test_every_shipped_file_is_listed_and_loads():
    files = sorted(f[:-5] for f in os.listdir(LAYOUT_DIR) if f.endswith(".json"))
    assert sorted(available_layouts()) == files
    assert len(files) == 59            # the count the layouts' README.md states
    for name in files:
        layout = load_layout(name)
        assert layout.name == name
        assert layout.arch == name.rsplit("-", 1)[1]
        assert layout.pointer_size == (8 if layout.arch == "x64" else 4)
        assert layout.source and layout.os
        assert layout.sizeof("pointer") == layout.pointer_size


def test_provenance_files_ship_with_the_layouts():
    for doc in ("README.md", "SUMMARY.md", "CROSSCHECK.md"):
        assert os.path.getsize(os.path.join(LAYOUT_DIR, doc)) > 1000


@pytest.mark.parametrize("name", X64 + X86)
def test_winternl_offsets_hold_in_every_build(name):
    layout = load_layout(name)
    for (struct, member), expected in WINTERNL[layout.pointer_size].items():
        assert layout.offset(struct, member) == expected, (name, struct, member)


def test_sizes_and_types_of_common_structures():
    x64, x86 = load_layout("win10-1507-10240.16384-x64"), load_layout("win10-1507-10240.16384-x86")
    # UNICODE_STRING is 2 USHORTs and a pointer, pointer-aligned; LIST_ENTRY two pointers.
    assert (x64.sizeof("_UNICODE_STRING"), x86.sizeof("_UNICODE_STRING")) == (16, 8)
    assert (x64.sizeof("_LIST_ENTRY"), x86.sizeof("_LIST_ENTRY")) == (16, 8)
    assert x64.sizeof("char[15]") == 15
    assert x64.sizeof("_LIST_ENTRY[2]") == 32
    assert x64.field("_EX_FAST_REF", "RefCnt").bit_length == 4    # layouts README: 4 on x64
    assert x86.field("_EX_FAST_REF", "RefCnt").bit_length == 3    # and 3 on x86


@pytest.mark.parametrize("query, arch, expected", [
    ("win10-1507-10240.16384-x64", None, "win10-1507-10240.16384-x64"),
    ("WIN10-1507-10240.16384-X64", None, "win10-1507-10240.16384-x64"),
    ("10.0.19041", "x64", "win10-2004-19041.264-x64"),
    ("10.0.19041-x86", None, "win10-2004-19041.264-x86"),
    ("10.0.19045.2965-x64", None, "win10-22h2-19045.2965-x64"),
    ("win11-24h2", None, "win11-24h2-26100.1742-x64"),       # only x64 exists
    ("winxp-sp3", None, "winxp-sp3-2600.5512-x86"),
    ("22h2-x86", None, "win10-22h2-19045.2965-x86"),
    ("win7-sp1-7601.24000-x86", None, "win7-sp1-7601.24000-x86"),
])
def test_aliases(query, arch, expected):
    assert load_layout(query, arch=arch).name == expected


def test_alias_matching_several_revisions_takes_the_earliest_and_says_so():
    layout = load_layout("win7-sp1-x64")
    assert layout.name == "win7-sp1-7601.17514-x64"
    assert "win7-sp1-7601.24000-x64" in layout.note
    assert load_layout("win7-sp1-7601.17514-x64").note is None


def test_ambiguous_alias_lists_the_matches():
    with pytest.raises(UnknownLayoutError) as info:
        load_layout("win7-sp1")
    assert "ambiguous" in str(info.value)
    assert "win7-sp1-7601.17514-x86" in info.value.candidates
    assert "win7-sp1-7601.17514-x64" in info.value.candidates


@pytest.mark.parametrize("query, close", [
    ("win11-26h2-x64", "win11-25h2-26200.6584-x64"),
    ("vista-sp2-x86", "winvista-sp2-6002.18005-x86"),
    ("win10-1903-18362.1-x64", "win10-1903-18362.30-x64"),
])
def test_unknown_build_names_it_and_lists_close_ones(query, close):
    with pytest.raises(UnknownLayoutError) as info:
        load_layout(query)
    error = info.value
    assert isinstance(error, KsinspectError) and isinstance(error, LookupError)
    assert error.requested == query
    assert query in str(error)
    assert close in error.candidates and close in str(error)
    assert "\n" not in str(error)


def test_bad_arch_is_an_unknown_layout():
    with pytest.raises(UnknownLayoutError):
        resolve_layout_name("win10-22h2", arch="arm64")


def test_unknown_struct_and_field_name_the_layout():
    layout = load_layout("win10-22h2-19045.2965-x64")
    with pytest.raises(UnknownStructError) as info:
        layout.struct("_PEB64")
    assert "_PEB64" in str(info.value) and layout.name in str(info.value)
    with pytest.raises(UnknownFieldError) as info:
        layout.field("_PEB", "ImageBase")
    error = info.value
    assert (error.struct, error.field, error.layout) == ("_PEB", "ImageBase", layout.name)
    assert "ImageBaseAddress" in str(error)      # the close match is suggested
    assert isinstance(error, LookupError)


def test_layout_from_a_path(tmp_path):
    source = os.path.join(LAYOUT_DIR, "win81-rtm-9600.16384-x86.json")
    copy = tmp_path / "my-build.json"
    shutil.copy(source, copy)
    layout = load_layout(str(copy))
    assert layout.name == "my-build" and layout.path == str(copy)
    assert layout.offset("_PEB", "Ldr") == 0xC
    broken = tmp_path / "broken.json"
    broken.write_text('{"structs": {"_PEB": {"size": 1}}}')
    with pytest.raises(UnknownLayoutError, match="broken.json"):
        load_layout(str(broken))
    with pytest.raises(UnknownLayoutError, match="cannot read"):
        load_layout(str(tmp_path / "missing.json"))
    notjson = tmp_path / "x.json"
    notjson.write_text("{nope")
    with pytest.raises(UnknownLayoutError, match="not valid JSON"):
        load_layout(str(notjson))


# -- ISF ------------------------------------------------------------------------------------

def _isf_from_layout_file(name: str) -> dict:
    """A hand-made Volatility 3 ISF (format 6.2.0) holding the members of one
    shipped layout, written with ISF's own vocabulary (base types by C name,
    pointer subtypes, bitfield and array descriptors)."""
    with open(os.path.join(LAYOUT_DIR, name + ".json"), encoding="utf-8") as fh:
        data = json.load(fh)
    ptr = data["pointer_size"]
    c_names = {"uint8": "unsigned char", "int8": "char", "uint16": "unsigned short",
               "int16": "short", "uint32": "unsigned long", "int32": "long",
               "uint64": "unsigned long long", "int64": "long long"}

    def descriptor(type_name, target=None):
        if type_name in c_names:
            return {"kind": "base", "name": c_names[type_name]}
        if type_name == "pointer":
            sub = {"kind": "struct", "name": target} if target and target.startswith("_") \
                else {"kind": "base", "name": "void"}
            return {"kind": "pointer", "subtype": sub}
        if type_name.endswith("]"):
            element, count = type_name[:-1].rsplit("[", 1)
            sub = {"kind": "base", "name": "char"} if element == "char" else descriptor(element)
            return {"kind": "array", "count": int(count), "subtype": sub}
        return {"kind": "struct", "name": type_name}

    user_types = {}
    for struct, body in data["structs"].items():
        fields = {}
        for member, spec in body["fields"].items():
            desc = descriptor(spec["type"], spec.get("target"))
            if "bit_length" in spec:
                desc = {"kind": "bitfield", "bit_position": spec["bit_position"],
                        "bit_length": spec["bit_length"], "type": desc}
            fields[member] = {"offset": spec["offset"], "type": desc}
        user_types[struct] = {"kind": "struct", "size": body["size"], "fields": fields}
    base_types = {c: {"kind": "int", "size": int(t[-2:].lstrip("t")) // 8,
                      "signed": not t.startswith("u"), "endian": "little"}
                  for t, c in c_names.items()}
    base_types["char"] = {"kind": "char", "size": 1, "signed": True, "endian": "little"}
    base_types["unsigned char"] = {"kind": "char", "size": 1, "signed": False,
                                   "endian": "little"}
    base_types["void"] = {"kind": "void", "size": 0, "signed": False, "endian": "little"}
    base_types["pointer"] = {"kind": "int", "size": ptr, "signed": False, "endian": "little"}
    return {"metadata": {"format": "6.2.0", "producer": {"name": "ksinspect-tests",
                                                        "version": "1"},
                         "windows": {"pdb": {"database": "ntkrnlmp.pdb", "GUID": "0" * 32,
                                             "age": 1, "machine_type": 0x8664 if ptr == 8
                                             else 0x14C}}},
            "base_types": base_types, "user_types": user_types, "enums": {}, "symbols": {}}


@pytest.mark.parametrize("name", ["win10-22h2-19045.2965-x64", "winxp-sp3-2600.5512-x86"])
@pytest.mark.parametrize("compression", ["", ".xz", ".gz"])
def test_isf_mirror_of_a_layout_gives_the_same_offsets(tmp_path, name, compression):
    document = json.dumps(_isf_from_layout_file(name)).encode()
    path = tmp_path / ("ntkrnlmp.json" + compression)
    if compression == ".xz":
        document = lzma.compress(document)
    elif compression == ".gz":
        document = gzip.compress(document)
    path.write_bytes(document)
    isf = load_isf(str(path))
    shipped = load_layout(name)
    assert isf.arch == shipped.arch and isf.pointer_size == shipped.pointer_size
    assert set(isf.structs) == set(shipped.structs)
    for struct, body in shipped.structs.items():
        assert isf.struct(struct).size == body.size
        for member, spec in body.fields.items():
            theirs = isf.field(struct, member)
            assert (theirs.offset, theirs.bit_position, theirs.bit_length) == (
                spec.offset, spec.bit_position, spec.bit_length), (struct, member)
            assert theirs.type == spec.type, (struct, member)
    # load_layout recognises an ISF by its content.
    assert load_layout(str(path)).offset("_PEB", "Ldr") == shipped.offset("_PEB", "Ldr")
    # And the Struct view reads the same bytes the same way through both.
    raw = bytes(range(256)) * 16
    for struct in ("_PEB", "_LDR_DATA_TABLE_ENTRY", "_EX_FAST_REF"):
        assert Struct(isf, struct, raw).to_dict() == Struct(shipped, struct, raw).to_dict()


def test_isf_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"base_types": {}, "user_types": {}}))
    with pytest.raises(UnknownLayoutError, match="pointer"):
        load_isf(str(bad))
    bad.write_text(json.dumps({"base_types": {"pointer": {"kind": "int", "size": 8}},
                               "user_types": {"_X": {"size": 4, "fields": {
                                   "a": {"offset": 0, "type": {"kind": "martian"}}}}}}))
    with pytest.raises(UnknownLayoutError, match="martian"):
        load_isf(str(bad))


def _volatility_isf(name: str) -> str:
    volatility3 = pytest.importorskip("volatility3", reason="volatility3 is not installed")
    path = os.path.join(os.path.dirname(volatility3.__file__), "framework", "symbols",
                        "windows", name)
    if not os.path.exists(path):
        pytest.skip("this volatility3 release has no %s" % name)
    return path


def test_real_isf_volatility3_wow64_agrees_with_the_shipped_32_bit_layouts():
    # volatility3 ships wow64.json, the 32-bit loader structures of a WoW64
    # process (an independent source: Volatility's own symbol table).
    isf = load_isf(_volatility_isf("wow64.json"))
    assert isf.pointer_size == 4
    x86 = load_layout("win10-22h2-19045.2965-x86")
    x64 = load_layout("win10-22h2-19045.2965-x64")
    compared = 0
    for struct, ours in (("_PEB_LDR_DATA", x86), ("_LDR_DATA_TABLE_ENTRY", x86),
                         ("_UNICODE_STRING", x86), ("_PEB32", x64), ("LIST_ENTRY32", x64)):
        for member, spec in isf.struct(struct).fields.items():
            if member in ours.struct(struct).fields:
                assert ours.offset(struct, member) == spec.offset, (struct, member)
                compared += 1
    assert compared >= 20
    # The ISF's bases decode through the Struct view (bitfields, unions, pointers).
    peb32 = Struct(isf, "_PEB32", bytes(range(256)) * 8)
    assert peb32["Ldr"] == int.from_bytes(bytes(range(12, 16)), "little")
