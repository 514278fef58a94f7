"""ksinspect.symbols: System.map / kallsyms tables, against the shipped guests' own
/proc/kallsyms (tests/data/qemu/*/kallsyms.txt.xz, captured from the running
kernel) read here with plain string splitting.

The format is nm(1)'s ``ADDRESS TYPE NAME [MODULE]``; upper-case types are
global, lower-case local; ``A`` is an absolute value (per-CPU offsets such as
``cpu_debug_store`` = 0x1000), not a place, so it never names an address.
"""
import lzma

import pytest

from ksinspect.symbols import SymbolError, SymbolTable
from conftest import PROFILES, qemu_file


def kallsyms(profile):
    with lzma.open(qemu_file(profile, "kallsyms.txt.xz"), "rt", encoding="ascii") as fh:
        return [line.split() for line in fh if line.strip()]


@pytest.fixture(scope="module", params=PROFILES)
def guest(request):
    rows = kallsyms(request.param)
    return rows, SymbolTable.from_system_map(qemu_file(request.param, "kallsyms.txt.xz"))


def test_text_range_is_stext_to_etext(guest):
    rows, table = guest
    names = {name: int(address, 16) for address, _kind, name, *_ in rows}
    assert table.text_range == (names["_stext"], names["_etext"])
    assert table.in_text(names["_stext"]) and not table.in_text(names["_etext"])
    assert table.skipped == (0, None) and table.skipped_warning() is None


def test_every_code_symbol_names_its_address_and_what_follows_it(guest):
    rows, table = guest
    # Every symbol but the absolute ones is a place (the guests' files hold
    # types d t T r D b B W R V and A).
    places = sorted({int(a, 16) for a, kind, _name, *_ in rows if kind != "A" and int(a, 16)})
    for address, kind, name, *_ in rows[::97]:       # a spread of the file's lines
        if kind not in "Tt" or not int(address, 16):
            continue
        value = int(address, 16)
        found = table.lookup(value)
        assert found is not None and found[0].address == value and found[1] == 0
        following = next((p for p in places if p > value), None)
        if following is not None and following - value > 1:
            symbol, offset = table.lookup(following - 1)
            assert symbol.address == value and offset == following - 1 - value


def test_absolute_symbols_name_no_address():
    rows = kallsyms("x86_64-4level")
    absolute = [(int(a, 16), n) for a, kind, n, *_ in rows if kind == "A" and int(a, 16)]
    assert ("cpu_debug_store" in {n for _a, n in absolute})
    table = SymbolTable.from_system_map(qemu_file("x86_64-4level", "kallsyms.txt.xz"))
    for address, name in absolute[:50]:
        found = table.lookup(address)
        assert found is None or found[0].name != name


def test_module_column_and_skipped_lines_are_kept():
    lines = ["[    0.000000] Linux version 6.1.0",          # a console line around kallsyms
             "ffffffffc0200000 t ext4_init_fs\t[ext4]",
             "ffffffff81000000 T _stext", "ffffffff81e01d32 T _etext",
             "0000000000001000 A cpu_debug_store"]
    table = SymbolTable.parse_system_map(lines, source="map")
    assert table.symbolize(0xffffffffc0200010) == "ext4_init_fs+0x10 [ext4]"
    assert table.skipped == (1, (1, lines[0]))
    assert table.skipped_warning().startswith("map: skipped 1 line that is not symbols")
    assert table.lookup(0x1000) is None and table.address_of("_etext") == 0xffffffff81e01d32


@pytest.mark.parametrize("lines, needle", [
    (["hello world"], "no line is a System.map / kallsyms symbol"),
    (["0000000000000000 T _stext", "0000000000000000 t f"], "only zeros"),
])
def test_a_file_with_no_usable_symbol_is_refused(lines, needle):
    with pytest.raises(SymbolError, match=needle):
        SymbolTable.parse_system_map(lines)
