"""Pictures and notebook views: structure and escaping, not exact markup.

SVG and HTML are parsed with xml.etree. Expected field counts come from the
Intel SDM figures (vol. 3A Figure 3-6 selector, Figure 3-8 descriptor,
Figure 6-8 64-bit gate, Figure 4-11 paging entries; vol. 3B Figure 17-1
DR7), expected walk shapes from the paging-mode figures (§4.3-4.5), and
page-size counts of the shipped guests from QEMU's own ``info tlb``.
"""
import io
import os
import re
import xml.etree.ElementTree as ET

import pytest

from html_check import SVG, parse_view
from ksinspect.cli import main
from ksinspect.memory import open_image
from ksinspect.paging import AddressSpace
from ksinspect.views.bitfield_svg import bitfield_svg
from ksinspect.views.html import table_html
from ksinspect.symbols import Symbol, SymbolTable
from ksinspect.tables import decode_idt, decode_table
from ksinspect.x86 import DR6, DR7, PagingEntry, SegmentDescriptor, Selector
from ksinspect.views.explanation import BitField, Explanation
from qemu_monitor import parse_info_tlb, read_text
from conftest import QEMU  # noqa: E402

DATA = QEMU
HOSTILE = "</text><script>alert('x')</script> & \"quotes\" ]]> <!--"


def svg_root(markup):
    root = ET.fromstring(markup)
    assert root.tag == SVG + "svg"
    return root


def by_class(root, tag, cls):
    return [e for e in root.iter(SVG + tag) if cls in (e.get("class") or "").split()]


def texts(root, cls):
    return [e.text for e in by_class(root, "text", cls)]


# -- bit-field diagrams ------------------------------------------------------------

@pytest.mark.parametrize("value, rects, bits", [
    # Figure 3-6: Index, TI, RPL in one 16-bit row.
    (Selector.decode(0x33), 3, {"15", "3", "2", "1", "0"}),
    # Figure 3-8: 11 boxes in the upper dword, Base 15:00 and Limit 15:00 in the lower.
    (SegmentDescriptor.decode(0x00AF9B000000FFFF), 13, {"63", "56", "55", "47", "32", "31", "0"}),
    # Figure 6-8: Reserved (the whole upper dword), Offset 63:32, then Offset 31:16,
    # P, DPL, 0 (S), Type, 00000, IST, Segment Selector, Offset 15:0.
    (SegmentDescriptor.decode(0x81A08E0000100AE0, 0xFFFFFFFF), 11, {"127", "96", "95", "64"}),
    # Figure 17-1: 63:32 reserved, LEN/R/W x4, 15:14, GD, 12, RTM, 10, GE, LE, G/L x4.
    (DR7.decode(0x400), 24, {"63", "32", "31", "0"}),
    # 32-bit PDE mapping a 4 MiB page (Figure 4-4, "PDE: 4MB page"): 14 boxes.
    (PagingEntry.decode(0x000403E7, "32", 2), 14, {"31", "22", "21", "20", "13", "12", "0"}),
])
def test_bitfield_structure(value, rects, bits):
    root = svg_root(value.to_svg())
    fields = by_class(root, "rect", "field")
    assert len(fields) == rects
    assert bits <= set(texts(root, "bitnum"))
    names = set(texts(root, "field-name"))
    # every field the value lists is drawn, under its name or its abbreviation
    for f in value.explanation_parts().fields:
        assert any(r.get("data-name") == f.name for r in fields)
    assert names
    # the legend has one line per field with its meaning
    legend = " ".join(texts(root, "legend"))
    for f in value.explanation_parts().fields:
        assert f.meaning.split()[0] in legend
    # fields tile the value: every bit is covered exactly once
    covered = []
    for r in fields:
        covered += range(int(r.get("data-lsb")), int(r.get("data-msb")) + 1)
    assert sorted(covered) == list(range(value.explanation_parts().bit_width))


