"""Output renderers: text tables, JSON, JSON lines and CSV (here); pictures
and notebook views in the submodules: ``bitfield_svg`` (a value's bits),
``walk_svg`` (a page walk), ``html`` (escaped HTML views and tables),
``address_map`` (matplotlib maps of an address space; optional).

A command hands over *records* (flat dicts, one per row) and, for JSON, a
*document* (the natural JSON shape); hex is a display hint applied only by
the table renderer, so JSON and CSV keep integers as integers.
"""
import csv
import json
from typing import IO, Any, List, Optional, Sequence

from tabulate import tabulate

FORMATS = ("table", "json", "jsonl", "csv")


def _cell(value: Any, hex_columns: Sequence[str], column: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and column in hex_columns:
        return "%#x" % value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def table(records: Sequence[dict], columns: Sequence[str], hex_columns: Sequence[str] = (),
          headers: Optional[Sequence[str]] = None) -> str:
    rows = [[_cell(r.get(c), hex_columns, c) for c in columns] for r in records]
    return tabulate(rows, headers=list(headers or columns), disable_numparse=True,
                    tablefmt="simple")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
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
            writer.writerow([_csv_value(record.get(c)) for c in cols])
    elif text is not None:
        stream.write(text.rstrip("\n") + "\n")
    else:
        cols = list(columns or (records[0].keys() if records else []))
        stream.write(table(records, cols, hex_columns) + "\n")




__all__: List[str] = ["FORMATS", "emit", "table"]
