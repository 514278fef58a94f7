"""Segment descriptors and gates, in legacy and IA-32e mode.

Rules: Intel SDM vol. 3A §3.4.5 (descriptor format, Figure 3-8), Table 3-1
(code and data types), §3.5 and Table 3-2 (system types), §5.8.3 (call
gates, Figures 5-8 and 5-9), §6.11 and §6.14.1 (IDT gates, Figures 6-2 and
6-8), §7.2.2 and §7.2.3 (TSS descriptors, Figures 7-3 and 7-4).
"""
import enum
from dataclasses import dataclass, field as dc_field, fields as dc_fields
from typing import List, Optional, Tuple

from .._native import enum_values, segment as _native, percall as _percall
from ..errors import DecodeError, TruncatedDataError
from ._batch import DecodedBatch
from ._bits import BitField, Drawable, Explanation, FlagCache, field, flag_names

_C = enum_values("KSI_")


class DescriptorMode(enum.Enum):
    """How the processor reads descriptors: protected (legacy) or IA-32e mode."""

    LEGACY = "legacy"
    LONG = "long"


_MODE_CODE = {DescriptorMode.LEGACY: _native.MODE_LEGACY, DescriptorMode.LONG: _native.MODE_LONG}


class DescriptorKind(enum.Enum):
    """What a descriptor is; the values are the JSON names."""

    NULL = "null"
    CODE = "code"
    DATA = "data"
    LDT = "ldt"
    TSS_AVAILABLE = "tss-available"
    TSS_BUSY = "tss-busy"
    CALL_GATE = "call-gate"
    INTERRUPT_GATE = "interrupt-gate"
    TRAP_GATE = "trap-gate"
    TASK_GATE = "task-gate"
    RESERVED = "reserved"


# Indexed by the C core's ksi_descriptor_kind value.
_KINDS = tuple(DescriptorKind[name[len("KSI_KIND_"):]]
               for name, _ in sorted(enum_values("KSI_KIND_").items(), key=lambda kv: kv[1]))
GATE_KINDS = frozenset({DescriptorKind.CALL_GATE, DescriptorKind.INTERRUPT_GATE,
                        DescriptorKind.TRAP_GATE, DescriptorKind.TASK_GATE})


class DescriptorFlag(enum.IntFlag):
    """Single-bit facts of a descriptor (values from the C core)."""

    SYSTEM = _C["KSI_DF_SYSTEM"]
    PRESENT = _C["KSI_DF_PRESENT"]
    GRANULARITY = _C["KSI_DF_GRANULARITY"]
    LONG = _C["KSI_DF_LONG"]
    DB = _C["KSI_DF_DB"]
    AVL = _C["KSI_DF_AVL"]
    ACCESSED = _C["KSI_DF_ACCESSED"]
    READABLE = _C["KSI_DF_READABLE"]
    WRITABLE = _C["KSI_DF_WRITABLE"]
    CONFORMING = _C["KSI_DF_CONFORMING"]
    EXPAND_DOWN = _C["KSI_DF_EXPAND_DOWN"]
    EXECUTABLE = _C["KSI_DF_EXECUTABLE"]
    SIXTEEN_BYTES = _C["KSI_DF_SIXTEEN_BYTES"]
    HAS_UPPER = _C["KSI_DF_HAS_UPPER"]


class DescriptorAnomaly(enum.IntFlag):
    """Suspicious facts about a descriptor: evidence, not errors."""

    RESERVED_TYPE = _C["KSI_DA_RESERVED_TYPE"]
    L_AND_D = _C["KSI_DA_L_AND_D"]
    NONCANONICAL_OFFSET = _C["KSI_DA_NONCANONICAL_OFFSET"]
    UPPER_TYPE_NONZERO = _C["KSI_DA_UPPER_TYPE_NONZERO"]
    UPPER_MISSING = _C["KSI_DA_UPPER_MISSING"]
    NONCANONICAL_BASE = _C["KSI_DA_NONCANONICAL_BASE"]
    GATE_RESERVED_BITS = _C["KSI_DA_GATE_RESERVED_BITS"]
    L_RESERVED = _C["KSI_DA_L_RESERVED"]
    UPPER_RESERVED = _C["KSI_DA_UPPER_RESERVED"]


