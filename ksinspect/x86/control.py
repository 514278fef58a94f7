"""Control registers, flags and the page-fault error code.

* :class:`CR0` and :class:`CR4` (Intel SDM vol. 3A §2.5, Figure 2-7);
* :class:`EFER`, the IA32_EFER MSR C000_0080h (§2.2.1, Table 2-1; the bits
  only AMD defines from AMD APM vol. 2 §3.1.7);
* :class:`RFLAGS` (EFLAGS in 32-bit code; SDM vol. 1 §3.4.3, Figure 3-8,
  and vol. 3A §2.3 for the system flags);
* :class:`PageFaultErrorCode`, what #PF pushes (vol. 3A §4.7, Figure 4-12);
* :class:`OperatingMode`, the mode those registers select (vol. 3A §2.2,
  Figure 2-3; paging from §4.1.1, Table 4-1).

Every value is built as ``X.decode(value)``: the C core says which bits are
defined, which reserved bits are off their required value and which
combinations the processor refuses; this module names and explains them.
Reserved bits set are anomalies on the value, never an exception.
"""
import enum
from dataclasses import dataclass, field as dc_field
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

from .._native import control as _nc
from .._native import enum_values
from ..errors import DecodeError
from ..views.text import operating_mode_text
from ._bits import BitField, Drawable, Explanation, field, flag_names, kebab
from .paging_entry import PagingMode

_C = enum_values("KSI_")


class ControlAnomaly(enum.IntFlag):
    """Facts about one register value on its own (C ``enum ksi_control_anomaly``)."""

    RESERVED_BITS = _C["KSI_CA_RESERVED_BITS"]
    PG_WITHOUT_PE = _C["KSI_CA_PG_WITHOUT_PE"]
    NW_WITHOUT_CD = _C["KSI_CA_NW_WITHOUT_CD"]
    LMA_WITHOUT_LME = _C["KSI_CA_LMA_WITHOUT_LME"]
    RSVD_NOT_PRESENT = _C["KSI_CA_RSVD_NOT_PRESENT"]
    FETCH_WRITE = _C["KSI_CA_FETCH_WRITE"]
    PK_NOT_PRESENT = _C["KSI_CA_PK_NOT_PRESENT"]


ANOMALY_TEXT = {
    ControlAnomaly.RESERVED_BITS: "reserved bits %(reserved)#x are off their required value",
    ControlAnomaly.PG_WITHOUT_PE: "PG=1 with PE=0: MOV to CR0 raises #GP(0) (§2.5); paging "
                                  "needs protected mode",
    ControlAnomaly.NW_WITHOUT_CD: "NW=1 with CD=0 is an invalid combination: MOV to CR0 raises "
                                  "#GP(0) (§2.5)",
    ControlAnomaly.LMA_WITHOUT_LME: "LMA=1 with LME=0: the processor sets LMA only when LME=1 "
                                    "and paging is enabled (§2.2.1, §10.8.5)",
    ControlAnomaly.RSVD_NOT_PRESENT: "RSVD=1 with P=0: reserved-bit violations are reported "
                                     "only for present entries, with P=1 (§4.7)",
    ControlAnomaly.FETCH_WRITE: "I/D=1 with W/R=1: an instruction fetch is never a write",
    ControlAnomaly.PK_NOT_PRESENT: "PK=1 with P=0: protection keys are checked only on "
                                   "present translations (§4.6.2)",
}


@dataclass(frozen=True)
class Bit:
    """One named bit of a register, as the manual lists it.

    Written once in the register's class body, ``pe = Bit(0, "PE", ...)``: the
    one home of the bit's position and meaning. On a value it reads the bit
    (``CR0.decode(0x80000001).pe`` is True); on the class it is this record
    (``CR0.pe.mask``), and the class lists them all, low bit first, in ``BITS``.

    Attributes:
        position: the bit number.
        name: the manual's mnemonic (``PG``, ``W/R``).
        title: the manual's full name of the flag.
        when_set / when_clear: what the bit's value means.
        source: where the bit is defined, when not the register's own section.
        attribute: the Python attribute / to_dict key (snake_case): the name
            the class body gives it.
    """

    position: int
    name: str
    title: str
    when_set: str
    when_clear: str
    source: str = ""
    attribute: str = dc_field(default="", compare=False)

    @property
    def mask(self) -> int:
        return 1 << self.position

    def __set_name__(self, owner: type, name: str) -> None:
        object.__setattr__(self, "attribute", name)

    def __get__(self, value: Optional["ControlValue"], owner: Optional[type] = None):
        if value is None:
            return self
        return bool(value.raw >> self.position & 1)


