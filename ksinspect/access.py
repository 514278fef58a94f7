"""The processor's whole path for one memory access: logical -> linear -> physical.

A logical address is a segment selector (or a segment register) and an
offset. The processor first applies segmentation (Intel SDM vol. 3A §3.4-3.5
and the protection checks of §5.3-5.8): the selector picks a descriptor in
the GDT or LDT, the descriptor must suit the access (type), the privilege
levels must allow it (CPL, RPL, DPL), the bytes must lie within the limit
(expand-down segments count from the top); in 64-bit mode only the FS and
GS bases apply and the canonical check replaces the limit (§3.2.4, §5.3.1).
It either yields a linear address or raises #GP / #SS / #NP with an error
code (§6.13: the selector with EXT and IDT bits, or 0).

Paging then walks CR3's tables (the walk of :class:`ksinspect.paging.AddressSpace`)
and applies the access rights of §4.6: U/S, R/W with CR0.WP, XD with
IA32_EFER.NXE, SMEP and SMAP (with EFLAGS.AC and implicit supervisor
accesses), and protection keys (CR4.PKE with PKRU). A refusal is #PF with the
error code of §4.7 and CR2 = the linear address.

Each stage is a library call on its own: :func:`check_segment_access` over a
descriptor (or a segment register's cached descriptor), :func:`check_page_access`
over a page's rights (:class:`PageRights`, from a walk or from anything else
that knows them, such as a Linux mapping). :func:`simulate_access` runs both
over a memory image.

Rules are written here once, each with its section; the bit work (decoding
descriptors, walking tables, the error code) is the C core's.
"""
import enum
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .errors import DecodeError, InvalidAddressError, TableNotFoundError
from .views.html import access_html
from .views.text import access_text
from .x86.control import CpuMode, PageFaultErrorCode
from .x86.descriptor import DescriptorKind, SegmentDescriptor
from .x86.privilege import check_code_transfer, check_data_load, check_stack_load
from .x86.selector import Selector, TableIndicator

SDM = "Intel SDM vol. 3A"
DATA_REGISTERS = ("ds", "es", "fs", "gs")
SEGMENT_REGISTERS = ("cs", "ss") + DATA_REGISTERS
MAX_ACCESS_SIZE = 64


class AccessKind(enum.Enum):
    """What the instruction does with the bytes."""

    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"


class Fault(enum.Enum):
    """The exceptions an access can raise on the way, with their vectors (§6.3.1)."""

    TS = ("#TS", 10)
    NP = ("#NP", 11)
    SS = ("#SS", 12)
    GP = ("#GP", 13)
    PF = ("#PF", 14)

    @property
    def mnemonic(self) -> str:
        return self.value[0]

    @property
    def vector(self) -> int:
        return self.value[1]


@dataclass(frozen=True)
class Step:
    """One check the processor makes, with its numbers and its outcome."""

    stage: str
    check: str
    passed: bool
    detail: str
    source: str

    def __str__(self) -> str:
        return "[%s] %s: %s -- %s (%s)" % (self.stage, self.check, "ok" if self.passed else
                                           "FAULT", self.detail, self.source)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "check": self.check, "passed": self.passed,
                "detail": self.detail, "source": self.source}


@dataclass(frozen=True)
class SegmentResult:
    """Where segmentation left the access.

    Attributes:
        linear: the linear address of the first byte (None when a fault came first).
        fault: the exception, or None.
        error_code: its error code (a selector error code, or 0).
        steps: every check, in the processor's order.
        descriptor: the descriptor used (from a table or a register's cache).
        base: the segment base applied.
    """

    linear: Optional[int]
    fault: Optional[Fault]
    error_code: Optional[int]
    steps: Tuple[Step, ...]
    descriptor: Optional[SegmentDescriptor]
    base: int
    register: str

    @property
    def ok(self) -> bool:
        return self.fault is None