def test_reserved_and_ignored_bits_look_different():
    root = svg_root(DR7.decode(0x400).to_svg())
    fills = {r.get("data-role"): set() for r in by_class(root, "rect", "field")}
    for r in by_class(root, "rect", "field"):
        fills[r.get("data-role")].add(r.get("fill"))
    assert fills["reserved"] == {"url(#ksi-reserved)"}
    assert "url(#ksi-reserved)" not in fills["field"]
    pte = svg_root(PagingEntry.decode(0x80000000FEE000E3, "4level", 2).to_svg())
    ignored = [r for r in by_class(pte, "rect", "field") if r.get("data-role") == "ignored"]
    assert ignored and all(r.get("fill") == "url(#ksi-ignored)" for r in ignored)


def test_anomalies_are_highlighted():
    # L=1 with D=1 in a code segment is reserved (SDM §3.4.5.1): L and D/B flagged.
    root = svg_root(SegmentDescriptor.decode(0x0060FA0000000000).to_svg())
    flagged = {r.get("data-name") for r in by_class(root, "rect", "anomaly")}
    assert flagged == {"L", "D/B"}
    # bit 51 set with MAXPHYADDR 46: a reserved address bit (SDM §4.5, Table 4-19)
    pte = PagingEntry.decode(0x0008000000001003, "4level", 1, maxphyaddr=46)
    flagged = [r for r in by_class(svg_root(pte.to_svg()), "rect", "anomaly")]
    assert [r.get("data-msb") for r in flagged] == ["51"]
    # a clean value has none
    assert not by_class(svg_root(DR6.decode(0xFFFF0FF0).to_svg()), "rect", "anomaly")
    # DR6 with a reserved bit cleared (bit 4 reads as 1)
    assert by_class(svg_root(DR6.decode(0xFFFF0FE0).to_svg()), "rect", "anomaly")


def test_hostile_strings_are_escaped_in_svg_and_html():
    parts = Explanation(HOSTILE, HOSTILE, [BitField(HOSTILE, 15, 8, 0xAB, HOSTILE),
                                           BitField("Reserved", 7, 0, 0, HOSTILE)],
                        [HOSTILE])
    root = svg_root(bitfield_svg(parts))
    assert not list(root.iter("script")) and not list(root.iter(SVG + "script"))
    assert HOSTILE in "".join(root.itertext())
    assert any(r.get("data-name") == HOSTILE for r in by_class(root, "rect", "field"))
    from ksinspect.views.html import explanation_html
    view = parse_view(explanation_html(parts), HOSTILE)
    assert not list(view.iter("script"))
    table = ET.fromstring(table_html([[HOSTILE, 1]], [HOSTILE, "n"], caption=HOSTILE))
    assert [c.text for c in table.iter("td")] == [HOSTILE, "1"]


def test_value_views_parse():
    for value in (Selector.decode(0x2B), SegmentDescriptor.decode(0x00CF93000000FFFF, mode="legacy"),
                  PagingEntry.decode(0x2001E3, "pae", 2), DR7.decode(0xD0402), DR6.decode(0xFFFF4FF1)):
        root = parse_view(value._repr_html_(), str(value))
        rows = list(root.iter("tr"))
        assert len(rows) == 1 + len(value.explanation_parts().fields)


# -- walk diagrams over the real guests -----------------------------------------------

@pytest.fixture(scope="module")
def spaces():
    opened = {}
    for profile in ("x86_64-4level", "x86_64-5level", "i386-pae", "i386-2level"):
        memory = open_image(os.path.join(DATA, profile, "core-trimmed.elf.xz"))
        opened[profile] = AddressSpace(memory)
    yield opened
    for space in opened.values():
        space.memory.close()


# (profile, address, levels read, offset bits): the levels of each mode and the
# page sizes come from SDM Figures 4-2/4-3 (32-bit, 4 MiB), 4-5 (PAE), 4-8/4-9.
WALKS = [
    ("x86_64-4level", 0xFFFF888000201234, 3, 21),    # direct map, 2 MiB page
    ("x86_64-4level", 0x400000, 4, 12),
    ("x86_64-5level", 0x400123, 5, 12),
    ("i386-pae", 0x8048010, 3, 12),
    ("i386-2level", 0xC0400ABC, 1, 22),               # a 4 MiB PSE page
    ("i386-2level", 0x8048000, 2, 12),
]


