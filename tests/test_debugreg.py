"""Known-answer tests for DR6 and DR7 and the DR7 encoder.

Sources: Intel SDM vol. 3B 17.2.3 (DR6, Figure 17-1), 17.2.4 (DR7, Figure
17-2), 17.2.5 (breakpoint field recognition / alignment); the register dump
of the Linux guest in tests/data/qemu (DR6=ffff0ff0, DR7=400).
"""

import pytest

from ksinspect.errors import DecodeError, EncodeError
from ksinspect.x86 import DR6, DR7, Breakpoint, Condition, encode_dr7

from reference_model import qemu_file, qemu_registers
from conftest import check_teaching_forms, run_cli


def bp(d, n):
    return d["breakpoints"][n]


# --------------------------------------------------------------------- DR7 ---

def test_dr7_reset_value():
    # 17.2.4 / Figure 17-2: bit 10 reads as 1, everything else 0 after reset; the
    # Linux guest in tests/data/qemu shows exactly that ("DR7=0000000000000400").
    for long_mode in (True, False):
        x = DR7.decode(0x400, long_mode=long_mode).to_dict()
        assert x["raw"] == 0x400 and x["reserved_bits"] == 0 and x["anomalies"] == []
        assert not any(b["enabled"] or b["local"] or b["global"] for b in x["breakpoints"])
        assert [b["index"] for b in x["breakpoints"]] == [0, 1, 2, 3]
        assert not (x["le"] or x["ge"] or x["gd"] or x["rtm"])


def test_dr7_from_the_qemu_guest():
    text = qemu_file("x86_64-4level", "info-registers.txt")
    if text is None:
        pytest.skip("QEMU fixture missing")
    regs = qemu_registers(text)
    assert regs["DR7"] == 0x400
    assert DR7.decode(regs["DR7"]).to_dict()["anomalies"] == []


def test_dr7_local_write_watchpoint():
    # L0 (bit 0), R/W0 = 01 (write, bits 17:16), LEN0 = 11 (4 bytes, bits 19:18):
    # what a debugger writes for "watch *(int *)addr" in DR0.
    x = DR7.decode(0x000D0401).to_dict()
    assert bp(x, 0) == {"index": 0, "local": True, "global": False, "condition": "write",
                        "length": 4, "enabled": True}
    assert x["anomalies"] == [] and x["reserved_bits"] == 0


def test_dr7_global_execute_breakpoint():
    # G1 (bit 3), R/W1 = 00, LEN1 = 00: instruction breakpoint.
    x = DR7.decode(0x408).to_dict()
    assert bp(x, 1) == {"index": 1, "local": False, "global": True, "condition": "execute",
                        "length": 1, "enabled": True}
    assert not bp(x, 0)["enabled"] and x["anomalies"] == []


def test_dr7_eight_byte_readwrite():
    # L2 (bit 4), R/W2 = 11 (bits 25:24), LEN2 = 10 (bits 27:26): "10 -- 8 byte
    # field (if IA-32e mode), undefined otherwise" (Figure 17-2 note).
    x = DR7.decode(0x0B000410, long_mode=True).to_dict()
    assert (bp(x, 2)["condition"], bp(x, 2)["length"]) == ("readwrite", 8)
    assert x["anomalies"] == []
    x = DR7.decode(0x0B000410, long_mode=False).to_dict()
    assert bp(x, 2)["length"] is None and x["anomalies"] == ["len8-outside-64"]


def test_dr7_two_byte_length():
    # LEN3 = 01 (bits 31:30): 2 bytes; R/W3 = 01 write; G3 (bit 7).
    x = DR7.decode(0x50000480).to_dict()
    assert (bp(x, 3)["condition"], bp(x, 3)["length"], bp(x, 3)["global"]) == ("write", 2, True)


def test_dr7_io_breakpoint_needs_cr4_de():
    # R/W3 = 10 (bits 29:28): "Break on I/O reads or writes" when CR4.DE = 1,
    # "undefined" when CR4.DE = 0 (17.2.4).
    x = DR7.decode(0x20000440, cr4_de=True).to_dict()
    assert bp(x, 3)["condition"] == "io" and bp(x, 3)["local"] and x["anomalies"] == []
    x = DR7.decode(0x20000440, cr4_de=False).to_dict()
    assert x["anomalies"] == ["io-without-de"]


def test_dr7_execute_with_length_is_undefined():
    # 17.2.4: "If the corresponding RWn field ... is 00 (instruction execution), then
    # the LENn field should also be 00. The effect of using other lengths is undefined."
    x = DR7.decode(0x00040401).to_dict()   # L0, R/W0 = 00, LEN0 = 01
    assert bp(x, 0)["condition"] == "execute" and x["anomalies"] == ["exec-length"]