@dataclass(frozen=True)
class PageRights:
    """The rights of one page as the processor combines them over the walk (§4.6).

    Attributes:
        present: the walk reached a present leaf entry.
        writable: R/W=1 at every level.
        user: U/S=1 at every level (a user-mode address).
        nx: XD=1 at some level (meaningful with IA32_EFER.NXE=1).
        pkey: the protection key of the leaf (4-/5-level paging), or None.
        reserved: the walk stopped at an entry with a reserved bit set.
        source: where the rights come from (a walk, a /proc/PID/maps line...).
    """

    present: bool
    writable: bool = False
    user: bool = False
    nx: bool = False
    pkey: Optional[int] = None
    reserved: bool = False
    source: str = ""

    @staticmethod
    def from_translation(t) -> "PageRights":
        """The rights a :class:`ksinspect.paging.Translation` found."""
        where = "the page walk from CR3 %#x" % t.cr3 if t.cr3 is not None else "the page walk"
        if t.pa is not None:
            leaf = t.leaf
            return PageRights(True, bool(t.writable), bool(t.user), bool(t.nx),
                              leaf.pkey if leaf is not None else None, False, where)
        last = t.path[-1].entry if t.path else None
        if last is not None and last.present and last.reserved_bits:
            return PageRights(False, reserved=True, source=where)
        if last is not None and not last.present:
            return PageRights(False, source=where)
        raise InvalidAddressError("%#x: the walk cannot say what the processor would find: %s"
                                  % (t.va, t.error), address=t.va, level=t.level,
                                  entry=t.failing_entry)


@dataclass(frozen=True)
class PagingState:
    """The control bits paging rights depend on (§4.6, §4.1.3).

    Attributes:
        wp: CR0.WP.  smep, smap, pke: CR4 bits.  nxe: IA32_EFER.NXE.
        ac: EFLAGS.AC (lifts SMAP for explicit supervisor accesses).
        pkru: the PKRU register (AD bit 2k, WD bit 2k+1 for key k), or None if unknown.
        ia32e: 4-/5-level paging (protection keys exist only there).
        pae: PAE or IA-32e paging (the XD bit exists only there).
    """

    wp: bool = True
    smep: bool = False
    smap: bool = False
    pke: bool = False
    nxe: bool = True
    ac: bool = False
    pkru: Optional[int] = None
    ia32e: bool = True
    pae: bool = True

    @staticmethod
    def from_registers(cr0: int, cr4: int, efer: int, rflags: int, paging_mode: str,
                       pkru: Optional[int] = None) -> "PagingState":
        return PagingState(wp=bool(cr0 >> 16 & 1), smep=bool(cr4 >> 20 & 1),
                           smap=bool(cr4 >> 21 & 1), pke=bool(cr4 >> 22 & 1),
                           nxe=bool(efer >> 11 & 1), ac=bool(rflags >> 18 & 1), pkru=pkru,
                           ia32e=paging_mode in ("4level", "5level"),
                           pae=paging_mode in ("pae", "4level", "5level"))


@dataclass(frozen=True)
class PageResult:
    """Where paging left the access: the physical address or #PF."""

    linear: int
    physical: Optional[int]
    fault: Optional[Fault]
    error_code: Optional[PageFaultErrorCode]
    cr2: Optional[int]
    steps: Tuple[Step, ...]
    rights: Optional[PageRights]

    @property
    def ok(self) -> bool:
        return self.fault is None


# ------------------------------------------------------------------ segmentation

def _selector_error(selector: Selector) -> int:
    """The error code of a fault that names a selector (§6.13, Figure 6-7):
    index and TI, with EXT = IDT = 0 for a fault raised by the instruction."""
    return selector.raw & 0xFFFC


def _check_size_and_cpl(size: int, cpl: int) -> None:
    if not isinstance(size, int) or not 1 <= size <= MAX_ACCESS_SIZE:
        raise DecodeError("access size %r is outside 1..%d bytes" % (size, MAX_ACCESS_SIZE))
    if not isinstance(cpl, int) or isinstance(cpl, bool) or not 0 <= cpl <= 3:
        raise DecodeError("CPL %r is not a privilege level 0..3" % (cpl,))