V = TypeVar("V", bound="ControlValue")


@dataclass(frozen=True, repr=False)
class ControlValue(Drawable):
    """Shared behaviour of CR0, CR4, EFER, RFLAGS and the #PF error code.

    Subclasses are frozen dataclasses that set ``REGISTER`` (the C kind),
    ``NAME``, ``SOURCE``, one :class:`Bit` attribute per named bit (gathered
    into ``BITS``), ``WIDTH`` (32: the upper half is drawn only when a bit
    there is set) and may add multi-bit fields in :meth:`extra_fields`.
    Values are built by :meth:`decode`; ``_d`` is the C core's decoded record.
    """

    REGISTER: ClassVar[str] = ""
    NAME: ClassVar[str] = ""
    SOURCE: ClassVar[str] = ""
    BITS: ClassVar[Tuple[Bit, ...]] = ()
    WIDTH: ClassVar[int] = 32
    NOTES: ClassVar[Tuple[str, ...]] = ()

    raw: int
    _d: Tuple[int, ...] = dc_field(default=(), repr=False, compare=False)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.BITS = tuple(sorted((b for b in vars(cls).values() if isinstance(b, Bit)),
                                key=lambda b: b.position))

    def __post_init__(self) -> None:
        if not self._d:
            object.__setattr__(self, "_d", self._decoded())

    @classmethod
    def decode(cls: Type[V], raw: int) -> V:
        """The value of this register whose bits are *raw*.

        Raises:
            DecodeError: *raw* is not an integer, or does not fit in 64 bits.
        """
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise DecodeError("%s: %r is not an integer" % (cls.NAME, raw))
        return cls(raw)

    def _decoded(self) -> Tuple[int, ...]:
        return _nc.decode(_nc.REGISTERS[self.REGISTER], self.raw, self.NAME)

    @property
    def defined(self) -> int:
        """The bits this register defines (from the C core)."""
        return self._d[_I["defined"]]

    @property
    def reserved_bits(self) -> int:
        """Reserved bits that differ from their required value."""
        return self._d[_I["reserved_bits"]]

    @property
    def anomalies(self) -> ControlAnomaly:
        return ControlAnomaly(self._d[_I["anomalies"]])

    @property
    def set_bits(self) -> List[Bit]:
        """The named bits that are 1, low bit first."""
        return [b for b in self.BITS if self.raw & b.mask]

    def bit_names(self) -> List[str]:
        """The manual's mnemonics of the named bits that are 1, low bit first
        (``["PE", "PG"]``); :func:`ksinspect.x86.flag_names` is the kebab-case
        names of a flag enum's members instead."""
        return [b.name for b in self.set_bits]

    def anomaly_notes(self) -> List[str]:
        return [ANOMALY_TEXT[a] % {"reserved": self.reserved_bits}
                for a in ControlAnomaly if a in self.anomalies]

    def summary(self) -> str:
        return " ".join(self.bit_names()) or "no flag set"

    def summary_line(self) -> str:
        """The flags set and any anomalies, without the register's name and value."""
        text = self.summary()
        if self.anomalies:
            text += " [anomalies: %s]" % ", ".join(flag_names(self.anomalies, ControlAnomaly))
        return text

    def __str__(self) -> str:
        return "%s %#x: %s" % (self.NAME, self.raw, self.summary_line())

    def __repr__(self) -> str:
        return "%s(raw=%#x)" % (type(self).__name__, self.raw)

    def to_dict(self) -> dict:
        out = {"register": self.REGISTER, "raw": self.raw,
               "flags": [kebab(b.attribute).rstrip("-") for b in self.set_bits]}
        for b in self.BITS:
            out[b.attribute.rstrip("_")] = bool(self.raw & b.mask)
        out.update(self.extra_dict())
        out["reserved_bits"] = self.reserved_bits
        out["anomalies"] = flag_names(self.anomalies, ControlAnomaly)
        return out

    def extra_dict(self) -> dict:
        return {}

    def extra_fields(self) -> List[BitField]:
        return []

    def fields(self) -> List[BitField]:
        """Every bit, named ones with their meaning, reserved runs merged."""
        raw = self.raw
        width = 64 if self.WIDTH == 64 or raw >> 32 else 32
        out = [field(raw, b.position, b.position, b.name,
                     "%s: %s" % (b.title, b.when_set if raw & b.mask else b.when_clear))
               for b in self.BITS]
        out += self.extra_fields()
        covered = 0
        for f in out:
            covered |= f.mask
        _, must_be_one = _nc.layout(_nc.REGISTERS[self.REGISTER])
        bit = 0
        while bit < width:
            if covered >> bit & 1:
                bit += 1
                continue
            top = bit
            while top + 1 < width and not covered >> (top + 1) & 1 and \
                    (must_be_one >> (top + 1) & 1) == (must_be_one >> bit & 1):
                top += 1
            required = "1" if must_be_one >> bit & 1 else "0"
            out.append(field(raw, top, bit, "Reserved", "reserved (%s)" % required))
            bit = top + 1
        return out

    def explanation_parts(self) -> Explanation:
        notes = self.anomaly_notes() + list(self.NOTES)
        return Explanation(str(self), self.SOURCE, self.fields(), notes, self.reserved_bits)


