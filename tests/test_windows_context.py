"""ksinspect.windows.context: CONTEXT and WOW64_CONTEXT against winnt.h.

The expected offsets are mingw-w64's winnt.h, two ways: the output of
tests/programs/context_offsets.c (offsetof/sizeof printed by the program,
compiled with x86_64-w64-mingw32-gcc and run under Wine 8; shipped as
tests/data/windows/context-offsets.txt), and, when mingw-w64 is installed,
_Static_asserts generated from ksinspect's tables and compiled against the
header (no Wine needed).
"""
import os
import shutil
import struct
import subprocess

import pytest

from ksinspect.errors import DecodeError, TruncatedDataError
from ksinspect.windows.context import (AMD64, X86, Context, ContextGroup, ContextStatus,
                                       context_size, decode_context)

HERE = os.path.dirname(__file__)
OFFSETS = os.path.join(HERE, "data", "windows", "context-offsets.txt")
MINGW = "x86_64-w64-mingw32-gcc"


def _printed():
    members, sizes, constants = {}, {}, {}
    with open(OFFSETS) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4 and parts[1] == "sizeof":
                sizes[parts[0]] = (int(parts[2]), int(parts[3]))
            elif len(parts) == 3:
                members[parts[0]] = (int(parts[1]), int(parts[2]))
            elif len(parts) == 2:
                constants[parts[0]] = int(parts[1], 16)
    return members, sizes, constants


MEMBERS, SIZES, CONSTANTS = _printed()
LAYOUTS = {"CONTEXT": AMD64, "WOW64_CONTEXT": X86}


@pytest.mark.parametrize("name", ["CONTEXT", "WOW64_CONTEXT"])
def test_every_member_at_the_printed_offset(name):
    lay = LAYOUTS[name]
    assert SIZES[name][0] == lay.size == context_size(name == "WOW64_CONTEXT")
    assert MEMBERS["%s.ContextFlags" % name] == (lay.flags_offset, 4)
    for m in lay.members:
        assert MEMBERS["%s.%s" % (name, m.name)] == (m.offset, m.size), m.name
    fx = "FltSave" if name == "CONTEXT" else "ExtendedRegisters"
    assert MEMBERS["%s.%s" % (name, fx)] == (lay.fxsave_offset, 512)


def test_alignment_and_fxsave_offsets():
    assert SIZES["CONTEXT"][1] == 16 and SIZES["WOW64_CONTEXT"][1] == 4
    # Xmm registers inside FltSave: XMM_SAVE_AREA32.XmmRegisters at +160
    assert MEMBERS["XMM_SAVE_AREA32.XmmRegisters"] == (160, 256)
    assert MEMBERS["XMM_SAVE_AREA32.MxCsr"] == (24, 4)
    assert MEMBERS["CONTEXT.Xmm0"][0] == AMD64.fxsave_offset + 160
    assert MEMBERS["CONTEXT.Xmm15"][0] == AMD64.fxsave_offset + 160 + 15 * 16
    assert MEMBERS["WOW64_CONTEXT.FloatSave"] == (X86.fnsave_offset, 112)


def test_constants_match_the_flags():
    assert CONSTANTS["CONTEXT_ALL"] == 0x100000 | 0x1F
    assert CONSTANTS["CONTEXT_FULL"] == 0x100000 | ContextGroup.CONTROL | ContextGroup.INTEGER \
        | ContextGroup.FLOATING_POINT
    assert CONSTANTS["WOW64_CONTEXT_ALL"] == 0x10000 | 0x3F


@pytest.mark.skipif(shutil.which(MINGW) is None, reason="needs %s "
                    "(apt-get install gcc-mingw-w64-x86-64-win32)" % MINGW)
