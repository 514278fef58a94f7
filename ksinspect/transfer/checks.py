"""The checks every transfer shares: descriptor look-ups, the TSS's stacks, the new
stack segment, the target code segment, stack room (SDM vol. 3A §3.4.2, §5.8.4-5.8.5,
§6.12.1, §6.13). Each records a :class:`ksinspect.access.Step` on a :class:`Trace`;
the first failure stops the simulation with the fault and its error code."""
from typing import List, Optional, Tuple

from ..access import SDM, Fault, Step
from ..errors import InvalidAddressError
from ..x86.control import CpuMode
from ..x86.descriptor import DescriptorKind, SegmentDescriptor
from ..x86.selector import Selector, TableIndicator
from .values import ProcessorState, Push, SystemTables



class FaultRaised(Exception):
    """Internal: the check that failed, carried to the top of the simulation."""

    def __init__(self, fault: Fault, code: int):
        super().__init__(fault.mnemonic)
        self.fault, self.code = fault, code


class Trace:
    """The steps of one simulation; :meth:`need` records a check and raises on failure."""

    def __init__(self):
        self.steps: List[Step] = []

    def note(self, stage: str, check: str, detail: str, section: str) -> None:
        self.steps.append(Step(stage, check, True, detail, "%s %s" % (SDM, section)))

    def need(self, ok: bool, stage: str, check: str, detail: str, section: str,
             fault: Fault, code: int) -> None:
        if ok:
            self.steps.append(Step(stage, check, True, detail, "%s %s" % (SDM, section)))
            return
        self.steps.append(Step(stage, check, False, "%s -> %s(%#x)" % (
            detail, fault.mnemonic, code), "%s %s" % (SDM, section)))
        raise FaultRaised(fault, code)


def selector_error(value: int, ext: bool = False) -> int:
    """A selector error code (§6.13, Figure 6-7): index and TI, EXT in bit 0."""
    return (value & 0xFFFC) | int(ext)


def vector_error(vector: int, ext: bool = False) -> int:
    """The error code naming an IDT vector: index = vector, IDT = 1, EXT in bit 0."""
    return (vector << 3) | 2 | int(ext)


def canonical(address: int, bits: int) -> bool:
    top = address >> (bits - 1)
    return top == 0 or top == (1 << (65 - bits)) - 1


def lookup(tables: SystemTables, value: int, trace: Trace, stage: str, what: str,
           fault: Fault, code: int, gdt_only: bool = False) -> SegmentDescriptor:
    """The descriptor a selector names, with the table and limit checks (§3.4.2, §3.5.1).

    An IA-32e system descriptor or gate takes 16 bytes; both halves must be
    inside the limit (the processor reads the upper 8 bytes as a second slot).
    """
    sel = Selector.decode(value)
    local = sel.table is TableIndicator.LDT
    trace.need(not (gdt_only and local), stage, "%s table" % what,
               "selector %#06x: TI=%d (%s)" % (value, int(local), "the LDT, but it must name "
               "the GDT" if local else "the GDT"), "§7.2.2, §7.2.5",
               fault, code)
    data, limit = (tables.ldt, tables.ldt_limit) if local else (tables.gdt, tables.gdt_limit)
    name = "LDT" if local else "GDT"
    if data is None:
        trace.need(False, stage, "%s table" % what, "selector %#06x names the LDT but LDTR "
                   "holds no LDT" % value, "§3.5.1", fault, code)
    end = sel.offset + 7
    trace.need(end <= limit and end < len(data), stage, "%s index" % what,
               "index %d: bytes %#x..%#x %s the %s limit %#x" % (
                   sel.index, sel.offset, end, "within" if end <= limit else "beyond", name,
                   limit), "§3.4.2", fault, code)
    d = SegmentDescriptor.from_bytes(data[sel.offset:sel.offset + 8], tables.mode)
    if tables.long_mode and d.system and d.kind is not DescriptorKind.NULL and d.type != 0:
        end = sel.offset + 15
        trace.need(end <= limit and end < len(data), stage, "%s upper half" % what,
                   "an IA-32e system descriptor takes 16 bytes: %#x..%#x %s the %s limit %#x"
                   % (sel.offset, end, "within" if end <= limit else "beyond", name, limit),
                   "§3.5, §5.8.3.1", fault, code)
        d = SegmentDescriptor.from_bytes(data[sel.offset:sel.offset + 16], tables.mode)
    trace.note(stage, "%s descriptor" % what, "%s %#06x: %s" % (name, value, d), "§3.4.5")
    return d


