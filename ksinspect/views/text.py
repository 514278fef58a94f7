"""Text tables: rows of records laid out in columns (tabulate's ``simple``),
and the ``explain()`` text of the values that are lists of checks (an
access, a control transfer, a TSS).

Hex is a display hint: records keep integers as integers, and a table
shows in hex the columns it is told (:func:`ksinspect.render.table` adds
the address columns every command shares), booleans as yes/no. JSON keeps
the integers and true/false; CSV prints the same hex columns in hex and
booleans as true/false (:mod:`ksinspect.render`).
"""
from typing import Any, Optional, Sequence

from ..safe_text import printable

__all__ = ["access_text", "cell", "spec_text", "operating_mode_text", "table", "task_switch_text", "transfer_text", "tss_report_text",
           "tss_text"]


def cell(value: Any, hex_columns: Sequence[str], column: str) -> str:
    """One table cell; strings from an image or a file are hostile, so
    control characters are escaped (ksinspect.safe_text)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and column in hex_columns:
        return "%#x" % value
    if isinstance(value, (list, tuple)):
        return printable(",".join(str(v) for v in value)) or "-"
    return printable(value)


def table(records: Sequence[dict], columns: Sequence[str], hex_columns: Sequence[str] = (),
          headers: Optional[Sequence[str]] = None) -> str:
    from tabulate import tabulate     # here: a fifth of the CLI's start-up, and streams need none
    rows = [[cell(r.get(c), hex_columns, c) for c in columns] for r in records]
    return tabulate(rows, headers=list(headers or columns), disable_numparse=True,
                    tablefmt="simple")


def spec_text(spec: Any, rows: Sequence[Any], indent: str = "") -> str:
    """The rows as a text table of a :class:`~ksinspect.views.columns.ColumnSpec`."""
    text = table(spec.records(rows), spec.names, spec.hex_columns)
    return "\n".join(indent + line for line in text.splitlines())


# -- explain() of the values that are a list of checks ------------------------------------
# Each takes the value as its argument (views import no value module); the
# value's explain() is one call to it.

SDM = "Intel SDM vol. 3A"


def access_text(result: Any) -> str:
    """An access (ksinspect.access.AccessResult): its line, each check, the #PF error code."""
    lines = [str(result), "Source: %s §3.4-3.5, §5.3-5.8 (segmentation and its checks), "
             "§4.6-4.7 (paging rights, the #PF error code); %s" % (SDM, result.mode.label), ""]
    lines += ["  " + str(s) for s in result.steps]
    if result.page_fault is not None:
        lines += ["", result.page_fault.error_code.explain()]
    lines += ["Note: " + n for n in result.notes]
    return "\n".join(lines)


def transfer_text(result: Any) -> str:
    """A control transfer (ksinspect.transfer.values.TransferResult): each check, what was
    pushed, the task switch."""
    lines = [str(result), "Source: %s §5.8 (call gates), §6.12 (interrupt and trap gates), "
             "§7.3 (task switching), vol. 2A CALL/JMP/INT n pseudo-code" % SDM, ""]
    lines += ["  " + str(s) for s in result.steps]
    if result.pushed:
        lines += ["", "Pushed (in order; each below the last):"]
        lines += ["  %-10s %#18x at %#x (%d bytes)" % (p.name, p.value, p.address, p.size)
                  for p in result.pushed]
    if result.task_switch is not None:
        lines += ["", task_switch_text(result.task_switch)]
    lines += ["Note: " + n for n in result.notes]
    return "\n".join(lines)


def task_switch_text(switch: Any) -> str:
    """A task switch (ksinspect.transfer.task_switch.TaskSwitch): saved, loaded, marked."""
    lines = ["Task switch %#06x -> %#06x (%s)" % (
        switch.old_tr, switch.new_tr,
        "nested: link and NT set" if switch.nested else "not nested")]
    lines.append("  saved into the old TSS: " + ", ".join(
        "%s=%#x" % kv for kv in switch.saved.items()))
    lines.append("  loaded from the new TSS: " + ", ".join(
        "%s=%#x" % kv for kv in switch.loaded.items()))
    lines += ["  " + b for b in switch.busy]
    return "\n".join(lines)


def tss_text(tss: Any) -> str:
    """A TSS (ksinspect.x86.tss.TaskStateSegment): each field at its offset, the I/O
    bitmap, the anomalies, what a task switch would load."""
    lines = [str(tss), "Source: " + tss.source, ""]
    for r in tss.rows():
        lines.append("  +%#04x  %-18s %#18x  %-7s  %s" % (r["offset"], r["name"], r["value"],
                                                         r["kind"], r["meaning"]))
    lines += ["", tss.io_summary()]
    lines += ["Note: " + a for a in tss.anomalies()]
    lines += ["Task switch: " + t for t in tss.task_switch()]
    return "\n".join(lines)


def tss_report_text(report: Any) -> str:
    """A TSS found in an image (ksinspect.task.TssReport): the TSS, how it was found,
    the IDT's task gates to it, the findings."""
    lines = [tss_text(report.tss), "", "Found: " + report.how]
    if report.eip_symbol:
        lines.append("EIP is %s" % report.eip_symbol)
    if report.task_gates:
        lines.append("IDT task gates to this TSS: vector%s %s" % (
            "s" if len(report.task_gates) > 1 else "", ", ".join(
                "%d" % v for v in report.task_gates)))
    lines += ["Finding: " + str(f) for f in report.findings]
    return "\n".join(lines)


def operating_mode_text(mode: Any) -> str:
    """An operating mode (ksinspect.x86.control.OperatingMode): the bits that decide
    it, the rule they meet, the anomalies."""
    lines = [str(mode), "Source: " + mode.SOURCE, "",
             "  " + " ".join("%s=%d" % kv for kv in mode.deciding_bits.items()),
             "  " + mode.rule]
    lines += ["Note: " + text for text in mode.anomaly_texts]
    return "\n".join(lines)
