"""Task-state segments (SDM vol. 3A §8.2.1 Figure 8-2, §8.7 Figure 8-11) and
``ksinspect tss``.

Layouts are packed here from the SDM's offsets; the guests' TSSs are checked
against what Linux 6.1 puts there (arch/x86/kernel/process.c cpu_tss_rw,
cpu/common.c, doublefault_32.c): io_bitmap_base = IO_BITMAP_OFFSET_INVALID =
limit + 1; on i386 SS0 = __KERNEL_DS (0x68), SS1 = __KERNEL_CS (0x60, the
SYSENTER_CS value Linux keeps there) and ESP1 = the top of the current
task's stack (cpu_current_top_of_stack), so the image's ESP lies just below
it; on x86-64 the #VC IST stacks (IST5) are not mapped without SEV-ES; the
x86-64 RSP0 is the top of the
entry stack, which cpu_entry_area places just below the TSS; the
double-fault TSS (GDT 0xF8) has EIP = asm_exc_double_fault, ESP = its own
address (the stack lies below the TSS in struct doublefault_stack) and CR3
= swapper_pg_dir, whose kernel half is the one every process shares.
"""
import json
import os
import struct

import pytest

from ksinspect.errors import DecodeError, InvalidAddressError, TruncatedDataError
from ksinspect.memory import open_image
from ksinspect.paging import AddressSpace
from ksinspect.symbols import SymbolTable
from ksinspect.task import read_tss
from ksinspect.x86.tss import TaskStateSegment

from conftest import HERE, QEMU, run_cli as run

CACHE = os.path.expanduser("~/.cache/ksinspect-fixtures/work")


def tss32(**values):
    order = ["previous_task_link", "esp0", "ss0", "esp1", "ss1", "esp2", "ss2", "cr3", "eip",
             "eflags", "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "es", "cs", "ss",
             "ds", "fs", "gs", "ldt_selector"]
    data = b"".join(struct.pack("<I", values.get(n, 0)) for n in order)
    return data + struct.pack("<HH", values.get("t", 0), values.get("io_map_base", 0x68))


def test_32_bit_layout_from_figure_8_2():
    data = tss32(previous_task_link=0x28, esp0=0xC0001000, ss0=0x10, cr3=0x1000, eip=0x401000,
                 eflags=0x202, esp=0x7FFF0, cs=0x1B, ss=0x23, ds=0x23, ldt_selector=0x30, t=1,
                 io_map_base=0x68) + b"\x00" * 8 + b"\xff" * 8184 + b"\xff"
    t = TaskStateSegment.decode(data, 32, base=0x5000)
    f = t.fields
    assert (f["previous_task_link"], f["esp0"], f["ss0"], f["cr3"], f["eip"], f["eflags"]) == (
        0x28, 0xC0001000, 0x10, 0x1000, 0x401000, 0x202)
    assert (f["esp"], f["cs"], f["ss"], f["ds"], f["ldt_selector"], f["t"]) == (
        0x7FFF0, 0x1B, 0x23, 0x23, 0x30, 1)
    # Bitmap bytes at +0x68: the first 8 bytes (ports 0-63) are 0, so permitted.
    assert t.allowed_port_ranges() == [(0, 63)] and t.port_allowed(63)
    assert not t.port_allowed(64) and not t.anomalies()
    assert "cr3" in [r["name"] for r in t.rows() if r["kind"] == "static"]
    assert "eip" in [r["name"] for r in t.rows() if r["kind"] == "dynamic"]


def test_64_bit_layout_from_figure_8_11():
    data = bytearray(0x68)
    struct.pack_into("<QQQ", data, 4, 0xFFFF800000001000, 0x2000, 0x3000)
    for n in range(7):
        struct.pack_into("<Q", data, 0x24 + 8 * n, 0xFFFFFE0000010000 + n * 0x1000)
    struct.pack_into("<H", data, 0x66, 0x68)
    t = TaskStateSegment.decode(bytes(data), 64)
    assert t.fields["rsp0"] == 0xFFFF800000001000 and t.fields["rsp2"] == 0x3000
    assert [t.fields["ist%d" % n] for n in range(1, 8)] == [
        0xFFFFFE0000010000 + n * 0x1000 for n in range(7)]
    assert t.io_bitmap == b"" and not t.io_bitmap_inside_limit
    assert any("no I/O permission bitmap" in a for a in t.anomalies())


def test_anomalies_small_limit_and_reserved_fields():
    data = bytearray(tss32())
    data[0x02] = 1                # upper half of the previous-task-link dword
    data[0x64] = 0x3              # T plus a reserved bit
    t = TaskStateSegment.decode(bytes(data), 32, limit=0x2B)
    text = " ".join(t.anomalies())
    assert "below 0x67" in text and "0x2, 0x64" in text and t.fields["t"] == 1
    with pytest.raises(TruncatedDataError):
        TaskStateSegment.decode(b"\0" * 0x67, 32)
    with pytest.raises(DecodeError):
        TaskStateSegment.decode(b"\0" * 0x68, 16)


