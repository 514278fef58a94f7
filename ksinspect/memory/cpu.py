"""CPU state carried by memory images: control registers, descriptor-table
registers and QEMU's segment caches.

Sources: QEMU's ``QEMUCPUState`` ELF note (target/i386/arch_dump.c,
``qemu_get_cpustate``), the ``CORE`` / NT_PRSTATUS note (Linux
``struct elf_prstatus``), and QEMU's ``info registers`` text
(:mod:`ksinspect.memory.qemu_registers`).

Bit positions are from the Intel SDM vol. 3A §2.5 (CR0, CR4), §2.2.1
(IA32_EFER) and §3.4.5 (segment descriptor attributes).
"""
import struct
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..errors import ImageFormatError

if TYPE_CHECKING:                 # imported where used: opening an image need not pay for it
    from ..x86.control import OperatingMode

SEGMENT_NAMES = ("cs", "ds", "es", "fs", "gs", "ss", "ldtr", "tr")

CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11
SEG_L = 1 << 21          # QEMU's DESC_L_MASK: the descriptor's L bit (bit 21 of the high dword)

@dataclass(frozen=True)
class SegmentCache:
    """One entry of QEMU's segment cache (the hidden part of a segment register).

    ``flags`` is the descriptor's attribute dword as QEMU stores it: the
    high dword of the descriptor, so the type is bits 8-11, S bit 12, DPL
    bits 13-14, P bit 15, AVL bit 20, L bit 21, D/B bit 22, G bit 23 (SDM
    vol. 3A §3.4.5). The QEMU note keeps every bit QEMU had (for a
    32-bit TR that includes the base bits 31:24 and 23:16); ``info
    registers`` prints ``flags & 0x00ffff00``. ``limit`` is the effective
    limit in bytes (already scaled by G).
    """

    selector: int
    base: int
    limit: int
    flags: int

    @property
    def type(self) -> int:
        return self.flags >> 8 & 0xF

    @property
    def system(self) -> bool:
        """S = 0: a system segment (LDT, TSS, gate)."""
        return not self.flags >> 12 & 1

    @property
    def dpl(self) -> int:
        return self.flags >> 13 & 3

    @property
    def present(self) -> bool:
        return bool(self.flags >> 15 & 1)

    @property
    def long(self) -> bool:
        """L: 64-bit code segment (meaningful for CS in IA-32e mode)."""
        return bool(self.flags & SEG_L)

    @property
    def db(self) -> bool:
        return bool(self.flags >> 22 & 1)

    @property
    def granularity(self) -> bool:
        return bool(self.flags >> 23 & 1)

    def to_dict(self) -> dict:
        return {"selector": self.selector, "base": self.base, "limit": self.limit,
                "flags": self.flags, "type": self.type, "system": self.system, "dpl": self.dpl,
                "present": self.present, "long": self.long, "db": self.db,
                "granularity": self.granularity}

    def describe(self, long_mode: bool = False) -> str:
        """A short kind as QEMU's ``info registers`` shows it (``CS64``, ``DS``,
        ``TSS64-avl``, ``LDT``...); ``-`` for a segment that is not present."""
        if not self.present:
            return "-"
        if not self.system:
            if self.type & 8:
                return "CS64" if long_mode and self.long else "CS32" if self.db else "CS16"
            return "DS" if self.db else "DS16"
        names = {1: "TSS16-avl", 2: "LDT", 3: "TSS16-busy", 9: "TSS32-avl",
                 11: "TSS32-busy", 4: "CallGate16", 12: "CallGate32", 5: "TaskGate",
                 6: "IntGate16", 14: "IntGate32", 7: "TrapGate16", 15: "TrapGate32"}
        kind = names.get(self.type, "type %d" % self.type)
        if long_mode and kind.startswith("TSS32"):
            kind = "TSS64" + kind[5:]
        return kind

    def same_as_printed(self, other: "SegmentCache") -> bool:
        """Equal as ``info registers`` prints them (flags masked with 0x00ffff00)."""
        return (self.selector == other.selector and self.base == other.base
                and self.limit == other.limit
                and self.flags & 0x00FFFF00 == other.flags & 0x00FFFF00)


