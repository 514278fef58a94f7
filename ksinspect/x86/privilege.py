"""The privilege checks the processor makes when a segment is loaded or entered.

CPL is the current privilege level (CS.RPL, bits 1:0 of CS), RPL the
requested privilege level in the selector's bits 1:0, DPL the descriptor's
privilege level (SDM vol. 3A §5.5). The rules, one function each:

* data segments (DS, ES, FS, GS): max(CPL, RPL) <= DPL; a conforming
  readable code segment may be read at any CPL (§5.6, §5.6.1);
* the stack segment (SS): RPL == CPL == DPL, writable data (§5.7);
* a direct JMP or CALL: nonconforming code needs DPL == CPL and RPL <= CPL,
  conforming code DPL <= CPL (§5.8.1);
* through a call gate: CPL <= gate DPL and RPL <= gate DPL, then the target
  code's DPL <= CPL (CALL) or, for JMP to nonconforming code, DPL == CPL
  (§5.8.4, Table 5-1).

Each check returns a :class:`PrivilegeCheck` that says which rule decided
and with which numbers, so a notebook can show the comparison, not just
the verdict. Present (P) and type checks are included because the
processor makes them on the same load (#NP and #GP).
"""
from dataclasses import dataclass

from ..errors import DecodeError
from .descriptor import DescriptorKind, SegmentDescriptor
from .selector import Selector

_SECTIONS = "Intel SDM vol. 3A"


@dataclass(frozen=True)
class PrivilegeCheck:
    """The outcome of one check.

    Attributes:
        allowed: whether the processor lets the load or transfer happen.
        rule: the rule applied, with the numbers filled in.
        fault: the exception raised when not allowed (``#GP``, ``#NP``, ``#SS``), else "".
        source: the manual section.
    """

    allowed: bool
    rule: str
    fault: str
    source: str

    def __bool__(self) -> bool:
        return self.allowed

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "denied (%s)" % self.fault
        return "%s: %s [%s]" % (verdict, self.rule, self.source)


def _check_cpl(cpl: int) -> None:
    if not isinstance(cpl, int) or not 0 <= cpl <= 3:
        raise DecodeError("CPL %r is not a privilege level 0..3" % (cpl,))


def _op(holds: bool, yes: str, no: str) -> str:
    return yes if holds else no


def _result(ok: bool, rule: str, fault: str, section: str) -> PrivilegeCheck:
    return PrivilegeCheck(ok, rule, "" if ok else fault, "%s %s" % (_SECTIONS, section))


def check_data_load(cpl: int, selector: Selector, descriptor: SegmentDescriptor) -> PrivilegeCheck:
    """Loading DS, ES, FS or GS (SDM vol. 3A §5.6, §5.6.1).

    A null selector loads (and faults later, on use); the segment must be
    data or readable code; then max(CPL, RPL) <= DPL, except conforming
    code, which any CPL may read; finally it must be present (#NP).
    """
    _check_cpl(cpl)
    if selector.is_null:
        return _result(True, "a null selector may be loaded into DS, ES, FS or GS; using it "
                       "faults (#GP)", "", "§3.4.2")
    kind = descriptor.kind
    if kind is DescriptorKind.CODE and not descriptor.readable or kind not in (
            DescriptorKind.DATA, DescriptorKind.CODE):
        return _result(False, "only data or readable code segments load into a data-segment "
                       "register, not %s" % descriptor.type_name, "#GP", "§5.6")
    if kind is DescriptorKind.CODE and descriptor.conforming:
        rule = "conforming readable code: readable at any CPL (CPL %d, RPL %d, DPL %d)" % (
            cpl, selector.rpl, descriptor.dpl)
        ok = True
    else:
        effective = max(cpl, selector.rpl)
        ok = effective <= descriptor.dpl
        rule = "max(CPL %d, RPL %d) = %d %s DPL %d" % (cpl, selector.rpl, effective,
                                                       "<=" if ok else ">", descriptor.dpl)
    if ok and not descriptor.present:
        return _result(False, rule + ", but the segment is not present", "#NP", "§5.6")
    return _result(ok, rule, "#GP", "§5.6")