def test_dr7_undefined_encodings_of_disabled_slots_are_not_flagged():
    # The same encodings with L0 = G0 = 0 cannot fire; the tool (csrc/ksi_debugreg.h)
    # only flags enabled breakpoints.
    assert DR7.decode(0x00040400).to_dict()["anomalies"] == []
    assert DR7.decode(0x20000400).to_dict()["anomalies"] == []


def test_dr7_control_bits():
    # LE bit 8, GE bit 9, RTM bit 11, GD bit 13 (Figure 17-2).
    x = DR7.decode(0x2F00).to_dict()
    assert (x["le"], x["ge"], x["rtm"], x["gd"]) == (True, True, True, True)
    assert x["reserved_bits"] == 0 and x["anomalies"] == []
    x = DR7.decode(0x2F00)
    assert (x.le, x.ge, x.rtm, x.gd) == (True, True, True, True)


@pytest.mark.parametrize("raw,reserved", [
    (0x0000, 0x400),            # bit 10 must be 1
    (0x1400, 0x1000),           # bit 12 must be 0
    (0xC400, 0xC000),           # bits 15:14 must be 0
    ((1 << 32) | 0x400, 1 << 32),   # 63:32 must be 0 (64-bit DR7)
    ((1 << 63) | 0x400, 1 << 63),
])
def test_dr7_reserved_bits(raw, reserved):
    x = DR7.decode(raw).to_dict()
    assert x["reserved_bits"] == reserved and x["anomalies"] == ["reserved-bits"]


def test_dr7_too_wide():
    for raw in (1 << 64, -1):
        with pytest.raises(DecodeError) as info:
            DR7.decode(raw)
        assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------- encoder ---

def test_encode_write_watchpoint():
    # Same as test_dr7_local_write_watchpoint: bit 10 set, L0, R/W0=01, LEN0=11.
    r = encode_dr7([Breakpoint(0, Condition.WRITE, 4, "local", address=0x7FFC1000)])
    assert r.raw == 0x000D0401
    assert isinstance(r, DR7)


def test_encode_all_four_slots():
    r = encode_dr7([Breakpoint(0, Condition.EXECUTE, 1, "global", address=0xFFFFFFFF81000001),
                    Breakpoint(1, Condition.WRITE, 2, "local", address=0x1002),
                    Breakpoint(2, Condition.READWRITE, 8, "both", address=0x1008),
                    Breakpoint(3, Condition.IO, 1, "local", address=0x3F8)],
                   long_mode=True, cr4_de=True, le=True, ge=True, gd=True)
    # G0 = bit 1; L1 = bit 2; L2|G2 = bits 4, 5; L3 = bit 6; LE, GE = 8, 9; bit 10; GD = 13.
    # R/W0 LEN0 = 00 00; R/W1 LEN1 = 01 01; R/W2 LEN2 = 11 10; R/W3 LEN3 = 10 00.
    assert r.raw == 0x2B502776
    x = r.to_dict()
    assert [(b["condition"], b["length"], b["local"], b["global"]) for b in x["breakpoints"]] == [
        ("execute", 1, False, True), ("write", 2, True, False), ("readwrite", 8, True, True),
        ("io", 1, True, False)]
    assert x["anomalies"] == [] and (x["le"], x["ge"], x["gd"]) == (True, True, True)


def test_encode_nothing():
    assert encode_dr7([]).raw == 0x400


def test_encode_accepts_condition_names():
    assert encode_dr7([Breakpoint(0, "write", 4)]).raw == 0x000D0401


# Each refusal, with a word the message must contain to name the rule.
REFUSALS = [
    # 17.2.4: instruction breakpoints need LEN = 00.
    (dict(breakpoints=[Breakpoint(0, Condition.EXECUTE, 2)]), 0, ("execute", "length")),
    # 17.2.5: "Two-byte ranges must be aligned on word boundaries; 4-byte ranges must be
    # aligned on doubleword boundaries" (and 8-byte on quadword).
    (dict(breakpoints=[Breakpoint(0, Condition.WRITE, 4, address=0x1002)]), 0, ("align",)),
    (dict(breakpoints=[Breakpoint(1, Condition.WRITE, 2, address=0x1001)]), 0, ("align",)),
    (dict(breakpoints=[Breakpoint(0, Condition.WRITE, 1),
                       Breakpoint(2, Condition.READWRITE, 8, address=0x1004)]), 1, ("align",)),
    # Figure 17-2 note: LEN = 10 (8 bytes) only in IA-32e/64-bit mode.
    (dict(breakpoints=[Breakpoint(0, Condition.WRITE, 8)], long_mode=False), 0, ("8", "64")),
    # 17.2.4: R/W = 10 is I/O only with CR4.DE = 1.
    (dict(breakpoints=[Breakpoint(0, Condition.IO, 1)], cr4_de=False), 0, ("DE",)),
    # There are four address registers, DR0-DR3.
    (dict(breakpoints=[Breakpoint(4, Condition.WRITE, 1)]), 0, ("slot",)),
    (dict(breakpoints=[Breakpoint(-1, Condition.WRITE, 1)]), 0, ("slot",)),
    (dict(breakpoints=[Breakpoint(1, Condition.WRITE, 1), Breakpoint(1, Condition.WRITE, 2)]),
     1, ("twice",)),
    # LEN only encodes 1, 2, 4, 8.
    (dict(breakpoints=[Breakpoint(0, Condition.WRITE, 3)]), 0, ("length",)),
]