_I = {name: i for i, name in enumerate(_nc.CONTROL_FIELDS)}


# --------------------------------------------------------------------------- CR0

@dataclass(frozen=True, repr=False)
class CR0(ControlValue):
    """CR0: operating mode and processor state (SDM vol. 3A §2.5, Figure 2-7)."""

    REGISTER = "cr0"
    NAME = "CR0"
    SOURCE = "Intel SDM vol. 3A §2.5, Figure 2-7 (Control Registers)"
    pe = Bit(0, "PE", "Protection Enable", "protected mode", "real-address mode")
    mp = Bit(1, "MP", "Monitor Coprocessor", "WAIT/FWAIT honour TS (#NM)",
        "WAIT/FWAIT ignore TS")
    em = Bit(2, "EM", "Emulation", "no x87 FPU: x87 instructions raise #NM",
        "an x87 FPU is present")
    ts = Bit(3, "TS", "Task Switched", "set by a task switch: the next x87/SSE "
        "instruction raises #NM (lazy FPU save)", "no task switch since CLTS")
    et = Bit(4, "ET", "Extension Type", "387 protocol (hard-wired to 1 since the P6)",
        "287 protocol (only on the 386)")
    ne = Bit(5, "NE", "Numeric Error", "x87 errors are reported natively (#MF)",
        "PC-style x87 error reporting (FERR#/IGNNE#)")
    wp = Bit(16, "WP", "Write Protect", "supervisor writes to read-only pages fault",
        "supervisor code may write read-only user pages")
    am = Bit(18, "AM", "Alignment Mask", "EFLAGS.AC enables alignment checking at CPL 3",
        "no alignment checking")
    nw = Bit(29, "NW", "Not Write-through", "write-back/write-through disabled",
        "write-back/write-through enabled")
    cd = Bit(30, "CD", "Cache Disable", "caching disabled for new fills",
        "caching enabled")
    pg = Bit(31, "PG", "Paging", "paging on: linear addresses go through CR3's tables",
        "paging off: linear = physical")
    NOTES = ("PE and PG select the mode: PE=0 real-address mode, PE=1 protected mode, PG=1 "
             "paging (with EFER.LME=1 this activates IA-32e mode, §10.8.5).",
             "Bits 63:32 must be 0 (a MOV to CR0 that sets them raises #GP); other reserved "
             "bits should be written as they were read (§2.5).")



# --------------------------------------------------------------------------- CR4