@pytest.mark.parametrize("profile, va, levels, offset_bits", WALKS)
def test_walk_diagram(spaces, profile, va, levels, offset_bits):
    t = spaces[profile].translate(va)
    assert t.mapped and t.page_size == 1 << offset_bits
    root = svg_root(t.to_svg())
    steps = by_class(root, "rect", "walk-step")
    assert len(steps) == levels == len(t.path)
    assert [int(s.get("data-level")) for s in steps] == [s.level for s in t.path]
    fields = by_class(root, "rect", "va-field")
    index = [f for f in fields if f.get("data-role") == "index"]
    assert len(index) == levels
    offset = [f for f in fields if f.get("data-role") == "offset"]
    assert [(f.get("data-msb"), f.get("data-lsb")) for f in offset] == [(str(offset_bits - 1), "0")]
    # the index values drawn are the address's bits
    drawn = [e.text for e in by_class(root, "text", "va-value")]
    for step in t.path:
        assert str(step.index) in drawn
    assert "%#x" % t.pa in "".join(root.itertext())
    flags = by_class(root, "rect", "flag")
    assert {f.get("data-flag") for f in flags} >= {"P", "A"}
    parse_view(t._repr_html_(), str(t))


def test_walk_diagram_of_an_unmapped_address(spaces):
    t = spaces["x86_64-4level"].translate(0x1000)
    assert not t.mapped
    root = svg_root(t.to_svg())
    result = by_class(root, "rect", "walk-result")
    assert result and result[0].get("stroke") != "#5b5b5b"
    assert "not mapped" in "".join(root.itertext())
    unused = [f for f in by_class(root, "rect", "va-field") if f.get("data-role") == "unused"]
    assert len(unused) == 4 - len(t.path)


# -- tables ---------------------------------------------------------------------------

def test_table_views_escape_symbols():
    gdt = decode_table(bytes.fromhex("0000000000000000ffff0000009bcf00ffff00000093cf00"),
                       "GDT", "legacy")
    root = ET.fromstring(gdt._repr_html_())
    assert len(root.findall(".//tbody/tr")) == len(gdt) == 3
    # a 32-bit interrupt gate to 0x1000 and a symbol with markup in its name
    gate = (0x0010 << 16 | 0x1000 | (0x8E00 << 32)).to_bytes(8, "little")
    symbols = SymbolTable([Symbol(0x1000, HOSTILE, "t")], text_range=(0x200000, 0x300000))
    idt = decode_idt(gate * 2, "legacy", symbols=symbols)
    root = ET.fromstring(idt._repr_html_())
    cells = [c.text for c in root.iter("td")]
    assert HOSTILE in cells
    finding_rows = [r for r in root.iter("tr") if r.get("class") == "finding"]
    assert len(finding_rows) == 2            # both handlers are outside the text range


def test_batch_view():
    from ksinspect.x86 import decode_paging_entries
    batch = decode_paging_entries(bytes.fromhex("e301200000000000" * 3), "pae", 2, base_address=0x5000)
    root = ET.fromstring(batch._repr_html_())
    rows = root.findall(".//tbody/tr")
    assert len(rows) == 3 and rows[2].findall("td")[1].text == "0x5010"


# -- the command line ----------------------------------------------------------------------

def test_cli_svg(tmp_path):
    import io
    path = tmp_path / "d.svg"
    assert main(["desc", "00af9b000000ffff", "--svg", str(path)], io.StringIO()) == 0
    assert len(by_class(svg_root(path.read_text()), "rect", "field")) == 13
    err = io.StringIO()
    assert main(["dr7", "--set", "0:write:4", "--svg", str(tmp_path)], io.StringIO(), err) == 1
    assert err.getvalue().count("\n") == 1 and "SVG" in err.getvalue()
    core = os.path.join(DATA, "i386-2level", "core-trimmed.elf.xz")
    walk = tmp_path / "w.svg"
    assert main(["vtop", core, "c0400abc", "--svg", str(walk)], io.StringIO()) == 0
    assert len(by_class(svg_root(walk.read_text()), "rect", "walk-step")) == 1
    err = io.StringIO()
    assert main(["vtop", core, "c0400abc", "0", "--svg", str(walk)], io.StringIO(), err) == 2
    pte = tmp_path / "p.svg"
    assert main(["pte", "80000000fee000e3", "--mode", "4level", "--level", "2", "--svg", str(pte)],
                io.StringIO()) == 0
    assert svg_root(pte.read_text())


