"""Far CALL and JMP (to code segments, call gates, task gates and TSSs) and INT n /
exceptions through the IDT (SDM vol. 2A CALL, JMP, INT n pseudo-code; vol. 3A §5.8,
§6.12, §6.14)."""
from typing import Optional

from ..access import Fault
from ..errors import DecodeError, UnsupportedError
from ..x86.control import CpuMode
from ..x86.descriptor import DescriptorKind, SegmentDescriptor
from ..x86.selector import Selector
from .checks import (FaultRaised, Stack, Trace, canonical, check_entry, check_new_stack,
                     current_stack, lookup, read_int, room, selector_error, target_code,
                     tss_stack, vector_error)
from .task_switch import switch_task
from .values import (EFLAGS_IF, EFLAGS_NT, EFLAGS_RF, EFLAGS_TF, EFLAGS_VM, ProcessorState,
                     SystemTables, Transfer, TransferResult)

# Exceptions that push an error code (SDM vol. 3A §6.15, Table 6-1): #DF, #TS, #NP, #SS,
# #GP, #PF, #AC, #CP, #VC, #SX.
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})

# ------------------------------------------------------------------ far CALL / JMP


def far_transfer(tables: SystemTables, state: ProcessorState, selector: int, offset: int,
                 transfer=Transfer.CALL, operand_size: Optional[int] = None) -> TransferResult:
    """A far CALL or JMP to ``selector:offset`` (SDM vol. 2A CALL/JMP; vol. 3A §5.8, §7.3).

    Args:
        tables: the GDT, LDT, IDT and linear memory (:func:`ksinspect.transfer.image.tables_from_image`).
        state: the registers the transfer starts from.
        selector, offset: the far pointer (the offset is ignored through a gate).
        transfer: Transfer.CALL or Transfer.JMP.
        operand_size: of a direct CALL (16, 32, 64); default 64 in 64-bit mode, else 32.

    Raises:
        DecodeError: a selector wider than 16 bits, a bad offset, a CPL outside 0..3.
        UnsupportedError: real-address or virtual-8086 mode (no descriptors are used).
        InvalidAddressError: the TSS or a stack the transfer reads is not in the image.
    """
    transfer = Transfer(transfer)
    if transfer not in (Transfer.CALL, Transfer.JMP):
        raise DecodeError("far_transfer: %s is not CALL or JMP" % transfer.value)
    check_state(state)
    if not isinstance(selector, int) or not 0 <= selector <= 0xFFFF:
        raise DecodeError("selector %r does not fit in 16 bits" % (selector,))
    if not isinstance(offset, int) or not 0 <= offset < 1 << 64:
        raise DecodeError("offset %r is not a 64-bit value" % (offset,))
    if state.mode in (CpuMode.REAL, CpuMode.VIRTUAL_8086):
        raise UnsupportedError("%s: a far %s loads CS = %#x with base %#x and checks nothing "
                               "(§20.1); the gate checks need protected or IA-32e mode"
                               % (state.mode.label, transfer.value.upper(), selector,
                                  selector << 4))
    size = operand_size or (64 if state.mode is CpuMode.LONG_64BIT else 32)
    if size not in (16, 32, 64) or (size == 64 and state.mode is not CpuMode.LONG_64BIT):
        raise DecodeError("operand size %r: 16 or 32, or 64 in 64-bit mode" % (operand_size,))
    trace = Trace()
    target = "%04x:%#x" % (selector, offset)
    base = dict(transfer=transfer, target=target, state=state)
    try:
        return _far(tables, state, selector, offset, transfer, size, trace, base)
    except FaultRaised as stop:
        return TransferResult(fault=stop.fault, error_code=stop.code, steps=tuple(trace.steps),
                              **base)