@dataclass(frozen=True, repr=False)
class CR4(ControlValue):
    """CR4: architectural extensions (SDM vol. 3A §2.5, Figure 2-7)."""

    REGISTER = "cr4"
    NAME = "CR4"
    SOURCE = "Intel SDM vol. 3A §2.5, Figure 2-7 (Control Registers); LASS, LAM_SUP: Intel ISE; " \
             "FRED: the FRED specification"
    WIDTH = 64
    vme = Bit(0, "VME", "Virtual-8086 Mode Extensions", "VIF/VIP in virtual-8086 mode",
        "no virtual interrupt flag in virtual-8086 mode")
    pvi = Bit(1, "PVI", "Protected-Mode Virtual Interrupts", "VIF in protected mode at CPL 3",
        "no virtual interrupts in protected mode")
    tsd = Bit(2, "TSD", "Time Stamp Disable", "RDTSC/RDTSCP only at CPL 0 (#GP at CPL 3)",
        "RDTSC allowed at any CPL")
    de = Bit(3, "DE", "Debugging Extensions", "DR4/DR5 raise #UD; R/W=10 means I/O "
        "breakpoints", "DR4/DR5 alias DR6/DR7")
    pse = Bit(4, "PSE", "Page Size Extensions", "4-MByte pages in 32-bit paging",
        "4-KByte pages only in 32-bit paging")
    pae = Bit(5, "PAE", "Physical Address Extension", "64-bit paging entries (PAE, "
        "4-/5-level)", "32-bit paging")
    mce = Bit(6, "MCE", "Machine-Check Enable", "machine-check exception enabled",
        "machine checks shut the processor down")
    pge = Bit(7, "PGE", "Page Global Enable", "global pages survive a CR3 load",
        "no global pages")
    pce = Bit(8, "PCE", "Performance-Monitoring Counter Enable", "RDPMC allowed at any CPL",
        "RDPMC only at CPL 0 (#GP at CPL 3)")
    osfxsr = Bit(9, "OSFXSR", "OS support for FXSAVE/FXRSTOR", "SSE enabled, FXSAVE saves "
        "XMM state", "SSE instructions raise #UD")
    osxmmexcpt = Bit(10, "OSXMMEXCPT", "OS support for unmasked SIMD FP exceptions",
        "unmasked SIMD FP exceptions raise #XM", "they raise #UD")
    umip = Bit(11, "UMIP", "User-Mode Instruction Prevention", "SGDT, SIDT, SLDT, SMSW, STR "
        "raise #GP at CPL > 0", "those instructions work at any CPL")
    la57 = Bit(12, "LA57", "57-bit linear addresses", "5-level paging in IA-32e mode",
        "4-level paging in IA-32e mode")
    vmxe = Bit(13, "VMXE", "VMX-Enable", "VMXON allowed", "VMX off")
    smxe = Bit(14, "SMXE", "SMX-Enable", "GETSEC allowed", "SMX off")
    fsgsbase = Bit(16, "FSGSBASE", "FSGSBASE-Enable", "RDFSBASE/WRFSBASE/RDGSBASE/WRGSBASE "
        "allowed", "those instructions raise #UD")
    pcide = Bit(17, "PCIDE", "PCID-Enable", "CR3 bits 11:0 are a process-context identifier",
        "no PCIDs")
    osxsave = Bit(18, "OSXSAVE", "XSAVE and Processor Extended States-Enable",
        "XSAVE/XGETBV/XSETBV allowed", "XSAVE instructions raise #UD")
    kl = Bit(19, "KL", "Key-Locker-Enable", "LOADIWKEY allowed", "Key Locker off")
    smep = Bit(20, "SMEP", "Supervisor Mode Execution Prevention", "supervisor fetches from "
        "user pages fault", "supervisor code may execute user pages")
    smap = Bit(21, "SMAP", "Supervisor Mode Access Prevention", "supervisor data accesses to "
        "user pages fault unless EFLAGS.AC=1", "supervisor code may access user pages")
    pke = Bit(22, "PKE", "Enable protection keys for user-mode pages", "PKRU restricts "
        "user-page accesses", "no protection keys for user pages")
    cet = Bit(23, "CET", "Control-flow Enforcement Technology", "shadow stacks and indirect "
        "branch tracking may be enabled (needs CR0.WP=1)", "CET off")
    pks = Bit(24, "PKS", "Enable protection keys for supervisor-mode pages", "IA32_PKRS "
        "restricts supervisor-page accesses", "no protection keys for supervisor pages")
    uintr = Bit(25, "UINTR", "User Interrupts Enable", "user interrupts enabled",
        "user interrupts off")
    lass = Bit(27, "LASS", "Linear Address Space Separation", "user accesses to the upper "
        "half and supervisor accesses to the lower half fault (#GP/#SS)", "LASS off",
        "Intel ISE")
    lam_sup = Bit(28, "LAM_SUP", "Supervisor linear-address masking", "LAM for supervisor "
        "pointers", "no supervisor LAM", "Intel ISE")
    fred = Bit(32, "FRED", "Flexible Return and Event Delivery", "FRED event delivery",
        "IDT event delivery", "Intel FRED specification")
    NOTES = ("PAE, PSE, LA57 and (with EFER.LMA) PG choose the paging mode (§4.1.1, Table 4-1).",
             "A MOV to CR4 that sets a reserved bit raises #GP(0) (§2.5).")



# -------------------------------------------------------------------------- EFER

_AMD = "AMD APM vol. 2 §3.1.7 (AMD only)"


