"""A thread's register state as Windows saves it: the x64 ``CONTEXT`` and the
32-bit ``WOW64_CONTEXT`` (the x86 ``CONTEXT`` has the same layout).

These are what ``GetThreadContext`` fills, what a minidump's thread list
stores for every thread, and what an exception record points to. The
layouts are winnt.h's (Windows SDK; the same in mingw-w64's winnt.h, whose
offsets ``tests/programs/context_offsets.c`` prints for the test suite):

* ``CONTEXT`` (AMD64), 1232 bytes, 16-byte aligned: six home slots, then
  ContextFlags and MxCsr, the six selectors, EFlags, Dr0-Dr3/Dr6/Dr7, the
  sixteen general registers and Rip, the 512-byte FXSAVE image (x87, MXCSR,
  Xmm0-Xmm15; Intel SDM vol. 1 §10.5.1, Table 10-2), 26 vector registers,
  VectorControl, DebugControl and the last-branch / last-exception records.
* ``WOW64_CONTEXT`` (x86), 716 bytes, 4-byte packed: ContextFlags,
  Dr0-Dr3/Dr6/Dr7, the 112-byte FNSAVE area, the selectors as DWORDs, the
  general registers, Eip, EFlags, Esp and the 512-byte ExtendedRegisters
  (an FXSAVE image).

``ContextFlags`` says which groups of members were captured (winnt.h's
comments on CONTEXT): a group whose flag is clear holds whatever the
caller's buffer held. A group is decoded only when its flag is set *and*
its bytes are present; a buffer that ends inside a group its flags claim
is an error (:class:`~ksinspect.errors.TruncatedDataError`).
"""
import enum
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..errors import DecodeError, TruncatedDataError
from ..views.html import html_pre
from ..x86 import DR6, DR7, Selector
from ..x86.control import RFLAGS
from ..views.explanation import BitField, Explanation, field as bit_field
from ..x86 import Drawable, flag_names

SOURCE_AMD64 = "winnt.h CONTEXT (AMD64), Windows SDK; FXSAVE area: Intel SDM vol. 1 §10.5.1"
SOURCE_X86 = "winnt.h WOW64_CONTEXT / x86 CONTEXT, Windows SDK"

CONTEXT_AMD64 = 0x00100000
CONTEXT_I386 = 0x00010000
CONTEXT_AMD64_SIZE = 1232
CONTEXT_X86_SIZE = 716


class ContextGroup(enum.IntFlag):
    """ContextFlags bits 0-6: which groups of members the CONTEXT holds."""

    CONTROL = 0x01
    INTEGER = 0x02
    SEGMENTS = 0x04
    FLOATING_POINT = 0x08
    DEBUG_REGISTERS = 0x10
    EXTENDED_REGISTERS = 0x20   # x86 only: the FXSAVE image in ExtendedRegisters
    XSTATE = 0x40               # an extended (XSAVE) area follows the structure


class ContextStatus(enum.IntFlag):
    """ContextFlags' high bits that describe how the context was captured."""

    KERNEL_DEBUGGER = 0x04000000
    EXCEPTION_ACTIVE = 0x08000000
    SERVICE_ACTIVE = 0x10000000
    UNWOUND_TO_CALL = 0x20000000
    EXCEPTION_REQUEST = 0x40000000
    EXCEPTION_REPORTING = 0x80000000


_GROUP_MEANING = {
    ContextGroup.CONTROL: "control registers: {control}",
    ContextGroup.INTEGER: "integer registers: {integer}",
    ContextGroup.SEGMENTS: "segment registers: {segments}",
    ContextGroup.FLOATING_POINT: "floating point: {floating}",
    ContextGroup.DEBUG_REGISTERS: "debug registers: Dr0-Dr3, Dr6, Dr7",
    ContextGroup.EXTENDED_REGISTERS: "ExtendedRegisters: the FXSAVE image (x87, MXCSR, XMM0-7)",
    ContextGroup.XSTATE: "an XSAVE area follows the structure (AVX and later state)",
}

_STATUS_MEANING = {
    ContextStatus.KERNEL_DEBUGGER: "captured for the kernel debugger",
    ContextStatus.EXCEPTION_ACTIVE: "the thread was dispatching an exception",
    ContextStatus.SERVICE_ACTIVE: "the thread was inside a system service",
    ContextStatus.UNWOUND_TO_CALL: "the context was unwound to a call site",
    ContextStatus.EXCEPTION_REQUEST: "the caller asked for the exception state",
    ContextStatus.EXCEPTION_REPORTING: "the exception state (the two bits above) is valid",
}