def stack_room(descriptor: Optional[SegmentDescriptor], esp: int, size: int) -> Tuple[bool, str]:
    """Whether ``size`` bytes pushed below ESP stay inside the stack segment (§5.8.5, §6.12.1)."""
    if descriptor is None:
        return True, "no stack segment limit applies"
    span = descriptor.offset_range
    mask = 0xFFFFFFFF if descriptor.db else 0xFFFF
    first, last = (esp - size) & mask, (esp - 1) & mask
    if span is None:
        return False, "the stack segment has no valid offsets"
    ok = (span[0] <= first <= last <= span[1]) if first <= last else span == (0, mask)
    return ok, "%d bytes at %#x..%#x %s the valid offsets %#x..%#x" % (
        size, first, last, "lie within" if ok else "are not all within", span[0], span[1])


class Stack:
    """A stack being pushed: SS base, the stack pointer and its width mask."""

    def __init__(self, name: str, base: int, sp: int, mask: int):
        self.name, self.base, self.sp, self.mask = name, base, sp, mask
        self.pushed: List[Push] = []

    def push(self, name: str, value: int, size: int) -> None:
        self.sp = (self.sp - size) & self.mask
        self.pushed.append(Push(name, value & ((1 << 8 * size) - 1),
                                (self.base + self.sp) & 0xFFFFFFFFFFFFFFFF, size))


def read_int(tables: SystemTables, address: int, size: int, what: str, **kw) -> int:
    try:
        return int.from_bytes(tables.read(address, size, **kw), "little")
    except InvalidAddressError as exc:
        raise InvalidAddressError("%s at %#x cannot be read: %s" % (what, address, exc),
                                  address=address) from None


# ------------------------------------------------------------------ the current TSS's stacks


def tss_stack(tables: SystemTables, state: ProcessorState, level: int, trace: Trace,
              ext: bool = False, ist: int = 0) -> Tuple[int, int]:
    """SSn:ESPn (or RSPn / ISTn) from the current TSS (§7.2.1 Figure 7-2, §7.7 Figure 7-11).

    Returns (ss, sp); ss is the null selector with RPL = level in IA-32e mode.
    """
    width = state.tss_width
    err = selector_error(state.tr, ext)
    if width == 64:
        offset = 0x24 + 8 * (ist - 1) if ist else 4 + 8 * level
        name = "IST%d" % ist if ist else "RSP%d" % level
        end = offset + 7
    elif width == 32:
        offset, name, end = 4 + 8 * level, "SS%d:ESP%d" % (level, level), 4 + 8 * level + 7
    else:
        offset, name, end = 2 + 4 * level, "SS%d:SP%d" % (level, level), 2 + 4 * level + 3
    trace.need(end <= state.tr_limit, "stack switch", "TSS limit",
               "%s is at TSS+%#x..%#x; TR %#06x has limit %#x" % (
                   name, offset, end, state.tr, state.tr_limit), "§5.8.5, §6.12.1", Fault.TS, err)
    base = state.tr_base
    if width == 64:
        sp = read_int(tables, base + offset, 8, "the TSS's %s" % name)
        trace.note("stack switch", name, "TSS+%#x: %s = %#x" % (offset, name, sp), "§7.7")
        return level, sp
    if width == 32:
        sp = read_int(tables, base + offset, 4, "the TSS's ESP%d" % level)
        ss = read_int(tables, base + offset + 4, 2, "the TSS's SS%d" % level)
    else:
        sp = read_int(tables, base + offset, 2, "the TSS's SP%d" % level)
        ss = read_int(tables, base + offset + 2, 2, "the TSS's SS%d" % level)
    trace.note("stack switch", name, "TSS+%#x: SS%d = %#06x, ESP%d = %#x" % (
        offset, level, ss, level, sp), "§7.2.1")
    return ss, sp


def check_new_stack(tables: SystemTables, ss: int, level: int, trace: Trace,
                    ext: bool = False) -> SegmentDescriptor:
    """The new stack segment of a privilege change (§5.8.5, §6.12.1: #TS, then #SS if not present)."""
    err = selector_error(ss, ext)
    trace.need(ss & 0xFFFC != 0, "stack switch", "SS null", "the TSS's SS%d is %s" % (
        level, "the null selector" if ss & 0xFFFC == 0 else "%#06x" % ss), "§5.8.5", Fault.TS,
        err)
    d = lookup(tables, ss, trace, "stack switch", "new SS", Fault.TS, err)
    rpl = ss & 3
    trace.need(rpl == level, "stack switch", "SS RPL", "SS RPL %d %s the new CPL %d" % (
        rpl, "==" if rpl == level else "!=", level), "§5.8.5", Fault.TS, err)
    trace.need(d.dpl == level, "stack switch", "SS DPL", "SS DPL %d %s the new CPL %d" % (
        d.dpl, "==" if d.dpl == level else "!=", level), "§5.8.5", Fault.TS, err)
    ok = d.kind is DescriptorKind.DATA and d.writable
    trace.need(ok, "stack switch", "SS type", "%s %s a writable data segment" % (
        d.type_name, "is" if ok else "is not"), "§5.8.5", Fault.TS, err)
    trace.need(d.present, "stack switch", "SS present", "P=%d%s" % (
        int(d.present), "" if d.present else " (QEMU raises #TS here; the SDM says #SS)"),
        "§5.8.5", Fault.SS, err)
    return d


