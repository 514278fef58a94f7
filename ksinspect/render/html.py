"""HTML for Jupyter: values, walks and tables, every string escaped.

A notebook shows ``_repr_html_``; a front end that cannot (a terminal, an
untrusted notebook that strips the markup) falls back to ``repr``/``str``,
which stay plain text. Strings from a dump (symbol names, findings) are
hostile input: everything here goes through :func:`html.escape`.
"""
import html
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from ..x86._bits import Explanation

STYLE = ("border-collapse:collapse;font-family:monospace;font-size:12px;text-align:left")
CELL = "border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top"
MAX_ROWS = 600   # a notebook cell stays readable; the rest is counted, not drawn


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def table_html(rows: Iterable[Sequence[Any]], headers: Sequence[str], caption: str = "",
               total: Optional[int] = None, row_class: Optional[Callable[[int], str]] = None
               ) -> str:
    """An HTML table with escaped cells (and header and caption).

    Args:
        rows: cell values (shown with ``str``; None as empty).
        total: the number of rows in all, when ``rows`` holds only the first ones.
        row_class: an optional CSS class per row index (e.g. to mark findings).
    """
    body: List[str] = []
    shown = 0
    for i, row in enumerate(rows):
        if i >= MAX_ROWS:
            break
        cls = row_class(i) if row_class else ""
        style = ' style="background:#fdecea"' if cls == "finding" else ""
        body.append("<tr%s%s>%s</tr>" % (' class="%s"' % esc(cls) if cls else "", style,
                                         "".join('<td style="%s">%s</td>' % (CELL, esc(c))
                                                 for c in row)))
        shown += 1
    more = ""
    if total is not None and total > shown:
        more = "<p>%d more rows not shown (%d in all).</p>" % (total - shown, total)
    head = "".join('<th style="%s">%s</th>' % (CELL, esc(h)) for h in headers)
    cap = "<caption style=\"text-align:left;font-weight:bold\">%s</caption>" % esc(caption) \
        if caption else ""
    return ('<table class="ksinspect" style="%s">%s<thead><tr>%s</tr></thead><tbody>%s'
            "</tbody></table>%s" % (STYLE, cap, head, "".join(body), more))


def notes_html(notes: Iterable[str]) -> str:
    items = "".join("<li>%s</li>" % esc(n) for n in notes)
    return "<ul class=\"notes\">%s</ul>" % items if items else ""


def explanation_html(parts: Explanation) -> str:
    """A value in a notebook: the bit-field diagram, then its fields as a table."""
    from .bitfield_svg import bitfield_svg
    ordered = sorted(parts.fields, key=lambda f: -f.msb)
    rows = [(f.span, f.name, hex(f.value), f.meaning) for f in ordered]
    flagged = {i for i, f in enumerate(ordered) if f.mask & parts.anomaly_bits}
    return ('<div class="ksinspect-value">%s<p><b>%s</b><br/><small>Source: %s</small></p>%s%s'
            "</div>" % (bitfield_svg(parts), esc(parts.title), esc(parts.source),
                        table_html(rows, ("Bits", "Field", "Value", "Meaning"),
                                   row_class=lambda i: "finding" if i in flagged else ""),
                        notes_html(parts.notes)))


def records_html(records: Sequence[dict], columns: Sequence[str], caption: str = "",
                 hex_columns: Sequence[str] = (), total: Optional[int] = None) -> str:
    """Rows of dicts (``to_dict()`` output) as a table; ints in hex where asked."""
    def cell(record: dict, column: str) -> Any:
        value = record.get(column)
        if isinstance(value, bool) or value is None:
            return "" if value is None else ("yes" if value else "no")
        if isinstance(value, int) and column in hex_columns:
            return "%#x" % value
        if isinstance(value, (list, tuple)):
            return ", ".join(str(v) for v in value)
        return value
    return table_html(([cell(r, c) for c in columns] for r in records), columns, caption, total)


def batch_html(batch: Sequence[Any], caption: str) -> str:
    """A DecodedBatch (descriptors, paging entries, translations): one line per row."""
    n = len(batch)

    def row(i: int) -> Tuple[int, str, str]:
        value = batch[i]
        address = getattr(value, "address", None)
        return i, "" if address is None else "%#x" % address, str(value)
    return table_html((row(i) for i in range(min(n, MAX_ROWS))), ("#", "Address", "Value"),
                      caption, n)


def translation_html(t: Any) -> str:
    """A page walk in a notebook: the walk diagram, then each step as a table row."""
    from .walk_svg import walk_svg
    rows = [(step.name, step.index, "%#x" % step.address, "%#x" % step.value, str(step.entry))
            for step in t.path]
    return ('<div class="ksinspect-walk">%s%s<pre>%s</pre></div>' % (
        walk_svg(t), table_html(rows, ("Entry", "Index", "At (physical)", "Value", "Meaning")),
        esc(t.explain())))
