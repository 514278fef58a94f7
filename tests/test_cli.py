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


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stream=out, errors=err)
    return status, out.getvalue(), err.getvalue()


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
    assert rows[0]["frame"] == str(0xFEE00000) and rows[0]["page_size"] == str(2 << 20)
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
