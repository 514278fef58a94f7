"""The debug registers DR6 and DR7 (Intel SDM vol. 3B §17.2).

DR7 (§17.2.4, Figure 17-1) enables up to four breakpoints held in DR0-DR3;
DR6 (§17.2.3) says which debug condition raised the last #DB.
"""
import enum
from dataclasses import dataclass, field as dc_field
from typing import List, Optional, Sequence, Tuple

from .._native import enum_values, debugreg as _native
from ..errors import DecodeError, EncodeError
from ._bits import BitField, Drawable, Explanation, field, flag_names

_C = enum_values("KSI_")
SOURCE_DR7 = "Intel SDM vol. 3B §17.2.4, Figure 17-1 (Debug Control Register DR7)"
SOURCE_DR6 = "Intel SDM vol. 3B §17.2.3, Figure 17-1 (Debug Status Register DR6)"


class Condition(enum.IntEnum):
    """R/Wn: what makes breakpoint n fire."""

    EXECUTE = _C["KSI_DR_EXECUTE"]
    WRITE = _C["KSI_DR_WRITE"]
    IO = _C["KSI_DR_IO"]
    READWRITE = _C["KSI_DR_READWRITE"]

    @property
    def label(self) -> str:
        return self.name.lower()


CONDITION_ALIASES = {"x": Condition.EXECUTE, "execute": Condition.EXECUTE, "exec": Condition.EXECUTE,
                     "w": Condition.WRITE, "write": Condition.WRITE,
                     "io": Condition.IO, "i/o": Condition.IO,
                     "rw": Condition.READWRITE, "readwrite": Condition.READWRITE,
                     "read-write": Condition.READWRITE}

_CONDITION_MEANING = {
    Condition.EXECUTE: "break on instruction execution only",
    Condition.WRITE: "break on data writes only",
    Condition.IO: "break on I/O reads or writes (with CR4.DE=1)",
    Condition.READWRITE: "break on data reads or writes but not instruction fetches",
}


class Dr7Anomaly(enum.IntFlag):
    RESERVED_BITS = _C["KSI_D7_RESERVED_BITS"]
    EXEC_LENGTH = _C["KSI_D7_EXEC_LENGTH"]
    LEN8_OUTSIDE_64 = _C["KSI_D7_LEN8_OUTSIDE_64"]
    IO_WITHOUT_DE = _C["KSI_D7_IO_WITHOUT_DE"]


DR7_ANOMALY_TEXT = {
    Dr7Anomaly.RESERVED_BITS: "a reserved bit differs from its required value (bit 10 reads 1; "
                              "bits 12, 14, 15 and 63:32 are 0; MOV to DR7 with bits 63:32 set "
                              "raises #GP)",
    Dr7Anomaly.EXEC_LENGTH: "an enabled execute breakpoint has LEN != 00: the result is "
                            "undefined (§17.2.4)",
    Dr7Anomaly.LEN8_OUTSIDE_64: "LEN=10 (8 bytes) outside 64-bit mode is undefined",
    Dr7Anomaly.IO_WITHOUT_DE: "R/W=10 (I/O) is undefined unless CR4.DE=1",
}


def condition(value) -> Condition:
    """Accept a Condition, its number or a name such as "w", "rw", "execute"."""
    if isinstance(value, Condition):
        return value
    if isinstance(value, int):
        return Condition(value)
    try:
        return CONDITION_ALIASES[str(value).lower()]
    except KeyError:
        raise DecodeError("unknown breakpoint condition %r (expected execute, write, io or "
                          "readwrite)" % (value,)) from None


@dataclass(frozen=True)
class BreakpointSlot:
    """One of the four breakpoints described by DR7."""

    index: int
    local: bool
    global_: bool
    condition: Condition
    length: Optional[int]   # bytes; None when the encoding is undefined here

    @property
    def enabled(self) -> bool:
        return self.local or self.global_

    def to_dict(self) -> dict:
        return {"index": self.index, "local": self.local, "global": self.global_,
                "condition": self.condition.label, "length": self.length,
                "enabled": self.enabled}

    def __str__(self) -> str:
        scope = "+".join(n for n, on in (("local", self.local), ("global", self.global_)) if on)
        length = "undefined length" if self.length is None else "%d byte%s" % (
            self.length, "" if self.length == 1 else "s")
        return "DR%d: %s, %s, %s" % (self.index, scope or "disabled", self.condition.label, length)