ANOMALY_TEXT = {
    DescriptorAnomaly.RESERVED_TYPE: "the system type is reserved in this mode (Table 3-2); "
                                     "loading it raises #GP",
    DescriptorAnomaly.L_AND_D: "L=1 with D=1 is reserved for code segments (§3.4.5.1); "
                               "a future processor may give it a meaning",
    DescriptorAnomaly.NONCANONICAL_OFFSET: "the gate's target offset is not canonical "
                                           "(48-bit check); a transfer through it raises #GP",
    DescriptorAnomaly.UPPER_TYPE_NONZERO: "bits 12:8 of the upper dword (its type field) must be 0 "
                                          "in a 64-bit call gate, TSS or LDT descriptor "
                                          "(Figures 5-9, 7-4)",
    DescriptorAnomaly.UPPER_MISSING: "a 16-byte descriptor whose upper 8 bytes were not given; "
                                     "offset/base bits 63:32 are unknown",
    DescriptorAnomaly.NONCANONICAL_BASE: "the LDT/TSS base is not canonical (48-bit check)",
    DescriptorAnomaly.GATE_RESERVED_BITS: "bits that must be 0 in this gate are set",
    DescriptorAnomaly.L_RESERVED: "the L bit is set where it is reserved (outside IA-32e mode, "
                                  "or on a data segment)",
    DescriptorAnomaly.UPPER_RESERVED: "reserved bits of the upper 8 bytes are set (in a 64-bit "
                                      "interrupt or trap gate the whole upper dword is "
                                      "reserved, Figure 6-8)",
}

_flags = FlagCache(DescriptorFlag)
# Plain ints: IntFlag arithmetic runs Python code, too slow for hot paths.
_F = {member.name: int(member.value) for member in DescriptorFlag}
_anomalies = FlagCache(DescriptorAnomaly)

_CODE_DATA_TYPES = (
    "Read-Only", "Read-Only, accessed", "Read/Write", "Read/Write, accessed",
    "Read-Only, expand-down", "Read-Only, expand-down, accessed",
    "Read/Write, expand-down", "Read/Write, expand-down, accessed",
    "Execute-Only", "Execute-Only, accessed", "Execute/Read", "Execute/Read, accessed",
    "Execute-Only, conforming", "Execute-Only, conforming, accessed",
    "Execute/Read, conforming", "Execute/Read, conforming, accessed",
)
_LEGACY_SYSTEM_TYPES = (
    "Reserved", "16-bit TSS (Available)", "LDT", "16-bit TSS (Busy)", "16-bit Call Gate",
    "Task Gate", "16-bit Interrupt Gate", "16-bit Trap Gate", "Reserved",
    "32-bit TSS (Available)", "Reserved", "32-bit TSS (Busy)", "32-bit Call Gate",
    "Reserved", "32-bit Interrupt Gate", "32-bit Trap Gate",
)
_LONG_SYSTEM_TYPES = (
    "Upper 8 bytes of a 16-byte descriptor", "Reserved", "LDT", "Reserved", "Reserved",
    "Reserved", "Reserved", "Reserved", "Reserved", "64-bit TSS (Available)", "Reserved",
    "64-bit TSS (Busy)", "64-bit Call Gate", "Reserved", "64-bit Interrupt Gate",
    "64-bit Trap Gate",
)

_IDX = {name: i for i, name in enumerate(_native.DESCRIPTOR_FIELDS)}
_I_KIND, _I_TYPE, _I_FLAGS, _I_DPL = _IDX["kind"], _IDX["type"], _IDX["flags"], _IDX["dpl"]
_I_WIDTH, _I_SIZE, _I_BASE = _IDX["width"], _IDX["size"], _IDX["base"]
_I_RAW_LIMIT, _I_LIMIT = _IDX["raw_limit"], _IDX["limit"]
_I_FIRST, _I_LAST = _IDX["range_first"], _IDX["range_last"]
_I_SELECTOR, _I_OFFSET, _I_IST = _IDX["selector"], _IDX["offset"], _IDX["ist"]
_I_PARAMS, _I_ANOMALIES = _IDX["param_count"], _IDX["anomalies"]
_I_RAW_HI, _I_SLOT = _IDX["raw_hi"], _IDX["slot_offset"]


# key (a DescriptorMode or its name) -> (mode, C mode code); looked up by
# string on the hot path because hashing an Enum runs Python code.
_MODE_INFO = {}
for _m in DescriptorMode:
    _MODE_INFO[_m] = _MODE_INFO[_m.value] = (_m, _MODE_CODE[_m])