# -- address-space map ------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["x86_64-4level", "i386-pae", "i386-2level"])
def test_page_size_counts_match_info_tlb(spaces, profile):
    from ksinspect.render.address_map import page_size_counts
    rows = parse_info_tlb(read_text(profile, "info-tlb.txt"))
    large = {"32": 4 << 20, "pae": 2 << 20, "4level": 2 << 20}[spaces[profile].mode.value]
    expected = {}
    for _va, _pa, flags in rows:
        size = large if flags[2] == "P" else 4096
        expected[size] = expected.get(size, 0) + 1
    counts = page_size_counts(spaces[profile])
    assert {size: pages for size, (pages, _bytes) in counts.items()} == expected


def test_address_map_figure(spaces):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    from ksinspect.render.address_map import plot_address_space, plot_page_sizes, regions
    space = spaces["i386-2level"]
    found = regions(space)
    assert sum(r.mapped for r in found) == sum(m.size for m in space.mapping_table())
    fig = plot_address_space(space)
    assert len(fig.axes[0].get_yticklabels()) == len(found)
    hist = plot_page_sizes(space)
    assert len(hist.axes[0].patches) == 2          # 4 KiB and 4 MiB pages
    import matplotlib.pyplot as plt
    plt.close("all")


# -- pictures, rendered to PNG and looked at -------------------------------------------------

def _svg_to_png(svg):
    try:
        import cairosvg                             # needs the C library (Debian: libcairo2)
    except (ImportError, OSError) as exc:          # OSError: cairosvg there, libcairo not
        pytest.skip("no SVG renderer: %s" % exc)
    return cairosvg.svg2png(bytestring=svg.encode("utf-8"))


def _check_png(data, min_bytes=4000):
    """Non-trivial: big enough, and neither blank nor a solid block."""
    image_module = pytest.importorskip("PIL.Image")
    import io
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > min_bytes
    image = image_module.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    assert width > 300 and height > 150
    colours = image.getcolors(maxcolors=width * height)      # [(count, (r, g, b))]
    inked = sum(n for n, rgb in colours if sum(rgb) < 3 * 235) / (width * height)
    assert 0.02 < inked < 0.9, inked
    assert len(colours) > 20             # text, lines and fill colours


def test_pictures_render_to_png(spaces):
    _check_png(_svg_to_png(SegmentDescriptor.decode(0x81A08E0000100AE0, 0xFFFFFFFF).to_svg()))
    _check_png(_svg_to_png(spaces["x86_64-5level"].translate(0x400123).to_svg()))
    _check_png(_svg_to_png(DR7.decode(0x41403).to_svg()))
    pytest.importorskip("matplotlib")
    import io
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ksinspect.render.address_map import plot_address_space, plot_page_sizes
    for figure in (plot_address_space(spaces["x86_64-4level"]),
                   plot_page_sizes(spaces["x86_64-4level"])):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=60)
        _check_png(buffer.getvalue())
    plt.close("all")


def test_walk_diagram_of_a_non_canonical_address(spaces):
    # translate_many does not raise: the Translation says why, and draws no entry
    t = spaces["x86_64-4level"].translate_many([0x0000800000000000])[0]
    root = svg_root(t.to_svg())
    assert not by_class(root, "rect", "walk-step")
    assert "not canonical" in "".join(root.itertext())


# -- the streaming emitter (`maps`) against the whole-list one -----------------------------

