"""The command line: every command, every format, and bad input.

Expected values: the Linux x86-64 kernel code segment descriptor
0x00af9b000000ffff (GDT_ENTRY_INIT(0xa09b, 0, 0xfffff) in
arch/x86/kernel/cpu/common.c) and SDM vol. 3A/3B rules cited per test.
"""
import csv
import io
import json
import subprocess
import sys

import pytest

from ksinspect.cli import main
from conftest import run_cli  # noqa: E402  (tests/conftest.py)


run = run_cli


def test_selector_json():
    # 0x33 = index 6, GDT, RPL 3: Linux __USER_CS (SDM §3.4.2 Figure 3-6).
    status, out, _ = run("selector", "0x33", "--json")
    assert status == 0
    assert json.loads(out) == {"raw": 0x33, "index": 6, "table": "GDT", "rpl": 3}


def test_selector_numbers_are_hex_by_default_and_0n_is_decimal():
    assert json.loads(run("selector", "2b", "--json")[1])["index"] == 5
    assert json.loads(run("selector", "0n43", "--json")[1])["index"] == 5


def test_desc_json_keys_and_values():
    status, out, _ = run("desc", "00af9b000000ffff", "--json")
    assert status == 0
    d = json.loads(out)
    for key in ("kind", "type", "system", "dpl", "present", "base", "limit", "granularity",
                "long", "db", "avl", "anomalies"):
        assert key in d
    assert d["kind"] == "code" and d["type"] == 0xB and d["long"] is True and d["db"] is False
    assert d["limit"] == 0xFFFFFFFF and d["granularity"] is True and d["anomalies"] == []


def test_desc_bytes_in_memory_order_equals_qword():
    a = json.loads(run("desc", "--bytes", "ff ff 00 00 00 9b af 00", "--json")[1])
    b = json.loads(run("desc", "0x00af9b000000ffff", "--json")[1])
    assert a == b


def test_desc_sixteen_byte_gate():
    # 64-bit interrupt gate to 0010:ffffffff81a00ae0 (SDM §6.14.1 Figure 6-8).
    status, out, _ = run("desc", "81a08e0000100ae0", "00000000ffffffff", "--json")
    d = json.loads(out)
    assert status == 0
    assert d["kind"] == "interrupt-gate"
    assert d["selector"] == 0x10 and d["offset"] == 0xFFFFFFFF81A00AE0 and d["ist"] == 0


def test_desc_table_format_explains_fields():
    status, out, _ = run("desc", "00cf93000000ffff", "--mode", "legacy")
    assert status == 0
    assert "SDM" in out and "DPL" in out and "Read/Write" in out