@dataclass(frozen=True, repr=False)
class EFER(ControlValue):
    """IA32_EFER (MSR C000_0080h): long mode, NX and SYSCALL (SDM vol. 3A §2.2.1)."""

    REGISTER = "efer"
    NAME = "EFER"
    SOURCE = "Intel SDM vol. 3A §2.2.1, Table 2-1 (IA32_EFER); AMD APM vol. 2 §3.1.7, Figure 3-8"
    WIDTH = 64
    sce = Bit(0, "SCE", "SYSCALL Enable", "SYSCALL/SYSRET allowed in 64-bit mode",
        "SYSCALL raises #UD")
    lme = Bit(8, "LME", "IA-32e Mode Enable", "IA-32e mode is entered when paging is "
        "enabled", "legacy (32-bit) paging and modes")
    lma = Bit(10, "LMA", "IA-32e Mode Active", "IA-32e mode is active (set by the CPU)",
        "not in IA-32e mode")
    nxe = Bit(11, "NXE", "Execute Disable Bit Enable", "bit 63 of PAE/IA-32e entries is XD",
        "bit 63 is reserved: no execute-disable")
    svme = Bit(12, "SVME", "Secure Virtual Machine Enable", "SVM instructions allowed",
        "SVM off", _AMD)
    lmsle = Bit(13, "LMSLE", "Long Mode Segment Limit Enable", "data segment limits checked "
        "in 64-bit mode", "no segment limits in 64-bit mode", _AMD)
    ffxsr = Bit(14, "FFXSR", "Fast FXSAVE/FXRSTOR", "FXSAVE at CPL 0 in 64-bit mode skips "
        "the XMM registers", "FXSAVE saves everything", _AMD)
    tce = Bit(15, "TCE", "Translation Cache Extension", "INVLPG flushes only the "
        "affected upper-level entries", "INVLPG flushes all upper-level entries", _AMD)
    mcommit = Bit(17, "MCOMMIT", "MCOMMIT Enable", "MCOMMIT allowed", "MCOMMIT raises #UD",
        _AMD)
    intwb = Bit(18, "INTWB", "Interruptible WBINVD/WBNOINVD", "WBINVD may be interrupted",
        "WBINVD is not interruptible", _AMD)
    uaie = Bit(20, "UAIE", "Upper Address Ignore Enable", "bits 62:57 of user pointers are "
        "ignored", "full canonical checks", _AMD)
    aibrse = Bit(21, "AIBRSE", "Automatic IBRS Enable", "CPL 0 runs with IBRS protection",
        "no automatic IBRS", _AMD)
    NOTES = ("Intel defines only SCE, LME, LMA and NXE; bits 12-21 are AMD's and reserved on "
             "Intel processors (WRMSR of a reserved bit raises #GP).",
             "LMA is read-only: the processor sets it when CR0.PG=1 with LME=1 (§10.8.5).")



# ------------------------------------------------------------------------ RFLAGS

@dataclass(frozen=True, repr=False)
class RFLAGS(ControlValue):
    """RFLAGS / EFLAGS: status, control and system flags (SDM vol. 1 §3.4.3, Figure 3-8).

    ``RFLAGS.decode(value)`` takes a 32-bit EFLAGS (a Windows CONTEXT's
    EFlags, an i386 pt_regs) or a 64-bit RFLAGS: bits 63:22 are reserved
    and read as 0 either way, so the same decoder serves both.
    """

    REGISTER = "rflags"
    NAME = "RFLAGS"
    SOURCE = "Intel SDM vol. 1 §3.4.3, Figure 3-8 (EFLAGS Register); vol. 3A §2.3 (System Flags)"
    cf = Bit(0, "CF", "Carry Flag", "carry or borrow out of the result", "no carry")
    pf = Bit(2, "PF", "Parity Flag", "even number of 1 bits in the low byte",
        "odd parity in the low byte")
    af = Bit(4, "AF", "Auxiliary Carry Flag", "carry out of bit 3 (BCD)", "no BCD carry")
    zf = Bit(6, "ZF", "Zero Flag", "the result is zero", "the result is not zero")
    sf = Bit(7, "SF", "Sign Flag", "the result is negative", "the result is not negative")
    tf = Bit(8, "TF", "Trap Flag", "single-step: #DB after each instruction",
        "no single-stepping")
    if_ = Bit(9, "IF", "Interrupt Enable Flag", "maskable interrupts enabled",
        "maskable interrupts disabled")
    df = Bit(10, "DF", "Direction Flag", "string instructions go down",
        "string instructions go up")
    of = Bit(11, "OF", "Overflow Flag", "signed overflow", "no signed overflow")
    nt = Bit(14, "NT", "Nested Task", "the task was entered by CALL/interrupt through a "
        "task gate: IRET returns to the previous task (§8.4)", "IRET returns in this task")
    rf = Bit(16, "RF", "Resume Flag", "instruction breakpoints are suppressed for the next "
        "instruction", "instruction breakpoints fire")
    vm = Bit(17, "VM", "Virtual-8086 Mode", "virtual-8086 mode (protected mode only)",
        "not virtual-8086 mode")
    ac = Bit(18, "AC", "Alignment Check / Access Control", "alignment checking at CPL 3 "
        "(with CR0.AM); supervisor access to user pages allowed under SMAP",
        "no alignment checks; SMAP enforced")
    vif = Bit(19, "VIF", "Virtual Interrupt Flag", "virtual IF (with VME/PVI)",
        "virtual interrupts masked")
    vip = Bit(20, "VIP", "Virtual Interrupt Pending", "a virtual interrupt is pending",
        "no virtual interrupt pending")
    id = Bit(21, "ID", "Identification Flag", "set: CPUID exists when software can flip it",
        "clear")
    NOTES = ("Bit 1 is always 1 and bits 3, 5, 15 and 63:22 are 0 (Figure 3-8).",
             "IOPL (bits 13:12) is the highest CPL allowed to use IN/OUT/CLI/STI without the "
             "I/O bitmap; only POPF/IRET at CPL 0 change it (§19.5.1, §2.3).")


    @property
    def iopl(self) -> int:
        """I/O privilege level, bits 13:12."""
        return self._d[_I["iopl"]]

    def summary(self) -> str:
        return "%s, IOPL %d" % (" ".join(self.bit_names()) or "no flag set", self.iopl)

    # DOS DEBUG's two-letter names, kept by WinDbg's ``r``: (set, clear) for
    # OF, DF, IF, SF, ZF, AF, PF, CF, in the order the debuggers print them.
    _DEBUGGER_NAMES = ((11, "ov", "nv"), (10, "dn", "up"), (9, "ei", "di"), (7, "ng", "pl"),
                       (6, "zr", "nz"), (4, "ac", "na"), (2, "pe", "po"), (0, "cy", "nc"))

    def debugger_flags(self) -> str:
        """The flags as WinDbg's ``r`` shows them: ``iopl=0 nv up ei pl zr na pe nc``."""
        return " ".join(["iopl=%d" % self.iopl] + [on if self.raw >> bit & 1 else off
                                                  for bit, on, off in self._DEBUGGER_NAMES])

    def extra_dict(self) -> dict:
        return {"iopl": self.iopl, "debugger": self.debugger_flags()}

    def extra_fields(self) -> List[BitField]:
        return [field(self.raw, 13, 12, "IOPL", "I/O privilege level %d: IN/OUT/CLI/STI allowed "
                      "at CPL <= %d" % (self.iopl, self.iopl))]