@pytest.mark.parametrize("count", [0, 1, 5])
def test_emit_stream_writes_what_emit_writes(count):
    from ksinspect.render import emit, emit_stream
    records = [{"start": 0x1000 * i, "end": 0x1000 * i + 0x1000, "ok": i % 2 == 0,
                "pa": None if i == 3 else 0xFFFF_F000 - i, "name": "n,\"%d" % i}
               for i in range(count)]
    columns = ("start", "end", "ok", "pa", "name")
    hexes = ("start", "end", "pa")
    for fmt in ("json", "jsonl", "csv"):
        whole, streamed = io.StringIO(), io.StringIO()
        emit(whole, fmt, records, columns=columns, hex_columns=hexes)
        assert emit_stream(streamed, fmt, iter(records), columns, [0] * 5, hexes) == count
        assert streamed.getvalue() == whole.getvalue(), fmt
    # With each column's width the widest cell, the table is tabulate's own.
    cells = [[("%#x" % r[c] if isinstance(r[c], int) and not isinstance(r[c], bool) and
               c in hexes else "-" if r[c] is None else ("yes" if r[c] else "no")
               if isinstance(r[c], bool) else str(r[c])) for c in columns] for r in records]
    widths = [max([len(row[i]) for row in cells], default=0) for i in range(len(columns))]
    whole, streamed = io.StringIO(), io.StringIO()
    emit(whole, "table", records, columns=columns, hex_columns=hexes)
    emit_stream(streamed, "table", iter(records), columns, widths, hexes)
    assert streamed.getvalue() == whole.getvalue()


def test_address_columns_are_hex_in_csv_and_tables_whatever_the_command_names():
    """The convention lives in the renderer (README, "The command line"): a
    command that names no hex column still gets its addresses, sizes and
    ranges in hex in CSV and tables, booleans true/false in CSV and yes/no in
    tables, and integers in JSON."""
    import csv
    import json
    from ksinspect.render import emit, table
    records = [{"va": 0xFFFF_8880_0000_1000, "size": 0x1000, "range": [0, 0xFFFFF],
                "present": True, "index": 12, "vector": 0x80}]
    columns = ("va", "size", "range", "present", "index", "vector")
    out = io.StringIO()
    emit(out, "csv", records, columns=columns, hex_columns=("vector",))
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert row == {"va": "0xffff888000001000", "size": "0x1000", "range": "0x0;0xfffff",
                   "present": "true", "index": "12", "vector": "0x80"}
    text = table(records, columns)
    assert text.splitlines()[2].split() == ["0xffff888000001000", "0x1000", "0x0,0xfffff",
                                            "yes", "12", "128"]
    out = io.StringIO()
    emit(out, "json", records)
    assert json.loads(out.getvalue()) == records


# -- split fields, colours and the notebook view (issue 18 items 23, 25, 26) ---------------

def _boxes(root):
    """Each field rect of a diagram with the name and value texts drawn in it
    (they follow the rect, before the next one)."""
    boxes, current = [], None
    for element in root:
        cls = (element.get("class") or "").split()
        if element.tag == SVG + "rect" and "field" in cls:
            current = {"rect": element, "name": None, "value": None}
            boxes.append(current)
        elif current is not None and element.tag == SVG + "text":
            if "field-name" in cls and current["name"] is None:
                current["name"] = element.text
            elif "field-value" in cls and current["value"] is None:
                current["value"] = element.text
    return {(int(b["rect"].get("data-msb")), int(b["rect"].get("data-lsb"))): b for b in boxes}


def test_descriptor_base_is_labelled_per_part_as_figure_3_8():
    # SDM vol. 3A Figure 3-8: "Base 31:24" in bits 31:24 of the upper dword,
    # "Base 23:16" in its bits 7:0, "Base Address 15:00" in bits 31:16 of the
    # lower dword. Base 0x12abc000: parts 0x12, 0xab, 0xc000.
    base, limit = 0x12ABC000, 0xFFFFF
    raw = ((limit & 0xFFFF) | (base & 0xFFFF) << 16 | ((base >> 16) & 0xFF) << 32 | 0x93 << 40
           | (limit >> 16) << 48 | 0xC << 52 | (base >> 24) << 56)
    boxes = _boxes(svg_root(SegmentDescriptor.decode(raw, mode="legacy").to_svg()))
    assert (boxes[63, 56]["name"], boxes[63, 56]["value"]) == ("Base 31:24", "0x12")
    assert (boxes[39, 32]["name"], boxes[39, 32]["value"]) == ("Base 23:16", "0xab")
    assert boxes[31, 16]["name"].startswith("Base 15") and boxes[31, 16]["value"] == "0xc000"