def _mode_info(mode):
    try:
        return _MODE_INFO[mode]
    except (KeyError, TypeError):
        raise DecodeError("unknown descriptor mode %r (expected 'legacy' or 'long')" % (mode,)) from None


def _mode(mode) -> DescriptorMode:
    return _mode_info(mode)[0]


@dataclass(frozen=True)
class SegmentDescriptor(Drawable):
    """One 8- or 16-byte descriptor from a GDT, LDT or IDT.

    The dataclass fields are what the descriptor *is*: its raw bits, the
    mode they are read in and where they came from. Every decoded fact is
    a read-only property, computed once by the C core at construction.

    Build with :meth:`decode` or :meth:`from_bytes`; gates come back as
    :class:`Gate`.
    """

    raw: int
    raw_high: Optional[int] = None
    mode: DescriptorMode = DescriptorMode.LONG
    address: Optional[int] = None
    _d: Tuple[int, ...] = dc_field(default=(), repr=False, compare=False)

    def __post_init__(self):
        if not self._d:
            object.__setattr__(self, "mode", _mode(self.mode))
            object.__setattr__(self, "_d", _native.decode_descriptor(
                self.raw, self.raw_high, _MODE_CODE[self.mode]))

    # -- construction --------------------------------------------------

    @staticmethod
    def decode(raw: int, raw_high: Optional[int] = None, mode="long",
               address: Optional[int] = None) -> "SegmentDescriptor":
        """Decode a descriptor from its low qword and, for 16-byte ones, its high qword.

        Args:
            raw: bytes 0-7 of the descriptor as a little-endian integer.
            raw_high: bytes 8-15, for IA-32e system descriptors and gates.
            mode: ``"legacy"`` or ``"long"`` (IA-32e), or a DescriptorMode.
            address: where the descriptor was read from, if anywhere.

        Raises:
            DecodeError: a qword wider than 64 bits or an unknown mode.
        """
        if _new_descriptor is not None:
            # The whole value built in C (ksinspect._percall.new_descriptor); None
            # where this method's own path below must run (it raises the precise error).
            obj = _new_descriptor(_DESCRIPTOR_SPEC, raw, raw_high, mode, address)
            if obj is not None:
                return obj
        mode, code = _MODE_INFO.get(mode) or _mode_info(mode)
        decoded = _decode(raw, raw_high, code)
        # _from_decoded, inlined: this is the per-call path.
        obj = _new(_CLASS_OF_KIND[decoded[_I_KIND]])
        _set(obj, "__dict__", {"raw": decoded[0], "mode": mode, "address": address, "_d": decoded,
                               "raw_high": decoded[_I_RAW_HI] if decoded[_I_FLAGS] & _HAS_UPPER
                               else None})
        return obj

    @staticmethod
    def from_bytes(data: bytes, mode="long", address: Optional[int] = None) -> "SegmentDescriptor":
        """Decode 8 or 16 bytes in memory order (little-endian)."""
        if len(data) not in (8, 16):
            raise TruncatedDataError("descriptor: need 8 or 16 bytes, got %d" % len(data))
        high = int.from_bytes(data[8:16], "little") if len(data) == 16 else None
        return SegmentDescriptor.decode(int.from_bytes(data[:8], "little"), high, mode, address)

    # -- decoded facts --------------------------------------------------

    @property
    def kind(self) -> DescriptorKind:
        return _KINDS[self._d[_I_KIND]]

    @property
    def type(self) -> int:
        """The 4-bit type field (bits 43:40)."""
        return self._d[_I_TYPE]

    @property
    def type_name(self) -> str:
        """The manual's name of the type (Table 3-1 or 3-2)."""
        if self.kind is DescriptorKind.NULL:
            return "Null descriptor"
        if not self.system:
            return ("Code: " if self.type & 8 else "Data: ") + _CODE_DATA_TYPES[self.type]
        table = _LONG_SYSTEM_TYPES if self.mode is DescriptorMode.LONG else _LEGACY_SYSTEM_TYPES
        return table[self.type]

    @property
    def short_type(self) -> str:
        """The type as WinDbg's ``dg`` abbreviates it (``Code RE Ac``, ``TSS64 Busy``)."""
        kind = self.kind
        if kind is DescriptorKind.CODE:
            return "Code %s%s%s" % ("RE" if self.readable else "EO",
                                    " Co" if self.conforming else "", " Ac" if self.accessed else "")
        if kind is DescriptorKind.DATA:
            return "Data %s%s%s" % ("RW" if self.writable else "RO",
                                    " Ed" if self.expand_down else "", " Ac" if self.accessed else "")
        width = str(self.width) if self.width else ""
        return {DescriptorKind.NULL: "<null>", DescriptorKind.LDT: "LDT",
                DescriptorKind.TSS_AVAILABLE: "TSS%s Avl" % width,
                DescriptorKind.TSS_BUSY: "TSS%s Busy" % width,
                DescriptorKind.CALL_GATE: "CallGate%s" % width,
                DescriptorKind.INTERRUPT_GATE: "IntGate%s" % width,
                DescriptorKind.TRAP_GATE: "TrapGate%s" % width,
                DescriptorKind.TASK_GATE: "TaskGate"}.get(kind, "Reserved")

    @property
    def flags(self) -> DescriptorFlag:
        return _flags(self._d[_I_FLAGS])

    @property
    def attributes(self) -> int:
        """Bits 55:40 with the limit's bits 51:48 cleared: type, S, DPL, P, AVL,
        L, D/B and G as one word (§3.4.5 Figure 3-8), WinDbg ``dg``'s Flags."""
        return (self.raw >> 40) & 0xF0FF

    @property
    def anomalies(self) -> DescriptorAnomaly:
        return _anomalies(self._d[_I_ANOMALIES])

    @property
    def system(self) -> bool:
        """S=0: a system descriptor or gate (and the null descriptor)."""
        return bool(self._d[_I_FLAGS] & _F["SYSTEM"])

    @property
    def present(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["PRESENT"])

    @property
    def granularity(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["GRANULARITY"])

    @property
    def long(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["LONG"])

    @property
    def db(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["DB"])

    @property
    def avl(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["AVL"])

    @property
    def accessed(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["ACCESSED"])

    @property
    def readable(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["READABLE"])

    @property
    def writable(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["WRITABLE"])

    @property
    def conforming(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["CONFORMING"])

    @property
    def expand_down(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["EXPAND_DOWN"])

    @property
    def executable(self) -> bool:
        return bool(self._d[_I_FLAGS] & _F["EXECUTABLE"])

    @property
    def dpl(self) -> int:
        return self._d[_I_DPL]

    @property
    def width(self) -> int:
        """Default operand size in bits (16, 32, 64), or 0 where none applies."""
        return self._d[_I_WIDTH]

    @property
    def size(self) -> int:
        """Bytes the descriptor occupies in its table: 8, or 16 for IA-32e system descriptors."""
        return self._d[_I_SIZE]

    @property
    def base(self) -> int:
        return self._d[_I_BASE]

    @property
    def raw_limit(self) -> int:
        """The 20-bit limit field as stored."""
        return self._d[_I_RAW_LIMIT]

    @property
    def limit(self) -> int:
        """The effective limit in bytes: raw limit scaled by 4 KiB when G=1 (§3.4.5)."""
        return self._d[_I_LIMIT]

    @property
    def offset_range(self) -> Optional[Tuple[int, int]]:
        """The valid offsets (first, last), inclusive; None when none are valid.

        Expand-down data segments run from limit+1 to 0xFFFF or 0xFFFFFFFF
        (by the B flag); everything else from 0 to the limit (§3.4.5.1).
        """
        first, last = self._d[_I_FIRST], self._d[_I_LAST]
        return (first, last) if first <= last else None

    @property
    def is_gate(self) -> bool:
        return self.kind in GATE_KINDS

    @property
    def slot_offset(self) -> int:
        """Byte offset in the table it was decoded from (0 for a single decode)."""
        return self._d[_I_SLOT]

    # -- presentation ---------------------------------------------------

    def __str__(self) -> str:
        kind = self.kind
        if kind is DescriptorKind.NULL:
            return "null descriptor"
        bits = "%d-bit " % self.width if self.width else ""
        text = "%s%s base=%#x limit=%#x DPL=%d %s (%s)" % (
            bits, kind.value, self.base, self.limit, self.dpl,
            "present" if self.present else "not present", self.type_name)
        if self.anomalies:
            text += " [anomalies: %s]" % ", ".join(flag_names(self.anomalies, DescriptorAnomaly))
        return text

    def __repr__(self) -> str:
        high = "" if self.raw_high is None else ", raw_high=%#018x" % self.raw_high
        return "%s(raw=%#018x%s, mode=%s, kind=%s)" % (
            type(self).__name__, self.raw, high, self.mode.value, self.kind.value)

    def to_dict(self) -> dict:
        """The descriptor as JSON-ready data; integers stay integers."""
        offsets = self.offset_range
        result = {
            "kind": self.kind.value, "type": self.type, "type_name": self.type_name,
            "system": self.system, "dpl": self.dpl, "present": self.present,
            "base": self.base, "limit": self.limit, "raw_limit": self.raw_limit,
            "granularity": self.granularity, "long": self.long, "db": self.db, "avl": self.avl,
            "accessed": self.accessed, "readable": self.readable, "writable": self.writable,
            "conforming": self.conforming, "expand_down": self.expand_down,
            "executable": self.executable,
            "range": list(offsets) if offsets else None,
            "width": self.width, "size": self.size, "mode": self.mode.value,
            "raw": self.raw, "raw_high": self.raw_high,
            "anomalies": flag_names(self.anomalies, DescriptorAnomaly),
        }
        if self.address is not None:
            result["address"] = self.address
        return result

    def fields(self) -> List[BitField]:
        """The descriptor's bit fields, as the manual draws them."""
        raw = self.raw
        if self.kind is DescriptorKind.NULL:
            return [field(raw, 63, 0, "Null", "all zero: the null descriptor (§3.4.2)")]
        g = self.granularity
        fields = [
            field(raw, 63, 56, "Base 31:24", "base bits 31:24 (base = %#x)" % self.base),
            field(raw, 55, 55, "G", "limit counts 4 KiB units (limit = field * 4096 + 4095)"
                  if g else "limit counts bytes"),
            field(raw, 54, 54, "D/B", self._db_meaning()),
            field(raw, 53, 53, "L", self._l_meaning()),
            field(raw, 52, 52, "AVL", "available to system software"),
            field(raw, 51, 48, "Limit 19:16", "limit bits 19:16"),
        ]
        fields += self._common_fields()
        fields += [
            # Figure 3-8 draws base bits 23:0 as two fields, one in each dword.
            field(raw, 39, 32, "Base 23:16", "base bits 23:16"),
            field(raw, 31, 16, "Base 15:00", "base bits 15:0"),
            field(raw, 15, 0, "Limit 15:0", "raw limit %#x -> effective limit %#x"
                  % (self.raw_limit, self.limit)),
        ]
        fields += self._upper_fields("Base 63:32", "base bits 63:32")
        return fields

    def _common_fields(self) -> List[BitField]:
        raw = self.raw
        return [
            field(raw, 47, 47, "P", "present" if self.present else
                  "not present: loading it raises #NP"),
            field(raw, 46, 45, "DPL", "descriptor privilege level %d" % self.dpl),
            field(raw, 44, 44, "S", "system descriptor or gate" if self.system
                  else "code or data segment"),
            field(raw, 43, 40, "Type", self.type_name),
        ]

    def _upper_fields(self, low_name: str, low_meaning: str) -> List[BitField]:
        if self.raw_high is None or not self.size == 16:
            return []
        high = self.raw_high
        if _upper_dword_reserved(self.kind):
            # Figure 6-8: a 64-bit IDT gate's upper dword is reserved as a whole.
            return [field(high, 63, 32, "Reserved", "reserved", 64),
                    field(high, 31, 0, low_name, low_meaning, 64)]
        # Figures 5-9 and 7-4: a type field of 0 in bits 12:8 of the upper dword.
        return [
            field(high, 63, 45, "Reserved", "reserved", 64),
            field(high, 44, 40, "Zero", "type 0: this half is never a valid descriptor", 64),
            field(high, 39, 32, "Reserved", "reserved", 64),
            field(high, 31, 0, low_name, low_meaning, 64),
        ]

    def _db_meaning(self) -> str:
        if self.kind is DescriptorKind.CODE:
            if self.mode is DescriptorMode.LONG and self.long:
                return "must be 0 when L=1" if self.db else "0 as required with L=1"
            return "default operand size 32 bits" if self.db else "default operand size 16 bits"
        if self.kind is DescriptorKind.DATA:
            return "B: upper bound 0xFFFFFFFF, 32-bit stack pointer" if self.db else \
                   "B: upper bound 0xFFFF, 16-bit stack pointer"
        return "should be 0 in system descriptors"

    def _l_meaning(self) -> str:
        if self.kind is DescriptorKind.CODE:
            if self.mode is DescriptorMode.LONG:
                return "64-bit code segment" if self.long else "compatibility-mode code segment"
            return "reserved outside IA-32e mode"
        return "reserved (0) for this descriptor"

    def _source(self) -> str:
        kind = self.kind
        if kind in (DescriptorKind.TSS_AVAILABLE, DescriptorKind.TSS_BUSY):
            return ("Intel SDM vol. 3A §7.2.3, Figure 7-4 (TSS descriptor in 64-bit mode)"
                    if self.mode is DescriptorMode.LONG else
                    "Intel SDM vol. 3A §7.2.2, Figure 7-3 (TSS descriptor)")
        if kind is DescriptorKind.LDT:
            return "Intel SDM vol. 3A §3.5.1, Figure 3-8, Table 3-2 (LDT descriptor)"
        if kind in (DescriptorKind.CODE, DescriptorKind.DATA):
            return "Intel SDM vol. 3A §3.4.5, Figure 3-8, Table 3-1 (code and data types)"
        return "Intel SDM vol. 3A §3.4.5, Figure 3-8, Table 3-2 (system types)"

    def _notes(self) -> List[str]:
        notes = [ANOMALY_TEXT[a] for a in DescriptorAnomaly if a in self.anomalies]
        kind = self.kind
        if kind in (DescriptorKind.CODE, DescriptorKind.DATA) and self.mode is DescriptorMode.LONG:
            notes.append("In 64-bit mode the processor ignores base and limit of CS, DS, ES "
                         "and SS (FS and GS bases come from MSRs) (§3.2.4).")
        if self.expand_down:
            offsets = self.offset_range
            notes.append("Expand-down: valid offsets are %s (§3.4.5.1)." % (
                "%#x-%#x" % offsets if offsets else "none (limit reaches the upper bound)"))
        if kind is DescriptorKind.CODE and self.conforming:
            notes.append("Conforming: code at a numerically greater (less privileged) CPL may "
                         "call it without a gate; CPL does not change (§5.8.1.2).")
        return notes

    def explanation_parts(self) -> Explanation:
        """Title, source, fields and notes: what explain() prints and to_svg() draws."""
        title = "%s (%s mode): %s" % (self._raw_text(), self.mode.value, self)
        return Explanation(title, self._source(), self.fields(), self._notes(),
                           self.anomaly_bits())

    def anomaly_bits(self) -> int:
        """A mask (over 128 bits: the upper qword is bits 127:64) of the bits
        behind each anomaly, for drawing."""
        found, raw, high = self.anomalies, self.raw, self.raw_high or 0
        mask = 0
        for anomaly, bits in _ANOMALY_BITS.items():
            if anomaly in found:
                mask |= bits
        if DescriptorAnomaly.GATE_RESERVED_BITS in found:
            mask |= raw & _gate_reserved_mask(self.kind, self.mode, self.width)
        if DescriptorAnomaly.UPPER_RESERVED in found:
            reserved = (0xFFFFFFFF00000000 if _upper_dword_reserved(self.kind)
                        else 0xFFFFE0FF00000000)
            mask |= (high & reserved) << 64
        return mask

    def _raw_text(self) -> str:
        if self.raw_high is not None and self.size == 16:
            return "%#018x:%016x" % (self.raw_high, self.raw)
        return "%#018x" % self.raw