def _far(tables, state, selector, offset, transfer, size, trace, base) -> TransferResult:
    cpl, call = state.cpl, transfer is Transfer.CALL
    sel = Selector.decode(selector)
    stage = "far %s" % transfer.value
    trace.need(not sel.is_null, stage, "selector", "%#06x is %s" % (
        selector, "the null selector" if sel.is_null else "index %d, %s, RPL %d" % (
            sel.index, sel.table.value, sel.rpl)), "§3.4.2", Fault.GP, 0)
    err = selector_error(selector)
    d = lookup(tables, selector, trace, stage, "target", Fault.GP, err)
    kind = d.kind
    if kind is DescriptorKind.CODE:
        return _direct(tables, state, sel, d, offset, call, size, trace, base, stage)
    if state.ia32e:
        ok = kind is DescriptorKind.CALL_GATE
        trace.need(ok, stage, "IA-32e target", "IA-32e mode: a far %s may name a code segment "
                   "or a 64-bit call gate; %s is refused (no task switching in IA-32e mode)" % (
                       transfer.value.upper(), d.type_name), "§5.8.3.1, §7.7", Fault.GP, err)
    ok = kind in (DescriptorKind.CALL_GATE, DescriptorKind.TASK_GATE,
                  DescriptorKind.TSS_AVAILABLE)
    trace.need(ok, stage, "target type", "%s %s a code segment, call gate, task gate or "
               "available TSS" % (d.type_name, "is" if ok else "is not"), "vol. 2A CALL, §7.3",
               Fault.GP, err)
    if kind is DescriptorKind.CALL_GATE:
        return _call_gate(tables, state, sel, d, call, trace, base, stage)
    gate_ok = d.dpl >= cpl and d.dpl >= sel.rpl
    what = "task gate" if kind is DescriptorKind.TASK_GATE else "TSS descriptor"
    trace.need(gate_ok, stage, "%s DPL" % what, "DPL %d >= CPL %d and >= RPL %d: %s" % (
        d.dpl, cpl, sel.rpl, "yes" if gate_ok else "no"), "§7.3, vol. 2A CALL",
        Fault.GP, err)
    if kind is DescriptorKind.TASK_GATE:
        trace.need(d.present, stage, "task gate present", "P=%d" % int(d.present), "§7.3",
                   Fault.NP, err)
        tss_value = d.selector
        tss_err = selector_error(tss_value)
        tss = lookup(tables, tss_value, trace, stage, "TSS", Fault.GP, tss_err, gdt_only=True)
        ok = tss.kind in (DescriptorKind.TSS_AVAILABLE, DescriptorKind.TSS_BUSY)
        trace.need(ok, stage, "TSS type", "the task gate's selector %#06x names %s" % (
            tss_value, tss.type_name), "§7.2.5", Fault.GP, tss_err)
    else:
        tss_value, tss, tss_err = selector, d, err
    trace.need(tss.kind is not DescriptorKind.TSS_BUSY, stage, "TSS busy",
               "the TSS descriptor's busy bit is %d (a CALL or JMP may not re-enter a busy "
               "task)" % int(tss.kind is DescriptorKind.TSS_BUSY), "§7.2.2, §7.3",
               Fault.GP, tss_err)
    trace.need(tss.present, stage, "TSS present", "P=%d" % int(tss.present), "§7.3",
               Fault.NP, tss_err)
    return switch_task(tables, state, tss_value, tss, transfer, trace, base)


def _direct(tables, state, sel, d, offset, call, size, trace, base, stage) -> TransferResult:
    cpl = state.cpl
    err = selector_error(sel.raw)
    if d.conforming:
        ok = d.dpl <= cpl
        rule = "conforming code: DPL %d %s CPL %d (RPL ignored)" % (d.dpl, "<=" if ok else ">",
                                                                   cpl)
    else:
        ok = d.dpl == cpl and sel.rpl <= cpl
        rule = "nonconforming code: DPL %d %s CPL %d, RPL %d %s CPL %d" % (
            d.dpl, "==" if d.dpl == cpl else "!=", cpl, sel.rpl,
            "<=" if sel.rpl <= cpl else ">", cpl)
    trace.need(ok, stage, "privilege", rule, "§5.8.1, §5.8.2", Fault.GP, err)
    if state.ia32e:
        ok = not (d.long and d.db)
        trace.need(ok, stage, "L and D", "L=1 with D=1 is reserved in IA-32e mode: L=%d D=%d" % (
            int(d.long), int(d.db)), "§5.2.1", Fault.GP, err)
    trace.need(d.present, stage, "present", "P=%d" % int(d.present), "§5.8.1", Fault.NP, err)
    if not (state.ia32e and d.long):
        offset &= 0xFFFF if size == 16 else 0xFFFFFFFF
    check_entry(d, offset, state, trace, stage)
    stack = current_stack(state)
    if call:
        nbytes = size // 8
        room(trace, state, state.ss_descriptor, state.esp, 2 * nbytes, 0, Fault.SS, stage,
              "vol. 2A CALL", state.mode is CpuMode.LONG_64BIT)
        stack.push("CS", state.cs, nbytes)
        stack.push("EIP" if nbytes < 8 else "RIP", state.eip, nbytes)
    new_cs = (sel.raw & 0xFFFC) | cpl
    trace.note(stage, "CS", "CS = %#06x (RPL set to CPL %d), EIP = %#x" % (new_cs, cpl, offset),
               "§5.8.1")
    return TransferResult(fault=None, error_code=None, steps=tuple(trace.steps),
                          path="direct to a %s code segment" % (
                              "conforming" if d.conforming else "nonconforming"),
                          new_cs=new_cs, new_eip=offset, new_cpl=cpl, new_ss=state.ss,
                          new_esp=stack.sp, new_eflags=state.eflags,
                          pushed=tuple(stack.pushed), **base)