def test_pte_frame_number_is_labelled_per_row():
    # SDM vol. 3A Figure 4-11 / Table 4-20: bits 51:12 of a PTE are bits 51:12
    # of the 4 KiB page's physical address, i.e. its frame number PA >> 12.
    # PA 0x12_3456_7000: PFN 0x1234567; drawn in 32-bit rows, bits 51:32 hold
    # PFN bits 39:20 (0x12) and bits 31:12 hold PFN bits 19:0 (0x34567).
    pa = 0x1234567000
    pte = PagingEntry.decode(pa | 0x63, "4level", 1)
    root = svg_root(pte.to_svg())
    boxes = _boxes(root)
    assert (boxes[51, 32]["name"], boxes[51, 32]["value"]) == ("PFN 39:20", "0x12")
    assert (boxes[31, 12]["name"], boxes[31, 12]["value"]) == ("PFN 19:0", "0x34567")
    # the legend names the whole field once, with the whole frame number
    legend = [line for line in texts(root, "legend") if "PFN" in line]
    assert len(legend) == 1 and hex(pa >> 12) in legend[0] and hex(pa) in legend[0]
    assert "Address" not in set(texts(root, "field-name"))


def _fills(value):
    return {r.get("data-name"): r.get("fill")
            for r in by_class(svg_root(value.to_svg()), "rect", "field")}


def test_dr7_fields_are_coloured_by_slot():
    # SDM vol. 3B §17.2.4: L0/G0 enable breakpoint 0, R/W0 and LEN0 say what it
    # watches: one slot, one colour; four slots, four colours.
    fills = _fills(DR7.decode(0xFFFF00FF))
    slots = []
    for n in range(4):
        colours = {fills["L%d" % n], fills["G%d" % n], fills["R/W%d" % n], fills["LEN%d" % n]}
        assert len(colours) == 1, n
        slots.append(colours.pop())
    assert len(set(slots)) == 4
    assert fills["GD"] not in slots and fills["LE"] not in slots
    # DR6's B0-B3 report the same slots (§17.2.3)
    dr6 = _fills(DR6.decode(0xFFFF0FFF))
    assert [dr6["B%d" % n] for n in range(4)] == slots


def test_each_field_has_one_colour_in_every_descriptor_picture():
    code = SegmentDescriptor.decode(0x00AF9B000000FFFF, mode="long")
    data = SegmentDescriptor.decode(0x00CF93000000FFFF, mode="legacy")
    tss = SegmentDescriptor.decode(0x00008B0030004087, 0xFFFFFE00, mode="long")
    idt_gate = SegmentDescriptor.decode(0x81C08E0000100990, 0xFFFFFFFF, mode="long")
    call_gate = SegmentDescriptor.decode(0x0000EC0000101000, mode="legacy")
    pictures = [_fills(v) for v in (code, data, tss, idt_gate, call_gate)]
    for name in ("P", "DPL", "S", "Type"):
        assert len({p[name] for p in pictures}) == 1, name
    for name in ("G", "D/B", "L", "AVL", "Limit 19:16"):
        assert len({p[name] for p in pictures[:3]}) == 1, name
    # the parts of a split field share the field's colour
    assert len({pictures[0][n] for n in ("Base 31:24", "Base 23:16", "Base 15:00")}) == 1
    assert len({pictures[3][n] for n in ("Offset 63:32", "Offset 31:16", "Offset 15:0")}) == 1
    # and fields side by side in Figure 3-8 stay apart
    order = ("Base 31:24", "G", "D/B", "L", "AVL", "Limit 19:16", "P", "DPL", "S", "Type",
             "Base 23:16")
    assert all(pictures[0][a] != pictures[0][b] for a, b in zip(order, order[1:]))


def test_notebook_view_lists_the_fields_once():
    # the picture (without its legend) and one table: every meaning once
    value = SegmentDescriptor.decode(0x00CF93000000FFFF, mode="legacy")
    root = parse_view(value._repr_html_(), str(value))
    svg = root.find(".//%ssvg" % SVG)
    assert not by_class(svg, "text", "legend")
    drawn = [e.text for e in svg.iter(SVG + "text")]          # not the tooltips
    cells = [td.text for td in root.iter("td")]
    for f in value.explanation_parts().fields:
        if f.role == "field":
            assert cells.count(f.meaning) == 1 and f.meaning not in drawn, f.meaning
    assert root.find(".//pre") is None
    # the standalone picture (slides) keeps its legend
    assert by_class(svg_root(value.to_svg()), "text", "legend")