def test_pte_csv_and_jsonl():
    # 2 MiB page at 0xfee00000, P RW A D PS (SDM §4.5 Table 4-18).
    status, out, _ = run("pte", "fee000e3", "--mode", "4level", "--level", "2", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert status == 0 and len(rows) == 1
    # CSV writes addresses and sizes in hex (README, "The command line").
    assert rows[0]["frame"] == "0xfee00000" and rows[0]["page_size"] == "0x200000"
    status, out, _ = run("pte", "fee000e3", "--mode", "4level", "--level", "2", "--format", "jsonl")
    assert json.loads(out)["memory_type"] == "WB"


def test_pte_json_keys():
    d = json.loads(run("pte", "0x8000000000001067", "--mode", "4level", "--level", "1", "--json")[1])
    for key in ("present", "writable", "user", "pwt", "pcd", "accessed", "dirty", "large",
                "global", "pat", "nx", "pkey", "frame", "page_size", "memory_type", "anomalies"):
        assert key in d
    assert d["frame"] == 0x1000 and d["nx"] is True and d["user"] is True and d["dirty"] is True


def test_dr7_encode_then_decode():
    # Slot 0: global write watch of 4 bytes -> G0 (bit 1), R/W0=01, LEN0=11, bit 10 set
    # (SDM §17.2.4): 0x400 | 0x2 | 0x1 << 16 | 0x3 << 18 = 0xd0402.
    status, out, _ = run("dr7", "--set", "0:write:4:global:0x7ffc1000", "--json")
    assert status == 0
    d = json.loads(out)
    assert d["raw"] == 0xD0402
    assert d["breakpoints"][0] == {"index": 0, "local": False, "global": True,
                                   "condition": "write", "length": 4, "enabled": True}
    assert json.loads(run("dr7", "d0402", "--json")[1]) == d


def test_dr6_json():
    # B0 and BS set over the reset value 0xFFFF0FF0 (SDM §17.2.3).
    d = json.loads(run("dr6", "ffff4ff1", "--json")[1])
    assert d["hits"] == [0] and d["bs"] is True and d["bd"] is False and d["bt"] is False


@pytest.mark.parametrize("argv, needle", [
    (["selector", "zz"], "not a hex number"),
    (["selector", "10000"], "does not fit in 16 bits"),
    (["desc", "1" + "0" * 16], "does not fit in 64 bits"),
    (["desc", "--bytes", "00ff"], "8 or 16 bytes"),
    (["desc", "1", "--mode", "real"], "invalid choice"),
    (["pte", "1", "--mode", "pae", "--level", "4"], "level 4 does not exist in pae"),
    (["pte", "1", "--mode", "5level", "--level", "6"], "level 6 does not exist"),
    (["pte", "100000000", "--mode", "32", "--level", "1"], "does not fit in 32 bits"),
    (["pte", "1", "--mode", "quad", "--level", "1"], "invalid choice"),
    (["dr7", "--set", "0:execute:4"], "execute breakpoint must have length 1"),
    (["dr7", "--set", "0:write:4:0x1002"], "aligned"),
    (["dr7", "--set", "0:write:8", "--legacy"], "64-bit mode"),
    (["dr7", "--set", "0:io:1"], "CR4.DE"),
    (["dr7", "--set", "5:write:1"], "slot"),
    (["dr7"], "give a DR7 VALUE"),
    ([], "required"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle):
    status, out, err = run(*argv)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_console_script_and_module_entry_points():
    result = subprocess.run([sys.executable, "-m", "ksinspect", "selector", "zz"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    result = subprocess.run([sys.executable, "-m", "ksinspect", "dr6", "fffe0ff0", "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and json.loads(result.stdout)["rtm"] is True


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_taken_before_or_after_the_command(tmp_path, where):
    """`ksinspect info nosuch --debug` shows the traceback of the error (it
    was "unrecognized arguments: --debug"); without --debug, one line, exit 1."""
    missing = str(tmp_path / "nosuch")
    argv = ["--debug", "info", missing] if where == "before" else ["info", missing, "--debug"]
    proc = subprocess.run([sys.executable, "-m", "ksinspect", *argv], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "unrecognized arguments" not in proc.stderr
    plain = subprocess.run([sys.executable, "-m", "ksinspect", "info", missing],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and len(plain.stderr.splitlines()) == 1
    assert "Traceback" not in plain.stderr


@pytest.mark.parametrize("argv, name", [
    (["info", "-"], "IMAGE"),
    (["gdt", "-"], "SOURCE"),
    (["idt", "tests/data/qemu/x86_64-4level/core-trimmed.elf.xz", "--symbols", "-"],
     "--symbols"),
    (["info", "tests/data/qemu/x86_64-4level/core-trimmed.elf.xz", "--registers", "-"],
     "--registers"),
    (["psscan", "x.raw", "--layout", "-"], "--layout"),
])
def test_dash_is_refused_as_standard_input_in_one_line(argv, name):
    """`-` is not a file named "-" (which would be 'No such file'): one line
    saying standard input cannot be read there, exit 2."""
    status, out, err = run(*argv)
    assert status == 2 and out == "" and len(err.splitlines()) == 1
    assert ("argument %s: standard input (-) cannot be read here" % name) in err


def _subcommands():
    import argparse
    from ksinspect.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_positional_argument_has_help():
    missing = ["%s %s" % (name, action.metavar or action.dest)
               for name, p in _subcommands().items() for action in p._actions
               if not action.option_strings and not action.help]
    assert missing == []


def test_pte_level_is_hex_like_every_number():
    """--level 0x2 is level 2 (a PDE; with PS=1 a 2 MiB page, SDM §4.5 Table 4-18)."""
    for level in ("2", "0x2", "0n2"):
        status, out, err = run("pte", "fee000e3", "--paging-mode", "4level", "--level", level,
                               "--json")
        assert status == 0, err
        assert json.loads(out)["page_size"] == 2 << 20


@pytest.mark.parametrize("argv, names", [
    # SDM vol. 3A §3.4.2 Figure 3-6: Index 15:3, TI 2, RPL 1:0
    (["selector", "33"], {"Index", "TI", "RPL"}),
    # SDM vol. 3B §17.2.3 Figure 17-1: B0-B3, BD, BS, BT (and active-low BLD, RTM)
    (["dr6", "ffff4ff1"], {"B0", "B1", "B2", "B3", "BD", "BS", "BT"}),
])
def test_selector_and_dr6_draw_svg_like_the_other_decoders(tmp_path, argv, names):
    import xml.etree.ElementTree as ET
    path = tmp_path / "picture.svg"
    status, out, err = run(*argv, "--svg", str(path))
    assert status == 0, err
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    texts = {(t.text or "").strip() for t in root.iter() if t.tag.endswith("text")}
    assert names <= texts