@dataclass(frozen=True)
class _Member:
    name: str
    offset: int
    size: int
    group: ContextGroup


def _members(group: ContextGroup, start: int, size: int, names: str) -> List[_Member]:
    return [_Member(n, start + i * size, size, group) for i, n in enumerate(names.split())]


_C, _I, _S, _F, _D, _E = (ContextGroup.CONTROL, ContextGroup.INTEGER, ContextGroup.SEGMENTS,
                          ContextGroup.FLOATING_POINT, ContextGroup.DEBUG_REGISTERS,
                          ContextGroup.EXTENDED_REGISTERS)


@dataclass(frozen=True)
class ContextLayout:
    """One CONTEXT flavour as data: its members and their groups."""

    name: str
    arch: str                 # "x64" or "x86"
    size: int
    machine_flag: int         # CONTEXT_AMD64 or CONTEXT_i386
    flags_offset: int
    members: Tuple[_Member, ...]
    fxsave_offset: int        # the FXSAVE image (FltSave / ExtendedRegisters)
    fxsave_group: ContextGroup
    fnsave_offset: Optional[int]   # x86's FLOATING_SAVE_AREA
    source: str
    pointer: str              # "Rip" / "Eip"
    stack: str

    def member(self, name: str) -> _Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def group_end(self, group: ContextGroup) -> int:
        """The end of the last byte a group needs."""
        ends = [m.offset + m.size for m in self.members if m.group == group]
        if group == self.fxsave_group:
            ends.append(self.fxsave_offset + 512)
        if group == ContextGroup.FLOATING_POINT and self.fnsave_offset is not None:
            ends.append(self.fnsave_offset + 112)
        return max(ends) if ends else 0

    def group_members(self, group: ContextGroup) -> str:
        return ", ".join(m.name for m in self.members if m.group == group)


# winnt.h CONTEXT (AMD64). MxCsr at +0x34 is the FLOATING_POINT copy of FltSave.MxCsr.
AMD64 = ContextLayout(
    "CONTEXT", "x64", CONTEXT_AMD64_SIZE, CONTEXT_AMD64, 48,
    tuple([_Member("MxCsr", 52, 4, _F),
           _Member("SegCs", 56, 2, _C), _Member("SegDs", 58, 2, _S), _Member("SegEs", 60, 2, _S),
           _Member("SegFs", 62, 2, _S), _Member("SegGs", 64, 2, _S), _Member("SegSs", 66, 2, _C),
           _Member("EFlags", 68, 4, _C)]
          + _members(_D, 72, 8, "Dr0 Dr1 Dr2 Dr3 Dr6 Dr7")
          + _members(_I, 120, 8, "Rax Rcx Rdx Rbx")
          + [_Member("Rsp", 152, 8, _C)]
          + _members(_I, 160, 8, "Rbp Rsi Rdi R8 R9 R10 R11 R12 R13 R14 R15")
          + [_Member("Rip", 248, 8, _C)]
          + _members(ContextGroup(0), 1184, 8, "VectorControl DebugControl LastBranchToRip "
                                              "LastBranchFromRip LastExceptionToRip "
                                              "LastExceptionFromRip")),
    256, _F, None, SOURCE_AMD64, "Rip", "Rsp")

# winnt.h WOW64_CONTEXT (pshpack4): the i386 CONTEXT.
X86 = ContextLayout(
    "WOW64_CONTEXT", "x86", CONTEXT_X86_SIZE, CONTEXT_I386, 0,
    tuple(_members(_D, 4, 4, "Dr0 Dr1 Dr2 Dr3 Dr6 Dr7")
          + _members(_S, 140, 4, "SegGs SegFs SegEs SegDs")
          + _members(_I, 156, 4, "Edi Esi Ebx Edx Ecx Eax")
          + _members(_C, 180, 4, "Ebp Eip SegCs EFlags Esp SegSs")),
    204, _E, 28, SOURCE_X86, "Eip", "Esp")

# Windows and Wine save an idle debug register as 0, where a hardware read gives
# DR6 = 0xFFFF0FF0 and DR7 bit 10 = 1 (SDM vol. 3B §17.2.3-4): 0 is not decoded as
# hardware bits (it would read as the active-low BLD and RTM events).
SAVED_ZERO_DR6 = ("0: no debug condition (the value Windows saves; a hardware read gives "
                  "0xffff0ff0)")
SAVED_ZERO_DR7 = ("0: no breakpoint enabled (the value Windows saves; bit 10 reads 1 from "
                  "the hardware)")