def test_walk_view_is_the_picture_and_one_table(spaces):
    t = spaces["x86_64-4level"].translate(0xFFFFFFFF81000000)
    root = ET.fromstring(t._repr_html_())
    assert root.find(".//%ssvg" % SVG) is not None and root.find(".//pre") is None
    assert len(list(root.iter("table"))) == 1


def test_plain_text_views_are_monospace():
    # an exported notebook (nbconvert's HTML, a page without Jupyter's CSS)
    # must still line up text tables: the <pre> says monospace itself.
    from ksinspect.views.html import html_pre
    pre = ET.fromstring(html_pre("a  b\n" + HOSTILE))
    assert pre.tag == "pre" and "monospace" in pre.get("style")
    assert pre.text == "a  b\n" + HOSTILE
    # and every plain-text notebook view goes through it
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ksinspect")
    offenders = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith(".py") and not path.endswith(os.path.join("views", "html.py")):
                with open(path, encoding="utf-8") as fh:
                    if "<pre>" in fh.read():
                        offenders.append(path)
    assert offenders == []


@pytest.mark.parametrize("profile", ["x86_64-4level", "i386-pae"])
def test_address_map_names_the_kernel_regions_and_draws_the_split(spaces, profile):
    # Row names: Linux's mm.rst (x86-64) and pgtable_32_areas.h (i386); the
    # split: mm.rst's end of user space / i386's PAGE_OFFSET 0xc0000000
    # (QEMU's info mem has U pages below it only).
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ksinspect.render.address_map import plot_address_space
    symbols = SymbolTable.from_system_map(os.path.join(DATA, profile, "kallsyms.txt.xz"))
    fig = plot_address_space(spaces[profile], symbols=symbols, max_rows=40)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]      # row 0 (bottom) first
    starts = [int(re.search(r"0x[0-9a-f]+", label).group(0), 16) for label in labels]
    expected = {"x86_64-4level": {0xFFFF888000000000: "direct map", 0xFFFFC90000000000: "vmalloc",
                                  0xFFFFEA0000000000: "vmemmap",
                                  0xFFFFFE0000000000: "cpu_entry_area",
                                  0xFFFFFFFF81000000: "kernel text",
                                  0xFFFFFFFFC0000000: "modules"},
                # a row of its own at PAGE_OFFSET: the user stack just below is another
                "i386-pae": {0xC0000000: "direct map", 0xC1000000: "kernel text"}}[profile]
    for start, label in zip(starts, labels):
        if start in expected:
            assert label.startswith(expected[start]), label
    assert set(expected) <= set(starts)
    split = 0x0000800000000000 if profile.startswith("x86_64") else 0xC0000000
    for start, label in zip(starts, labels):
        assert label.startswith("user space") == (start < split), label
    lines = [line for line in ax.get_lines() if line.get_gid() == "user-kernel-split"]
    assert len(lines) == 1
    y = lines[0].get_ydata()[0]
    kernel_rows = sum(1 for s in starts if s >= split)
    assert y == kernel_rows - 0.5
    plt.close("all")


def test_address_map_split_without_symbols(spaces):
    # IA-32e: the canonical halves (SDM vol. 3A §3.3.7.1) split user from kernel
    # on any kernel; a 32-bit space's split depends on the kernel: none drawn.
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ksinspect.errors import UnsupportedError
    from ksinspect.render.address_map import plot_address_space
    gids = [line.get_gid() for line in plot_address_space(spaces["x86_64-5level"]).axes[0].get_lines()]
    assert gids.count("user-kernel-split") == 1
    gids = [line.get_gid() for line in plot_address_space(spaces["i386-2level"]).axes[0].get_lines()]
    assert "user-kernel-split" not in gids
    with pytest.raises(UnsupportedError):
        plot_address_space(spaces["i386-2level"], layout="windows")
    plt.close("all")
