"""Privilege checks against the Intel SDM's own worked examples and tables.

Vectors: vol. 3A §5.6 and Figure 5-5 (procedures in code segments A-D
reaching data segment E, DPL 2, through selectors E1-E3), §5.7 (SS), §5.8.1
(direct transfers), §5.8.4 and Table 5-1 (call gates).
"""
import pytest

from ksinspect.errors import DecodeError
from ksinspect.x86 import SegmentDescriptor, Selector
from ksinspect.x86.privilege import (check_call_gate, check_code_transfer, check_data_load,
                                     check_stack_load)


def data_segment(dpl, present=True, writable=True):
    # Flat 4 GiB data segment (type 0x2/0x0), S=1, G=1, D/B=1, SDM Figure 3-8.
    access = 0x90 | (dpl << 5) | (0x2 if writable else 0)
    if not present:
        access &= ~0x80
    return SegmentDescriptor.decode(0x00CF000000000000 | access << 40 | 0xFFFF, mode="legacy")


def code_segment(dpl, conforming=False, readable=True):
    access = 0x98 | (dpl << 5) | (0x4 if conforming else 0) | (0x2 if readable else 0)
    return SegmentDescriptor.decode(0x00CF000000000000 | access << 40 | 0xFFFF, mode="legacy")


def call_gate(dpl, selector=0x08, present=True):
    # 32-bit call gate (type 0xC), SDM Figure 5-8.
    access = 0x0C | (dpl << 5) | (0x80 if present else 0)
    return SegmentDescriptor.decode(access << 40 | selector << 16 | 0x1000, mode="legacy")


def sel(index, rpl):
    return Selector.decode(index << 3 | rpl)


E = data_segment(2)


@pytest.mark.parametrize("who, cpl, rpl, allowed", [
    ("A with E1", 2, 2, True),    # CPL and RPL equal to DPL
    ("B with E2", 1, 1, True),    # both more privileged than DPL
    ("C with E3", 3, 3, False),   # both less privileged
    ("C with E1", 3, 2, False),   # RPL fine, CPL not
    ("C with E2", 3, 1, False),
    ("D with E3", 0, 3, False),   # CPL fine, RPL not
])
def test_figure_5_5_data_access(who, cpl, rpl, allowed):
    result = check_data_load(cpl, sel(5, rpl), E)
    assert result.allowed is allowed, who
    assert "§5.6" in result.source and str(result)
    assert result.fault == ("" if allowed else "#GP")


def test_data_load_types_and_presence():
    assert check_data_load(3, sel(0, 0), E).allowed                         # null selector
    assert not check_data_load(0, sel(2, 0), code_segment(0, readable=False)).allowed
    assert check_data_load(3, sel(2, 3), code_segment(0, conforming=True)).allowed   # §5.6.1
    assert not check_data_load(3, sel(2, 3), code_segment(0)).allowed
    gone = check_data_load(0, sel(3, 0), data_segment(0, present=False))
    assert not gone.allowed and gone.fault == "#NP"


def test_stack_load_needs_equal_levels():
    assert check_stack_load(3, sel(4, 3), data_segment(3)).allowed
    assert not check_stack_load(0, sel(4, 0), data_segment(3)).allowed      # DPL != CPL
    assert not check_stack_load(3, sel(4, 0), data_segment(3)).allowed      # RPL != CPL
    assert not check_stack_load(0, sel(4, 0), data_segment(0, writable=False)).allowed
    assert not check_stack_load(0, sel(0, 0), E).allowed
    assert check_stack_load(0, sel(4, 0), data_segment(0, present=False)).fault == "#SS"


def test_direct_transfers():
    assert check_code_transfer(0, sel(1, 0), code_segment(0)).allowed
    assert not check_code_transfer(3, sel(1, 3), code_segment(0)).allowed   # DPL != CPL
    assert not check_code_transfer(0, sel(1, 3), code_segment(0)).allowed   # RPL > CPL
    assert check_code_transfer(3, sel(1, 3), code_segment(0, conforming=True)).allowed
    assert not check_code_transfer(0, sel(1, 0), code_segment(3, conforming=True)).allowed
    assert not check_code_transfer(0, sel(1, 0), E).allowed


@pytest.mark.parametrize("instruction, cpl, rpl, gate_dpl, target, allowed", [
    ("call", 3, 3, 3, code_segment(0), True),                 # the system-call pattern
    ("call", 3, 3, 0, code_segment(0), False),                # CPL > gate DPL
    ("call", 2, 3, 2, code_segment(0), False),                # RPL > gate DPL
    ("jmp", 3, 3, 3, code_segment(0), False),                 # JMP nonconforming: DPL == CPL
    ("jmp", 3, 3, 3, code_segment(3), True),
    ("jmp", 3, 3, 3, code_segment(0, conforming=True), True),
    ("call", 0, 0, 3, code_segment(3), False),                # target less privileged
])
def test_table_5_1_call_gates(instruction, cpl, rpl, gate_dpl, target, allowed):
    result = check_call_gate(cpl, sel(6, rpl), call_gate(gate_dpl), target, instruction)
    assert result.allowed is allowed
    assert "Table 5-1" in result.source


def test_call_gate_errors():
    assert not check_call_gate(0, sel(6, 0), E, code_segment(0)).allowed
    assert check_call_gate(0, sel(6, 0), call_gate(0, present=False), code_segment(0)).fault == "#NP"
    with pytest.raises(DecodeError):
        check_call_gate(0, sel(6, 0), call_gate(0), code_segment(0), "ret")
    with pytest.raises(DecodeError):
        check_data_load(4, sel(1, 0), E)
