"""Bit-field diagrams: a register or table entry drawn as the manual draws it.

The input is an :class:`ksinspect.views.explanation.Explanation` (title, source,
fields, notes, anomaly mask), the same parts ``explain()`` prints, so the
layout has one source: each value type's ``fields()``. Bits run from the
most significant on the left, 32 per row (16 for a selector); a field that
crosses a row boundary is drawn in both rows. Meaningful fields are
coloured; reserved bits are grey and hatched, ignored bits dotted;
fields behind an anomaly are red. Each field has one colour in every
picture, chosen by its name (:mod:`.colours`). A field that crosses a row
boundary is labelled in each row with the part it holds there and that
part's own value (``PFN 39:20``, ``PFN 19:0``), as the manual labels the
parts of a split field. Below the rows, one legend line per field gives
its bits, whole value and meaning, then the notes; the notebook view
leaves the legend out (``legend=False``), since its table says the same.

Element classes, for tests and styling: ``field`` (one rect per field
segment, with ``data-name``, ``data-msb``, ``data-lsb``, ``data-role``),
``bitnum`` (the bit numbers on the scale), ``field-name``, ``field-value``,
``legend``, ``note``. A segment of a split field also carries
``data-part-msb`` and ``data-part-lsb`` (the part's bits within the field).
"""
from typing import List, Sequence, Tuple

from .colours import field_colour
from .explanation import BitField, Explanation
from . import _svg
from ._svg import esc

MARGIN = 16
ROW_HEIGHT = 44
ROW_GAP = 30          # room for the bit numbers above each row
LEGEND_SIZE = 11
LINE = 16


def _row_bits(total: int) -> int:
    return 16 if total <= 16 else 32


_SHORT = {"Reserved": ("Rsvd", "Rsv", "R"), "Ignored": ("Ign", "I"), "Zero": ("0",)}


def _label(name: str, room: float) -> str:
    """The field's name, or the manual's usual abbreviation when it does not fit."""
    for candidate in (name,) + _SHORT.get(name, ()):
        if _svg.text_width(candidate, 11) <= room:
            return candidate
    return _svg.fit(name, room, 11)


def _display_value(f: BitField, width: int, value: int) -> str:
    """Narrow fields in binary (as wide as the bits), wider ones in hex."""
    return format(value, "0%db" % width) if f.width <= 4 else "%#x" % value


def _segments(f: BitField, row_bits: int, total: int) -> List[Tuple[int, int, int]]:
    """(row, msb, lsb) pieces of a field, one per row it touches."""
    pieces = []
    msb = f.msb
    while msb >= f.lsb:
        row = (total - 1 - msb) // row_bits
        row_low = total - (row + 1) * row_bits
        lsb = max(f.lsb, row_low)
        pieces.append((row, msb, lsb))
        msb = lsb - 1
    return pieces


def _fill(f: BitField, anomalous: bool, colour: str) -> str:
    if anomalous:
        return "url(#ksi-anomaly)"
    if f.role == "reserved":
        return "url(#ksi-reserved)"
    if f.role == "ignored":
        return "url(#ksi-ignored)"
    return colour


def _colours(fields: Sequence[BitField]) -> List[str]:
    return [field_colour(f.name) if f.role == "field" else "#ffffff" for f in fields]


def _part(f: BitField, msb: int, lsb: int) -> Tuple[str, int]:
    """The label and value of the bits msb..lsb of a split field."""
    top, bottom = msb - f.lsb, lsb - f.lsb
    value = (f.value >> bottom) & ((1 << (top - bottom + 1)) - 1)
    return "%s %d:%d" % (f.name, top, bottom), value