def _call_gate(tables, state, sel, gate, call, trace, base, stage) -> TransferResult:
    cpl = state.cpl
    err = selector_error(sel.raw)
    ok = gate.dpl >= cpl and gate.dpl >= sel.rpl
    trace.need(ok, stage, "gate DPL", "CPL %d <= gate DPL %d and RPL %d <= gate DPL %d: %s" % (
        cpl, gate.dpl, sel.rpl, gate.dpl, "yes" if ok else "no"), "§5.8.4, Table 5-1",
        Fault.GP, err)
    trace.need(gate.present, stage, "gate present", "P=%d" % int(gate.present), "§5.8.4",
               Fault.NP, err)
    width = gate.width
    if state.ia32e:
        upper = (gate.raw_high or 0) >> 40 & 0x1F
        trace.need(upper == 0, stage, "gate upper type", "the upper 8 bytes' type field is %#x "
                   "(must be 0, so that they cannot be read as a legacy descriptor)" % upper,
                   "§5.8.3.1, Figure 5-9", Fault.GP, err)
    entry = gate.offset
    trace.note(stage, "gate", "%d-bit call gate -> %04x:%#x%s" % (
        width, gate.selector, entry, ", %d parameter(s)" % gate.param_count if width < 64
        else ""), "§5.8.3")
    code = target_code(tables, state, gate.selector, trace, call, False, stage)
    new_cpl = code.dpl if (call and not code.conforming) else cpl
    nbytes = width // 8
    if call and not code.conforming and code.dpl < cpl:
        return _more_privilege(tables, state, gate, code, entry, trace, base, stage, nbytes)
    check_entry(code, entry, state, trace, stage)
    stack = current_stack(state)
    if call:
        room(trace, state, state.ss_descriptor, state.esp, 2 * nbytes, 0, Fault.SS, stage,
              "§5.8.5, vol. 2A CALL", width == 64)
        stack.push("CS", state.cs, nbytes)
        stack.push("EIP" if nbytes < 8 else "RIP", state.eip, nbytes)
        path = "call gate, same privilege (no stack switch)"
    else:
        path = "call gate, JMP (CPL unchanged, nothing pushed)"
    new_cs = (gate.selector & 0xFFFC) | new_cpl
    trace.note(stage, "CS", "CS = %#06x, EIP = %#x, CPL %d" % (new_cs, entry, new_cpl), "§5.8.4")
    return TransferResult(fault=None, error_code=None, steps=tuple(trace.steps), path=path,
                          new_cs=new_cs, new_eip=entry, new_cpl=new_cpl, new_ss=state.ss,
                          new_esp=stack.sp, new_eflags=state.eflags,
                          pushed=tuple(stack.pushed), **base)