def _access_kind(access) -> AccessKind:
    if isinstance(access, AccessKind):
        return access
    try:
        return AccessKind(str(access).lower())
    except ValueError:
        raise DecodeError("access %r is not read, write or execute" % (access,)) from None


def _canonical(address: int, bits: int) -> bool:
    top = address >> (bits - 1)
    return top == 0 or top == (1 << (65 - bits)) - 1


def check_segment_access(descriptor: Optional[SegmentDescriptor], offset: int, access="read",
                         size: int = 1, cpl: int = 3, mode: CpuMode = CpuMode.PROTECTED,
                         register: str = "ds", selector: Optional[Selector] = None,
                         loaded: bool = False, base: Optional[int] = None,
                         address_bits: int = 48) -> SegmentResult:
    """Segmentation for one access (SDM vol. 3A §3.4-3.5, §5.3-5.8).

    Args:
        descriptor: the descriptor the selector names (None: a null selector,
            or the register is not backed by a descriptor).
        offset: the effective address (bits beyond the address size are an error).
        access: read, write or execute (execute goes through CS).
        size: bytes accessed, 1..64.
        cpl: the current privilege level.
        mode: the operating mode (protected, compatibility, 64-bit, real, virtual-8086).
        register: the segment register the access uses (``ss`` raises #SS).
        selector: the selector loaded; None with ``loaded`` means a register's
            cached state is used as it is.
        loaded: the register already holds this segment (no load checks: the
            processor made them when it was loaded).
        base: the base to apply instead of the descriptor's (a register's
            cached base; in 64-bit mode the FS/GS base from the MSRs).
        address_bits: linear-address width in 64-bit mode (48 or 57).

    Returns:
        A SegmentResult: the linear address, or the fault with its error code.

    Raises:
        DecodeError: a size outside 1..64, a CPL outside 0..3, an offset
            wider than the mode's address size, an unknown register.
    """
    access = _access_kind(access)
    _check_size_and_cpl(size, cpl)
    register = register.lower()
    if register not in SEGMENT_REGISTERS:
        raise DecodeError("segment register %r is not one of %s" % (
            register, ", ".join(SEGMENT_REGISTERS)))
    if access is AccessKind.EXECUTE and register != "cs":
        register = "cs"
    width = 64 if mode is CpuMode.LONG_64BIT else 16 if mode in (
        CpuMode.REAL, CpuMode.VIRTUAL_8086) else 32
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 1 << width:
        raise DecodeError("offset %s does not fit the %d-bit effective address of %s" % (
            "%#x" % offset if isinstance(offset, int) else repr(offset), width, mode.label))
    stack = register == "ss"
    limit_fault = Fault.SS if stack else Fault.GP
    steps: List[Step] = []

    def result(linear, fault=None, error=None, applied_base=0):
        return SegmentResult(linear, fault, error, tuple(steps), descriptor, applied_base,
                             register)

    def step(check, passed, detail, section):
        steps.append(Step("segmentation", check, passed, detail, "%s %s" % (SDM, section)))

    # Real-address and virtual-8086 mode: base = selector * 16, 64 KiB limit (§20.1.1).
    if mode in (CpuMode.REAL, CpuMode.VIRTUAL_8086):
        value = selector.raw if selector is not None else 0
        seg_base = value << 4 if base is None else base
        last = offset + size - 1
        ok = last <= 0xFFFF
        step("limit", ok, "offset %#x + %d byte(s) - 1 = %#x %s the 64-KByte limit 0xffff" % (
            offset, size, last, "within" if ok else "beyond"), "§20.1.1")
        if not ok:
            return result(None, limit_fault, 0, seg_base)
        linear = (seg_base + offset) & 0x1FFFFF
        step("linear address", True, "segment %#x * 16 + offset %#x = %#x" % (
            value, offset, linear), "§20.1.1")
        return result(linear, applied_base=seg_base)

    long64 = mode is CpuMode.LONG_64BIT
    # Loading the segment register (a MOV/POP to DS..GS or SS, a far JMP to CS).
    if not loaded:
        if selector is None:
            raise DecodeError("a selector is needed to load %s" % register.upper())
        if register == "cs":
            if selector.is_null:
                step("load CS", False, "a null selector cannot be loaded into CS", "§3.4.2")
                return result(None, Fault.GP, 0)
            check = check_code_transfer(cpl, selector, descriptor)
        elif stack:
            if selector.is_null:
                # In 64-bit mode a null SS is allowed at CPL < 3 (§5.7).
                ok = long64 and cpl < 3
                step("load SS", ok, "null selector into SS: %s" % (
                    "allowed in 64-bit mode at CPL < 3" if ok else "#GP(0)"), "§5.7")
                if not ok:
                    return result(None, Fault.GP, 0)
                check = None
            else:
                check = check_stack_load(cpl, selector, descriptor)
        else:
            check = check_data_load(cpl, selector, descriptor)
        if check is not None:
            fault = {"#GP": Fault.GP, "#NP": Fault.NP, "#SS": Fault.SS}.get(check.fault)
            step("load %s" % register.upper(), check.allowed, check.rule,
                 check.source.replace(SDM + " ", ""))
            if not check.allowed:
                return result(None, fault, _selector_error(selector))
        if selector.is_null and not long64:
            step("use", False, "%s holds a null selector: any memory reference through it "
                 "raises #GP(0)" % register.upper(), "§3.4.2, §5.4.1")
            return result(None, Fault.GP, 0)
    elif descriptor is None and not long64:
        step("use", False, "%s holds a null selector: any memory reference through it raises "
             "#GP(0)" % register.upper(), "§3.4.2, §5.4.1")
        return result(None, Fault.GP, 0)

    # 64-bit mode: no type or limit checks on data accesses, bases 0 except FS
    # and GS, and the linear address must be canonical (§3.2.4, §5.3.1).
    code64 = long64 and (register != "cs" or descriptor is None or descriptor.long)
    if long64 and code64:
        seg_base = base if base is not None else (
            descriptor.base if descriptor is not None and register in ("fs", "gs") else 0)
        if register not in ("fs", "gs"):
            seg_base = 0
        mask = (1 << 64) - 1
        linear = (seg_base + offset) & mask
        last = (linear + size - 1) & mask
        step("base", True, "64-bit mode: %s" % (
            "the %s base %#x applies" % (register.upper(), seg_base) if register in ("fs", "gs")
            else "the %s base is treated as 0" % register.upper()), "§3.2.4")
        ok = _canonical(linear, address_bits) and _canonical(last, address_bits)
        step("canonical", ok, "linear %#x..%#x %s canonical (%d-bit linear addresses: bits "
             "63:%d equal bit %d)" % (linear, last, "is" if ok else "is not", address_bits,
                                      address_bits - 1, address_bits - 1), "§3.3.7.1")
        if not ok:
            return result(None, limit_fault, 0, seg_base)
        return result(linear, applied_base=seg_base)

    # Protected and compatibility mode: type, then limit (§5.3, §5.4.1).
    d = descriptor
    if d.kind is DescriptorKind.CODE:
        if access is AccessKind.WRITE:
            step("type", False, "a write to a code segment (%s): code segments are never "
                 "writable" % d.type_name, "§3.4.5.1, §5.4.1")
            return result(None, limit_fault, 0)
        if access is AccessKind.READ and not d.readable:
            step("type", False, "a read of an execute-only code segment (%s)" % d.type_name,
                 "§3.4.5.1, §5.4.1")
            return result(None, limit_fault, 0)
        step("type", True, "%s allows a %s" % (d.type_name, access.value), "§3.4.5.1")
    elif d.kind is DescriptorKind.DATA:
        if access is AccessKind.EXECUTE:
            step("type", False, "instruction fetch from a data segment", "§5.4.1")
            return result(None, Fault.GP, 0)
        if access is AccessKind.WRITE and not d.writable:
            step("type", False, "a write to a read-only data segment (%s)" % d.type_name,
                 "§3.4.5.1, §5.4.1")
            return result(None, limit_fault, 0)
        step("type", True, "%s allows a %s" % (d.type_name, access.value), "§3.4.5.1")
    else:
        step("type", False, "%s is not a code or data segment" % d.type_name, "§5.4.1")
        return result(None, Fault.GP, 0)

    span = d.offset_range
    last = offset + size - 1
    if span is None:
        ok = False
        detail = "the segment has no valid offsets"
    else:
        ok = span[0] <= offset and last <= span[1]
        detail = "bytes %#x..%#x %s the valid offsets %#x..%#x%s" % (
            offset, last, "lie within" if ok else "are not all within", span[0], span[1],
            " (expand-down: limit + 1 to %s)" % ("0xffffffff" if d.db else "0xffff")
            if d.kind is DescriptorKind.DATA and d.expand_down else "")
    step("limit", ok, detail, "§3.4.5.1, §5.3")
    if not ok:
        return result(None, limit_fault, 0)
    seg_base = d.base if base is None else base
    linear = (seg_base + offset) & 0xFFFFFFFF
    step("linear address", True, "base %#x + offset %#x = %#x (32 bits)" % (
        seg_base, offset, linear), "§3.4")
    return result(linear, applied_base=seg_base)