def _span(msb: int, lsb: int) -> int:
    return ((1 << (msb - lsb + 1)) - 1) << lsb


# The bits each anomaly is about (bit 64 is bit 0 of the upper qword).
_ANOMALY_BITS = {
    DescriptorAnomaly.RESERVED_TYPE: _span(43, 40),
    DescriptorAnomaly.L_AND_D: _span(54, 53),
    DescriptorAnomaly.L_RESERVED: _span(53, 53),
    DescriptorAnomaly.NONCANONICAL_OFFSET: _span(63, 48) | _span(95, 64),
    DescriptorAnomaly.NONCANONICAL_BASE: _span(63, 56) | _span(39, 16) | _span(95, 64),
    DescriptorAnomaly.UPPER_TYPE_NONZERO: _span(108, 104),
}


def _upper_dword_reserved(kind: DescriptorKind) -> bool:
    """Figure 6-8 draws the upper dword of a 64-bit interrupt or trap gate all
    reserved; the call gate (Figure 5-9) and the TSS and LDT descriptors
    (Figure 7-4) keep a type field of 0 in its bits 12:8."""
    return kind in (DescriptorKind.INTERRUPT_GATE, DescriptorKind.TRAP_GATE)


def _gate_reserved_mask(kind: DescriptorKind, mode: DescriptorMode, width: int) -> int:
    """The low-qword bits a gate must keep 0 (Figures 5-8, 5-9, 6-2, 6-8)."""
    if kind is DescriptorKind.TASK_GATE:
        return _span(15, 0) | _span(39, 32) | _span(63, 48)
    if mode is DescriptorMode.LONG:
        return _span(39, 32) if kind is DescriptorKind.CALL_GATE else _span(39, 35)
    return _span(39, 37) | (_span(63, 48) if width == 16 else 0)