def _more_privilege(tables, state, gate, code, entry, trace, base, stage,
                    nbytes) -> TransferResult:
    """CALL to more privileged code: the stack switch of §5.8.5 (Figure 5-13)."""
    level = code.dpl
    count = gate.param_count if nbytes < 8 else 0
    trace.note("stack switch", "privilege change", "nonconforming code DPL %d < CPL %d: the "
               "stack for CPL %d comes from the current TSS (TR %#06x, %d-bit)" % (
                   level, state.cpl, level, state.tr, state.tss_width), "§5.8.5")
    ss, sp = tss_stack(tables, state, level, trace)
    if nbytes == 8:
        ss_d = None
        new_ss = level
        need = 4 * 8
        room(trace, state, None, sp, need, 0, Fault.SS, "stack switch", "§5.8.5, vol. 2A CALL",
              True)
        stack = Stack("new", 0, sp, (1 << 64) - 1)
        trace.note("stack switch", "new SS", "IA-32e mode: SS = the null selector with RPL %d "
                   "(%#06x); no parameters are copied" % (level, new_ss), "§5.8.6")
    else:
        ss_d = check_new_stack(tables, ss, level, trace)
        new_ss = (ss & 0xFFFC) | level
        need = (4 + count) * nbytes
        room(trace, state, ss_d, sp, need, selector_error(ss), Fault.SS, "stack switch",
              "§5.8.5, vol. 2A CALL", False)
        stack = Stack("new", ss_d.base, sp, 0xFFFFFFFF if ss_d.db else 0xFFFF)
    check_entry(code, entry, state, trace, stage)
    old = current_stack(state)
    stack.push("SS", state.ss, nbytes)
    stack.push("ESP" if nbytes < 8 else "RSP", state.esp, nbytes)
    # The parameters are copied so that they keep their order (the last one
    # read from the highest address is pushed first).
    for i in reversed(range(count)):
        address = (old.base + ((state.esp + i * nbytes) & old.mask)) & 0xFFFFFFFFFFFFFFFF
        value = read_int(tables, address, nbytes, "parameter %d on the caller's stack" % i)
        stack.push("param%d" % i, value, nbytes)
    if count:
        trace.note("stack switch", "parameters", "%d %d-byte parameter(s) copied from the "
                   "caller's stack %04x:%#x" % (count, nbytes, state.ss, state.esp), "§5.8.5")
    stack.push("CS", state.cs, nbytes)
    stack.push("EIP" if nbytes < 8 else "RIP", state.eip, nbytes)
    new_cs = (gate.selector & 0xFFFC) | level
    trace.note(stage, "CS", "CS = %#06x, EIP = %#x, CPL %d -> %d, SS:ESP = %04x:%#x" % (
        new_cs, entry, state.cpl, level, new_ss, stack.sp), "§5.8.5")
    return TransferResult(fault=None, error_code=None, steps=tuple(trace.steps),
                          path="call gate to more privileged code (stack switch)",
                          new_cs=new_cs, new_eip=entry, new_cpl=level, new_ss=new_ss,
                          new_esp=stack.sp, new_eflags=state.eflags, stack_switch=True,
                          pushed=tuple(stack.pushed), **base)


# ------------------------------------------------------------------ INT n and exceptions


def interrupt(tables: SystemTables, state: ProcessorState, vector: int,
              transfer=Transfer.INT, error_code: int = 0) -> TransferResult:
    """An interrupt or exception through the IDT (SDM vol. 3A §6.12, §6.14; vol. 2A INT n).

    Args:
        vector: 0..255.
        transfer: Transfer.INT (software INT n/INT3/INTO: EXT=0, CPL <= gate DPL),
            Transfer.EXCEPTION (EXT=1; vectors 8, 10-14, 17, 21 push ``error_code``),
            Transfer.EXTERNAL (EXT=1, no error code).

    Raises:
        DecodeError: a vector outside 0..255, a CPL outside 0..3.
        UnsupportedError: real-address mode.
    """
    transfer = Transfer(transfer)
    if not transfer.through_idt:
        raise DecodeError("interrupt: %s does not go through the IDT" % transfer.value)
    check_state(state)
    if not isinstance(vector, int) or not 0 <= vector <= 255:
        raise DecodeError("vector %r is outside 0..255" % (vector,))
    if state.mode is CpuMode.REAL:
        raise UnsupportedError("real-address mode: INT %#x reads CS:IP from the IVT at %#x "
                               "(4 bytes a vector) and checks nothing (§20.1.4)"
                               % (vector, vector * 4))
    trace = Trace()
    base = dict(transfer=transfer, target="vector %#x" % vector, state=state)
    try:
        return _interrupt(tables, state, vector, transfer, error_code, trace, base)
    except FaultRaised as stop:
        return TransferResult(fault=stop.fault, error_code=stop.code, steps=tuple(trace.steps),
                              **base)


