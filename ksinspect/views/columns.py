"""One column spec per kind of row: the columns a table of those rows shows,
in the terminal (``ksinspect gdt``, ``ksinspect idt``) and in a notebook
(the table's ``_repr_html_``) alike.

A spec names each column, says how its cell is read from a row and whether
an integer cell is shown in hex; :meth:`ColumnSpec.records` turns rows into
the flat records the text table (:func:`ksinspect.render.table`) and the
HTML table (:func:`ksinspect.views.html.records_html`) lay out. The rows
are taken as arguments (views import no value module): a GDT/LDT row is a
``ksinspect.tables.TableEntry``, an IDT row a ``ksinspect.tables.IdtEntry``,
a module row a ``ksinspect.windows.peb.Module``.

The GDT columns are WinDbg's ``dg`` columns (Sel, Base, Limit, Type, Pl,
Size, Gran, Pres, Long, Flags), with the segment registers that select the
slot and the findings added.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Tuple

__all__ = ["Column", "ColumnSpec", "GDT_COLUMNS", "IDT_COLUMNS", "MODULE_COLUMNS", "PUSH_COLUMNS",
           "STEP_COLUMNS", "TSS_COLUMNS"]


@dataclass(frozen=True)
class Column:
    """One column: its name (the table's header), its cell, hex or not, and
    what parts a list cell in a notebook (a text table joins them with ",")."""

    name: str
    cell: Callable[[Any], Any]
    hex: bool = False
    separator: str = ", "


@dataclass(frozen=True)
class ColumnSpec:
    """The columns of one kind of row, in order."""

    kind: str
    columns: Tuple[Column, ...]

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def hex_columns(self) -> Tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.hex)

    def record(self, row: Any) -> Dict[str, Any]:
        return {c.name: c.cell(row) for c in self.columns}

    def records(self, rows: Iterable[Any]) -> List[Dict[str, Any]]:
        return [self.record(row) for row in rows]


def _findings(row: Any) -> List[str]:
    return [str(f) for f in row.findings]


# A GDT or LDT slot (SDM vol. 3A §3.4.5, Figure 3-8): in WinDbg's dg words,
# D/B is Bg(ig)/Nb (not big), G is Pg (page)/By(te), P is P/NP, L is Lo(ng)/Nl;
# flags are bits 55:40 with the limit's 51:48 cleared (type, S, DPL, P, AVL, L, D/B, G).
GDT_COLUMNS = ColumnSpec("GDT/LDT slot", (
    Column("selector", lambda e: e.selector, hex=True),
    Column("base", lambda e: e.descriptor.base, hex=True),
    Column("limit", lambda e: e.descriptor.limit, hex=True),
    Column("type", lambda e: e.descriptor.short_type),
    Column("dpl", lambda e: e.descriptor.dpl),
    Column("size", lambda e: "Bg" if e.descriptor.db else "Nb"),
    Column("gran", lambda e: "Pg" if e.descriptor.granularity else "By"),
    Column("pres", lambda e: "P" if e.descriptor.present else "NP"),
    Column("long", lambda e: "Lo" if e.descriptor.long else "Nl"),
    Column("flags", lambda e: e.descriptor.attributes, hex=True),
    Column("registers", lambda e: [r.upper() for r in e.registers]),
    Column("findings", _findings, separator="; "),
))

# An IDT vector (SDM vol. 3A §6.11, Figure 6-2; §6.14.1, Figure 6-8): a task
# gate has no offset and no IST (None, shown as "-").
IDT_COLUMNS = ColumnSpec("IDT vector", (
    Column("vector", lambda e: e.vector, hex=True),
    Column("name", lambda e: e.name),
    Column("kind", lambda e: e.gate.kind.value),
    Column("selector", lambda e: getattr(e.gate, "selector", None), hex=True),
    Column("offset", lambda e: getattr(e.gate, "offset", None), hex=True),
    Column("ist", lambda e: getattr(e.gate, "ist", None)),
    Column("dpl", lambda e: e.gate.dpl),
    Column("present", lambda e: e.gate.present),
    Column("symbol", lambda e: e.symbol),
    Column("findings", _findings, separator="; "),
))

# A loaded module (_LDR_DATA_TABLE_ENTRY: DllBase, SizeOfImage, EntryPoint,
# FullDllName) and the loader lists that hold it, as WinDbg's !peb marks them:
# L(oad order), M(emory order), I(nitialisation order), "-" where it is missing.
MODULE_COLUMNS = ColumnSpec("loaded module", (
    Column("base", lambda m: m.base, hex=True),
    Column("size", lambda m: m.size, hex=True),
    Column("entry point", lambda m: m.entry_point, hex=True),
    Column("lists", lambda m: "".join(short.upper() if name in m.lists else "-"
                                      for name, short in (("load", "l"), ("memory", "m"),
                                                          ("init", "i")))),
    Column("path", lambda m: m.path if m.path is not None else m.name),
))

# Rows that are already records (their value's rows() / to_dict()): only the
# column names and their order, shared by the CLI and the notebook.
# A check of an access or a control transfer (ksinspect.access, .transfer):
STEP_COLUMNS = ("stage", "check", "passed", "detail", "source")
# What a control transfer pushes on the new stack:
PUSH_COLUMNS = ("name", "value", "address", "size")
# A TSS field (SDM vol. 3A §8.2.1 / §8.7, Figures 8-2 and 8-11):
TSS_COLUMNS = ("offset", "name", "size", "value", "kind", "meaning")
