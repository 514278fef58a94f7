"""ksinspect.windows.layout_files: the loader apart from the model.

What moved out of windows/layout.py (issue 15) keeps working from the old
path for one release with a DeprecationWarning; load_layout checks an ISF
that load_isf reads as it is; choose_layout says where the Windows version it
chose from was read.
"""
import json
import warnings

import pytest

from ksinspect.errors import UnknownLayoutError
from ksinspect.windows import layout as model
from ksinspect.windows import layout_files
from ksinspect.windows.layout_files import choose_layout, load_isf, load_layout


@pytest.mark.parametrize("name", ["load_layout", "available_layouts", "resolve_layout_name"])
def test_the_old_path_still_works_with_a_deprecation_warning(name):
    with pytest.warns(DeprecationWarning, match="layout_files.%s" % name):
        moved = getattr(model, name)
    assert moved is getattr(layout_files, name)


def test_the_model_has_no_other_hidden_names():
    with pytest.raises(AttributeError):
        model.no_such_name                                          # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.Layout is layout_files.Layout                  # the model itself: no warning


def _isf(member_offset: int, struct_size: int) -> dict:
    # The smallest ISF Volatility 3 would write for one 4-byte structure.
    return {"metadata": {"format": "6.2.0"},
            "base_types": {"unsigned long": {"kind": "int", "size": 4, "signed": False,
                                             "endian": "little"},
                           "pointer": {"kind": "int", "size": 8, "signed": False,
                                       "endian": "little"}},
            "user_types": {"_X": {"kind": "struct", "size": struct_size, "fields": {
                "A": {"offset": member_offset,
                      "type": {"kind": "base", "name": "unsigned long"}}}}},
            "enums": {}, "symbols": {}}


def test_load_layout_checks_an_isf_that_load_isf_reads_as_it_is(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_isf(0, 4)))
    assert load_isf(str(good)).offset("_X", "A") == load_layout(str(good)).offset("_X", "A") == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_isf(2, 4)))             # a 4-byte member at 2 in a 4-byte struct
    with pytest.raises(UnknownLayoutError, match="ends past the structure's size"):
        load_layout(str(bad))
    assert load_isf(str(bad)).offset("_X", "A") == 2   # for comparing sources, not decoding


def test_load_isf_refuses_a_ksinspect_layout_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"os": "x", "arch": "x64", "pointer_size": 8, "structs": {}}))
    with pytest.raises(UnknownLayoutError, match="not a Volatility 3 ISF"):
        load_isf(str(path))


def test_choose_layout_names_where_the_version_was_read():
    # Windows 7 SP1 is NT 6.1 build 7601 (the shipped layout's own nt_version).
    layout, note = choose_layout(6, 1, 7601, "x64", "the dump's SystemInfo version")
    assert layout.nt_version.startswith("6.1.7601")
    assert note.startswith("layout %s chosen from the dump's SystemInfo version 6.1.7601"
                           % layout.name)
    _, note = choose_layout(6, 1, 7601, "x64")
    assert "the PEB's OS version 6.1.7601" in note
