"""Walk diagrams: CR3 -> each paging level -> the page, for one Translation
(a :class:`ksinspect.paging.Translation`, taken as an argument: views import
no value module).

At the top the linear address is cut into the fields the walk used (SDM
vol. 3A Figures 4-2, 4-5, 4-8 to 4-10): the sign-extension bits of an
IA-32e address, one index per level, the page offset. Each index is
coloured like the table entry it selected; indices a large page turned
into offset bits, and those below a level where the walk stopped, are
drawn as such. Below, one box per entry read (its physical address, its
value, what it says, its flag bits), then the page and the physical
address, or the reason the walk stopped.

Element classes: ``va-field`` (``data-role`` sign / index / offset /
unused, ``data-level``), ``bitnum``, ``walk-step`` (``data-level``),
``flag`` (``data-flag``, ``data-set``), ``walk-result``.
"""
from typing import Any, List, Optional, Tuple

from ..modes import PagingMode, size_text
from . import _svg

MARGIN = 16
WIDTH = 900
BOX_GAP = 24
LEVEL_COLOURS = {5: "#d9d2e9", 4: "#c9daf8", 3: "#d9ead3", 2: "#fff2cc", 1: "#fce5cd"}
OFFSET_COLOUR = "#d0e0e3"


def _va_fields(t: Any) -> List[Tuple[str, int, int, Optional[int], str]]:
    """(role, msb, lsb, level, label) for each piece of the linear address."""
    facts = t.mode.facts
    va_bits = facts.va_bits
    read = {step.level for step in t.path}
    if t.pa is not None:
        offset_bits = t.page_size.bit_length() - 1
    else:
        offset_bits = 12
    pieces = []
    if 32 < va_bits < 64:
        pieces.append(("sign", 63, va_bits, None, "sign ext."))
    for level in facts.table:
        msb, lsb = level.shift + level.bits - 1, level.shift
        if msb < offset_bits:
            continue                # a large page: these bits are offset bits
        role = "index" if level.number in read else "unused"
        pieces.append((role, msb, lsb, level.number, level.entry_name))
    pieces.append(("offset", offset_bits - 1, 0, None, "offset" if offset_bits == 12 else
                   "offset in the %s page" % size_text(1 << offset_bits)))
    return pieces


def _flags(t: Any, step) -> List[Tuple[str, bool]]:
    entry = step.entry
    if t.mode is PagingMode.PAE and step.level == 3:
        chips = [("P", entry.present), ("PWT", entry.pwt), ("PCD", entry.pcd)]
    else:
        chips = [("P", entry.present), ("R/W", entry.writable), ("U/S", entry.user),
                 ("PWT", entry.pwt), ("PCD", entry.pcd), ("A", entry.accessed)]
        if entry.leaf:
            chips += [("D", entry.dirty)]
        if step.level > 1:
            chips += [("PS", entry.large)]
        if entry.leaf:
            chips += [("G", entry.global_)]
    if t.mode is not PagingMode.BITS32:
        chips.append(("XD", entry.nx))
    return chips