_I7 = {name: i for i, name in enumerate(_native.DR7_FIELDS)}
_I6 = {name: i for i, name in enumerate(_native.DR6_FIELDS)}


def _dr_options(long_mode: bool, cr4_de: bool) -> int:
    return (_native.DR_OPTION_LONG_MODE if long_mode else 0) | (_native.DR_OPTION_CR4_DE if cr4_de else 0)


@dataclass(frozen=True)
class DR7(Drawable):
    """The debug control register, read in a given mode.

    Attributes:
        raw: the register value.
        long_mode: 64-bit mode, where LEN=10 means 8 bytes.
        cr4_de: CR4.DE, which gives R/W=10 its I/O meaning.
    """

    raw: int
    long_mode: bool = True
    cr4_de: bool = False
    _d: Tuple[int, ...] = dc_field(default=(), repr=False, compare=False)

    def __post_init__(self):
        if not self._d:
            object.__setattr__(self, "_d", _native.decode_dr7(
                self.raw, _dr_options(self.long_mode, self.cr4_de)))

    @staticmethod
    def decode(raw: int, long_mode: bool = True, cr4_de: bool = False) -> "DR7":
        return DR7(raw, long_mode, cr4_de)

    @property
    def breakpoints(self) -> List[BreakpointSlot]:
        d = self._d
        slots = []
        for n in range(4):
            length = d[_I7["length[%d]" % n]]
            slots.append(BreakpointSlot(n, bool(d[_I7["local"]] >> n & 1),
                                        bool(d[_I7["global"]] >> n & 1),
                                        Condition(d[_I7["condition[%d]" % n]]), length or None))
        return slots

    le = property(lambda self: bool(self._d[_I7["le"]]), doc="LE (bit 8): local exact")
    ge = property(lambda self: bool(self._d[_I7["ge"]]), doc="GE (bit 9): global exact")
    rtm = property(lambda self: bool(self._d[_I7["rtm"]]), doc="RTM (bit 11): advanced RTM debugging")
    gd = property(lambda self: bool(self._d[_I7["gd"]]), doc="GD (bit 13): general detect")
    reserved_bits = property(lambda self: self._d[_I7["reserved_bits"]])

    @property
    def anomalies(self) -> Dr7Anomaly:
        return Dr7Anomaly(self._d[_I7["anomalies"]])

    def __str__(self) -> str:
        enabled = [str(b) for b in self.breakpoints if b.enabled]
        text = "DR7 %#x: %s" % (self.raw, "; ".join(enabled) if enabled else "no breakpoint enabled")
        extra = [n for n, on in (("LE", self.le), ("GE", self.ge), ("GD", self.gd),
                                 ("RTM", self.rtm)) if on]
        if extra:
            text += " [" + " ".join(extra) + "]"
        if self.anomalies:
            text += " [anomalies: %s]" % ", ".join(flag_names(self.anomalies, Dr7Anomaly))
        return text

    def __repr__(self) -> str:
        return "DR7(raw=%#x, long_mode=%s)" % (self.raw, self.long_mode)

    def to_dict(self) -> dict:
        return {"raw": self.raw, "breakpoints": [b.to_dict() for b in self.breakpoints],
                "le": self.le, "ge": self.ge, "gd": self.gd, "rtm": self.rtm,
                "reserved_bits": self.reserved_bits,
                "anomalies": flag_names(self.anomalies, Dr7Anomaly)}

    def fields(self) -> List[BitField]:
        raw = self.raw
        fields = []
        for b in self.breakpoints:
            n = b.index
            lencode = (raw >> (18 + 4 * n)) & 3
            fields.append(field(raw, 19 + 4 * n, 18 + 4 * n, "LEN%d" % n,
                                "%s (encoding %s)" % ("undefined here" if b.length is None else
                                                      "%d byte(s)" % b.length,
                                                      format(lencode, "02b"))))
            fields.append(field(raw, 17 + 4 * n, 16 + 4 * n, "R/W%d" % n,
                                _CONDITION_MEANING[b.condition]))
        fields += [
            field(raw, 15, 14, "Reserved", "reserved (0)"),
            field(raw, 13, 13, "GD", "general detect: #DB before any MOV to a debug register"
                  if self.gd else "general detect off"),
            field(raw, 12, 12, "Reserved", "reserved (0)"),
            field(raw, 11, 11, "RTM", "advanced debugging of RTM regions (with IA32_DEBUGCTL.RTM)"),
            field(raw, 10, 10, "Reserved", "reserved (reads as 1)"),
            field(raw, 9, 9, "GE", "global exact breakpoint"),
            field(raw, 8, 8, "LE", "local exact breakpoint"),
        ]
        for n in range(3, -1, -1):
            fields.append(field(raw, 2 * n + 1, 2 * n + 1, "G%d" % n,
                                "DR%d enabled for every task (not cleared on task switch)" % n))
            fields.append(field(raw, 2 * n, 2 * n, "L%d" % n,
                                "DR%d enabled for the current task (cleared on task switch)" % n))
        if self.long_mode:
            fields.append(field(raw, 63, 32, "Reserved", "reserved (must be 0 in 64-bit mode)"))
        return fields

    def explanation_parts(self) -> Explanation:
        """Title, source, fields and notes: what explain() prints and to_svg() draws."""
        notes = [DR7_ANOMALY_TEXT[a] for a in Dr7Anomaly if a in self.anomalies]
        notes.append("A data breakpoint's address in DRn must be aligned to its length; the "
                     "processor ignores the low address bits (§17.2.5).")
        notes.append("Data breakpoints are traps (reported after the access); execute "
                     "breakpoints are faults (reported before the instruction) (§17.3.1).")
        return Explanation(str(self), SOURCE_DR7, self.fields(), notes, self.anomaly_bits())

    def anomaly_bits(self) -> int:
        """The bits behind each anomaly: reserved bits off their value, and the
        LEN / R/W fields of breakpoints whose encoding is undefined."""
        mask, found = self.reserved_bits, self.anomalies
        for b in self.breakpoints:
            if not b.enabled:
                continue
            length_bits = 3 << (18 + 4 * b.index)
            if b.length is None or (Dr7Anomaly.EXEC_LENGTH in found
                                    and b.condition is Condition.EXECUTE
                                    and self.raw & length_bits):
                mask |= length_bits
            if Dr7Anomaly.IO_WITHOUT_DE in found and b.condition is Condition.IO:
                mask |= 3 << (16 + 4 * b.index)
        return mask