_SEGMENTS = ("SegCs", "SegDs", "SegEs", "SegFs", "SegGs", "SegSs")
_DEBUG_ADDRESSES = ("Dr0", "Dr1", "Dr2", "Dr3")
GENERAL_AMD64 = ("Rax", "Rbx", "Rcx", "Rdx", "Rsi", "Rdi", "Rbp", "Rsp",
                 "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15", "Rip")
GENERAL_X86 = ("Eax", "Ebx", "Ecx", "Edx", "Esi", "Edi", "Ebp", "Esp", "Eip")


@dataclass(frozen=True)
class ContextFlags(Drawable):
    """``CONTEXT.ContextFlags``: the machine bit, the captured groups, the status bits."""

    raw: int
    layout_name: str = "CONTEXT"

    @property
    def _layout(self) -> ContextLayout:
        return X86 if self.layout_name == X86.name else AMD64

    @property
    def machine_ok(self) -> bool:
        """The architecture bit (CONTEXT_AMD64 0x100000 / CONTEXT_i386 0x10000) is set."""
        return bool(self.raw & self._layout.machine_flag)

    @property
    def groups(self) -> ContextGroup:
        return ContextGroup(self.raw & 0x7F)

    @property
    def status(self) -> ContextStatus:
        return ContextStatus(self.raw & 0xFC000000)

    @property
    def names(self) -> List[str]:
        """CONTROL, INTEGER, ... then the status bits, as winnt.h spells them (CONTEXT_*)."""
        return (["CONTEXT_" + n.upper().replace("-", "_")
                 for n in flag_names(self.groups, ContextGroup)]
                + ["CONTEXT_" + n.upper().replace("-", "_")
                   for n in flag_names(self.status, ContextStatus)])

    @property
    def unknown_bits(self) -> int:
        return self.raw & ~(0x7F | 0xFC000000 | self._layout.machine_flag) & 0xFFFFFFFF

    def __str__(self) -> str:
        machine = "CONTEXT_AMD64" if self._layout is AMD64 else "CONTEXT_i386"
        parts = ([machine] if self.machine_ok else ["no %s bit" % machine]) + self.names
        if self.unknown_bits:
            parts.append("unknown bits %#x" % self.unknown_bits)
        return "ContextFlags %#x: %s" % (self.raw, " | ".join(parts))

    def to_dict(self) -> dict:
        return {"raw": self.raw, "machine": self.machine_ok, "names": self.names,
                "unknown_bits": self.unknown_bits}

    def fields(self) -> List[BitField]:
        raw, lay = self.raw, self._layout
        meaning = {g: text.format(control=lay.group_members(_C), integer=lay.group_members(_I),
                                  segments=lay.group_members(_S),
                                  floating=("MxCsr, FltSave (x87, Xmm0-Xmm15)" if lay is AMD64
                                            else "FloatSave (the FNSAVE area)"))
                   for g, text in _GROUP_MEANING.items()}
        machine_bit = lay.machine_flag.bit_length() - 1
        out = [bit_field(raw, b, b, "CONTEXT_" + s.name, _STATUS_MEANING[s])
               for s in ContextStatus for b in [s.value.bit_length() - 1]]
        out.append(bit_field(raw, machine_bit, machine_bit,
                             "CONTEXT_AMD64" if lay is AMD64 else "CONTEXT_i386",
                             "the architecture of this CONTEXT"))
        for g in ContextGroup:
            if g is ContextGroup.EXTENDED_REGISTERS and lay is AMD64:
                continue
            b = g.value.bit_length() - 1
            out.append(bit_field(raw, b, b, "CONTEXT_" + g.name, meaning[g]))
        return out

    def explanation_parts(self) -> Explanation:
        notes = ["A group whose bit is clear was not captured: its members hold whatever "
                 "the buffer held before."]
        if not self.machine_ok:
            notes.append("The architecture bit is clear: this may not be a %s at all."
                         % self._layout.name)
        return Explanation(str(self), self._layout.source, self.fields(), notes,
                           self.unknown_bits)