# ------------------------------------------------------------- page-fault error code

@dataclass(frozen=True, repr=False)
class PageFaultErrorCode(ControlValue):
    """What #PF (vector 14) pushes; CR2 holds the faulting linear address
    (SDM vol. 3A §4.7, Figure 4-12; §6.15 "Interrupt 14")."""

    REGISTER = "pf"
    NAME = "#PF error code"
    SOURCE = "Intel SDM vol. 3A §4.7, Figure 4-12 (Page-Fault Error Code)"
    present = Bit(0, "P", "Present", "a protection violation on a present translation "
        "(Linux X86_PF_PROT)", "a non-present page (some entry had P=0)")
    write = Bit(1, "W/R", "Write/Read", "the access was a write (X86_PF_WRITE)",
        "the access was a read or an instruction fetch")
    user = Bit(2, "U/S", "User/Supervisor", "a user-mode access: CPL 3 (X86_PF_USER)",
        "a supervisor-mode access (CPL < 3, or an implicit supervisor access)")
    rsvd = Bit(3, "RSVD", "Reserved bit", "a reserved bit was set in some paging entry "
        "(X86_PF_RSVD)", "not a reserved-bit violation")
    fetch = Bit(4, "I/D", "Instruction/Data", "an instruction fetch (X86_PF_INSTR; reported "
        "only with NXE=1 under PAE/IA-32e paging, or SMEP=1)", "not an instruction fetch "
        "(or neither NXE nor SMEP is on)")
    pk = Bit(5, "PK", "Protection key", "a protection-key violation (PKRU/PKRS; X86_PF_PK)",
        "not a protection-key violation")
    shadow_stack = Bit(6, "SS", "Shadow stack", "a shadow-stack access (X86_PF_SHSTK)",
        "not a shadow-stack access")
    hlat = Bit(7, "HLAT", "HLAT paging", "during HLAT paging", "ordinary paging")
    sgx = Bit(15, "SGX", "SGX", "violated SGX-specific access control (X86_PF_SGX)",
        "not SGX-related")
    NOTES = ("CR2 receives the linear address that faulted; the saved CS:EIP points at the "
             "instruction, which is restarted after the handler (§6.15).",
             "In IA-32e mode the error code is pushed as 64 bits with bits 63:32 zero.")


    @staticmethod
    def build(present: bool = False, write: bool = False, user: bool = False,
              rsvd: bool = False, fetch: bool = False, pk: bool = False,
              shadow_stack: bool = False, hlat: bool = False,
              sgx: bool = False) -> "PageFaultErrorCode":
        """The error code with these bits (the names of the properties)."""
        wanted = {"present": present, "write": write, "user": user, "rsvd": rsvd,
                  "fetch": fetch, "pk": pk, "shadow_stack": shadow_stack, "hlat": hlat,
                  "sgx": sgx}
        raw = 0
        for b in PageFaultErrorCode.BITS:
            if wanted[b.attribute]:
                raw |= b.mask
        return PageFaultErrorCode.decode(raw)

    def summary(self) -> str:
        cause = "protection violation" if self.present else "not present"
        kind = "fetch" if self.fetch else "write" if self.write else "read"
        who = "user" if self.user else "supervisor"
        extra = [b.name for b in self.set_bits if b.position >= 3]
        return "%s, %s %s%s" % (cause, who, kind, (" [" + " ".join(extra) + "]") if extra else "")