def qemu_tr(profile):
    with open(os.path.join(QEMU, profile, "info-registers.txt"), encoding="ascii") as fh:
        line = next(l for l in fh if l.startswith("TR ="))
    _, sel, base, limit = line.replace("=", " ").split()[:4]
    return int(sel, 16), int(base, 16), int(limit, 16)


@pytest.mark.parametrize("profile", ["x86_64-4level", "x86_64-5level"])
def test_x86_64_guest_tss(profile):
    with open_image(os.path.join(QEMU, profile, "core-trimmed.elf.xz")) as memory:
        report = read_tss(memory)
    t = report.tss
    assert (t.selector, t.base, t.limit) == qemu_tr(profile) and t.width == 64
    assert t.fields["io_map_base"] == t.limit + 1
    # RSP0 is the top of the entry stack, the page just below the TSS in struct
    # cpu_entry_area (arch/x86/include/asm/cpu_entry_area.h: entry_stack_page, tss).
    assert t.fields["rsp0"] == t.base
    unmapped = {f.message.split(" ")[0] for f in report.findings if f.code == "pointer-unmapped"}
    assert unmapped == {"IST5"}
    assert all(t.fields["ist%d" % n] for n in range(1, 6)) and not t.fields["ist6"]


@pytest.mark.parametrize("profile", ["i386-pae", "i386-2level"])
def test_i386_guest_tss(profile):
    with open_image(os.path.join(QEMU, profile, "core-trimmed.elf.xz")) as memory:
        report = read_tss(memory)
        esp = memory.cpu.rsp
    t = report.tss
    assert (t.selector, t.base, t.limit) == qemu_tr(profile) and t.width == 32
    assert t.fields["io_map_base"] == t.limit + 1
    assert (t.fields["ss0"], t.fields["ss1"]) == (0x68, 0x60)
    assert 0 < t.fields["esp1"] - esp < 8192


def _double_fault_image(profile):
    """The shipped trimmed core when it holds the TSS's page (tools/make_qemu_fixture.py
    keeps task-gate TSS pages since issue 17), else the full core the fixture tool
    leaves in its cache."""
    shipped = os.path.join(QEMU, profile, "core-trimmed.elf.xz")
    with open_image(shipped) as memory:
        try:
            read_tss(memory, 0xF8)
            return shipped, os.path.join(QEMU, profile, "kallsyms.txt.xz")
        except InvalidAddressError:
            pass
    full = os.path.join(CACHE, profile, "core.elf.xz")
    if os.path.exists(full):
        return full, os.path.join(CACHE, profile, "kallsyms.raw")
    pytest.skip("the shipped %s core lacks the double-fault TSS page and no full core is in %s "
                "(run tools/make_qemu_fixture.py)" % (profile, CACHE))


@pytest.mark.parametrize("profile", ["i386-pae", "i386-2level"])
def test_i386_double_fault_task(profile):
    image, kallsyms = _double_fault_image(profile)
    if kallsyms.endswith(".raw"):      # the serial stream, with the guest's end marker
        with open(kallsyms, encoding="ascii") as fh:
            symbols = SymbolTable.parse_system_map(
                (l for l in fh if not l.startswith("KSINSPECT-")), kallsyms)
    else:
        symbols = SymbolTable.from_system_map(kallsyms)
    with open_image(image) as memory:
        report = read_tss(memory, 0xF8, symbols=symbols)
        t = report.tss
        f = t.fields
        assert report.task_gates == (8,)
        assert f["eip"] == symbols.address_of("asm_exc_double_fault")
        assert report.eip_symbol == "asm_exc_double_fault"
        assert f["esp"] == t.base
        assert (f["cs"], f["ss"], f["ds"], f["es"], f["fs"]) == (0x60, 0x68, 0x7B, 0x7B, 0xD8)
        assert f["eflags"] == 0x2
        # CR3 = swapper_pg_dir: the kernel half of its tables is the one the image's CR3 uses.
        mine, theirs = AddressSpace(memory), AddressSpace(memory, cr3=f["cr3"])
        for va in (f["eip"], t.base, memory.cpu.gdtr_base, memory.cpu.idtr_base):
            assert theirs.translate(va).pa == mine.translate(va).pa is not None
        assert any(x.code == "cr3-differs" for x in report.findings)


def test_cli_tss_and_bad_input():
    image = os.path.join(QEMU, "x86_64-4level", "core-trimmed.elf.xz")
    status, out, _ = run("tss", image, "--json")
    d = json.loads(out)
    assert status == 0 and d["width"] == 64 and d["selector"] == 0x40
    status, out, _ = run("tss", image, "--format", "csv")
    assert status == 0 and out.splitlines()[0] == "offset,name,size,value,kind,meaning"
    for argv, code in ((("--selector", "10"), 1), (("--selector", "zz"), 2),
                       (("--selector", "10000"), 2), (("--selector", "ff8"), 1)):
        status, out, err = run("tss", image, *argv)
        assert status == code and len(err.splitlines()) == 1, (argv, err)
    status, _, err = run("tss", os.path.join(HERE, "test_tss.py"))
    assert status == 1 and len(err.splitlines()) == 1