# ------------------------------------------------------------------ paging

def _fetch_reported(state: PagingState) -> bool:
    """I/D is set only when NXE=1 under PAE/IA-32e paging, or SMEP=1 (§4.7)."""
    return (state.nxe and state.pae) or state.smep


def check_page_access(rights: PageRights, linear: int, access="read", user_mode: bool = True,
                      state: PagingState = PagingState(), implicit: bool = False,
                      shadow_stack: bool = False) -> PageResult:
    """Paging's access rights for one page (SDM vol. 3A §4.6) and the #PF it raises.

    Args:
        rights: what the walk found (:class:`PageRights`).
        linear: the linear address accessed (CR2 if it faults).
        access: read, write or execute.
        user_mode: a user-mode access (CPL 3 and not implicit); else supervisor.
        state: CR0.WP, CR4.SMEP/SMAP/PKE, EFER.NXE, EFLAGS.AC, PKRU.
        implicit: an implicit supervisor access (descriptor tables, the TSS):
            SMAP applies whatever EFLAGS.AC says (§4.6.1).
        shadow_stack: a shadow-stack access (sets SS in the error code).
    """
    access = _access_kind(access)
    if implicit:
        user_mode = False
    write, fetch = access is AccessKind.WRITE, access is AccessKind.EXECUTE
    steps: List[Step] = []

    def step(check, passed, detail, section):
        steps.append(Step("paging", check, passed, detail, "%s %s" % (SDM, section)))

    def fault(present, pk=False, rsvd=False):
        code = PageFaultErrorCode.build(present=present, write=write, user=user_mode,
                                        rsvd=rsvd, fetch=fetch and _fetch_reported(state),
                                        pk=pk, shadow_stack=shadow_stack)
        step("#PF", False, "error code %#x (%s), CR2 = %#x" % (code.raw, code.summary(), linear),
             "§4.7, §6.15")
        return PageResult(linear, None, Fault.PF, code, linear, tuple(steps), rights)

    who = "user-mode" if user_mode else ("implicit supervisor-mode" if implicit
                                         else "supervisor-mode")
    if rights.reserved:
        step("reserved bits", False, "a paging-structure entry has a reserved bit set",
             "§4.7 (RSVD)")
        return fault(True, rsvd=True)
    if not rights.present:
        step("present", False, "the walk met an entry with P=0 (%s)" % rights.source, "§4.7")
        return fault(False)
    step("present", True, "mapped (%s): %s, %s, %s" % (
        rights.source, "writable" if rights.writable else "read-only",
        "user" if rights.user else "supervisor",
        "no-execute" if rights.nx and state.nxe and state.pae else "executable"), "§4.6")

    if user_mode:
        ok = rights.user
        step("U/S", ok, "%s access to a %s page" % (who, "user" if rights.user else
                                                     "supervisor"), "§4.6.1")
        if not ok:
            return fault(True)
        if write:
            ok = rights.writable
            step("R/W", ok, "user-mode write to a %s page" % (
                "writable" if rights.writable else "read-only"), "§4.6.1")
            if not ok:
                return fault(True)
    else:
        if rights.user and not fetch and state.smap and (implicit or not state.ac):
            step("SMAP", False, "CR4.SMAP=1: %s data access to a user page with %s" % (
                who, "an implicit access (EFLAGS.AC does not apply)" if implicit
                else "EFLAGS.AC=0"), "§4.6.1")
            return fault(True)
        if write and not rights.writable:
            ok = not state.wp
            step("R/W with CR0.WP", ok, "supervisor write to a read-only page: CR0.WP=%d %s" % (
                int(state.wp), "faults" if state.wp else "lets it through"), "§4.6.1")
            if not ok:
                return fault(True)
        if fetch and rights.user:
            ok = not state.smep
            step("SMEP", ok, "supervisor fetch from a user page with CR4.SMEP=%d" % (
                int(state.smep)), "§4.6.1")
            if not ok:
                return fault(True)
    if fetch:
        ok = not (rights.nx and state.nxe and state.pae)
        step("XD", ok, "instruction fetch from a page with XD=%d (IA32_EFER.NXE=%d)" % (
            int(rights.nx), int(state.nxe)), "§4.6.1")
        if not ok:
            return fault(True)
    # Protection keys: data accesses to user pages under 4-/5-level paging (§4.6.2).
    if state.pke and state.ia32e and rights.user and not fetch and rights.pkey is not None:
        if state.pkru is None:
            step("PKRU", True, "CR4.PKE=1 but PKRU is not known: key %d not checked"
                 % rights.pkey, "§4.6.2")
        else:
            ad = state.pkru >> (2 * rights.pkey) & 1
            wd = state.pkru >> (2 * rights.pkey + 1) & 1
            denied = ad or (write and wd and (user_mode or state.wp))
            step("PKRU", not denied, "key %d: AD=%d WD=%d for a %s" % (
                rights.pkey, ad, wd, access.value), "§4.6.2")
            if denied:
                return fault(True, pk=True)
    return PageResult(linear, None, None, None, None, tuple(steps), rights)


