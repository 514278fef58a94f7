"""Command-line output: text tables, JSON, JSON lines and CSV (here), and
``address_map`` (matplotlib maps of a whole address space; optional: it
reads the space, so it sits above paging rather than in the views). The
bit-field and walk SVGs and the notebook HTML are :mod:`ksinspect.views`'.

A command hands over *records* (flat dicts, one per row) and, for JSON, a
*document* (the natural JSON shape); hex is a display hint applied only by
the table and CSV renderers (addresses in hex, as the path column of vtop
always was), so JSON keeps integers as integers. CSV booleans are true/false
as in JSON; tables say yes/no.

Which columns are hex is decided here once, by name (:data:`ADDRESS_COLUMNS`:
addresses, sizes, limits, selectors, raw bits), for every command: a command
names only its other hex columns (a vector, a flags word). A new command whose
columns use these names follows the convention without asking.
"""
import csv
import json
from typing import IO, Any, Iterable, List, Optional, Sequence

from ..safe_text import printable
from ..views.text import cell as _cell
from ..views.text import table as _table

FORMATS = ("table", "json", "jsonl", "csv")

# Columns printed in hex in tables and CSV, whatever the command: addresses
# (linear, physical, file and structure offsets, pointers, register values
# that hold addresses), sizes and limits, selectors and raw descriptor bits.
ADDRESS_COLUMNS = frozenset((
    "va", "pa", "start", "end", "address", "base", "physical", "page_start", "offset", "rva",
    "cr3", "dtb", "eprocess", "peb", "teb", "wow64", "entry_point", "image_base",
    "kernel_base", "gdtr_base", "idtr_base", "ist_address", "stack_start",
    "stack_base", "stack_limit",
    "ip", "sp", "rip", "rsp", "rbp", "eip", "esp", "wow64_eip", "self",
    "cs", "ss", "eflags", "rflags", "dr6", "dr7",
    "frame", "range",
    "size", "page_size", "limit", "raw_limit", "stack_size",
    "selector", "raw", "raw_high", "reserved_bits",
))


def hex_set(hex_columns: Sequence[str] = ()) -> frozenset:
    """The columns shown in hex: :data:`ADDRESS_COLUMNS` and the command's own."""
    return ADDRESS_COLUMNS.union(hex_columns)


def table(records: Sequence[dict], columns: Sequence[str], hex_columns: Sequence[str] = (),
          headers: Optional[Sequence[str]] = None) -> str:
    """A text table (tabulate's ``simple``): booleans yes/no, the address
    columns and ``hex_columns`` in hex, strings escaped."""
    hexes = hex_set(hex_columns)
    listed = [c for c in columns if c in hexes and any(_int_list(r.get(c)) for r in records)]
    if listed:       # a list of addresses (a range): each in hex
        records = [dict(r, **{c: ["%#x" % v for v in r[c]] for c in listed if _int_list(r.get(c))})
                   for r in records]
    return _table(records, columns, hexes, headers)


def _int_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)


def printable_lines(text: str) -> str:
    """A multi-line text output with the control characters of each line
    escaped (the line breaks themselves are the output's own)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def csv_cell(value: Any, column: str, hex_columns: Sequence[str] = ()) -> Any:
    """One CSV cell of ``column`` by the CSV convention (for writers that
    stream their own rows, as triage does)."""
    return _csv_value(value, column in ADDRESS_COLUMNS or column in hex_columns)


def _csv_value(value: Any, hex_column: bool = False) -> Any:
    """One CSV cell: the conventions of JSON for booleans (true/false) and of
    the table for addresses (hex in the columns the command names as hex)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if hex_column and isinstance(value, int):
        return "%#x" % value
    if hex_column and _int_list(value):
        return ";".join("%#x" % v for v in value)
    if isinstance(value, (list, tuple)) and any(isinstance(v, dict) for v in value):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def emit(stream: IO[str], fmt: str, records: Sequence[dict], document: Any = None,
         text: Optional[str] = None, columns: Optional[Sequence[str]] = None,
         hex_columns: Sequence[str] = ()) -> None:
    """Write one command's result in the chosen format.

    Args:
        records: flat rows for csv / jsonl / table.
        document: the JSON shape for ``json`` (defaults to the records).
        text: what ``table`` prints instead of a table (e.g. an explanation).
        columns: the record keys shown, in order (default: the first record's).
    """
    hex_columns = hex_set(hex_columns)
    if fmt == "json":
        json.dump(records if document is None else document, stream, indent=2)
        stream.write("\n")
    elif fmt == "jsonl":
        for record in records:
            stream.write(json.dumps(record) + "\n")
    elif fmt == "csv":
        cols = list(columns or (records[0].keys() if records else []))
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(cols)
        for record in records:
            writer.writerow([_csv_value(record.get(c), c in hex_columns) for c in cols])
    elif text is not None:
        stream.write(printable_lines(text.rstrip("\n")) + "\n")
    else:
        cols = list(columns or (records[0].keys() if records else []))
        stream.write(table(records, cols, hex_columns) + "\n")



def emit_stream(stream: IO[str], fmt: str, records: Iterable[dict], columns: Sequence[str],
                widths: Sequence[int], hex_columns: Sequence[str] = ()) -> int:
    """Write records as they come (a listing too long to hold: ``maps``).

    ``json`` writes the same document :func:`emit` does, element by element;
    ``jsonl`` and ``csv`` one line per record; ``table`` the layout of
    tabulate's ``simple`` format with column widths fixed in advance
    (``widths``: the widest cell each column can hold), so the first row is
    printed before the last one is known. Returns the number of records.
    """
    count = 0
    hex_columns = hex_set(hex_columns)
    if fmt == "json":
        for record in records:
            body = json.dumps(record, indent=2).replace("\n", "\n  ")
            stream.write(("[\n  " if count == 0 else ",\n  ") + body)
            count += 1
        stream.write("\n]\n" if count else "[]\n")
    elif fmt == "jsonl":
        for record in records:
            stream.write(json.dumps(record) + "\n")
            count += 1
    elif fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(columns)
        for record in records:
            writer.writerow([_csv_value(record.get(c), c in hex_columns) for c in columns])
            count += 1
    else:
        # tabulate "simple": each column as wide as its widest cell, or its
        # header plus two; columns apart by two spaces; no trailing blanks.
        sizes = [max(w, len(c) + 2) for c, w in zip(columns, widths)]
        line = "  ".join
        stream.write(line(c.ljust(w) for c, w in zip(columns, sizes)).rstrip() + "\n")
        stream.write(line("-" * w for w in sizes) + "\n")
        for record in records:
            stream.write(line(_cell(record.get(c), hex_columns, c).ljust(w)
                              for c, w in zip(columns, sizes)).rstrip() + "\n")
            count += 1
    return count


__all__: List[str] = ["ADDRESS_COLUMNS", "FORMATS", "csv_cell", "emit", "emit_stream",
                      "hex_set", "printable_lines", "table"]