@dataclass(frozen=True)
class Breakpoint:
    """A request to encode one breakpoint into DR7.

    Attributes:
        slot: 0-3, the DRn that holds the address.
        condition: execute, write, io or readwrite.
        length: 1, 2, 4 or 8 bytes.
        scope: "local", "global" or "both".
        address: checked for alignment to the length when given.
    """

    slot: int
    condition: Condition = Condition.EXECUTE
    length: int = 1
    scope: str = "local"
    address: Optional[int] = None


_SCOPES = {"local": _C["KSI_DR_LOCAL"], "global": _C["KSI_DR_GLOBAL"],
           "both": _C["KSI_DR_LOCAL"] | _C["KSI_DR_GLOBAL"]}


def encode_dr7(breakpoints: Sequence[Breakpoint], long_mode: bool = True, cr4_de: bool = False,
               le: bool = False, ge: bool = False, gd: bool = False) -> DR7:
    """Build DR7 for the given breakpoints, enforcing the architectural rules.

    Raises:
        EncodeError: a rule is broken (its message cites it, its ``index``
            names the breakpoint): execute with length != 1, a misaligned
            address, length 8 outside 64-bit mode, I/O without CR4.DE, a
            slot outside 0-3 or used twice.
    """
    requests = []
    for i, bp in enumerate(breakpoints):
        if bp.scope not in _SCOPES:
            raise EncodeError("breakpoint %d: scope %r must be local, global or both"
                              % (i, bp.scope), i)
        try:
            cond = condition(bp.condition)
        except (DecodeError, ValueError) as exc:
            raise EncodeError("breakpoint %d: %s" % (i, exc), i) from None
        requests.append((bp.slot, int(cond), bp.length, _SCOPES[bp.scope], bp.address))
    options = _dr_options(long_mode, cr4_de)
    options |= ((_native.DR_OPTION_LE if le else 0) | (_native.DR_OPTION_GE if ge else 0)
                | (_native.DR_OPTION_GD if gd else 0))
    return DR7(_native.encode_dr7(requests, options), long_mode, cr4_de)