# ------------------------------------------------------------------ operating modes

class CpuMode(enum.IntEnum):
    """The processor's operating mode (SDM vol. 3A §2.2, Figure 2-3)."""

    REAL = _C["KSI_CPU_REAL"]
    PROTECTED = _C["KSI_CPU_PROTECTED"]
    VIRTUAL_8086 = _C["KSI_CPU_VIRTUAL_8086"]
    COMPATIBILITY = _C["KSI_CPU_COMPATIBILITY"]
    LONG_64BIT = _C["KSI_CPU_64BIT"]

    @property
    def label(self) -> str:
        return _MODE_LABEL[self]


_MODE_LABEL = {CpuMode.REAL: "real-address mode", CpuMode.PROTECTED: "protected mode",
               CpuMode.VIRTUAL_8086: "virtual-8086 mode",
               CpuMode.COMPATIBILITY: "IA-32e compatibility mode",
               CpuMode.LONG_64BIT: "IA-32e 64-bit mode"}

_MODE_RULE = {
    CpuMode.REAL: "CR0.PE=0: linear address = segment * 16 + offset (20 bits; the 8086's "
                  "address space), no privilege checks (§20.1)",
    CpuMode.PROTECTED: "CR0.PE=1, EFLAGS.VM=0, IA32_EFER.LMA=0: selectors index the GDT/LDT, "
                       "descriptors give base, limit and rights (§3.4)",
    CpuMode.VIRTUAL_8086: "CR0.PE=1 and EFLAGS.VM=1 outside IA-32e mode: a real-mode task at "
                          "CPL 3 inside protected mode, segment * 16 + offset (§20.2)",
    CpuMode.COMPATIBILITY: "IA32_EFER.LMA=1 and CS.L=0: 16/32-bit code under a 64-bit OS; "
                           "segmentation as in protected mode, IA-32e paging (§2.2)",
    CpuMode.LONG_64BIT: "IA32_EFER.LMA=1 and CS.L=1: 64-bit code; CS/DS/ES/SS bases are 0 and "
                        "limits unchecked, FS/GS bases apply, addresses must be canonical "
                        "(§3.2.4)",
}


class StateAnomaly(enum.IntFlag):
    """Register combinations the processor refuses or ignores (C ``enum ksi_state_anomaly``)."""

    LMA_WITHOUT_PG = _C["KSI_SA_LMA_WITHOUT_PG"]
    LMA_WITHOUT_PAE = _C["KSI_SA_LMA_WITHOUT_PAE"]
    LME_PG_WITHOUT_LMA = _C["KSI_SA_LME_PG_WITHOUT_LMA"]
    PCIDE_OUTSIDE_IA32E = _C["KSI_SA_PCIDE_OUTSIDE_IA32E"]
    CET_WITHOUT_WP = _C["KSI_SA_CET_WITHOUT_WP"]
    VM_IN_IA32E = _C["KSI_SA_VM_IN_IA32E"]
    PG_WITHOUT_PE = _C["KSI_SA_PG_WITHOUT_PE"]
    LMA_WITHOUT_LME = _C["KSI_SA_LMA_WITHOUT_LME"]