# ------------------------------------------------------------------ both stages

@dataclass(frozen=True)
class AccessResult:
    """One access through segmentation and paging."""

    selector_text: str
    offset: int
    access: AccessKind
    size: int
    cpl: int
    mode: CpuMode
    segment: SegmentResult
    pages: Tuple[PageResult, ...]
    physical: Optional[int]
    notes: Tuple[str, ...] = ()

    @property
    def linear(self) -> Optional[int]:
        return self.segment.linear

    def _faulted_walk(self) -> Optional[PageResult]:
        return next((p for p in self.pages if p.fault is not None), None)

    @property
    def fault(self) -> Optional[Fault]:
        if self.segment.fault is not None:
            return self.segment.fault
        page = self._faulted_walk()
        return None if page is None else page.fault

    @property
    def error_code(self) -> Optional[int]:
        if self.segment.fault is not None:
            return self.segment.error_code
        page = self._faulted_walk()
        return None if page is None else page.error_code.raw

    @property
    def cr2(self) -> Optional[int]:
        page = self._faulted_walk()
        return None if page is None else page.cr2

    @property
    def steps(self) -> List[Step]:
        out = list(self.segment.steps)
        for page in self.pages:
            out += page.steps
        return out

    def __str__(self) -> str:
        where = "%s:%#x (%s, %d byte%s, CPL %d)" % (
            self.selector_text, self.offset, self.access.value, self.size,
            "" if self.size == 1 else "s", self.cpl)
        if self.fault is None:
            return "%s -> linear %#x -> physical %#x" % (where, self.linear, self.physical)
        text = "%s -> %s(%#x)" % (where, self.fault.mnemonic, self.error_code)
        if self.fault is Fault.PF:
            text += " at linear %#x, CR2 = %#x" % (self.linear, self.cr2)
        return text

    @property
    def page_fault(self) -> Optional[PageResult]:
        """The page walk that faulted (its #PF error code and CR2), if the fault is a #PF."""
        return None if self.segment.fault is not None else self._faulted_walk()

    def explain(self) -> str:
        return access_text(self)

    def _repr_html_(self) -> str:
        return access_html(self)

    def to_dict(self) -> dict:
        return {"selector": self.selector_text, "offset": self.offset,
                "access": self.access.value, "size": self.size, "cpl": self.cpl,
                "mode": self.mode.name.lower(), "linear": self.linear, "physical": self.physical,
                "fault": None if self.fault is None else self.fault.mnemonic,
                "vector": None if self.fault is None else self.fault.vector,
                "error_code": self.error_code, "cr2": self.cr2,
                "descriptor": None if self.segment.descriptor is None
                else self.segment.descriptor.to_dict(),
                "steps": [s.to_dict() for s in self.steps], "notes": list(self.notes)}