class Gate(SegmentDescriptor):
    """A call, interrupt, trap or task gate: a selector and an entry offset."""

    @property
    def selector(self) -> int:
        """Target code segment selector (the TSS selector for a task gate)."""
        return self._d[_I_SELECTOR]

    @property
    def offset(self) -> int:
        """Entry point offset in the target segment (0 for task gates)."""
        return self._d[_I_OFFSET]

    @property
    def ist(self) -> int:
        """Interrupt stack table index (IA-32e interrupt and trap gates), 0 = none."""
        return self._d[_I_IST]

    @property
    def param_count(self) -> int:
        """Stack parameters copied by a legacy call gate."""
        return self._d[_I_PARAMS]

    def __str__(self) -> str:
        kind = self.kind
        bits = "%d-bit " % self.width if self.width else ""
        if kind is DescriptorKind.TASK_GATE:
            target = "TSS selector %#06x" % self.selector
        else:
            target = "%04x:%#x" % (self.selector, self.offset)
        text = "%s%s -> %s DPL=%d %s" % (bits, kind.value, target, self.dpl,
                                         "present" if self.present else "not present")
        if self.ist:
            text += " IST=%d" % self.ist
        if kind is DescriptorKind.CALL_GATE and self.mode is DescriptorMode.LEGACY:
            text += " params=%d" % self.param_count
        if self.anomalies:
            text += " [anomalies: %s]" % ", ".join(flag_names(self.anomalies, DescriptorAnomaly))
        return text

    def to_dict(self) -> dict:
        result = super().to_dict()
        result.update(selector=self.selector, offset=self.offset, ist=self.ist,
                      param_count=self.param_count)
        return result

    def _source(self) -> str:
        kind, long = self.kind, self.mode is DescriptorMode.LONG
        if kind is DescriptorKind.CALL_GATE:
            return "Intel SDM vol. 3A §5.8.3, Figure %s (call gate)" % ("5-9" if long else "5-8")
        if long:
            return "Intel SDM vol. 3A §6.14.1, Figure 6-8 (64-bit IDT gate descriptor)"
        return "Intel SDM vol. 3A §6.11, Figure 6-2 (IDT gate descriptors)"

    def fields(self) -> List[BitField]:
        raw, kind, long = self.raw, self.kind, self.mode is DescriptorMode.LONG
        if kind is DescriptorKind.TASK_GATE:
            return [field(raw, 63, 48, "Reserved", "reserved")] + self._common_fields() + [
                field(raw, 39, 32, "Reserved", "reserved"),
                field(raw, 31, 16, "TSS Selector", "selects the TSS of the task to switch to"),
                field(raw, 15, 0, "Reserved", "reserved"),
            ]
        fields = [field(raw, 63, 48, "Offset 31:16", "entry offset bits 31:16")]
        fields += self._common_fields()
        if long and kind is DescriptorKind.CALL_GATE:
            fields.append(field(raw, 39, 32, "Reserved", "reserved (no parameter copy in 64-bit mode)"))
        elif long:
            fields += [field(raw, 39, 35, "Zero", "must be 0"),
                       field(raw, 34, 32, "IST", "stack from IST%d of the TSS" % self.ist
                             if self.ist else "0: no IST switch, the legacy stack-switch rule applies")]
        else:
            fields.append(field(raw, 39, 37, "Zero", "must be 0"))
            fields.append(field(raw, 36, 32, "Param Count", "%d parameters copied to the new stack"
                                % self.param_count) if kind is DescriptorKind.CALL_GATE
                          else field(raw, 36, 32, "Reserved", "reserved"))
        fields += [
            field(raw, 31, 16, "Segment Selector", "target code segment %#06x" % self.selector),
            field(raw, 15, 0, "Offset 15:0", "entry offset = %#x" % self.offset),
        ]
        fields += self._upper_fields("Offset 63:32", "entry offset bits 63:32")
        return fields

    def _notes(self) -> List[str]:
        notes = [ANOMALY_TEXT[a] for a in DescriptorAnomaly if a in self.anomalies]
        kind = self.kind
        if kind is DescriptorKind.INTERRUPT_GATE:
            notes.append("An interrupt gate clears IF on entry; a trap gate leaves it (§6.12.1.3).")
        elif kind is DescriptorKind.TRAP_GATE:
            notes.append("A trap gate leaves IF unchanged on entry (§6.12.1.3).")
        if kind is not DescriptorKind.TASK_GATE:
            notes.append("A software INT n through this gate needs CPL <= DPL (%d) (§6.12.1.1)."
                         % self.dpl)
        return notes


