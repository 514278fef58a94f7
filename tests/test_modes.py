"""ksinspect/modes.py, the Python home of the paging-mode facts, against
the C walker's own table (csrc/ksi_walk.c, read through ksi_paging_geometry_of)
and against the manual (Intel SDM vol. 3A Table 4-1 and §4.3-4.5)."""
import pytest

from ksinspect._native import walk as _native_walk
from ksinspect._native.paging import PAGING_MODES, paging_levels
from ksinspect.errors import DecodeError
from ksinspect.modes import LEVEL_NAMES, MODES, PagingMode, size_text


@pytest.mark.parametrize("mode", list(PagingMode))
def test_the_python_table_agrees_with_the_c_table(mode):
    facts = MODES[mode]
    c = _native_walk.geometry(PAGING_MODES[mode.value])
    assert c["levels"] == facts.levels == paging_levels(PAGING_MODES[mode.value])
    assert c["entry_size"] == facts.entry_size
    assert c["va_bits"] == facts.va_bits
    assert bool(c["canonical"]) == facts.canonical
    for level in facts.table:
        assert c["shift[%d]" % level.number] == level.shift, level
        assert c["entries[%d]" % level.number] == level.entries, level
    for number in range(facts.levels + 1, 6):
        assert c["entries[%d]" % number] == 0


def test_the_c_table_refuses_an_unknown_mode():
    with pytest.raises(DecodeError):
        _native_walk.geometry(7)


def test_the_table_is_the_manual():
    # SDM vol. 3A Table 4-1: linear-address width and page sizes per mode.
    assert [(f.va_bits, f.page_sizes) for f in MODES.values()] == [
        (32, (4096, 4 << 20)), (32, (4096, 2 << 20)),
        (48, (4096, 2 << 20, 1 << 30)), (57, (4096, 2 << 20, 1 << 30))]
    # Each mode's index bits and the page offset cover the linear address exactly.
    for facts in MODES.values():
        assert 12 + sum(level.bits for level in facts.table) == facts.va_bits
    assert LEVEL_NAMES[PagingMode.LEVEL5] == {5: "PML5E", 4: "PML4E", 3: "PDPTE", 2: "PDE",
                                              1: "PTE"}
    assert MODES[PagingMode.PAE].level(3).entries == 4            # §4.4.1: four PDPTEs
    assert MODES[PagingMode.BITS32].level(2).shift == 22          # §4.3: bits 31:22


def test_size_text():
    assert [size_text(s) for s in (4096, 2 << 20, 4 << 20, 1 << 30, 1536, 5)] == [
        "4 KiB", "2 MiB", "4 MiB", "1 GiB", "1536 B", "5 B"]
