"""A task switch through a TSS descriptor or a task gate (SDM vol. 3A §7.3, Table 7-1).

The caller (a far CALL/JMP or an interrupt) has made the privilege, busy and
present checks; here the new TSS's limit is checked (>= 0x67 for a 32-bit
TSS, 0x2B for a 16-bit one, else #TS), its fields are read, the current
state is what the processor saves into the old TSS, the busy bits, the
previous-task link and EFLAGS.NT are set as for the kind of switch, and
the new CS, SS and EIP are checked (#TS / #NP / #SS, #GP(0) past the limit).
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..access import Fault
from ..views.text import task_switch_text
from ..x86.descriptor import DescriptorKind, SegmentDescriptor
from ..x86.tss import TaskStateSegment
from .checks import Trace, lookup, selector_error
from .values import EFLAGS_NT, EFLAGS_VM, ProcessorState, SystemTables, Transfer, TransferResult


@dataclass(frozen=True)
class TaskSwitch:
    """What a task switch saves, loads and marks (§7.3 steps 8-13)."""

    old_tr: int
    new_tr: int
    nested: bool
    saved: Dict[str, int]
    loaded: Dict[str, int]
    busy: Tuple[str, ...]

    def explain(self) -> str:
        return task_switch_text(self)

    def to_dict(self) -> dict:
        return {"old_tr": self.old_tr, "new_tr": self.new_tr, "nested": self.nested,
                "saved": dict(self.saved), "loaded": dict(self.loaded), "busy": list(self.busy)}


def switch_task(tables: SystemTables, state: ProcessorState, tss_value: int,
                tss: SegmentDescriptor, transfer: Transfer, trace: Trace, base: dict,
                error_code: Optional[int] = None, ext: bool = False) -> TransferResult:
    """Switch to the task whose TSS descriptor is ``tss`` (selector ``tss_value``)."""
    stage = "task switch"
    err = selector_error(tss_value, ext)
    wide = tss.type & 8
    minimum = 0x67 if wide else 0x2B
    trace.need(tss.limit >= minimum, stage, "TSS limit", "limit %#x %s %#x, the smallest %d-bit "
               "TSS" % (tss.limit, ">=" if tss.limit >= minimum else "<", minimum,
                        32 if wide else 16), "§7.3 step 4, Table 7-1", Fault.TS, err)
    if not wide:
        trace.note(stage, "16-bit TSS", "the 16-bit TSS layout (§7.6) is not decoded: the "
                   "switch's loads are not simulated", "§7.6")
        return TransferResult(fault=None, error_code=None, steps=tuple(trace.steps),
                              path="task switch (16-bit TSS, loads not simulated)", **base)
    data = tables.read(tss.base, 0x68)
    new = TaskStateSegment.decode(data, 32, tss.base, tss.limit, tss_value)
    f = new.fields
    nested = transfer is not Transfer.JMP
    saved = {"eip": state.eip, "eflags": state.eflags}
    saved.update({k: state.general.get(k, 0) for k in ("eax", "ecx", "edx", "ebx", "esp",
                                                        "ebp", "esi", "edi")})
    saved.update({k: state.segments.get(k, 0) for k in ("es", "cs", "ss", "ds", "fs", "gs")})
    trace.note(stage, "save", "EIP, EFLAGS, the general registers and the segment selectors "
               "are written into the current TSS (TR %#06x)" % state.tr, "§7.3 step 8")
    busy = ["old TSS %#06x: busy bit %s" % (state.tr, "kept (nested)" if nested else "cleared"),
            "new TSS %#06x: busy bit set" % tss_value, "CR0.TS set"]
    eflags = f["eflags"] | (EFLAGS_NT if nested else 0)
    if nested:
        busy.append("new TSS previous_task_link = %#06x, EFLAGS.NT = 1" % state.tr)
    trace.note(stage, "commit", "TR = %#06x, CR3 = %#x, LDTR = %#06x, EFLAGS = %#x; faults "
               "from here on are raised in the new task" % (tss_value, f["cr3"],
                                                            f["ldt_selector"], eflags),
               "§7.3 steps 9-12")
    loaded = {k: f[k] for k in ("cr3", "eip", "esp", "cs", "ss", "ds", "es", "fs", "gs",
                                "ldt_selector")}
    loaded["eflags"] = eflags
    if eflags & EFLAGS_VM:
        cpl, new_cs, new_ss = 3, f["cs"], f["ss"]
        trace.note(stage, "virtual-8086", "EFLAGS.VM=1: segments load as selector * 16",
                   "§20.2")
    else:
        cs = f["cs"]
        cpl = cs & 3
        trace.need(cs & 0xFFFC != 0, stage, "CS", "the new CS is %#06x" % cs, "Table 7-1",
                   Fault.TS, selector_error(cs, ext))
        code = lookup(tables, cs, trace, stage, "new CS", Fault.TS, selector_error(cs, ext))
        ok = code.kind is DescriptorKind.CODE and code.dpl == cpl
        trace.need(ok, stage, "CS type and DPL", "%s, DPL %d, RPL %d (code with DPL == RPL)" % (
            code.type_name, code.dpl, cpl), "Table 7-1", Fault.TS, selector_error(cs, ext))
        trace.need(code.present, stage, "CS present", "P=%d" % int(code.present), "Table 7-1",
                   Fault.NP, selector_error(cs, ext))
        ss = f["ss"]
        serr = selector_error(ss, ext)
        trace.need(ss & 0xFFFC != 0, stage, "SS", "the new SS is %#06x" % ss, "Table 7-1",
                   Fault.TS, serr)
        sd = lookup(tables, ss, trace, stage, "new SS", Fault.TS, serr)
        ok = sd.kind is DescriptorKind.DATA and sd.writable and sd.dpl == cpl == ss & 3
        trace.need(ok, stage, "SS type and DPL", "%s, DPL %d, RPL %d, CPL %d (writable data, "
                   "all equal)" % (sd.type_name, sd.dpl, ss & 3, cpl), "Table 7-1", Fault.TS,
                   serr)
        trace.need(sd.present, stage, "SS present", "P=%d" % int(sd.present), "Table 7-1",
                   Fault.SS, serr)
        ok = f["eip"] <= code.limit
        trace.need(ok, stage, "EIP limit", "EIP %#x %s the CS limit %#x" % (
            f["eip"], "<=" if ok else ">", code.limit), "§7.3 step 13", Fault.GP, 0)
        new_cs, new_ss = cs, ss
    esp = f["esp"]
    pushed = ()
    if error_code is not None:
        from .checks import Stack
        stack = Stack("new task", 0, esp, 0xFFFFFFFF)
        stack.push("error code", error_code, 4)
        esp, pushed = stack.sp, tuple(stack.pushed)
    switch = TaskSwitch(state.tr, tss_value, nested, saved, loaded, tuple(busy))
    return TransferResult(fault=None, error_code=None, steps=tuple(trace.steps),
                          path="task switch", new_cs=new_cs, new_eip=f["eip"], new_cpl=cpl,
                          new_ss=new_ss, new_esp=esp, new_eflags=eflags, pushed=pushed,
                          task_switch=switch, **base)


__all__ = ["TaskSwitch", "switch_task"]