_new, _set = object.__new__, object.__setattr__
_decode = _native.decode_descriptor
_CLASS_OF_KIND = tuple(Gate if kind in GATE_KINDS else SegmentDescriptor for kind in _KINDS)
_HAS_UPPER = int(DescriptorFlag.HAS_UPPER)

# SegmentDescriptor.decode's value built in C (csrc/python/percall.c:
# new_descriptor) when the glue is built and agrees with this module on the
# ksi_descriptor record and the attributes (it fills them in this order, as
# decode's own path does).
_DESCRIPTOR_KEYS = ("raw", "mode", "address", "_d", "raw_high")
_new_descriptor = None
if (_percall is not None
        and getattr(_percall, "DESCRIPTOR_FIELDS", None) == _native.DESCRIPTOR_FIELDS
        and all({f.name for f in dc_fields(cls)} == set(_DESCRIPTOR_KEYS)
                for cls in set(_CLASS_OF_KIND))):
    _new_descriptor = _percall.new_descriptor
    _DESCRIPTOR_SPEC = (_CLASS_OF_KIND, _DESCRIPTOR_KEYS, _MODE_INFO)


def _from_decoded(decoded: tuple, mode: DescriptorMode, address: Optional[int]) -> SegmentDescriptor:
    """Build the value without re-decoding (the fast path for batches)."""
    obj = _new(_CLASS_OF_KIND[decoded[_I_KIND]])
    raw_high = decoded[_I_RAW_HI] if decoded[_I_FLAGS] & _HAS_UPPER else None
    # Fill the frozen instance directly: __init__ would decode again.
    _set(obj, "__dict__", {"raw": decoded[0], "raw_high": raw_high, "mode": mode,
                           "address": address, "_d": decoded})
    return obj


