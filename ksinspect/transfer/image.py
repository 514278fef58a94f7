"""Control transfers over a memory image: its GDT, LDT, IDT, TR and registers."""
from typing import Dict, Optional

from ..access import cached_descriptor
from ..errors import TableNotFoundError
from ..x86.control import CpuMode
from .gates import far_transfer, interrupt
from .values import ProcessorState, SystemTables, Transfer, TransferResult


def tables_from_image(memory, cr3: Optional[int] = None) -> SystemTables:
    """The GDT, LDT (if LDTR names one), IDT and linear reads of an image with CPU state.

    Raises:
        TableNotFoundError: the image has no CPU state.
    """
    from ..paging import AddressSpace
    from ..table_source import read_table
    from ..x86.descriptor import DescriptorMode
    cpu = getattr(memory, "cpu", None)
    if cpu is None:
        raise TableNotFoundError("%s carries no CPU state (no GDT, IDT or TR)"
                                 % getattr(memory, "name", "the image"))
    gdt = read_table(memory, "GDT", cr3=cr3)
    idt = read_table(memory, "IDT", cr3=cr3)
    try:
        ldt = read_table(memory, "LDT", cr3=cr3)
        ldt_data, ldt_limit = ldt.data, ldt.limit
    except TableNotFoundError:
        ldt_data, ldt_limit = None, 0
    spaces: Dict[Optional[int], object] = {}

    def read(address: int, n: int, cr3_value: Optional[int] = None) -> bytes:
        key = cr3_value if cr3_value is not None else cr3
        if key not in spaces:
            spaces[key] = AddressSpace(memory, cr3=key)
        return spaces[key].read(address, n)

    return SystemTables(gdt.data, gdt.limit, idt.data, idt.limit, read, ldt_data, ldt_limit,
                        gdt.mode is DescriptorMode.LONG, gdt.base)


def state_from_image(memory, cpl: Optional[int] = None, eip: Optional[int] = None,
                     esp: Optional[int] = None) -> ProcessorState:
    """The registers of an image as the start of a transfer (CPL default CS.RPL).

    Raises:
        TableNotFoundError: the image has no CPU state.
    """
    cpu = getattr(memory, "cpu", None)
    if cpu is None:
        raise TableNotFoundError("%s carries no CPU state" % getattr(memory, "name", "the image"))
    operating = cpu.operating_mode()
    segs = cpu.segments
    dmode = "long" if cpu.paging_mode() in ("4level", "5level") else "legacy"
    cs = segs.get("cs")
    ss = segs.get("ss")
    tr = segs.get("tr")
    ldtr = segs.get("ldtr")
    level = cs.selector & 3 if cpl is None and cs is not None else (cpl or 0)
    ss_d = cached_descriptor(ss, dmode) if ss is not None and \
        operating.mode is not CpuMode.LONG_64BIT else None
    general = {"e" + k[1:]: v & 0xFFFFFFFF for k, v in cpu.general.items()
               if k in ("rax", "rcx", "rdx", "rbx", "rbp", "rsi", "rdi")}
    general["esp"] = cpu.rsp & 0xFFFFFFFF
    return ProcessorState(
        mode=operating.mode, cpl=level, cs=cs.selector if cs else 0,
        eip=cpu.rip if eip is None else eip, ss=ss.selector if ss else 0,
        esp=cpu.rsp if esp is None else esp, ss_descriptor=ss_d, eflags=cpu.rflags,
        tr=tr.selector if tr else 0, tr_base=tr.base if tr else 0,
        tr_limit=tr.limit if tr else 0, tr_type=tr.type if tr else 0,
        address_bits=operating.address_bits, general=general,
        segments={n: segs[n].selector for n in ("es", "cs", "ss", "ds", "fs", "gs") if n in segs},
        ldtr=ldtr.selector if ldtr else 0, cr3=cpu.cr3, paging=bool(cpu.cr0 >> 31 & 1))


def simulate_far_transfer(memory, selector: int, offset: int, transfer="call",
                          cpl: Optional[int] = None, cr3: Optional[int] = None,
                          eip: Optional[int] = None, esp: Optional[int] = None) -> TransferResult:
    """:func:`far_transfer` over a memory image's tables and registers."""
    state = state_from_image(memory, cpl, eip, esp)
    return far_transfer(tables_from_image(memory, cr3), state, selector, offset,
                        Transfer(transfer))


def simulate_interrupt(memory, vector: int, transfer="int", cpl: Optional[int] = None,
                       error_code: int = 0, cr3: Optional[int] = None, eip: Optional[int] = None,
                       esp: Optional[int] = None) -> TransferResult:
    """:func:`interrupt` over a memory image's IDT, GDT, TSS and registers."""
    state = state_from_image(memory, cpl, eip, esp)
    return interrupt(tables_from_image(memory, cr3), state, vector, Transfer(transfer),
                     error_code)