def check_stack_load(cpl: int, selector: Selector, descriptor: SegmentDescriptor) -> PrivilegeCheck:
    """Loading SS (SDM vol. 3A §5.7): writable data with RPL == CPL == DPL."""
    _check_cpl(cpl)
    if selector.is_null:
        return _result(False, "a null selector cannot be loaded into SS here", "#GP", "§5.7")
    if descriptor.kind is not DescriptorKind.DATA or not descriptor.writable:
        return _result(False, "SS needs a writable data segment, not %s" % descriptor.type_name,
                       "#GP", "§5.7")
    ok = selector.rpl == cpl == descriptor.dpl
    rule = "RPL %d, CPL %d and DPL %d must be equal" % (selector.rpl, cpl, descriptor.dpl)
    if ok and not descriptor.present:
        return _result(False, rule + ", but the segment is not present", "#SS", "§5.7")
    return _result(ok, rule, "#GP", "§5.7")


def check_code_transfer(cpl: int, selector: Selector, descriptor: SegmentDescriptor
                        ) -> PrivilegeCheck:
    """A far JMP or CALL straight to a code segment (SDM vol. 3A §5.8.1).

    Nonconforming: DPL == CPL and RPL <= CPL (CPL does not change).
    Conforming: DPL <= CPL, RPL ignored (CPL does not change either).
    """
    _check_cpl(cpl)
    if descriptor.kind is not DescriptorKind.CODE:
        return _result(False, "the target is not a code segment but %s" % descriptor.type_name,
                       "#GP", "§5.8.1")
    if descriptor.conforming:
        ok = descriptor.dpl <= cpl
        rule = "conforming: DPL %d %s CPL %d (RPL ignored; CPL stays %d)" % (
            descriptor.dpl, _op(ok, "<=", ">"), cpl, cpl)
    else:
        ok = descriptor.dpl == cpl and selector.rpl <= cpl
        rule = "nonconforming: needs DPL == CPL and RPL <= CPL: DPL %d %s CPL %d, RPL %d %s CPL %d" % (
            descriptor.dpl, _op(descriptor.dpl == cpl, "==", "!="), cpl, selector.rpl,
            _op(selector.rpl <= cpl, "<=", ">"), cpl)
    if ok and not descriptor.present:
        return _result(False, rule + ", but the segment is not present", "#NP", "§5.8.1")
    return _result(ok, rule, "#GP", "§5.8.1")


def check_call_gate(cpl: int, gate_selector: Selector, gate: SegmentDescriptor,
                    target: SegmentDescriptor, instruction: str = "call") -> PrivilegeCheck:
    """A far CALL or JMP through a call gate (SDM vol. 3A §5.8.4, Table 5-1).

    CPL <= gate DPL and RPL <= gate DPL; then the target code segment's
    DPL <= CPL, except a JMP to nonconforming code, which needs DPL == CPL.
    A CALL to more privileged nonconforming code switches stacks (§5.8.5).
    """
    _check_cpl(cpl)
    if instruction not in ("call", "jmp"):
        raise DecodeError("instruction %r is neither 'call' nor 'jmp'" % (instruction,))
    if gate.kind is not DescriptorKind.CALL_GATE:
        return _result(False, "the selector names %s, not a call gate" % gate.type_name,
                       "#GP", "§5.8.4")
    gate_ok = cpl <= gate.dpl and gate_selector.rpl <= gate.dpl
    rule = "CPL %d %s gate DPL %d, RPL %d %s gate DPL %d" % (
        cpl, _op(cpl <= gate.dpl, "<=", ">"), gate.dpl, gate_selector.rpl,
        _op(gate_selector.rpl <= gate.dpl, "<=", ">"), gate.dpl)
    if not gate_ok:
        return _result(False, rule, "#GP", "§5.8.4, Table 5-1")
    if not gate.present:
        return _result(False, rule + ", but the gate is not present", "#NP", "§5.8.4")
    if target.kind is not DescriptorKind.CODE:
        return _result(False, rule + "; the gate's target is not a code segment", "#GP",
                       "§5.8.4")
    if instruction == "jmp" and not target.conforming:
        ok = target.dpl == cpl
        rule += "; JMP to nonconforming code needs DPL == CPL: DPL %d %s CPL %d" % (
            target.dpl, _op(ok, "==", "!="), cpl)
    else:
        ok = target.dpl <= cpl
        rule += "; target DPL %d %s CPL %d" % (target.dpl, _op(ok, "<=", ">"), cpl)
        if ok and not target.conforming and target.dpl < cpl:
            rule += " (CPL becomes %d, with a stack switch: §5.8.5)" % target.dpl
    return _result(ok, rule, "#GP", "§5.8.4, Table 5-1")