_TABLE_CODES = {"flat": _native.TABLE_FLAT, "segments": _native.TABLE_SEGMENTS,
                "interrupts": _native.TABLE_INTERRUPTS}


def decode_descriptor_table(data, mode="long", table: str = "segments",
                            base_address: Optional[int] = None) -> DecodedBatch:
    """Decode a whole table in one C call.

    Returns a sequence of :class:`SegmentDescriptor` / :class:`Gate`, built
    lazily from the C output (``column(name)`` reads one field of every row).

    Args:
        data: the table's bytes (any bytes-like object; not copied).
        mode: ``"legacy"`` or ``"long"``.
        table: ``"segments"`` (GDT/LDT: IA-32e system descriptors take two
            slots), ``"interrupts"`` (IDT: 16-byte entries in IA-32e mode) or
            ``"flat"`` (every 8 bytes alone).
        base_address: the table's address; each value's ``address`` is set from it.

    Raises:
        TruncatedDataError: the length is not a multiple of 8.
    """
    mode = _mode(mode)
    if table not in _TABLE_CODES:
        raise DecodeError("unknown table kind %r (expected segments, interrupts or flat)" % (table,))
    length = len(memoryview(data).cast("B"))
    if length % 8:
        raise TruncatedDataError("descriptor table: %d bytes is not a multiple of 8" % length)
    rows = _native.decode_descriptor_table(data, _MODE_CODE[mode], _TABLE_CODES[table])
    if base_address is None:
        return DecodedBatch(rows, _native.DESCRIPTOR_FIELDS, _native.DESCRIPTOR_RECORD,
                            lambda i, d: _from_decoded(d, mode, None))
    return DecodedBatch(rows, _native.DESCRIPTOR_FIELDS, _native.DESCRIPTOR_RECORD,
                        lambda i, d: _from_decoded(d, mode, base_address + d[_I_SLOT]))
