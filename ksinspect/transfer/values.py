"""The values of a control transfer: what it starts from, what it reads, where it ends."""
import enum
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from ..access import Fault, Step
from ..views.html import transfer_html
from ..views.text import transfer_text
from ..x86.control import CpuMode
from ..x86.descriptor import SegmentDescriptor

EFLAGS_TF, EFLAGS_IF, EFLAGS_NT, EFLAGS_RF, EFLAGS_VM = 1 << 8, 1 << 9, 1 << 14, 1 << 16, 1 << 17


class Transfer(enum.Enum):
    """How control is transferred."""

    CALL = "call"          # far CALL
    JMP = "jmp"            # far JMP
    INT = "int"            # INT n / INT3 / INTO: software, EXT=0, the gate's DPL is checked
    EXCEPTION = "exception"    # a processor exception: EXT=1, no DPL check, maybe an error code
    EXTERNAL = "external"      # an external interrupt (INTR/NMI): EXT=1, no error code

    @property
    def through_idt(self) -> bool:
        return self in (Transfer.INT, Transfer.EXCEPTION, Transfer.EXTERNAL)


@dataclass(frozen=True)
class Push:
    """One value written on the stack, in the order the processor writes them."""

    name: str
    value: int
    address: int      # linear address of its first byte
    size: int

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "address": self.address,
                "size": self.size}


@dataclass(frozen=True)
class ProcessorState:
    """What the transfer starts from.

    Attributes:
        mode: the operating mode (protected, virtual-8086, compatibility, 64-bit).
        cpl: the current privilege level.
        cs, eip: the caller's CS and the return address the processor pushes
            (the next instruction for CALL and INT n; the faulting one for a fault).
        ss, esp: the current stack; ``ss_descriptor`` its cached descriptor
            (base, limit, B flag), None in 64-bit mode.
        eflags: EFLAGS (NT, VM, IF, TF matter).
        tr, tr_base, tr_limit, tr_type: the current task register (type 1/3: 16-bit
            TSS, 9/11: 32-bit, or the 64-bit TSS in IA-32e mode).
        address_bits: linear-address width for canonical checks (48 or 57).
        general: eax..edi, for the task switch's save (0 when unknown).
        segments: es, ds, fs, gs selectors, for the same.
        ldtr, cr3: LDTR's selector and CR3, saved/replaced by a task switch.
        paging: CR0.PG (a task switch loads CR3 only with paging on).
    """

    mode: CpuMode
    cpl: int
    cs: int
    eip: int
    ss: int
    esp: int
    ss_descriptor: Optional[SegmentDescriptor]
    eflags: int = 0x2
    tr: int = 0
    tr_base: int = 0
    tr_limit: int = 0
    tr_type: int = 0
    address_bits: int = 48
    general: Dict[str, int] = field(default_factory=dict)
    segments: Dict[str, int] = field(default_factory=dict)
    ldtr: int = 0
    cr3: int = 0
    paging: bool = True

    @property
    def ia32e(self) -> bool:
        return self.mode in (CpuMode.COMPATIBILITY, CpuMode.LONG_64BIT)

    @property
    def tss_width(self) -> int:
        if self.ia32e:
            return 64
        return 32 if self.tr_type & 8 else 16


@dataclass
class SystemTables:
    """The descriptor tables and the linear memory the processor reads on the way.

    ``read`` reads linear memory (through the current paging, or the page
    tables of ``cr3`` when given: a task switch reads the new task's LDT after
    loading its CR3); it raises InvalidAddressError when the bytes are not there.
    """

    gdt: bytes
    gdt_limit: int
    idt: bytes
    idt_limit: int
    read: Callable[..., bytes]
    ldt: Optional[bytes] = None
    ldt_limit: int = 0
    long_mode: bool = False
    gdt_base: int = 0

    @property
    def mode(self) -> str:
        return "long" if self.long_mode else "legacy"


@dataclass(frozen=True)
class TransferResult:
    """Where the transfer ends: the new CS:EIP, stack and CPL, or the fault."""

    transfer: Transfer
    target: str
    state: ProcessorState
    fault: Optional[Fault]
    error_code: Optional[int]
    steps: Tuple[Step, ...]
    path: str = ""
    new_cs: Optional[int] = None
    new_eip: Optional[int] = None
    new_cpl: Optional[int] = None
    new_ss: Optional[int] = None
    new_esp: Optional[int] = None
    new_eflags: Optional[int] = None
    stack_switch: bool = False
    pushed: Tuple[Push, ...] = ()
    task_switch: Optional[object] = None
    notes: Tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.fault is None

    def __str__(self) -> str:
        where = "%s %s (CPL %d, %s)" % (self.transfer.value.upper(), self.target, self.state.cpl,
                                       self.state.mode.label)
        if self.fault is not None:
            return "%s -> %s(%#x)" % (where, self.fault.mnemonic, self.error_code)
        text = "%s -> %s: %04x:%#x, CPL %d" % (where, self.path, self.new_cs, self.new_eip,
                                               self.new_cpl)
        if self.stack_switch:
            text += ", stack switched to %04x:%#x" % (self.new_ss, self.new_esp)
        elif self.new_esp is not None:
            text += ", stack %04x:%#x" % (self.new_ss, self.new_esp)
        return text

    def rows(self) -> List[dict]:
        return [s.to_dict() for s in self.steps]

    def explain(self) -> str:
        return transfer_text(self)

    def to_dict(self) -> dict:
        return {"transfer": self.transfer.value, "target": self.target,
                "cpl": self.state.cpl, "mode": self.state.mode.name.lower(),
                "fault": None if self.fault is None else self.fault.mnemonic,
                "vector": None if self.fault is None else self.fault.vector,
                "error_code": self.error_code, "path": self.path,
                "new_cs": self.new_cs, "new_eip": self.new_eip, "new_cpl": self.new_cpl,
                "new_ss": self.new_ss, "new_esp": self.new_esp, "new_eflags": self.new_eflags,
                "stack_switch": self.stack_switch,
                "pushed": [p.to_dict() for p in self.pushed],
                "task_switch": None if self.task_switch is None else self.task_switch.to_dict(),
                "steps": self.rows(), "notes": list(self.notes)}

    def _repr_html_(self) -> str:
        return transfer_html(self)
