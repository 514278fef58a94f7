"""Find and check the task-state segment an image's TR (or a GDT selector) names.

The processor finds the TSS the way it finds any segment: TR's selector
indexes the GDT, whose TSS descriptor gives the base and limit (SDM vol. 3A
§8.2.2, §8.2.4); the TSS is read through the image's paging. The checks are
the ones a reader of a dump wants: the descriptor is a TSS and present, its
limit holds a whole TSS, the stack pointers it hands out (ESP0 / RSP0, the
IST entries) are mapped, the EIP and CR3 of a 32-bit task point where the
kernel says (with its symbols), and which IDT vectors reach it through task
gates (the i386 double-fault handler is one, §6.15 "Interrupt 8").
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .errors import InvalidAddressError, KsinspectError, TableNotFoundError
from .access import PageRights
from .paging import AddressSpace
from .table_source import read_table
from .tables import Finding, decode_idt, decode_table
from .views.html import tss_report_html
from .views.text import tss_report_text
from .x86.descriptor import DescriptorKind, DescriptorMode
from .x86.tss import IO_BITMAP_PORTS, TaskStateSegment

MAX_TSS_BYTES = 0x10000 + IO_BITMAP_PORTS // 8    # the map base is 16 bits, the map 8 KiB


@dataclass(frozen=True)
class TssReport:
    """A TSS with where it was found and what is worth knowing about it."""

    tss: TaskStateSegment
    how: str
    findings: Tuple[Finding, ...]
    task_gates: Tuple[int, ...]
    eip_symbol: Optional[str]

    def __str__(self) -> str:
        return str(self.tss)

    def explain(self) -> str:
        return tss_report_text(self)

    def to_dict(self) -> dict:
        d = self.tss.to_dict()
        d.update({"how": self.how, "findings": [f.to_dict() for f in self.findings],
                  "task_gates": list(self.task_gates), "eip_symbol": self.eip_symbol})
        return d

    def _repr_html_(self) -> str:
        return tss_report_html(self)


def _mapped(space: AddressSpace, va: int) -> Optional[bool]:
    """True / False when the walk says so; None when the image cannot tell
    (a table or the page is not in it)."""
    try:
        return PageRights.from_translation(space.translate(va)).present
    except InvalidAddressError:
        return None


def read_tss(memory, selector: Optional[int] = None, cr3: Optional[int] = None,
             symbols=None) -> TssReport:
    """Decode the TSS that TR names (or the GDT's TSS descriptor at ``selector``).

    Raises:
        TableNotFoundError: no CPU state, or the selector does not name a TSS descriptor.
        InvalidAddressError: the TSS is not mapped.
    """
    cpu = getattr(memory, "cpu", None)
    if cpu is None:
        raise TableNotFoundError("%s carries no CPU state: no TR, no GDT" % memory.name)
    gdt_bytes = read_table(memory, "GDT", cr3=cr3)
    gdt = decode_table(gdt_bytes.data, "GDT", gdt_bytes.mode, base=gdt_bytes.base)
    long_mode = gdt_bytes.mode is DescriptorMode.LONG
    tr = cpu.segments.get("tr")
    findings: List[Finding] = []
    if selector is None:
        if tr is None or tr.selector >> 3 == 0:
            raise TableNotFoundError("%s: TR holds the null selector: no task is loaded"
                                     % memory.name)
        selector = tr.selector
        how = "TR = %#x (its cached base %#x, limit %#x)" % (tr.selector, tr.base, tr.limit)
    else:
        how = "GDT selector %#x" % selector
    entry = gdt.by_index(selector >> 3)
    if selector & 4 or entry is None:
        raise TableNotFoundError("%s: selector %#x does not name a GDT entry (GDT limit %#x)"
                                 % (memory.name, selector, gdt_bytes.limit))
    d = entry.descriptor
    if d.kind not in (DescriptorKind.TSS_AVAILABLE, DescriptorKind.TSS_BUSY):
        raise TableNotFoundError("%s: GDT selector %#x names %s, not a TSS descriptor"
                                 % (memory.name, selector, d.type_name))
    if not long_mode and d.type in (1, 3):
        raise TableNotFoundError("%s: selector %#x names a 16-bit TSS (type %d), which this "
                                 "decoder does not read" % (memory.name, selector, d.type))
    base, limit = d.base, d.limit
    if not d.present:
        findings.append(Finding("tss-not-present", "the TSS descriptor has P=0: a task switch "
                                "or LTR raises #NP (§8.2.2)"))
    if tr is not None and tr.selector == selector:
        if (tr.base, tr.limit) != (base, limit):
            findings.append(Finding("tr-cache-differs", "TR's cached base/limit %#x/%#x differ "
                                    "from the descriptor's %#x/%#x" % (tr.base, tr.limit,
                                                                        base, limit)))
        if d.kind is DescriptorKind.TSS_AVAILABLE:
            findings.append(Finding("tr-not-busy", "TR selects it but the descriptor says "
                                    "available: LTR and task switches mark it busy (§8.2.2)"))
    space = AddressSpace(memory, cr3=cr3)
    # At least the 104 bytes of a TSS, even when the limit is smaller (an anomaly
    # the decoded value reports): the fields are still worth seeing.
    size = max(min(limit + 1, MAX_TSS_BYTES), 0x68)
    data, error = space.read_available(base, size)
    if len(data) < 0x68:
        raise InvalidAddressError("%s: the TSS at %#x is not mapped for its first 104 bytes%s"
                                  % (memory.name, base, ": %s" % error if error else ""),
                                  address=base)
    tss = TaskStateSegment.decode(data, 64 if long_mode else 32, base, limit, selector)
    if error is not None and len(data) < min(limit + 1, MAX_TSS_BYTES):
        findings.append(Finding("tss-partly-unmapped", "only %#x of the %#x bytes up to the "
                                "limit are mapped" % (len(data), size)))
    f = tss.fields
    if long_mode:
        pointers = [("rsp0", f["rsp0"])] + [("ist%d" % n, f["ist%d" % n]) for n in range(1, 8)]
    else:
        pointers = [("esp0", f["esp0"]), ("esp", f["esp"]), ("eip", f["eip"])]
    for name, value in pointers:
        if value == 0:
            continue
        # A stack pointer points just past the stack: the first push writes below it.
        probe = (value - 8 if name != "eip" else value) & ((1 << 64) - 1)
        mapped = _mapped(space, probe)
        if mapped is False:
            findings.append(Finding("pointer-unmapped", "%s = %#x: %#x is not mapped under CR3 "
                                    "%#x" % (name.upper(), value, probe, space.cr3)))
        elif mapped is None:
            findings.append(Finding("pointer-unknown", "%s = %#x: whether %#x is mapped cannot "
                                    "be told (its tables are not in the image)" % (
                                        name.upper(), value, probe)))
    eip_symbol = None
    if not long_mode:
        if symbols is not None:
            eip_symbol = symbols.symbolize(f["eip"])
        if f["cr3"] and f["cr3"] != cpu.cr3:
            findings.append(Finding("cr3-differs", "the task's CR3 %#x is not the image's CR3 "
                                    "%#x: a switch to this task changes address space" % (
                                        f["cr3"], cpu.cr3)))
    gates: List[int] = []
    try:
        idt_bytes = read_table(memory, "IDT", cr3=cr3)
        idt = decode_idt(idt_bytes.data, idt_bytes.mode, idt_bytes.base, idt_bytes.limit)
        gates = [e.vector for e in idt if e.gate.kind is DescriptorKind.TASK_GATE
                 and e.gate.selector >> 3 == selector >> 3]
    except KsinspectError:
        pass
    for anomaly in tss.anomalies():
        findings.append(Finding("tss-anomaly", anomaly))
    return TssReport(tss, how, tuple(findings), tuple(gates), eip_symbol)