@dataclass(frozen=True)
class Context:
    """A decoded CONTEXT or WOW64_CONTEXT.

    Build with :meth:`from_bytes`. ``registers`` holds every integer member
    that was captured (by its winnt.h name: ``Rax``, ``Rip``, ``EFlags``,
    ``Dr7``...); members of groups not captured are absent. ``segments``
    are :class:`~ksinspect.x86.Selector` values, ``dr6``/``dr7`` the
    decoded debug registers, ``xmm`` the 128-bit XMM registers (from the
    FXSAVE image) when captured. ``eflags`` is the raw EFlags value and
    ``rflags`` the same decoded flag by flag (:class:`~ksinspect.x86.control.RFLAGS`,
    SDM vol. 1 §3.4.3).
    """

    layout: ContextLayout = field(repr=False)
    flags: ContextFlags
    registers: Dict[str, int]
    segments: Dict[str, Selector]
    dr6: Optional[DR6]
    dr7: Optional[DR7]
    xmm: Tuple[int, ...]
    anomalies: Tuple[str, ...]
    address: Optional[int] = None
    raw: bytes = field(default=b"", repr=False, compare=False)

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes, wow64: bool = False,
                   address: Optional[int] = None) -> "Context":
        """Decode a CONTEXT (``wow64=False``) or a WOW64_CONTEXT / x86 CONTEXT.

        ``data`` may be shorter than the whole structure (minidumps of old
        builds store less) as long as it holds every group ContextFlags
        claims.

        Raises:
            TruncatedDataError: the data ends before ContextFlags, or inside
                a group that ContextFlags says was captured.
        """
        lay = X86 if wow64 else AMD64
        data = bytes(data)
        what = lay.name + ("" if address is None else " at %#x" % address)
        if len(data) < lay.flags_offset + 4:
            raise TruncatedDataError("%s: %d bytes end before ContextFlags (+%#x)"
                                     % (what, len(data), lay.flags_offset))
        flags = ContextFlags(int.from_bytes(data[lay.flags_offset:lay.flags_offset + 4],
                                            "little"), lay.name)
        groups = flags.groups
        for g in ContextGroup:
            if g in groups and g is not ContextGroup.XSTATE and len(data) < lay.group_end(g):
                raise TruncatedDataError(
                    "%s: ContextFlags %#x claim CONTEXT_%s (bytes up to +%#x) but only %d "
                    "bytes are present" % (what, flags.raw, g.name, lay.group_end(g), len(data)))
        registers: Dict[str, int] = {}
        for m in lay.members:
            captured = m.group in groups if m.group else len(data) >= m.offset + m.size
            if captured:
                registers[m.name] = int.from_bytes(data[m.offset:m.offset + m.size], "little")
        anomalies = []
        if not flags.machine_ok:
            anomalies.append("ContextFlags %#x lack the %s architecture bit %#x"
                             % (flags.raw, lay.name, lay.machine_flag))
        segments = {}
        for name in _SEGMENTS:
            if name in registers:
                value = registers[name]
                if value >> 16:
                    anomalies.append("%s %#x has bits above 15 set; the selector is the low "
                                     "16 bits" % (name, value))
                segments[name] = Selector.decode(value & 0xFFFF)
        long_mode = lay is AMD64
        dr6 = DR6.decode(registers["Dr6"]) if "Dr6" in registers else None
        dr7 = DR7.decode(registers["Dr7"], long_mode=long_mode) if "Dr7" in registers else None
        xmm: Tuple[int, ...] = ()
        if lay.fxsave_group in groups:
            base = lay.fxsave_offset + 160
            count = 16 if long_mode else 8
            xmm = tuple(int.from_bytes(data[base + 16 * i:base + 16 * i + 16], "little")
                        for i in range(count))
            if long_mode and registers.get("MxCsr") is not None:
                fx_mxcsr = struct.unpack_from("<I", data, lay.fxsave_offset + 24)[0]
                if fx_mxcsr != registers["MxCsr"]:
                    anomalies.append("MxCsr %#x differs from FltSave.MxCsr %#x"
                                     % (registers["MxCsr"], fx_mxcsr))
        return cls(lay, flags, registers, segments, dr6, dr7, xmm, tuple(anomalies),
                   address, data)

    # -- facts ------------------------------------------------------------------------------

    @property
    def arch(self) -> str:
        return self.layout.arch

    @property
    def wow64(self) -> bool:
        return self.layout is X86

    @property
    def eflags(self) -> Optional[int]:
        return self.registers.get("EFlags")

    @property
    def rflags(self) -> Optional[RFLAGS]:
        """EFlags decoded (CF, ZF, IF, TF..., IOPL, reserved bits as anomalies)."""
        value = self.eflags
        return None if value is None else RFLAGS.decode(value)

    @property
    def instruction_pointer(self) -> Optional[int]:
        return self.registers.get(self.layout.pointer)

    @property
    def stack_pointer(self) -> Optional[int]:
        return self.registers.get(self.layout.stack)

    @property
    def debug_addresses(self) -> Dict[str, int]:
        """Dr0-Dr3 when the debug registers were captured."""
        return {n: self.registers[n] for n in _DEBUG_ADDRESSES if n in self.registers}

    @property
    def general(self) -> Dict[str, int]:
        """The general registers and the instruction pointer that were captured, in
        WinDbg's ``r`` order."""
        order = GENERAL_X86 if self.wow64 else GENERAL_AMD64
        return {n: self.registers[n] for n in order if n in self.registers}

    @property
    def mxcsr(self) -> Optional[int]:
        if self.layout.fxsave_group not in self.flags.groups:
            return self.registers.get("MxCsr")
        return struct.unpack_from("<I", self.raw, self.layout.fxsave_offset + 24)[0]

    def __getitem__(self, name: str) -> int:
        """A register by its winnt.h name; KeyError when it was not captured."""
        try:
            return self.registers[name]
        except KeyError:
            raise KeyError("%s has no captured member %r (ContextFlags %#x)"
                           % (self.layout.name, name, self.flags.raw)) from None

    # -- views ------------------------------------------------------------------------------

    def __str__(self) -> str:
        width = 8 if self.wow64 else 16
        ip = self.instruction_pointer
        sp = self.stack_pointer
        return "%s: %s %s, %s %s, %s" % (
            self.layout.name, self.layout.pointer.lower(),
            "-" if ip is None else "%0*x" % (width, ip), self.layout.stack.lower(),
            "-" if sp is None else "%0*x" % (width, sp),
            ", ".join(self.flags.names) or "no groups captured")

    def to_dict(self) -> dict:
        return {
            "structure": self.layout.name,
            "arch": self.arch,
            "address": self.address,
            "context_flags": self.flags.to_dict(),
            "registers": dict(self.registers),
            "eflags": self.eflags,
            "rflags": None if self.rflags is None else self.rflags.to_dict(),
            "segments": {n: s.to_dict() for n, s in self.segments.items()},
            "dr6": None if self.dr6 is None else self.dr6.to_dict(),
            "dr7": None if self.dr7 is None else self.dr7.to_dict(),
            "xmm": list(self.xmm),
            "anomalies": list(self.anomalies),
        }

    def explain(self) -> str:
        """Every captured member at its winnt.h offset, with what it means."""
        lay, width = self.layout, 8 if self.wow64 else 16
        lines = [str(self), "Layout: %s, %d bytes; source: %s" % (lay.name, lay.size, lay.source),
                 "", "  %-22s +%#05x  %s" % ("ContextFlags", lay.flags_offset, self.flags)]
        for m in sorted(lay.members, key=lambda m: m.offset):
            value = self.registers.get(m.name)
            if value is None:
                lines.append("  %-22s +%#05x  (not captured: CONTEXT_%s clear)"
                             % (m.name, m.offset, m.group.name if m.group else "-"))
                continue
            text = "%0*x" % (m.size * 2 if m.size < 8 else width, value)
            if m.name in self.segments:
                text += "  " + str(self.segments[m.name])
            elif m.name == "EFlags":
                text += "  " + self.rflags.summary()
            elif m.name == "Dr6" and self.dr6 is not None:
                text += "  " + (SAVED_ZERO_DR6 if value == 0 else str(self.dr6))
            elif m.name == "Dr7" and self.dr7 is not None:
                text += "  " + (SAVED_ZERO_DR7 if value == 0 else str(self.dr7))
            elif m.name in _DEBUG_ADDRESSES and self.dr7 is not None:
                slot = self.dr7.breakpoints[int(m.name[2])]
                text += "  breakpoint address, %s" % (str(slot) if slot.enabled
                                                      else "not enabled in Dr7")
            lines.append("  %-22s +%#05x  %s" % (m.name, m.offset, text))
        if self.xmm:
            lines.append("  %-22s +%#05x  %s" % ("FXSAVE image", lay.fxsave_offset,
                                                 "MXCSR %#x" % (self.mxcsr or 0)))
            for i, v in enumerate(self.xmm):
                lines.append("    Xmm%-18d +%#05x  %032x" % (i, lay.fxsave_offset + 160 + 16 * i, v))
        lines += ["Anomaly: " + a for a in self.anomalies]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


def context_size(wow64: bool = False) -> int:
    """sizeof(CONTEXT) (1232) or sizeof(WOW64_CONTEXT) (716)."""
    return (X86 if wow64 else AMD64).size


def decode_context(data: bytes, arch: str, address: Optional[int] = None) -> Context:
    """Decode by architecture name (``"x64"``/``"amd64"`` or ``"x86"``/``"wow64"``).

    Raises:
        DecodeError: an unknown architecture name.
    """
    key = arch.lower()
    if key in ("x64", "amd64", "x86_64"):
        return Context.from_bytes(data, False, address)
    if key in ("x86", "i386", "wow64"):
        return Context.from_bytes(data, True, address)
    raise DecodeError("unknown CONTEXT architecture %r (expected x64 or x86)" % arch)