def walk_svg(t: Any) -> str:
    """Draw one translation as a standalone SVG document."""
    mode = t.mode
    facts = mode.facts
    va_bits = facts.va_bits
    body: List[str] = []
    y = MARGIN + 12
    body.append(_svg.text(MARGIN, y, _svg.fit(str(t), WIDTH - 2 * MARGIN, 13), 13,
                          weight="bold", cls="title"))
    y += 16
    body.append(_svg.text(MARGIN, y, facts.walk_source, 10, cls="source", fill="#555"))
    y += 14
    digits = 8 if va_bits == 32 else 16
    body.append(_svg.text(MARGIN, y + 10, "linear address %#0*x" % (digits + 2, t.va), 12,
                          cls="va"))
    y += 40

    # -- the linear address, cut into its fields -----------------------------------
    sign_width = 0 if va_bits == 32 else 84
    cell = (WIDTH - 2 * MARGIN - sign_width) / va_bits
    bar_top = y
    colour_of = {}
    for role, msb, lsb, level, label in _va_fields(t):
        if role == "sign":
            x, w = MARGIN, sign_width
        else:
            x = MARGIN + sign_width + (va_bits - 1 - msb) * cell
            w = (msb - lsb + 1) * cell
        value = (t.va >> lsb) & ((1 << (msb - lsb + 1)) - 1)
        if role == "sign":
            fill = "url(#ksi-reserved)"
        elif role == "offset":
            fill = OFFSET_COLOUR
        elif role == "index":
            fill = colour_of.setdefault(level, LEVEL_COLOURS[level])
        else:
            fill = "#ffffff"
        body.append('<rect class="va-field" data-role="%s" data-level="%s" data-msb="%d" '
                    'data-lsb="%d" x="%.1f" y="%.1f" width="%.1f" height="40" fill="%s" '
                    'stroke="%s"/>' % (role, "" if level is None else level, msb, lsb, x,
                                       bar_top, w, fill, _svg.EDGE))
        body.append(_svg.text(x + w / 2, bar_top + 16, _svg.fit(label, w - 4, 10), 10, "middle",
                              "va-label", fill="#888" if role == "unused" else "#222"))
        shown = "%#x" % value if role in ("sign", "offset") else str(value)
        body.append(_svg.text(x + w / 2, bar_top + 32, _svg.fit(shown, w - 4, 10), 10, "middle",
                              "va-value", weight="bold" if role == "index" else "normal",
                              fill="#888" if role == "unused" else "#222"))
        for bit, bx in ((msb, x + 2), (lsb, x + w - 2)):
            if role == "sign" and bit == 63:
                continue
            body.append(_svg.text(bx, bar_top - 4, str(bit), 9,
                                  "start" if bit == msb and msb != lsb else "end", "bitnum",
                                  fill="#444"))
    if 32 < va_bits < 64:
        body.append(_svg.text(MARGIN + 2, bar_top - 4, "63", 9, cls="bitnum", fill="#444"))
    y = bar_top + 40 + 22

    # -- CR3 and the entries read --------------------------------------------------
    box_width = WIDTH - 2 * MARGIN
    top = facts.table[0]
    table_kind = "PDPT (32 bytes)" if mode is PagingMode.PAE else top.table_short
    cr3 = "CR3 = %#x" % t.cr3 if t.cr3 is not None else "CR3"
    cr3_lines = [cr3, "names the %s at physical %#x" % (table_kind, _root(t)) if t.path
                 else "no entry read: %s" % (t.error or t.reason)]
    y = _box(body, y, box_width, "#eeeeee", cr3_lines, "walk-root", None)
    for step in t.path:
        y = _arrow(body, y)
        level = facts.level(step.level)
        entry = step.entry
        lines = ["%s[%d]  (linear bits %d:%d)  at physical %#x = %#0*x" % (
            step.name, step.index, level.shift + level.bits - 1, level.shift, step.address,
            10 if mode is PagingMode.BITS32 else 18, step.value), str(entry)]
        failed = t.pa is None and step is t.path[-1]
        y = _box(body, y, box_width, LEVEL_COLOURS[step.level], lines, "walk-step", step.level,
                 _flags(t, step), failed)
    y = _arrow(body, y)
    if t.pa is not None:
        offset = t.va & (t.page_size - 1)
        lines = ["%s page at physical %#x + offset %#x = physical address %#x" % (
            size_text(t.page_size), t.pa - offset, offset, t.pa),
            "effective rights (§4.6: R/W and U/S AND-ed, XD OR-ed over the levels): "
            "%s%s%s %s" % ("r", "w" if t.writable else "-", "-" if t.nx else "x",
                           "user" if t.user else "supervisor")]
        y = _box(body, y, box_width, OFFSET_COLOUR, lines, "walk-result", None)
    else:
        y = _box(body, y, box_width, "#fadbd8", ["not mapped", t.error or t.reason],
                 "walk-result", None, failed=True)
    return _svg.document(WIDTH, int(y + MARGIN), body, str(t))


def _root(t: Any) -> int:
    """The top table's physical address: the first entry's table base."""
    if not t.path:
        return 0
    first = t.path[0]
    return first.address - first.index * t.mode.entry_size


def _arrow(body: List[str], y: float) -> float:
    x = MARGIN + 30
    body.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#444" stroke-width="1.5"/>'
                % (x, y, x, y + BOX_GAP - 6))
    body.append('<polygon points="%d,%.1f %d,%.1f %d,%.1f" fill="#444"/>' % (
        x - 5, y + BOX_GAP - 8, x + 5, y + BOX_GAP - 8, x, y + BOX_GAP - 1))
    return y + BOX_GAP


def _box(body: List[str], y: float, width: float, colour: str, lines: List[str], cls: str,
         level: Optional[int], flags: Optional[List[Tuple[str, bool]]] = None,
         failed: bool = False) -> float:
    height = 22 + 16 * len(lines) + (20 if flags else 0) - 12
    stroke = _svg.ANOMALY if failed else _svg.EDGE
    body.append('<rect class="%s" data-level="%s" x="%d" y="%.1f" width="%.1f" height="%d" '
                'rx="4" fill="%s" stroke="%s" stroke-width="%s"/>' % (
                    cls, "" if level is None else level, MARGIN, y, width, height, colour,
                    stroke, "2.5" if failed else "1"))
    ty = y + 16
    for i, line in enumerate(lines):
        body.append(_svg.text(MARGIN + 8, ty, _svg.fit(line, width - 16, 11), 11,
                              weight="bold" if i == 0 else "normal",
                              fill=_svg.ANOMALY if failed and i > 0 else "#222"))
        ty += 16
    if flags:
        x = MARGIN + 8
        for name, on in flags:
            w = 10 + len(name) * 7
            body.append('<rect class="flag" data-flag="%s" data-set="%d" x="%d" y="%.1f" '
                        'width="%d" height="15" rx="3" fill="%s" stroke="#666"/>' % (
                            _svg.esc(name), on, x, ty - 11, w, "#6aa84f" if on else "#ffffff"))
            body.append(_svg.text(x + w / 2, ty, name, 10, "middle", "flag-name",
                                  fill="#ffffff" if on else "#666"))
            x += w + 5
    return y + height