def test_static_asserts_against_the_header(tmp_path):
    lines = ["#include <stddef.h>", "#include <windows.h>"]
    for name, lay in LAYOUTS.items():
        lines.append("_Static_assert(sizeof(%s) == %d, \"size\");" % (name, lay.size))
        members = [(m.name, m.offset, m.size) for m in lay.members]
        members.append(("ContextFlags", lay.flags_offset, 4))
        for member, offset, size in members:
            lines.append("_Static_assert(offsetof(%s, %s) == %d && sizeof(((%s *)0)->%s) == %d,"
                         " \"%s\");" % (name, member, offset, name, member, size, member))
    src = tmp_path / "asserts.c"
    src.write_text("\n".join(lines) + "\n")
    done = subprocess.run([MINGW, "-fsyntax-only", str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _amd64(flags, **regs):
    data = bytearray(AMD64.size)
    struct.pack_into("<I", data, 48, flags)
    for name, value in regs.items():
        off, size = MEMBERS["CONTEXT.%s" % name]
        data[off:off + size] = value.to_bytes(size, "little")
    return bytes(data)


def test_decode_amd64_all():
    data = bytearray(_amd64(0x10001F, Rax=0x1122334455667788, Rip=0x140001000,
                            Rsp=0x22fe00, SegCs=0x33, SegSs=0x2B, SegDs=0x2B, SegGs=0x2B,
                            SegFs=0x53, EFlags=0x246, Dr0=0x7FF612340000, Dr7=0x401,
                            Dr6=0xFFFF0FF1, MxCsr=0x1F80))
    struct.pack_into("<I", data, 256 + 24, 0x1F80)           # FltSave.MxCsr
    data[416:432] = (0xDEADBEEF).to_bytes(16, "little")      # Xmm0
    ctx = Context.from_bytes(bytes(data))
    assert ctx.arch == "x64" and not ctx.wow64
    assert ctx["Rax"] == 0x1122334455667788 and ctx.instruction_pointer == 0x140001000
    assert ctx.stack_pointer == 0x22FE00 and ctx.eflags == 0x246
    f = ctx.rflags                      # SDM vol. 1 §3.4.3: 0x246 = IF | ZF | PF | bit 1
    assert f.if_ and f.zf and f.pf and not f.cf and not f.tf and f.iopl == 0
    cs = ctx.segments["SegCs"]
    assert (cs.index, cs.rpl, cs.table.value) == (6, 3, "GDT")       # SDM §3.4.2: 0x33
    assert ctx.segments["SegFs"].index == 10
    assert ctx.dr6.hits == [0] and ctx.dr6.bs is False                 # SDM §17.2.3
    assert ctx.dr7.breakpoints[0].local and ctx.dr7.breakpoints[0].condition.label == "execute"
    assert ctx.debug_addresses["Dr0"] == 0x7FF612340000
    assert ctx.xmm[0] == 0xDEADBEEF and len(ctx.xmm) == 16 and ctx.mxcsr == 0x1F80
    assert ctx.flags.names == ["CONTEXT_CONTROL", "CONTEXT_INTEGER", "CONTEXT_SEGMENTS",
                               "CONTEXT_FLOATING_POINT", "CONTEXT_DEBUG_REGISTERS"]
    assert ctx.anomalies == ()
    text = ctx.explain()
    assert "+0x078" in text and "Rax" in text and "DR7 0x401" in text and "IF" in text
    d = ctx.to_dict()
    assert d["registers"]["Rip"] == 0x140001000 and d["segments"]["SegCs"]["index"] == 6
    assert d["context_flags"]["raw"] == 0x10001F


def test_groups_not_captured_are_absent():
    ctx = Context.from_bytes(_amd64(0x100001, Rip=0x1000, Rax=5, Dr7=0x401))
    assert "Rip" in ctx.registers and "Rax" not in ctx.registers and ctx.dr7 is None
    assert set(ctx.segments) == {"SegCs", "SegSs"}
    assert "not captured: CONTEXT_INTEGER clear" in ctx.explain()
    with pytest.raises(KeyError, match="Rax"):
        ctx["Rax"]


def test_status_bits_and_missing_machine_bit():
    ctx = Context.from_bytes(_amd64(0x0800000B | 0x80000000 | 0x40000000))
    assert ContextStatus.EXCEPTION_ACTIVE in ctx.flags.status
    assert "CONTEXT_EXCEPTION_REPORTING" in ctx.flags.names
    bare = Context.from_bytes(_amd64(0x1F))
    assert not bare.flags.machine_ok and "architecture bit" in bare.anomalies[0]
    assert bare.flags.explain().startswith("ContextFlags 0x1f")


def test_wow64_context():
    data = bytearray(X86.size)
    struct.pack_into("<I", data, 0, 0x1003F)
    for name, value in (("Eax", 0xA1), ("Eip", 0x401000), ("Esp", 0x19FF00), ("SegCs", 0x23),
                        ("SegFs", 0x53), ("EFlags", 0x202), ("Dr7", 0x1), ("Dr1", 0x402000)):
        off, size = MEMBERS["WOW64_CONTEXT.%s" % name]
        struct.pack_into("<I", data, off, value)
    ctx = Context.from_bytes(bytes(data), wow64=True)
    assert ctx.wow64 and ctx.general["Eip"] == 0x401000 and ctx["Eax"] == 0xA1
    assert ctx.segments["SegCs"].index == 4 and ctx.segments["SegCs"].rpl == 3
    assert ctx.dr7.long_mode is False and len(ctx.xmm) == 8
    assert str(ctx).startswith("WOW64_CONTEXT: eip 00401000")
    assert decode_context(bytes(data), "x86").registers == ctx.registers


def test_wow64_selector_with_high_bits_is_an_anomaly():
    data = bytearray(X86.size)
    struct.pack_into("<I", data, 0, 0x10004)
    struct.pack_into("<I", data, MEMBERS["WOW64_CONTEXT.SegGs"][0], 0xABCD002B)
    ctx = Context.from_bytes(bytes(data), wow64=True)
    assert ctx.segments["SegGs"].raw == 0x2B and "bits above 15" in ctx.anomalies[0]


def test_truncated_before_flags_and_inside_a_claimed_group():
    with pytest.raises(TruncatedDataError, match="before ContextFlags"):
        Context.from_bytes(b"\0" * 40)
    full = _amd64(0x10001F)
    with pytest.raises(TruncatedDataError, match="CONTEXT_FLOATING_POINT"):
        Context.from_bytes(full[:600])
    # Without FLOATING_POINT the first 256 bytes hold every claimed group.
    ctx = Context.from_bytes(_amd64(0x100017, Rip=7)[:256])
    assert ctx["Rip"] == 7 and "VectorControl" not in ctx.registers
    with pytest.raises(TruncatedDataError, match="WOW64_CONTEXT"):
        Context.from_bytes(struct.pack("<I", 0x10001) + b"\0" * 100, wow64=True)


def test_unknown_arch_name():
    with pytest.raises(DecodeError, match="arm64"):
        decode_context(b"", "arm64")
