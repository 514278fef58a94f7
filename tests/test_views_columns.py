"""ksinspect.views.columns: one column set per kind of table row, the same in
the terminal (``ksinspect gdt`` / ``idt``) and in a notebook (``_repr_html_``).

Known answers from the Intel SDM vol. 3A: a flat 32-bit code segment
0x00CF9B000000FFFF (§3.4.5, Figure 3-8: base 0, limit 0xFFFFF in 4 KiB units
= 0xFFFFFFFF bytes, type 0xB execute/read accessed, S=1, DPL 0, P=1, D/B=1,
G=1, L=0; bits 55:40 without the limit's 51:48 = 0xC09B), and 32-bit gates
(§6.11, Figure 6-2): an interrupt gate 0x00008E00_00101000 (selector 0x10,
offset 0x1000, P=1, DPL 0) and a task gate 0x00008500_00280000 (TSS
selector 0x28). WinDbg's ``dg`` names D/B Bg/Nb, G Pg/By, P P/NP and L
Lo/Nl (the debugger's documentation of ``dg``).
"""
import xml.etree.ElementTree as ET

from conftest import run_cli
from ksinspect.tables import decode_idt, decode_table
from ksinspect.views.columns import GDT_COLUMNS, IDT_COLUMNS

NULL = "0000000000000000"
FLAT_CODE = "ffff0000009bcf00"        # 0x00CF9B000000FFFF, little-endian
INTERRUPT_GATE = (0x0010 << 16 | 0x1000 | 0x8E00 << 32).to_bytes(8, "little")
TASK_GATE = (0x0028 << 16 | 0x8500 << 32).to_bytes(8, "little")

# The columns ksinspect gdt / idt print (README: "the table follows WinDbg's dg").
GDT_NAMES = ["selector", "base", "limit", "type", "dpl", "size", "gran", "pres", "long",
             "flags", "registers", "findings"]
IDT_NAMES = ["vector", "name", "kind", "selector", "offset", "ist", "dpl", "present", "symbol",
             "findings"]


def _html_table(value):
    root = ET.fromstring(value._repr_html_())
    headers = [th.text for th in root.iter("th")]
    rows = [[td.text or "" for td in tr.findall("td")] for tr in root.iter("tr")
            if tr.findall("td")]
    return headers, rows


def _cli_table(tmp_path, command, data):
    path = tmp_path / (command + ".bin")
    path.write_bytes(data)
    status, out, err = run_cli(command, str(path), "--descriptor-format", "legacy")
    assert status == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith(("selector", "vector")))
    return lines[header].split(), [line.split() for line in lines[header + 2:]]


def test_the_gdt_view_has_the_cli_columns_and_cells(tmp_path):
    data = bytes.fromhex(NULL + FLAT_CODE)
    headers, rows = _html_table(decode_table(data, "GDT", "legacy"))
    assert headers == GDT_NAMES == list(GDT_COLUMNS.names)
    assert rows[1] == ["0x8", "0x0", "0xffffffff", "Code RE Ac", "0", "Bg", "Pg", "P", "Nl",
                       "0xc09b", "", ""]
    cli_headers, cli_rows = _cli_table(tmp_path, "gdt", data)
    assert cli_headers == GDT_NAMES
    assert cli_rows[1] == ["0x8", "0x0", "0xffffffff", "Code", "RE", "Ac", "0", "Bg", "Pg", "P",
                           "Nl", "0xc09b", "-", "-"]


def test_the_idt_view_has_the_cli_columns_and_cells(tmp_path):
    data = INTERRUPT_GATE + TASK_GATE
    headers, rows = _html_table(decode_idt(data, "legacy"))
    assert headers == IDT_NAMES == list(IDT_COLUMNS.names)
    assert rows[0][:8] == ["0x0", "#DE", "interrupt-gate", "0x10", "0x1000", "0", "0", "yes"]
    assert rows[1][:4] == ["0x1", "#DB", "task-gate", "0x28"]
    cli_headers, cli_rows = _cli_table(tmp_path, "idt", data)
    assert cli_headers == IDT_NAMES
    assert cli_rows[0][:8] == rows[0][:8]
    assert cli_rows[1][:4] == rows[1][:4]



def test_a_notebook_cell_keeps_findings_apart():
    """Two findings on one gate (a handler outside the kernel text, DPL 3 on a
    vector user code should not raise, SDM §6.12.1.1): messages hold commas, so
    the notebook parts them with "; "."""
    from ksinspect.symbols import Symbol, SymbolTable
    user_gate = (0x0010 << 16 | 0x1000 | 0xEE00 << 32).to_bytes(8, "little")   # P=1, DPL 3
    symbols = SymbolTable([Symbol(0x1000, "handler", "t")], text_range=(0x200000, 0x300000))
    idt = decode_idt(user_gate, "legacy", symbols=symbols)
    _headers, rows = _html_table(idt)
    findings = [str(f) for f in idt[0].findings]
    assert len(findings) == 2 and any("," in f for f in findings)
    assert rows[0][IDT_NAMES.index("findings")] == "; ".join(findings)
    assert rows[0][IDT_NAMES.index("symbol")] == "handler"
