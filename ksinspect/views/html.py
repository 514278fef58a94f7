"""HTML for Jupyter: values, walks and tables, every string escaped.

A notebook shows ``_repr_html_``; a front end that cannot (a terminal, an
untrusted notebook that strips the markup) falls back to ``repr``/``str``,
which stay plain text. Strings from a dump (symbol names, findings) are
hostile input: everything here goes through :func:`html.escape`.
"""
import html
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from .bitfield_svg import bitfield_svg
from .columns import (GDT_COLUMNS, IDT_COLUMNS, PUSH_COLUMNS, STEP_COLUMNS, TSS_COLUMNS,
                      ColumnSpec)
from .explanation import Explanation
from .walk_svg import walk_svg

STYLE = ("border-collapse:collapse;font-family:monospace;font-size:12px;text-align:left")
CELL = "border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top"
MAX_ROWS = 600   # a notebook cell stays readable; the rest is counted, not drawn


# Monospace said in the element itself: an exported notebook, a mail or a
# page whose stylesheet resets <pre> still lines the columns up.
PRE_STYLE = ("font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:12px;"
             "white-space:pre;line-height:1.35;text-align:left")


def html_pre(text: str) -> str:
    """A plain-text view (tables of text line up), safe for untrusted text."""
    return '<pre class="ksinspect-text" style="%s">%s</pre>' % (PRE_STYLE, html.escape(text))


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
    """A value in a notebook: the bit-field diagram, then its fields as one table.

    The fields are listed once: the diagram leaves out its legend (the
    table says the same), and the text form stays ``explain()``'s."""
    ordered = sorted(parts.fields, key=lambda f: -f.msb)
    rows = [(f.span, f.name, hex(f.value), f.meaning) for f in ordered]
    flagged = {i for i, f in enumerate(ordered) if f.mask & parts.anomaly_bits}
    return ('<div class="ksinspect-value">%s<p><b>%s</b><br/><small>Source: %s</small></p>%s%s'
            "</div>" % (bitfield_svg(parts, legend=False), esc(parts.title), esc(parts.source),
                        table_html(rows, ("Bits", "Field", "Value", "Meaning"),
                                   row_class=lambda i: "finding" if i in flagged else ""),
                        notes_html(parts.notes)))


def records_html(records: Sequence[dict], columns: Sequence[str], caption: str = "",
                 hex_columns: Sequence[str] = (), total: Optional[int] = None,
                 row_class: Optional[Callable[[int], str]] = None) -> str:
    """Rows of dicts (``to_dict()`` output, or a column spec's records) as a
    table; ints in hex where asked, booleans yes/no, lists comma-separated."""
    def cell(record: dict, column: str) -> Any:
        value = record.get(column)
        if isinstance(value, bool) or value is None:
            return "" if value is None else ("yes" if value else "no")
        if isinstance(value, int) and column in hex_columns:
            return "%#x" % value
        if isinstance(value, (list, tuple)):
            return ", ".join(str(v) for v in value)
        return value
    return table_html(([cell(r, c) for c in columns] for r in records), columns, caption, total,
                      row_class)


def spec_html(spec: ColumnSpec, rows: Sequence[Any], caption: str = "",
              row_class: Optional[Callable[[int], str]] = None) -> str:
    """Rows laid out by their column spec (:mod:`.columns`), as the CLI lays them out."""
    records = spec.records(rows[:MAX_ROWS])
    for column in spec.columns:
        for record in records:
            value = record[column.name]
            if isinstance(value, (list, tuple)):
                record[column.name] = column.separator.join(str(v) for v in value)
    return records_html(records, spec.names, caption, spec.hex_columns, len(rows), row_class)


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
    """A page walk in a notebook: the walk diagram, each step as a table row,
    and the outcome (the last paragraph of ``explain()``: rights with CR0.WP,
    anomalies) as notes; the steps are not repeated as text."""
    rows = [(step.name, step.index, "%#x" % step.address, "%#x" % step.value, str(step.entry))
            for step in t.path]
    outcome = t.explain().rsplit("\n\n", 1)[-1].splitlines() if t.path else []
    return '<div class="ksinspect-walk">%s%s%s</div>' % (
        walk_svg(t), table_html(rows, ("Entry", "Index", "At (physical)", "Value", "Meaning"))
        if rows else "", notes_html(outcome))


# -- one notebook layout per kind of value ------------------------------------------------
# Each takes the value as its argument (views import no value module); the
# value's _repr_html_ is one call to it.


def text_html(value: Any) -> str:
    """A value whose notebook view is its ``explain()`` text, escaped in a ``<pre>``."""
    return html_pre(value.explain())


def access_html(result: Any) -> str:
    """An access (ksinspect.access.AccessResult): its line, each check, the notes."""
    return '<div class="ksinspect-access"><p><b>%s</b></p>%s%s</div>' % (
        esc(str(result)), records_html([s.to_dict() for s in result.steps], STEP_COLUMNS),
        notes_html(result.notes))


def transfer_html(result: Any) -> str:
    """A control transfer (ksinspect.transfer.values.TransferResult): its line, each check,
    what was pushed, the notes."""
    pushed = records_html([p.to_dict() for p in result.pushed], PUSH_COLUMNS,
                          "pushed, in order", ("value", "address")) if result.pushed else ""
    return '<div class="ksinspect-transfer"><p><b>%s</b></p>%s%s%s</div>' % (
        esc(str(result)), records_html(result.rows(), STEP_COLUMNS), pushed,
        notes_html(result.notes))


def tss_html(tss: Any) -> str:
    """A TSS (ksinspect.x86.tss.TaskStateSegment): its line, each field, the I/O
    bitmap summary, the anomalies and what a task switch would load."""
    return '<div class="ksinspect-tss"><p><b>%s</b></p>%s%s</div>' % (
        esc(str(tss)), records_html(tss.rows(), TSS_COLUMNS, tss.source, ("offset", "value")),
        notes_html([tss.io_summary()] + tss.anomalies() + tss.task_switch()))


def tss_report_html(report: Any) -> str:
    """A TSS found in an image (ksinspect.task.TssReport): the TSS, how it was found,
    the findings."""
    return tss_html(report.tss) + "<p>Found: %s</p>%s" % (
        esc(report.how), notes_html(str(f) for f in report.findings))


def _table_caption(name: str, table: Any) -> str:
    return "%s (%s mode)%s" % (name, table.mode.value,
                               "" if table.base is None else " at %#x" % table.base)


def _findings_row(entries: Sequence[Any]) -> Callable[[int], str]:
    return lambda i: "finding" if entries[i].findings else ""


def descriptor_table_html(table: Any) -> str:
    """A GDT or LDT (ksinspect.tables.DescriptorTable), one row per descriptor, in
    the columns of ``ksinspect gdt`` (:data:`.columns.GDT_COLUMNS`)."""
    return '<div class="ksinspect-table">%s%s</div>' % (
        spec_html(GDT_COLUMNS, table.entries, _table_caption(table.table, table),
                  _findings_row(table.entries)),
        notes_html(table.notes))


def interrupt_table_html(table: Any) -> str:
    """An IDT (ksinspect.tables.InterruptTable), one row per vector, in the columns
    of ``ksinspect idt`` (:data:`.columns.IDT_COLUMNS`)."""
    return '<div class="ksinspect-table">%s%s</div>' % (
        spec_html(IDT_COLUMNS, table.entries, _table_caption("IDT", table),
                  _findings_row(table.entries)),
        notes_html(table.notes))