def target_code(tables: SystemTables, state: ProcessorState, value: int, trace: Trace,
                 call: bool, ext: bool, stage: str) -> SegmentDescriptor:
    """The code segment a gate names (§5.8.4; §6.12.1 for IDT gates)."""
    cpl = state.cpl
    trace.need(value & 0xFFFC != 0, stage, "code selector", "the gate's code-segment selector "
               "is %#06x" % value, "§5.8.4", Fault.GP, int(ext))
    err = selector_error(value, ext)
    d = lookup(tables, value, trace, stage, "code segment", Fault.GP, err)
    trace.need(d.kind is DescriptorKind.CODE, stage, "code type", "%s %s a code segment" % (
        d.type_name, "is" if d.kind is DescriptorKind.CODE else "is not"), "§5.8.4",
        Fault.GP, err)
    if call:
        ok = d.dpl <= cpl
        trace.need(ok, stage, "code DPL", "code DPL %d %s CPL %d (a gate may lead only to "
                   "equal or more privileged code)" % (d.dpl, "<=" if ok else ">", cpl),
                   "§5.8.4, Table 5-1", Fault.GP, err)
    else:
        ok = d.dpl <= cpl if d.conforming else d.dpl == cpl
        trace.need(ok, stage, "code DPL", "JMP through a gate to %s code needs DPL %s CPL: DPL "
                   "%d, CPL %d" % ("conforming" if d.conforming else "nonconforming",
                                   "<=" if d.conforming else "==", d.dpl, cpl),
                   "§5.8.4, Table 5-1", Fault.GP, err)
    if state.ia32e:
        ok = d.long and not d.db
        trace.need(ok, stage, "64-bit code", "IA-32e mode: the target must be 64-bit code "
                   "(L=1, D=0): L=%d D=%d" % (int(d.long), int(d.db)), "§5.8.3.1, §6.14.1",
                   Fault.GP, err)
    trace.need(d.present, stage, "code present", "P=%d" % int(d.present), "§5.8.4",
               Fault.NP, err)
    return d


def check_entry(d: SegmentDescriptor, offset: int, state: ProcessorState, trace: Trace,
                 stage: str, ext: bool = False) -> None:
    """The new EIP inside the code segment's limit, or canonical for 64-bit code."""
    if state.ia32e and d.long:
        ok = canonical(offset, state.address_bits)
        trace.need(ok, stage, "entry canonical", "RIP %#x %s canonical" % (
            offset, "is" if ok else "is not"), "§5.8.3.1", Fault.GP, int(ext))
        return
    ok = offset <= d.limit
    trace.need(ok, stage, "entry limit", "EIP %#x %s the code limit %#x" % (
        offset, "<=" if ok else ">", d.limit), "§5.8.4", Fault.GP, int(ext))


def current_stack(state: ProcessorState) -> Stack:
    d = state.ss_descriptor
    if state.mode is CpuMode.LONG_64BIT or d is None:
        return Stack("current", 0, state.esp, (1 << 64) - 1)
    return Stack("current", d.base, state.esp, 0xFFFFFFFF if d.db else 0xFFFF)


def room(trace: Trace, state: ProcessorState, d: Optional[SegmentDescriptor], sp: int,
          size: int, fault_code: int, fault: Fault, stage: str, section: str,
          sixty_four: bool) -> None:
    if sixty_four:
        ok = canonical(sp, state.address_bits) and canonical(
            (sp - size) & ((1 << 64) - 1), state.address_bits)
        trace.need(ok, stage, "stack room", "%d bytes below RSP %#x %s canonical" % (
            size, sp, "are" if ok else "are not"), section, fault, fault_code)
        return
    ok, detail = stack_room(d, sp, size)
    trace.need(ok, stage, "stack room", detail, section, fault, fault_code)
