"""The Windows library API read as a script would (issue 15, item 10): one
argument order for the readers, one keyword per idea, one check class, and
the README's own example run as written.

Expected values come from the shipped Wine sample's sidecar (what
tests/programs/peb_self.c printed from Windows APIs, tests/data/wine) and the
layout files (PDB-derived offsets), not from ksinspect's output.
"""
import json
import os
import re
import warnings

import pytest

from ksinspect.memory import open_image
from ksinspect.windows import load_layout, read_struct
from ksinspect.windows import checks, peb as peb_module
from ksinspect.windows.fields import extract_fields
from ksinspect.windows.peb import read_peb, read_peb32, read_teb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "tests", "data", "wine", "peb_self.lime.xz")
LAYOUT = "win7-sp1-7601.17514-x64"


@pytest.fixture(scope="module")
def sample():
    with open(os.path.join(ROOT, "tests", "data", "wine", "peb_self.json")) as handle:
        printed = json.load(handle)["printed"]
    memory = open_image(SAMPLE)
    yield memory, printed
    memory.close()


def _readme_block():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    start = text.index("From Python (this block runs as written")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    return match.group(1)


def test_the_readmes_windows_example_runs_as_written(monkeypatch):
    """Before: `extract_fields(layout, "_EPROCESS", [...], image, offsets)` on an
    opened image raised "a bytes-like object is required, not 'PhysicalMemory'"."""
    monkeypatch.chdir(ROOT)
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)     # nothing old in the README
        exec(compile(_readme_block(), "README.md", "exec"), namespace)
    assert namespace["layout"].name == LAYOUT
    cols, peb = namespace["cols"], namespace["peb"]
    assert list(cols["DllBase"]) == [m.base for m in peb.modules]
    assert all(cols.valid)
    namespace["memory"].close()


def test_extract_fields_reads_an_image_at_its_addresses(sample):
    """Loader entries of the sample, at their addresses in the image: DllBase
    and SizeOfImage as the program printed them (GetModuleInformation)."""
    memory, printed = sample
    decoded = read_peb(memory, printed["peb"], LAYOUT)
    entries = [m.entry for m in decoded.modules]
    columns = extract_fields(LAYOUT, "_LDR_DATA_TABLE_ENTRY", ["DllBase", "SizeOfImage"],
                             memory, entries + [0x10000])          # the last is not in the image
    assert list(columns["DllBase"])[:-1] == [m["base"] for m in printed["modules"]]
    assert list(columns["SizeOfImage"])[:-1] == [m["size"] for m in printed["modules"]]
    assert columns.valid == (True,) * len(entries) + (False,)
    assert list(columns.starts) == entries + [0x10000]


def test_readers_take_memory_address_layout(sample):
    memory, printed = sample
    assert read_teb(memory, printed["teb"], LAYOUT).peb == printed["peb"]
    assert read_peb(memory, printed["peb"], LAYOUT).image_base == printed["image_base"]
    # the old order of read_peb was always (memory, address, layout): a swap is a TypeError
    # naming the order, not an AttributeError from deep inside
    for reader in (read_peb, read_teb, read_peb32):
        with pytest.raises(TypeError, match=r"\(memory, address, layout"):
            reader(memory, LAYOUT, printed["peb"])


def test_read_struct_takes_memory_address_layout_name(sample):
    """x64 _PEB: ImageBaseAddress at +0x10 and OSBuildNumber at +0x120 in the
    layout file; the program printed the image base, Wine says build 7601."""
    memory, printed = sample
    s = read_struct(memory, printed["peb"], LAYOUT, "_PEB",
                    ["ImageBaseAddress", "OSBuildNumber"])
    assert (s["ImageBaseAddress"], s["OSBuildNumber"]) == (printed["image_base"], 7601)
    with pytest.warns(DeprecationWarning, match=r"read_struct\(memory, address, layout, name\)"):
        old = read_struct(memory, load_layout(LAYOUT), "_PEB", printed["peb"],
                          ["ImageBaseAddress"])
    assert old["ImageBaseAddress"] == printed["image_base"]


def test_one_keyword_per_idea(sample):
    memory, printed = sample
    header = checks.read_pe_header(memory, address=printed["image_base"])
    assert header.size_of_image == printed["modules"][0]["size"]
    with pytest.warns(DeprecationWarning, match=r"read_pe_header\(base=\) is now"):
        assert checks.read_pe_header(memory, base=printed["image_base"]) == header
    with pytest.raises(TypeError, match="both base= and address="):
        checks.read_pe_header(memory, printed["image_base"], base=printed["image_base"])


def test_one_check_class():
    """windows/checks.Check subclassed windows/peb.Check (issue 15, item 6):
    now one class, CrossCheck, under both old names, with its rule."""
    assert peb_module.Check is checks.Check is checks.CrossCheck
    check = peb_module.Check("image path", "a", "b", False)
    assert check.to_dict() == {"name": "image path", "ours": "a", "theirs": "b",
                               "agree": False, "rule": ""}


def test_address_is_the_keyword_of_every_reader(sample):
    """One keyword per idea: where to read is ``address=`` (the old names
    ``head=``, ``entry=``, ``ldr=``, ``base=`` work for one release, warned)."""
    from ksinspect.windows.kernel import read_kernel_image
    from ksinspect.windows.peb import read_loader_lists, read_module, walk_list
    memory, printed = sample
    layout = load_layout(LAYOUT)
    decoded = read_peb(memory, address=printed["peb"], layout=LAYOUT)
    first = decoded.modules[0]
    assert read_module(memory, address=first.entry, layout=LAYOUT).base == printed["image_base"]
    with pytest.warns(DeprecationWarning, match=r"read_module\(entry=\) is now"):
        assert read_module(memory, entry=first.entry, layout=layout).base == first.base
    modules, _, _ = read_loader_lists(memory, address=decoded.ldr, layout=LAYOUT)
    assert [m.base for m in modules] == [m["base"] for m in printed["modules"]]
    with pytest.warns(DeprecationWarning, match=r"read_loader_lists\(ldr=\) is now"):
        read_loader_lists(memory, ldr=decoded.ldr, layout=layout)
    head = decoded.ldr + layout.offset("_PEB_LDR_DATA", "InLoadOrderModuleList")
    walk = walk_list(memory, address=head, pointer_size=8)
    assert list(walk.entries) == [m.entry for m in modules]
    with pytest.warns(DeprecationWarning, match=r"walk_list\(head=\) is now"):
        assert walk_list(memory, head=head, pointer_size=8).entries == walk.entries
    with pytest.raises(TypeError, match="pointer_size"):
        walk_list(memory, head)
    with pytest.raises(TypeError, match="both base= and address="):
        read_kernel_image(memory, 0x1000, base=0x1000)