def bitfield_svg(parts: Explanation, legend: bool = True) -> str:
    """Draw the fields of one value as a standalone SVG document.

    Args:
        legend: add one line per field (bits, value, meaning) and the notes
            below the rows; a view that shows them in a table leaves it out.
    """
    fields = sorted(parts.fields, key=lambda f: -f.msb)
    total = parts.bit_width
    row_bits = _row_bits(total)
    rows = max(1, -(-total // row_bits))
    cell = 26 if row_bits == 32 else 40
    width = 2 * MARGIN + row_bits * cell
    columns = int((width - 2 * MARGIN) / (LEGEND_SIZE * _svg.CHAR_WIDTH))
    body: List[str] = []

    y = MARGIN + 12
    for line in _svg.wrap(parts.title, int(columns * LEGEND_SIZE / 13)):
        body.append(_svg.text(MARGIN, y, line, 13, weight="bold", cls="title"))
        y += 17
    body.append(_svg.text(MARGIN, y, "Source: " + parts.source, 10, cls="source", fill="#555"))
    y += 8
    top = y + ROW_GAP
    colours = _colours(fields)

    numbered = set()
    for f, colour in zip(fields, colours):
        anomalous = bool(f.mask & parts.anomaly_bits)
        pieces = _segments(f, row_bits, total)
        for row, msb, lsb in pieces:
            if len(pieces) > 1 and f.role == "field":
                label, value = _part(f, msb, lsb)
                part = ' data-part-msb="%d" data-part-lsb="%d"' % (msb - f.lsb, lsb - f.lsb)
            else:
                label, value, part = f.name, f.value, ""
            row_top = top + row * (ROW_HEIGHT + ROW_GAP)
            row_msb = total - 1 - row * row_bits
            x = MARGIN + (row_msb - msb) * cell
            w = (msb - lsb + 1) * cell
            stroke = (' stroke="%s" stroke-width="2.5"' % _svg.ANOMALY if anomalous
                      else ' stroke="%s" stroke-width="1"' % _svg.EDGE)
            body.append('<rect class="field%s" data-name="%s" data-msb="%d" data-lsb="%d" '
                        'data-role="%s"%s x="%.1f" y="%.1f" width="%.1f" height="%d" fill="%s"%s>'
                        '<title>%s</title></rect>' % (
                            " anomaly" if anomalous else "", esc(f.name), msb, lsb, f.role,
                            part, x, row_top, w, ROW_HEIGHT, _fill(f, anomalous, colour), stroke,
                            esc("%s %s = %s: %s" % (f.span, f.name, hex(f.value), f.meaning))))
            cx = x + w / 2
            name = _label(label, w - 4)
            if name:
                body.append(_svg.text(cx, row_top + 18, name, 11, "middle", "field-name",
                                      weight="bold" if f.role == "field" else "normal",
                                      fill=_svg.ANOMALY if anomalous else "#222"))
            shown = _svg.fit(_display_value(f, msb - lsb + 1, value), w - 4, 10)
            if shown:
                body.append(_svg.text(cx, row_top + 35, shown, 10, "middle", "field-value",
                                      fill="#333"))
            for bit in (msb, lsb):
                if (row, bit) in numbered:
                    continue
                numbered.add((row, bit))
                bx = MARGIN + (row_msb - bit) * cell + cell / 2
                body.append(_svg.text(bx, row_top - 5, str(bit), 9, "middle", "bitnum",
                                      fill="#444"))

    y = top + rows * (ROW_HEIGHT + ROW_GAP) - ROW_GAP + 22
    if not legend:
        return _svg.document(width, int(y - 8), body, parts.title)
    span_width = max(len(f.span) for f in fields)
    name_width = max(len(f.name) for f in fields)
    value_width = max(len(hex(f.value)) for f in fields)
    indent = span_width + name_width + value_width + 6
    for f, colour in zip(fields, colours):
        anomalous = bool(f.mask & parts.anomaly_bits)
        head = "%-*s %-*s %-*s " % (span_width, f.span, name_width, f.name, value_width,
                                    hex(f.value))
        lines = _svg.wrap(f.meaning, max(columns - indent - 3, 20))
        body.append('<rect x="%d" y="%.1f" width="10" height="10" fill="%s" stroke="%s"/>' % (
            MARGIN, y - 9, _fill(f, anomalous, colour), _svg.ANOMALY if anomalous else _svg.EDGE))
        for i, line in enumerate(lines):
            content = (head if i == 0 else " " * len(head)) + line
            body.append('<text class="legend" x="%d" y="%.1f" font-size="%d" fill="%s" '
                        'xml:space="preserve">%s</text>' % (
                            MARGIN + 16, y, LEGEND_SIZE, _svg.ANOMALY if anomalous else "#222",
                            esc(content)))
            y += LINE
    if parts.notes:
        y += 4
        for note in parts.notes:
            for i, line in enumerate(_svg.wrap(note, columns - 2)):
                body.append(_svg.text(MARGIN, y, ("* " if i == 0 else "  ") + line, 10,
                                      cls="note", fill="#444"))
                y += 14
    height = int(y + MARGIN - 6)
    return _svg.document(width, height, body, parts.title)