STATE_ANOMALY_TEXT = {
    StateAnomaly.LMA_WITHOUT_PG: "EFER.LMA=1 but CR0.PG=0: IA-32e mode is active only with paging",
    StateAnomaly.LMA_WITHOUT_PAE: "IA-32e mode with CR4.PAE=0: clearing PAE in IA-32e mode "
                                  "raises #GP (§2.5)",
    StateAnomaly.LME_PG_WITHOUT_LMA: "EFER.LME=1 and CR0.PG=1 but LMA=0: the processor would "
                                     "have set LMA (§10.8.5)",
    StateAnomaly.PCIDE_OUTSIDE_IA32E: "CR4.PCIDE=1 outside IA-32e mode: setting it there raises "
                                      "#GP (§4.10.1)",
    StateAnomaly.CET_WITHOUT_WP: "CR4.CET=1 with CR0.WP=0: setting CET needs WP=1 and clearing "
                                 "WP while CET=1 raises #GP (§2.5)",
    StateAnomaly.VM_IN_IA32E: "EFLAGS.VM=1 in IA-32e mode: virtual-8086 mode does not exist "
                              "there; the flag is ignored",
    StateAnomaly.PG_WITHOUT_PE: "CR0.PG=1 with PE=0: MOV to CR0 raises #GP (§2.5)",
    StateAnomaly.LMA_WITHOUT_LME: "EFER.LMA=1 with LME=0 cannot come from the processor",
}

_PAGING_OF = {1: PagingMode.BITS32, 2: PagingMode.PAE, 3: PagingMode.LEVEL4,
              4: PagingMode.LEVEL5}


@dataclass(frozen=True)
class OperatingMode:
    """The mode CR0, CR4, IA32_EFER, RFLAGS and CS.L put the processor in.

    Attributes:
        mode: the operating mode.
        paging: the paging mode, or None when CR0.PG=0.
        address_bits: the width of linear addresses software forms.
        anomalies: combinations the processor refuses or ignores.
    """

    cr0: int
    cr4: int
    efer: int
    rflags: int
    cs_long: bool
    mode: CpuMode
    paging: Optional[PagingMode]
    address_bits: int
    anomalies: StateAnomaly

    @staticmethod
    def of(cr0: int, cr4: int = 0, efer: int = 0, rflags: int = 2,
           cs_long: bool = False) -> "OperatingMode":
        mode, paging, bits, anomalies = _nc.operating_mode(cr0, cr4, efer, rflags, cs_long)
        return OperatingMode(cr0, cr4, efer, rflags, bool(cs_long), CpuMode(mode),
                             _PAGING_OF.get(paging), bits, StateAnomaly(anomalies))

    @property
    def rule(self) -> str:
        return _MODE_RULE[self.mode]

    def __str__(self) -> str:
        paging = "paging off" if self.paging is None else "%s paging" % self.paging.value
        text = "%s, %s, %d-bit linear addresses" % (self.mode.label, paging, self.address_bits)
        if self.anomalies:
            text += " [anomalies: %s]" % ", ".join(flag_names(self.anomalies, StateAnomaly))
        return text

    SOURCE = ("Intel SDM vol. 3A §2.2, Figure 2-3 (Transitions Among the Processor's "
              "Operating Modes); §4.1.1, Table 4-1 (paging modes)")

    @property
    def deciding_bits(self) -> Dict[str, int]:
        """The bits that choose the mode and the paging mode, by their manual names."""
        return {"CR0.PE": self.cr0 & 1, "CR0.PG": self.cr0 >> 31 & 1,
                "CR4.PAE": self.cr4 >> 5 & 1, "CR4.LA57": self.cr4 >> 12 & 1,
                "EFER.LME": self.efer >> 8 & 1, "EFER.LMA": self.efer >> 10 & 1,
                "EFLAGS.VM": self.rflags >> 17 & 1, "CS.L": int(self.cs_long)}

    @property
    def anomaly_texts(self) -> List[str]:
        return [STATE_ANOMALY_TEXT[a] for a in StateAnomaly if a in self.anomalies]

    def explain(self) -> str:
        return operating_mode_text(self)

    def to_dict(self) -> dict:
        return {"mode": self.mode.name.lower(), "mode_label": self.mode.label,
                "paging": None if self.paging is None else self.paging.value,
                "address_bits": self.address_bits, "rule": self.rule,
                "anomalies": flag_names(self.anomalies, StateAnomaly)}


REGISTER_TYPES: Dict[str, Type[ControlValue]] = {
    "cr0": CR0, "cr4": CR4, "efer": EFER, "rflags": RFLAGS, "pf": PageFaultErrorCode}


def decode_control_batch(register: str, values: Sequence[int]) -> List[ControlValue]:
    """Decode many values of one register in one C call."""
    cls = REGISTER_TYPES.get(register)
    if cls is None:
        raise DecodeError("unknown register %r (expected one of %s)" % (
            register, ", ".join(REGISTER_TYPES)))
    rows = _nc.decode_batch(_nc.REGISTERS[register], values, cls.NAME)
    record = _nc.CONTROL_RECORD
    return [cls(v, record.unpack_from(rows, i * record.size)) for i, v in enumerate(values)]