@pytest.mark.parametrize("kwargs,index,words", REFUSALS,
                         ids=["exec-len", "align4", "align2", "align8", "len8-32bit", "io-no-de",
                              "slot4", "slot-1", "dup", "len3"])
def test_encoder_refusals(kwargs, index, words):
    with pytest.raises(EncodeError) as info:
        encode_dr7(**kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.index == index
    for word in words:
        assert word.lower() in str(err).lower(), str(err)


def test_encoder_rule_messages_cite_the_sdm():
    for kwargs, _, _ in REFUSALS[:6]:
        with pytest.raises(EncodeError) as info:
            encode_dr7(**kwargs)
        assert "SDM 17.2" in str(info.value)


def test_encoder_accepts_what_the_rules_allow():
    # Aligned addresses, length 8 in 64-bit mode, I/O with CR4.DE, execute at any address.
    encode_dr7([Breakpoint(0, Condition.WRITE, 8, address=0x1008)], long_mode=True)
    encode_dr7([Breakpoint(0, Condition.IO, 4, address=0xCF8)], cr4_de=True)
    encode_dr7([Breakpoint(0, Condition.EXECUTE, 1, address=0x401003)])
    encode_dr7([Breakpoint(0, Condition.WRITE, 2, address=0x1002)], long_mode=False)


# --------------------------------------------------------------------- DR6 ---

def test_dr6_reset_value():
    # 17.2.3: DR6 reads 0xFFFF0FF0 with no condition recorded (bits 31:16 and 11:4
    # set, BLD/RTM inactive = 1); the QEMU guest shows "DR6=00000000ffff0ff0".
    x = DR6.decode(0xFFFF0FF0).to_dict()
    assert x["hits"] == [] and x["reserved_bits"] == 0
    assert not (x["bd"] or x["bs"] or x["bt"] or x["bld"] or x["rtm"])
    assert sorted(x["active_low"]) == ["bld", "rtm"]


@pytest.mark.parametrize("raw,field", [
    (0xFFFF4FF0, "bs"),    # single step, bit 14
    (0xFFFF2FF0, "bd"),    # debug-register access detected, bit 13
    (0xFFFF8FF0, "bt"),    # task switch, bit 15
    (0xFFFF07F0, "bld"),   # bus lock: bit 11 CLEARED (active-low)
    (0xFFFE0FF0, "rtm"),   # inside an RTM region: bit 16 CLEARED (active-low)
])
def test_dr6_single_conditions(raw, field):
    x = DR6.decode(raw).to_dict()
    for f in ("bd", "bs", "bt", "bld", "rtm"):
        assert x[f] == (f == field), f
    assert x["reserved_bits"] == 0 and x["hits"] == []


@pytest.mark.parametrize("raw,hits", [
    (0xFFFF0FF1, [0]), (0xFFFF0FF2, [1]), (0xFFFF0FF4, [2]), (0xFFFF0FF8, [3]),
    (0xFFFF0FFF, [0, 1, 2, 3]), (0xFFFF4FF5, [0, 2]),
])
def test_dr6_hits(raw, hits):
    # B0-B3 (bits 3:0); they may be set for breakpoints DR7 does not enable.
    assert DR6.decode(raw).to_dict()["hits"] == hits


def test_dr6_reserved_bits():
    # Bits 10:4 and 31:17 read as 1, bit 12 and 63:32 as 0 (Figure 17-1).
    assert DR6.decode(0).to_dict()["reserved_bits"] == 0xFFFE07F0
    assert DR6.decode(0xFFFF1FF0).to_dict()["reserved_bits"] == 0x1000
    assert DR6.decode(0x1FFFF0FF0).to_dict()["reserved_bits"] == 1 << 32
    x = DR6.decode(0)
    assert x.bld and x.rtm    # both active-low bits clear


def test_dr6_too_wide():
    with pytest.raises(DecodeError):
        DR6.decode(1 << 64)


# -------------------------------------------------------------- text forms ---

def test_text_forms():
    for value in (DR7.decode(0x400), DR7.decode(0x2B502776, cr4_de=True), DR7.decode(0),
                  DR6.decode(0xFFFF0FF0), DR6.decode(0xFFFE4FF1)):
        check_teaching_forms(value)


def test_dr7_value_and_set_together_says_not_both():
    status, _, err = run_cli("dr7", "123", "--set", "0:write:4")
    assert status == 2 and "not both" in err and len(err.splitlines()) == 1
    status, _, err = run_cli("dr7")
    assert status == 2 and "not both" not in err and "DR7 VALUE" in err