@dataclass(frozen=True)
class DR6(Drawable):
    """The debug status register: why the last #DB happened."""

    raw: int
    _d: Tuple[int, ...] = dc_field(default=(), repr=False, compare=False)

    def __post_init__(self):
        if not self._d:
            object.__setattr__(self, "_d", _native.decode_dr6(self.raw))

    @staticmethod
    def decode(raw: int) -> "DR6":
        return DR6(raw)

    @property
    def hits(self) -> List[int]:
        """Slots whose condition was met (B0-B3). They may be set even for
        breakpoints that DR7 does not enable (§17.2.3)."""
        mask = self._d[_I6["hits"]]
        return [n for n in range(4) if mask >> n & 1]

    bd = property(lambda self: bool(self._d[_I6["bd"]]), doc="BD (bit 13): debug-register access detected (GD)")
    bs = property(lambda self: bool(self._d[_I6["bs"]]), doc="BS (bit 14): single step (TF)")
    bt = property(lambda self: bool(self._d[_I6["bt"]]), doc="BT (bit 15): task switch to a TSS with T=1")
    bld = property(lambda self: bool(self._d[_I6["bld"]]),
                   doc="bus-lock detected: BLD (bit 11) is active-low, so this is bit 11 == 0")
    rtm = property(lambda self: bool(self._d[_I6["rtm"]]),
                   doc="#DB or #BP inside an RTM region: bit 16 is active-low, so bit 16 == 0")
    reserved_bits = property(lambda self: self._d[_I6["reserved_bits"]])

    ACTIVE_LOW = ("bld", "rtm")

    def __str__(self) -> str:
        causes = ["B%d" % n for n in self.hits]
        causes += [n.upper() for n in ("bd", "bs", "bt", "bld", "rtm") if getattr(self, n)]
        return "DR6 %#x: %s" % (self.raw, ", ".join(causes) if causes else "no condition recorded")

    def __repr__(self) -> str:
        return "DR6(raw=%#x)" % self.raw

    def to_dict(self) -> dict:
        return {"raw": self.raw, "hits": self.hits, "bd": self.bd, "bs": self.bs, "bt": self.bt,
                "bld": self.bld, "rtm": self.rtm, "active_low": list(self.ACTIVE_LOW),
                "reserved_bits": self.reserved_bits}

    def fields(self) -> List[BitField]:
        raw = self.raw
        fields = [
            field(raw, 31, 17, "Reserved", "reserved (reads as 1)"),
            field(raw, 16, 16, "RTM", "active-low: 0 = #DB/#BP inside an RTM region"),
            field(raw, 15, 15, "BT", "task switch to a TSS with the T flag"),
            field(raw, 14, 14, "BS", "single-step trap (EFLAGS.TF)"),
            field(raw, 13, 13, "BD", "next instruction accesses a debug register (DR7.GD)"),
            field(raw, 12, 12, "Reserved", "reserved (0)"),
            field(raw, 11, 11, "BLD", "active-low: 0 = bus-lock detected (#DB after a bus lock)"),
            field(raw, 10, 4, "Reserved", "reserved (reads as 1)"),
        ]
        for n in range(3, -1, -1):
            fields.append(field(raw, n, n, "B%d" % n, "condition of DR%d/DR7 slot %d met" % (n, n)))
        if raw >> 32:
            fields.append(field(raw, 63, 32, "Reserved", "reserved (must be 0)"))
        return fields

    def explanation_parts(self) -> Explanation:
        """Title, source, fields and notes: what explain() prints and to_svg() draws."""
        notes = ["Bits 11 (BLD) and 16 (RTM) are active-low: the processor clears them to report "
                 "the event and they read 1 otherwise (§17.2.3).",
                 "The processor never clears DR6 itself: the #DB handler must (§17.2.3)."]
        if self.reserved_bits:
            notes.append("Reserved bits %#x differ from their fixed values (DR6 reads "
                         "0xFFFF0FF0 when nothing happened)." % self.reserved_bits)
        return Explanation(str(self), SOURCE_DR6, self.fields(), notes, self.reserved_bits)