def cached_descriptor(cache, mode) -> Optional[SegmentDescriptor]:
    """The hidden part of a segment register (QEMU's cache) as a descriptor.

    QEMU keeps the descriptor's high dword in ``flags`` and the effective
    limit in bytes; the 20-bit limit field is that limit, scaled back by G."""
    if not cache.present and cache.selector >> 2 == 0:
        return None
    raw_limit = cache.limit >> 12 if cache.granularity else cache.limit
    base = cache.base & 0xFFFFFFFF
    low = (base & 0xFFFF) << 16 | (raw_limit & 0xFFFF)
    high = ((base >> 16) & 0xFF) | (cache.flags & 0x00F0FF00) | ((raw_limit >> 16) & 0xF) << 16 \
        | ((base >> 24) & 0xFF) << 24
    return SegmentDescriptor.decode(high << 32 | low, None, mode)


def descriptor_for(memory, selector: Selector) -> Tuple[Optional[SegmentDescriptor], Optional[str]]:
    """The descriptor a selector names in the image's GDT or LDT, or (None, why)
    when the processor would refuse the selector itself (§3.4.2, §3.5.1)."""
    from .table_source import read_table
    from .tables import decode_table
    which = "LDT" if selector.table is TableIndicator.LDT else "GDT"
    try:
        table = read_table(memory, which)
    except TableNotFoundError as exc:
        return None, "%s: %s" % (which, str(exc).split(": ", 1)[-1])
    if selector.offset + 7 > table.limit:
        return None, ("index %d is beyond the %s limit %#x (offset %#x + 7 > limit)" % (
            selector.index, which, table.limit, selector.offset))
    decoded = decode_table(table.data, which, table.mode, base=table.base)
    entry = decoded.by_index(selector.index)
    if entry is None:
        return None, "index %d is not in the %s" % (selector.index, which)
    return entry.descriptor, None