def _interrupt(tables, state, vector, transfer, error_code, trace, base) -> TransferResult:
    ext = transfer is not Transfer.INT
    software = transfer is Transfer.INT
    stage = "interrupt"
    verr = vector_error(vector, ext)
    has_error = transfer is Transfer.EXCEPTION and vector in ERROR_CODE_VECTORS
    cpl = state.cpl
    if state.mode is CpuMode.VIRTUAL_8086 and software:
        iopl = state.eflags >> 12 & 3
        trace.need(iopl == 3, stage, "IOPL", "virtual-8086 mode: INT n needs IOPL 3 (IOPL %d; "
                   "without CR4.VME the monitor gets #GP(0))" % iopl, "§20.3.1.1", Fault.GP, 0)
    size = 16 if state.ia32e else 8
    end = vector * size + size - 1
    trace.need(end <= tables.idt_limit and end < len(tables.idt), stage, "IDT limit",
               "vector %d: IDT bytes %#x..%#x %s the limit %#x" % (
                   vector, vector * size, end, "within" if end <= tables.idt_limit else "beyond",
                   tables.idt_limit), "§6.10, §6.14.1", Fault.GP, verr)
    raw = tables.idt[vector * size:vector * size + size]
    gate = SegmentDescriptor.from_bytes(raw, tables.mode)
    trace.note(stage, "gate", "IDT[%d]: %s" % (vector, gate), "§6.11")
    kinds = (DescriptorKind.INTERRUPT_GATE, DescriptorKind.TRAP_GATE) + (
        () if state.ia32e else (DescriptorKind.TASK_GATE,))
    ok = gate.kind in kinds
    trace.need(ok, stage, "gate type", "%s %s %s" % (
        gate.type_name, "is" if ok else "is not", "a 64-bit interrupt or trap gate"
        if state.ia32e else "an interrupt, trap or task gate"), "§6.11, §6.14.1", Fault.GP, verr)
    if software:
        ok = cpl <= gate.dpl
        trace.need(ok, stage, "gate DPL", "software interrupt: CPL %d %s gate DPL %d" % (
            cpl, "<=" if ok else ">", gate.dpl), "§6.12.1.1", Fault.GP, verr)
    else:
        trace.note(stage, "gate DPL", "not checked for %s (EXT=1)" % (
            "an exception" if transfer is Transfer.EXCEPTION else "an external interrupt"),
            "§6.12.1.1")
    trace.need(gate.present, stage, "gate present", "P=%d" % int(gate.present), "§6.12.1",
               Fault.NP, verr)
    if gate.kind is DescriptorKind.TASK_GATE:
        tss_value = gate.selector
        tss_err = selector_error(tss_value, ext)
        tss = lookup(tables, tss_value, trace, stage, "TSS", Fault.TS, tss_err, gdt_only=True)
        ok = tss.kind in (DescriptorKind.TSS_AVAILABLE, DescriptorKind.TSS_BUSY)
        trace.need(ok, stage, "TSS type", "the task gate's selector %#06x names %s" % (
            tss_value, tss.type_name), "§6.12.2, §7.2.5", Fault.TS, tss_err)
        trace.need(tss.kind is not DescriptorKind.TSS_BUSY, stage, "TSS busy",
                   "busy bit %d (an interrupt task may not be re-entered)" % int(
                       tss.kind is DescriptorKind.TSS_BUSY), "§7.3, Table 7-1", Fault.GP, tss_err)
        trace.need(tss.present, stage, "TSS present", "P=%d" % int(tss.present), "§7.3",
                   Fault.NP, tss_err)
        return switch_task(tables, state, tss_value, tss, transfer, trace, base,
                           error_code=error_code if has_error else None, ext=ext)
    code = target_code(tables, state, gate.selector, trace, True, ext, stage)
    entry = gate.offset
    inner = not code.conforming and code.dpl < cpl
    gate_bytes = 8 if state.ia32e else gate.width // 8
    flags = state.eflags
    if state.mode is CpuMode.VIRTUAL_8086:
        trace.need(inner and code.dpl == 0, stage, "virtual-8086 target", "from virtual-8086 "
                   "mode the handler must be nonconforming code with DPL 0 (DPL %d)" % code.dpl,
                   "§20.3.1.1", Fault.GP, selector_error(gate.selector, ext))
    if state.ia32e:
        ist = gate.ist
        if inner or ist:
            level = code.dpl if inner else cpl
            trace.note("stack switch", "privilege change" if inner else "IST",
                       ("nonconforming code DPL %d < CPL %d" % (code.dpl, cpl) if inner else
                        "same privilege") + (", IST=%d selects the TSS's IST%d" % (ist, ist)
                                             if ist else ": RSP%d from the TSS" % level),
                       "§6.14.4, §6.14.5")
            _, sp = tss_stack(tables, state, level, trace, ext, ist)
            ok = canonical(sp, state.address_bits)
            trace.need(ok, "stack switch", "RSP canonical", "new RSP %#x %s canonical" % (
                sp, "is" if ok else "is not"), "§6.14.4", Fault.SS, int(ext))
        else:
            sp = state.esp
        aligned = sp & ~0xF
        trace.note("stack switch", "alignment", "RSP %#x aligned down to 16 bytes: %#x" % (
            sp, aligned), "§6.14.2")
        check_entry(code, entry, state, trace, stage, ext)
        new_ss = code.dpl if inner else state.ss
        stack = Stack("new", 0, aligned, (1 << 64) - 1)
        for name, value in (("SS", state.ss), ("RSP", state.esp), ("RFLAGS", flags),
                            ("CS", state.cs), ("RIP", state.eip)):
            stack.push(name, value, 8)
        if has_error:
            stack.push("error code", error_code, 8)
        switched = inner or bool(ist)
        new_cpl = code.dpl if inner else cpl
    else:
        n = gate_bytes
        v86 = state.mode is CpuMode.VIRTUAL_8086
        count = (5 if inner else 3) + (4 if v86 else 0) + int(has_error)
        if inner:
            trace.note("stack switch", "privilege change", "nonconforming code DPL %d < CPL %d:"
                       " the stack for CPL %d comes from the TSS" % (code.dpl, cpl, code.dpl),
                       "§6.12.1")
            ss, sp = tss_stack(tables, state, code.dpl, trace, ext)
            ss_d = check_new_stack(tables, ss, code.dpl, trace, ext)
            room(trace, state, ss_d, sp, count * n, selector_error(ss, ext), Fault.SS,
                  "stack switch", "§6.12.1, vol. 2A INT n", False)
            stack = Stack("new", ss_d.base, sp, 0xFFFFFFFF if ss_d.db else 0xFFFF)
            new_ss = (ss & 0xFFFC) | code.dpl
        else:
            room(trace, state, state.ss_descriptor, state.esp, count * n, int(ext), Fault.SS,
                  stage, "§6.12.1, vol. 2A INT n", False)
            stack = current_stack(state)
            new_ss = state.ss
        check_entry(code, entry, state, trace, stage, ext)
        if inner and v86:
            for name in ("gs", "fs", "ds", "es"):
                stack.push(name.upper(), state.segments.get(name, 0), n)
        if inner:
            stack.push("SS", state.ss, n)
            stack.push("ESP", state.esp, n)
        stack.push("EFLAGS", flags, n)
        stack.push("CS", state.cs, n)
        stack.push("EIP", state.eip, n)
        if has_error:
            stack.push("error code", error_code, n)
        switched, new_cpl = inner, (code.dpl if inner else cpl)
    cleared = EFLAGS_TF | EFLAGS_VM | EFLAGS_RF | EFLAGS_NT | (
        EFLAGS_IF if gate.kind is DescriptorKind.INTERRUPT_GATE else 0)
    new_flags = flags & ~cleared
    trace.note(stage, "EFLAGS", "TF, VM, RF and NT cleared%s: %#x -> %#x" % (
        ", IF cleared (interrupt gate)" if gate.kind is DescriptorKind.INTERRUPT_GATE else
        " (a trap gate leaves IF)", flags, new_flags), "§6.12.1.3")
    new_cs = (gate.selector & 0xFFFC) | new_cpl
    notes = ()
    if software and vector in (3, 4):
        notes = ("INT3 (CC) and INTO (CE) are checked like INT n; the two-byte CD 03 / CD 04 "
                 "too (§6.12.1.1)",)
    return TransferResult(fault=None, error_code=None, steps=tuple(trace.steps),
                          path="%s%s" % (gate.kind.value, ", privilege change (stack switch)"
                                         if inner else (", IST stack" if switched else
                                                        ", same privilege")),
                          new_cs=new_cs, new_eip=entry, new_cpl=new_cpl, new_ss=new_ss,
                          new_esp=stack.sp, new_eflags=new_flags, stack_switch=switched,
                          pushed=tuple(stack.pushed), notes=notes, **base)


def check_state(state: ProcessorState) -> None:
    if not isinstance(state.cpl, int) or isinstance(state.cpl, bool) or not 0 <= state.cpl <= 3:
        raise DecodeError("CPL %r is not a privilege level 0..3" % (state.cpl,))