@dataclass(frozen=True)
class CpuState:
    """The state of one CPU when the image was taken.

    ``efer`` is None when the source does not carry it (QEMU 7.2's ELF
    note has no EFER; ``info registers`` has). ``sources`` says where the
    values came from (``"qemu-note"``, ``"info-registers"``, ...);
    ``general`` holds the general-purpose registers the source had
    (``rax`` ... ``r15``, named in 64-bit form even for i386).
    """

    arch: str
    cr0: int
    cr2: int
    cr3: int
    cr4: int
    efer: Optional[int]
    gdtr_base: int
    gdtr_limit: int
    idtr_base: int
    idtr_limit: int
    segments: Dict[str, SegmentCache]
    rip: int
    rsp: int
    rflags: int
    kernel_gs_base: Optional[int]
    general: Dict[str, int] = field(default_factory=dict)
    sources: Tuple[str, ...] = ()

    # -- paging -----------------------------------------------------------------

    def _long_mode(self) -> Tuple[bool, str]:
        if self.efer is not None:
            if self.efer & EFER_LMA:
                return True, "EFER.LMA=1"
            if self.efer & EFER_LME and self.cr4 & CR4_PAE:
                return True, "EFER.LME=1 (LMA follows once CR0.PG=1)"
            return False, "EFER.LMA=0"
        cs = self.segments.get("cs")
        cs_l = 1 if cs is not None and cs.long else 0
        if self.arch == "x86_64" and self.cr4 & CR4_PAE:
            return True, ("EFER not known, IA-32e inferred from arch x86_64 (QEMU writes an "
                          "EM_X86_64 core only when EFER.LMA=1) with CS.L=%d%s" % (
                              cs_l, "" if cs_l else " (compatibility mode)"))
        return False, "EFER not known, legacy mode inferred from arch %s" % self.arch

    def paging_decision(self) -> Tuple[Optional[str], str]:
        """The paging mode and one line saying how it was decided.

        See :meth:`paging_mode` for the rules.
        """
        if not self.cr0 & CR0_PG:
            return None, "CR0.PG=0: paging disabled"
        long_mode, why = self._long_mode()
        pae = "CR4.PAE=%d" % (1 if self.cr4 & CR4_PAE else 0)
        if long_mode:
            la57 = 1 if self.cr4 & CR4_LA57 else 0
            return ("5level" if la57 else "4level",
                    "CR0.PG=1, %s, CR4.LA57=%d; %s" % (pae, la57, why))
        if self.cr4 & CR4_PAE:
            return "pae", "CR0.PG=1, %s; %s" % (pae, why)
        return "32", "CR0.PG=1, %s, CR4.PSE=%d; %s" % (pae, 1 if self.cr4 & CR4_PSE else 0, why)

    def paging_mode(self) -> Optional[str]:
        """The paging mode in force (SDM vol. 3A §4.1.1, Table 4-1).

        Returns None when CR0.PG=0. Otherwise IA-32e paging when EFER.LMA=1
        (or EFER.LME=1 with CR4.PAE=1, which makes LMA=1 once PG is set):
        ``"5level"`` if CR4.LA57=1 else ``"4level"``; outside IA-32e mode
        ``"pae"`` if CR4.PAE=1 else ``"32"``.

        When EFER is unknown (QEMU 7.2's ELF note does not carry it), IA-32e
        mode is inferred from ``arch == "x86_64"`` together with CR4.PAE=1:
        QEMU's dump-guest-memory writes an EM_X86_64 core exactly when the
        first CPU has EFER.LMA set (arch_dump.c ``cpu_get_dump_info``), so
        arch is the evidence. CS.L is reported in :meth:`paging_decision` but
        not required, because a 64-bit kernel stopped while a 32-bit process
        runs has CS.L=0 (compatibility mode) and still uses IA-32e paging.
        """
        return self.paging_decision()[0]

    def nxe_decision(self) -> Tuple[bool, str]:
        """:meth:`nxe` and one line saying where it comes from."""
        if self.efer is not None:
            return bool(self.efer & EFER_NXE), "EFER.NXE"
        if self.nxe():
            return True, "EFER not known: assumed 1 under PAE / IA-32e paging"
        return False, "EFER not known: no NX bit without PAE / IA-32e paging"

    def nxe(self) -> bool:
        """IA32_EFER.NXE (bit 11): whether bit 63 of PAE / IA-32e entries means NX.

        When EFER is unknown this assumes NXE=1 for PAE and IA-32e paging:
        every x86-64 kernel and the PAE kernels of current distributions
        enable it, and an OS that leaves NXE=0 never sets bit 63 (it would
        be a reserved-bit fault), so assuming 1 cannot change a translation
        the CPU would make. With 32-bit paging there is no NX bit: False.
        """
        if self.efer is not None:
            return bool(self.efer & EFER_NXE)
        return self.paging_mode() in ("pae", "4level", "5level")

    @property
    def pse(self) -> bool:
        """CR4.PSE: 4 MiB pages in 32-bit paging."""
        return bool(self.cr4 & CR4_PSE)

    def table_root(self) -> Optional[int]:
        """Physical address of the top paging structure named by CR3.

        SDM vol. 3A §4.3 (32-bit: CR3[31:12]), §4.4.1 (PAE: CR3[31:5], the
        32-byte PDPT), §4.5.2 (IA-32e: CR3[51:12]; bits 11:0 are the PCID
        when CR4.PCIDE=1). None when paging is off.
        """
        mode = self.paging_mode()
        if mode is None:
            return None
        if mode == "32":
            return self.cr3 & 0xFFFFF000
        if mode == "pae":
            return self.cr3 & 0xFFFFFFE0
        return self.cr3 & 0x000FFFFFFFFFF000

    # -- control registers and the operating mode ---------------------------------

    def control_registers(self) -> Dict[str, Optional[object]]:
        """CR0, CR4, EFER (None when the source lacks it) and RFLAGS, decoded
        (:mod:`ksinspect.x86.control`)."""
        from ..x86.control import CR0, CR4, EFER, RFLAGS
        return {"cr0": CR0.decode(self.cr0), "cr4": CR4.decode(self.cr4),
                "efer": None if self.efer is None else EFER.decode(self.efer),
                "rflags": RFLAGS.decode(self.rflags)}

    def effective_efer(self) -> Tuple[int, str]:
        """IA32_EFER, or when the source lacks it the LME/LMA/NXE bits the
        paging decision implies (see :meth:`paging_mode`), with where it came from."""
        if self.efer is not None:
            return self.efer, "the image"
        long_mode, why = self._long_mode()
        value = (EFER_LME | EFER_LMA if long_mode else 0) | (EFER_NXE if self.nxe() else 0)
        return value, "inferred: " + why

    def operating_mode(self) -> "OperatingMode":
        """The operating mode CR0, CR4, EFER, RFLAGS and CS.L select (SDM vol. 3A §2.2)."""
        from ..x86.control import OperatingMode
        cs = self.segments.get("cs")
        return OperatingMode.of(self.cr0, self.cr4, self.effective_efer()[0], self.rflags,
                                cs is not None and cs.long)

    # -- serialisation -------------------------------------------------------------

    def to_dict(self) -> dict:
        from ..x86.control import CR0, CR4, EFER
        mode, reason = self.paging_decision()
        return {
            "arch": self.arch, "cr0": self.cr0, "cr2": self.cr2, "cr3": self.cr3,
            "cr4": self.cr4, "efer": self.efer,
            "cr0_flags": CR0.decode(self.cr0).bit_names(),
            "cr4_flags": CR4.decode(self.cr4).bit_names(),
            "efer_flags": None if self.efer is None else EFER.decode(self.efer).bit_names(),
            "control": {name: None if value is None else value.to_dict()
                        for name, value in self.control_registers().items()},
            "operating_mode": self.operating_mode().to_dict(),
            "gdtr_base": self.gdtr_base, "gdtr_limit": self.gdtr_limit,
            "idtr_base": self.idtr_base, "idtr_limit": self.idtr_limit,
            "segments": {name: seg.to_dict() for name, seg in self.segments.items()},
            "rip": self.rip, "rsp": self.rsp, "rflags": self.rflags,
            "kernel_gs_base": self.kernel_gs_base, "general": dict(self.general),
            "paging_mode": mode, "paging_reason": reason, "nxe": self.nxe(),
            "table_root": self.table_root(), "sources": list(self.sources),
        }

    # -- combining sources -----------------------------------------------------------

    def completed_by(self, other: "CpuState") -> Tuple["CpuState", List[str]]:
        """This state overridden / completed by ``other`` (e.g. ``info registers``).

        Values ``other`` has win; values only this state has (the note's raw
        segment flags, ``kernel_gs_base``) are kept. Returns the merged state
        and one line per register whose values disagree: two files that do
        not describe the same CPU state are evidence worth showing.
        """
        conflicts = []
        for name in ("cr0", "cr2", "cr3", "cr4", "gdtr_base", "gdtr_limit", "idtr_base",
                     "idtr_limit"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                conflicts.append("%s: %#x in the image, %#x in the registers" % (
                    name.upper(), mine, theirs))
        if self.efer is not None and other.efer is not None and self.efer != other.efer:
            conflicts.append("EFER: %#x in the image, %#x in the registers" % (
                self.efer, other.efer))
        segments = dict(self.segments)
        for name, seg in other.segments.items():
            mine = segments.get(name)
            if mine is not None and mine.same_as_printed(seg):
                continue   # keep the note's unmasked flags
            if mine is not None:
                conflicts.append("%s: %04x %x %x %08x in the image, %04x %x %x %08x in the "
                                 "registers" % (name.upper(), mine.selector, mine.base,
                                                mine.limit, mine.flags, seg.selector, seg.base,
                                                seg.limit, seg.flags))
            segments[name] = seg
        general = dict(self.general)
        general.update(other.general)
        merged = replace(
            other, segments=segments, general=general,
            efer=other.efer if other.efer is not None else self.efer,
            kernel_gs_base=(other.kernel_gs_base if other.kernel_gs_base is not None
                            else self.kernel_gs_base),
            sources=tuple(dict.fromkeys(self.sources + other.sources)))
        return merged, conflicts


# -- QEMU's note ---------------------------------------------------------------------

# struct QEMUCPUState (target/i386/arch_dump.c, QEMUCPUSTATE_VERSION 1):
# uint32 version, size; uint64 rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags;
# QEMUCPUSegment cs ds es fs gs ss ldt tr gdt idt; uint64 cr[5]; uint64 kernel_gs_base.
# QEMUCPUSegment: uint32 selector, limit, flags, pad; uint64 base (24 bytes).
QEMU_NOTE_VERSION = 1
_QEMU_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
_QEMU_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldtr", "tr", "gdt", "idt")
_QEMU_HEAD = struct.Struct("<II18Q")
_QEMU_SEG = struct.Struct("<IIIIQ")
QEMU_NOTE_MIN = _QEMU_HEAD.size + 10 * _QEMU_SEG.size + 5 * 8      # 432: up to cr[4]
QEMU_NOTE_WITH_KGSBASE = QEMU_NOTE_MIN + 8                           # 440 (QEMU >= 2.x)


def parse_qemu_note(desc: bytes, arch: str, where: str) -> Optional[CpuState]:
    """Decode one ``QEMU`` note's descriptor; None (not an error) for a version
    this reader does not know, so a future QEMU still opens.

    Raises:
        ImageFormatError: the note is too short for the fields version 1 has.
    """
    if len(desc) < 8:
        raise ImageFormatError("%s: QEMU CPU-state note is %d bytes, too short for its header"
                               % (where, len(desc)))
    version, size = struct.unpack_from("<II", desc, 0)
    if version != QEMU_NOTE_VERSION:
        return None
    if len(desc) < QEMU_NOTE_MIN or size < QEMU_NOTE_MIN:
        raise ImageFormatError("%s: QEMU CPU-state note is %d bytes (its size field says %d); "
                               "version 1 needs at least %d" % (where, len(desc), size,
                                                               QEMU_NOTE_MIN))
    values = _QEMU_HEAD.unpack_from(desc, 0)[2:]
    gprs = dict(zip(_QEMU_GPRS, values))
    segs = {}
    offset = _QEMU_HEAD.size
    for name in _QEMU_SEGS:
        selector, limit, flags, _pad, base = _QEMU_SEG.unpack_from(desc, offset)
        segs[name] = SegmentCache(selector, base, limit, flags)
        offset += _QEMU_SEG.size
    cr = struct.unpack_from("<5Q", desc, offset)
    offset += 40
    kgs = None
    if len(desc) >= QEMU_NOTE_WITH_KGSBASE and size >= QEMU_NOTE_WITH_KGSBASE:
        kgs = struct.unpack_from("<Q", desc, offset)[0]
    if arch != "x86_64":
        kgs = None           # qemu-system-i386 never fills it; no such MSR outside IA-32e
    gdt, idt = segs.pop("gdt"), segs.pop("idt")
    general = {k: v for k, v in gprs.items() if k not in ("rip", "rflags")}
    return CpuState(arch=arch, cr0=cr[0], cr2=cr[2], cr3=cr[3], cr4=cr[4], efer=None,
                    gdtr_base=gdt.base, gdtr_limit=gdt.limit, idtr_base=idt.base,
                    idtr_limit=idt.limit, segments=segs, rip=gprs["rip"], rsp=gprs["rsp"],
                    rflags=gprs["rflags"], kernel_gs_base=kgs, general=general,
                    sources=("qemu-note",))


# -- NT_PRSTATUS ------------------------------------------------------------------------

# Linux struct elf_prstatus: x86-64 pr_pid at 32, pr_reg (27 x uint64) at 112;
# i386 pr_pid at 24, pr_reg (17 x uint32) at 72 (also what QEMU writes, arch_dump.c).
_PRSTATUS_64 = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
                "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "rflags", "rsp", "ss",
                "fs_base", "gs_base", "ds", "es", "fs", "gs")
_PRSTATUS_32 = ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "ds", "es", "fs", "gs",
                "orig_eax", "eip", "cs", "eflags", "esp", "ss")
_SELECTOR_REGS = ("cs", "ss", "ds", "es", "fs", "gs")


def parse_prstatus(desc: bytes, arch: str) -> Optional[Dict[str, int]]:
    """Registers from an NT_PRSTATUS descriptor, or None if it is too short."""
    if arch == "x86_64":
        names, pid_at, regs_at, fmt = _PRSTATUS_64, 32, 112, "<27Q"
    elif arch == "i386":
        names, pid_at, regs_at, fmt = _PRSTATUS_32, 24, 72, "<17I"
    else:
        return None
    if len(desc) < regs_at + struct.calcsize(fmt):
        return None
    regs = dict(zip(names, struct.unpack_from(fmt, desc, regs_at)))
    for name in _SELECTOR_REGS:
        regs[name] &= 0xFFFF
    regs["pid"] = struct.unpack_from("<I", desc, pid_at)[0]
    return regs