def simulate_access(memory, selector, offset: int, access="read", size: int = 1,
                    cpl: Optional[int] = None, register: Optional[str] = None,
                    cr3: Optional[int] = None, pkru: Optional[int] = None,
                    implicit: bool = False) -> AccessResult:
    """Take a logical address through segmentation and paging over a memory image.

    Args:
        memory: an image with CPU state (:func:`ksinspect.memory.open_image`).
        selector: a segment register name (``"ds"``: its cached descriptor and
            base) or a selector value (its descriptor from the GDT / LDT, loaded
            into ``register``: DS by default, CS for execute).
        offset: the effective address.
        access: read, write or execute.  size: bytes, 1..64.
        cpl: default the image's CS.RPL.
        cr3: walk these tables instead of the image's CR3 (e.g. PTI's user CR3).
        pkru: the PKRU value (not in QEMU's notes); None leaves keys unchecked.

    Raises:
        TableNotFoundError: the image has no CPU state.
        DecodeError: a bad selector, register, size, CPL or offset.
    """
    from .paging import AddressSpace
    access = _access_kind(access)
    cpu = getattr(memory, "cpu", None)
    if cpu is None:
        raise TableNotFoundError("%s carries no CPU state (no GDT, segment registers or CR3)"
                                 % getattr(memory, "name", "the image"))
    operating = cpu.operating_mode()
    mode = operating.mode
    cs = cpu.segments.get("cs")
    if cpl is None:
        cpl = cs.selector & 3 if cs is not None else 0
    _check_size_and_cpl(size, cpl)
    dmode = "long" if cpu.paging_mode() in ("4level", "5level") else "legacy"
    notes: List[str] = ["operating mode: %s" % operating]
    if isinstance(selector, str) and selector.lower() in SEGMENT_REGISTERS:
        name = selector.lower()
        cache = cpu.segments.get(name)
        if cache is None:
            raise DecodeError("the image carries no %s register" % name.upper())
        if access is AccessKind.EXECUTE and name != "cs":
            raise DecodeError("instructions are fetched through CS, not %s" % name.upper())
        descriptor = cached_descriptor(cache, dmode)
        notes.append("%s = %#06x, its cached descriptor (base %#x, limit %#x, flags %#x)" % (
            name.upper(), cache.selector, cache.base, cache.limit, cache.flags))
        seg = check_segment_access(descriptor, offset, access, size, cpl, mode, name,
                                   Selector.decode(cache.selector), loaded=True,
                                   base=cache.base, address_bits=operating.address_bits)
        text = name
    else:
        if not isinstance(selector, int) or isinstance(selector, bool):
            raise DecodeError("selector %r is neither a segment register name (%s) nor an "
                              "integer" % (selector, ", ".join(SEGMENT_REGISTERS)))
        value = selector
        if not 0 <= value <= 0xFFFF:
            raise DecodeError("selector %#x does not fit in 16 bits" % value)
        sel = Selector.decode(value)
        name = (register or ("cs" if access is AccessKind.EXECUTE else "ds")).lower()
        text = "%#06x" % value
        descriptor, why = (None, None) if sel.is_null else descriptor_for(memory, sel)
        if why is not None:
            step = Step("segmentation", "descriptor", False, "selector %#x: %s" % (value, why),
                        "%s §3.4.2, §6.13" % SDM)
            seg = SegmentResult(None, Fault.GP, _selector_error(sel), (step,), None, 0, name)
        else:
            seg = check_segment_access(descriptor, offset, access, size, cpl, mode, name, sel,
                                       address_bits=operating.address_bits)
    pages: List[PageResult] = []
    physical = None
    if seg.ok:
        paging_mode = cpu.paging_mode()
        if paging_mode is None:
            physical = seg.linear
            notes.append("CR0.PG=0: the linear address is the physical address")
        else:
            space = AddressSpace(memory, cr3=cr3)
            efer, _ = cpu.effective_efer()
            state = PagingState.from_registers(cpu.cr0, cpu.cr4, efer, cpu.rflags, paging_mode,
                                               pkru)
            mask = (1 << 64) - 1 if operating.address_bits > 32 else 0xFFFFFFFF
            first = seg.linear
            last = (first + size - 1) & mask
            touched = [first] + ([last & ~0xFFF] if last >> 12 != first >> 12 else [])
            for va in touched:
                t = space.translate(va)
                page = check_page_access(PageRights.from_translation(t), va, access,
                                         user_mode=cpl == 3, state=state, implicit=implicit)
                pages.append(page)
                if not page.ok:
                    break
                if va == first:
                    physical = t.pa
            if cr3 is not None:
                notes.append("walked from CR3 %#x instead of the image's %#x" % (cr3, cpu.cr3))
    return AccessResult(text, offset, access, size, cpl, mode, seg, tuple(pages),
                        physical if all(p.ok for p in pages) else None, tuple(notes))
