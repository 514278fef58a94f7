"""Find a GDT, LDT or IDT in a memory image and read its bytes.

GDTR and IDTR hold linear addresses, so a table is read through the page
tables (``AddressSpace``) unless it is given as physical. The LDT is found
the way the processor finds it: LDTR selects an LDT descriptor in the GDT,
which gives the LDT's base and limit (SDM vol. 3A §3.5.1).
"""
from dataclasses import dataclass
from typing import Optional, Tuple

from .errors import DecodeError, NoCpuStateError, TableNotFoundError
from .paging import AddressSpace
from .tables import decode_table
from .x86 import DescriptorKind, DescriptorMode

# GDTR and IDTR limits are 16 bits (SDM §2.4.1, §2.4.3).
MAX_TABLE_LIMIT = 0xFFFF


@dataclass(frozen=True)
class TableBytes:
    data: bytes
    base: int
    limit: int
    mode: Optional[DescriptorMode]
    notes: Tuple[str, ...]


def _mode_of(cpu) -> Optional[DescriptorMode]:
    mode = cpu.paging_mode() if cpu is not None else None
    if mode in ("4level", "5level"):
        return DescriptorMode.LONG
    if mode is not None or (cpu is not None and cpu.cr0 & 1):
        return DescriptorMode.LEGACY
    return None


def read_table(memory, which: str, base: Optional[int] = None, limit: Optional[int] = None,
               cr3: Optional[int] = None, physical: bool = False,
               paging_mode: Optional[str] = None) -> TableBytes:
    """The bytes of the GDT, LDT or IDT, from the CPU state or an explicit base.

    ``memory`` is a memory image, or an AddressSpace over one (whose CR3 and
    paging mode are then the defaults).

    A linear base is translated through ``cr3`` (default the image's CR3)
    in ``paging_mode`` (default the image's); an image without CPU state
    (raw, LiME) needs both.

    Raises:
        TableNotFoundError: no CPU state and no base, or LDTR selecting nothing usable.
        NoCpuStateError: a linear base, no CPU state, and no cr3 / paging_mode.
        DecodeError: a base without a limit, or a limit above 0xFFFF.
        InvalidAddressError: the table is not mapped or not in the image.
    """
    if isinstance(memory, AddressSpace):       # its image, read through its own tables
        space = memory
        memory = space.memory
        cr3 = space.cr3 if cr3 is None else cr3
        paging_mode = space.mode if paging_mode is None else paging_mode
    cpu = memory.cpu
    notes = []
    if base is None:
        if cpu is None:
            raise TableNotFoundError("%s: the image has no CPU state: give --base and --limit"
                                     % memory.name)
        if which == "GDT":
            base, limit = cpu.gdtr_base, cpu.gdtr_limit
            notes.append("GDT at GDTR: base %#x, limit %#x" % (base, limit))
        elif which == "IDT":
            base, limit = cpu.idtr_base, cpu.idtr_limit
            notes.append("IDT at IDTR: base %#x, limit %#x" % (base, limit))
        else:
            base, limit, note = _ldt_location(memory, cr3)
            notes.append(note)
    elif limit is None:
        raise DecodeError("--base needs --limit (the table's size minus one)")
    if not 0 <= limit <= MAX_TABLE_LIMIT:
        raise DecodeError("%s limit %#x is larger than 0xFFFF, the most a descriptor-table "
                             "register can hold" % (which, limit))
    if physical:
        data = memory.read(base, limit + 1)
        notes.append("read from physical memory")
    else:
        try:
            space = AddressSpace(memory, cr3=cr3, mode=paging_mode)
        except NoCpuStateError as exc:
            raise NoCpuStateError("%s: nothing translates the linear base %#x: %s, or a "
                                  "physical base (--physical)" % (memory.name, base, exc),
                                  exc.missing) from None
        data = space.read(base, limit + 1)
        notes.append("read through CR3 %#x (%s paging)" % (space.cr3, space.mode.value))
    return TableBytes(data, base, limit, _mode_of(cpu), tuple(notes))


def _ldt_location(memory, cr3):
    cpu = memory.cpu
    selector = cpu.segments["ldtr"].selector if "ldtr" in cpu.segments else 0
    if selector >> 3 == 0:
        raise TableNotFoundError("%s: LDTR holds the null selector: no LDT is loaded"
                                 % memory.name)
    gdt = read_table(memory, "GDT", cr3=cr3)
    table = decode_table(gdt.data, "GDT", gdt.mode)
    entry = table.by_index(selector >> 3)
    if entry is None or entry.descriptor.kind is not DescriptorKind.LDT:
        raise TableNotFoundError("%s: LDTR %#x does not select an LDT descriptor in the GDT"
                                 % (memory.name, selector))
    d = entry.descriptor
    return d.base, d.limit, ("LDT through LDTR %#x: GDT descriptor %d gives base %#x, limit %#x"
                             % (selector, entry.index, d.base, d.limit))
