"""Paging-structure entries in every x86 paging mode.

Rules: Intel SDM vol. 3A chapter 4: §4.3 (32-bit paging, PSE and PSE-36),
§4.4 (PAE paging), §4.5 (4-level and 5-level paging), §4.6.2 (protection
keys), §4.9.2 (memory type from PAT, PCD and PWT), §4.7 (P=0 entries);
vol. 3A §11.12 for the PAT MSR (Tables 11-10 and 11-12).
"""
import enum
from dataclasses import dataclass, field as dc_field, fields as dc_fields
from typing import List, Optional, Tuple

from .._native import enum_values, paging as _native, percall as _percall
from ..errors import DecodeError
from ._batch import DecodedBatch
from ._bits import BitField, Drawable, Explanation, FlagCache, field, flag_names
from ..modes import LEVEL_NAMES, PagingMode, size_text

_C = enum_values("KSI_")
PAT_DEFAULT = _native.pat_default()


class PteFlag(enum.IntFlag):
    PRESENT = _C["KSI_PF_PRESENT"]
    WRITABLE = _C["KSI_PF_WRITABLE"]
    USER = _C["KSI_PF_USER"]
    PWT = _C["KSI_PF_PWT"]
    PCD = _C["KSI_PF_PCD"]
    ACCESSED = _C["KSI_PF_ACCESSED"]
    DIRTY = _C["KSI_PF_DIRTY"]
    LARGE = _C["KSI_PF_LARGE"]
    GLOBAL = _C["KSI_PF_GLOBAL"]
    PAT = _C["KSI_PF_PAT"]
    NX = _C["KSI_PF_NX"]
    LEAF = _C["KSI_PF_LEAF"]


class PteAnomaly(enum.IntFlag):
    RESERVED_PHYS = _C["KSI_PA_RESERVED_PHYS"]
    RESERVED_LEVEL = _C["KSI_PA_RESERVED_LEVEL"]
    XD_RESERVED = _C["KSI_PA_XD_RESERVED"]
    RESERVED_MEMTYPE = _C["KSI_PA_RESERVED_MEMTYPE"]


ANOMALY_TEXT = {
    PteAnomaly.RESERVED_PHYS: "address bits at or above MAXPHYADDR are set: a walk through this "
                              "entry raises #PF with the RSVD bit set (§4.7)",
    PteAnomaly.RESERVED_LEVEL: "bits reserved at this level or page size are set (#PF, RSVD)",
    PteAnomaly.XD_RESERVED: "bit 63 is set where it is reserved (IA32_EFER.NXE=0, or a PAE "
                            "PDPTE) (#PF, RSVD)",
    PteAnomaly.RESERVED_MEMTYPE: "the PAT entry selected holds a reserved memory type "
                                 "(Table 11-10)",
}


class MemoryType(enum.IntEnum):
    """PAT memory-type encodings (SDM vol. 3A Table 11-10)."""

    UC = 0
    WC = 1
    WT = 4
    WP = 5
    WB = 6
    UC_MINUS = 7

    @property
    def label(self) -> str:
        return "UC-" if self is MemoryType.UC_MINUS else self.name


def memory_type_label(value: int) -> str:
    try:
        return MemoryType(value).label
    except ValueError:
        return "reserved(%d)" % value


_flags = FlagCache(PteFlag)
# Plain ints: IntFlag arithmetic runs Python code, too slow for hot paths.
_F = {member.name: int(member.value) for member in PteFlag}
_anomalies = FlagCache(PteAnomaly)
_IDX = {name: i for i, name in enumerate(_native.PTE_FIELDS)}
_I_FLAGS, _I_PKEY, _I_FRAME = _IDX["flags"], _IDX["pkey"], _IDX["frame"]
_I_PAGE_SIZE, _I_PAT_INDEX, _I_MEMTYPE = _IDX["page_size"], _IDX["pat_index"], _IDX["memory_type"]
_I_RESERVED, _I_ANOMALIES = _IDX["reserved_bits"], _IDX["anomalies"]


_MODE_CODE = {m: _native.PAGING_MODES[m.value] for m in PagingMode}
# key (a PagingMode or its name) -> (mode, C mode code, levels that exist).
# Looked up by string on the hot path: hashing an Enum runs Python code.
_MODE_INFO = {}
for _m in PagingMode:
    for _key in (_m, _m.value):
        _MODE_INFO[_key] = (_m, _MODE_CODE[_m], frozenset(LEVEL_NAMES[_m]))
_MODE_INFO[32] = _MODE_INFO["32"]


def _mode_info(mode):
    try:
        return _MODE_INFO[mode]
    except (KeyError, TypeError):
        pass
    try:
        return _MODE_INFO[str(mode).lower()]
    except KeyError:
        raise DecodeError("unknown paging mode %r (expected 32, pae, 4level or 5level)"
                          % (mode,)) from None


def paging_mode(mode) -> PagingMode:
    """Accept a PagingMode or its name ("32", "pae", "4level", "5level")."""
    return _mode_info(mode)[0]


_PSE, _NXE = _native.PAGING_OPTION_PSE, _native.PAGING_OPTION_NXE
_decode = _native.decode_pte
_new, _set = object.__new__, object.__setattr__


def _options(pse: bool, nxe: bool) -> int:
    return (_PSE if pse else 0) | (_NXE if nxe else 0)


def _check_level(mode: PagingMode, level: int) -> None:
    if level not in LEVEL_NAMES[mode]:
        raise DecodeError("level %r does not exist in %s paging (levels %s)" % (
            level, mode.value, ", ".join(str(n) for n in sorted(LEVEL_NAMES[mode]))))


@dataclass(frozen=True)
class PagingEntry(Drawable):
    """One paging-structure entry, read at a given mode and level.

    Dataclass fields are the entry's raw value and the context that decides
    its meaning (mode, level, MAXPHYADDR, IA32_PAT, CR4.PSE, EFER.NXE);
    every decoded fact is a property computed once by the C core.
    """

    raw: int
    mode: PagingMode = PagingMode.LEVEL4
    level: int = 1
    maxphyaddr: int = 52
    pat_msr: int = PAT_DEFAULT
    pse: bool = True
    nxe: bool = True
    address: Optional[int] = None
    _d: Tuple[int, ...] = dc_field(default=(), repr=False, compare=False)

    def __post_init__(self):
        if not self._d:
            mode = paging_mode(self.mode)
            _check_level(mode, self.level)
            object.__setattr__(self, "mode", mode)
            object.__setattr__(self, "_d", _native.decode_pte(
                self.raw, _MODE_CODE[mode], self.level, self.maxphyaddr,
                self.pat_msr, _options(self.pse, self.nxe)))

    @staticmethod
    def decode(raw: int, mode="4level", level: int = 1, maxphyaddr: int = 52,
               pat: Optional[int] = None, pse: bool = True, nxe: bool = True,
               address: Optional[int] = None) -> "PagingEntry":
        """Decode one entry.

        Args:
            raw: the entry (32 bits in 32-bit paging, else 64).
            mode: "32", "pae", "4level" or "5level".
            level: 1 = PTE, 2 = PDE, 3 = PDPTE, 4 = PML4E, 5 = PML5E.
            maxphyaddr: the processor's physical-address width (CPUID 80000008H).
            pat: IA32_PAT; None means the power-on default 0x0007040600070406.
            pse: CR4.PSE (4 MiB pages in 32-bit paging).
            nxe: IA32_EFER.NXE (bit 63 is XD rather than reserved).

        Raises:
            DecodeError: unknown mode, a level the mode lacks, or a value too wide.
        """
        if _new_entry is not None:
            # The whole value built in C (ksinspect._percall.new_pte); None where
            # this method's own path below must run (it raises the precise error).
            obj = _new_entry(_ENTRY_SPEC, raw, mode, level, maxphyaddr, pat, pse, nxe, address)
            if obj is not None:
                return obj
        mode, code, levels = _MODE_INFO.get(mode) or _mode_info(mode)
        if level not in levels:
            _check_level(mode, level)
        if pat is None:
            pat = PAT_DEFAULT
        decoded = _decode(raw, code, level, maxphyaddr, pat,
                          (_PSE if pse else 0) | (_NXE if nxe else 0))
        obj = _new(PagingEntry)
        # Fill the frozen instance directly: __init__ would decode again.
        _set(obj, "__dict__", {"raw": raw, "mode": mode, "level": level, "maxphyaddr": maxphyaddr,
                               "pat_msr": pat, "pse": pse, "nxe": nxe, "address": address,
                               "_d": decoded})
        return obj

    # -- decoded facts ---------------------------------------------------

    @property
    def flags(self) -> PteFlag:
        return _flags(self._d[_I_FLAGS])

    @property
    def anomalies(self) -> PteAnomaly:
        return _anomalies(self._d[_I_ANOMALIES])

    def _flag(self, bit: int) -> bool:
        return bool(self._d[_I_FLAGS] & bit)

    present = property(lambda self: self._flag(_F["PRESENT"]), doc="P (bit 0)")
    writable = property(lambda self: self._flag(_F["WRITABLE"]), doc="R/W (bit 1)")
    user = property(lambda self: self._flag(_F["USER"]), doc="U/S (bit 2)")
    pwt = property(lambda self: self._flag(_F["PWT"]), doc="PWT (bit 3)")
    pcd = property(lambda self: self._flag(_F["PCD"]), doc="PCD (bit 4)")
    accessed = property(lambda self: self._flag(_F["ACCESSED"]), doc="A (bit 5)")
    dirty = property(lambda self: self._flag(_F["DIRTY"]), doc="D (bit 6), leaf entries only")
    large = property(lambda self: self._flag(_F["LARGE"]), doc="PS (bit 7): maps a large page")
    global_ = property(lambda self: self._flag(_F["GLOBAL"]), doc="G (bit 8), leaf entries only")
    pat = property(lambda self: self._flag(_F["PAT"]), doc="PAT (bit 7 of a PTE, 12 of a large page)")
    nx = property(lambda self: self._flag(_F["NX"]), doc="XD (bit 63) with EFER.NXE=1")
    leaf = property(lambda self: self._flag(_F["LEAF"]), doc="present and maps a page")

    @property
    def pkey(self) -> Optional[int]:
        """Protection key, bits 62:59 of 4/5-level leaf entries (§4.6.2); else None."""
        if self.leaf and self.mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
            return self._d[_I_PKEY]
        return None

    @property
    def frame(self) -> int:
        """Physical address of the page (leaf) or of the next table; 0 when not present."""
        return self._d[_I_FRAME]

    @property
    def page_size(self) -> int:
        """Bytes mapped by a leaf entry; 0 for a table pointer or a non-present entry."""
        return self._d[_I_PAGE_SIZE]

    @property
    def pat_index(self) -> int:
        return self._d[_I_PAT_INDEX]

    @property
    def memory_type(self) -> Optional[str]:
        """The PAT memory type of the access (UC, WC, WT, WP, WB, UC-); None if not present."""
        return memory_type_label(self._d[_I_MEMTYPE]) if self.present else None

    @property
    def reserved_bits(self) -> int:
        """The reserved bits that are set (a mask)."""
        return self._d[_I_RESERVED]

    @property
    def permissions(self) -> str:
        """This entry's own rights, e.g. ``rw- user`` (x = executable, not XD)."""
        if self.mode is PagingMode.PAE and self.level == 3:
            return "(no rights at this level)"
        return "%s%s%s %s" % ("r", "w" if self.writable else "-", "-" if self.nx else "x",
                              "user" if self.user else "supervisor")

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES[self.mode][self.level]

    # -- presentation ------------------------------------------------------

    def __str__(self) -> str:
        name = "%s (%s)" % (self.level_name, self.mode.value)
        if not self.present:
            return "%s not present" % name
        perms = self.permissions
        if self.leaf:
            text = "%s maps a %s page at %#x %s %s" % (name, size_text(self.page_size),
                                                       self.frame, perms, self.memory_type)
        else:
            text = "%s -> table at %#x %s" % (name, self.frame, perms)
        extra = [n for n, on in (("A", self.accessed), ("D", self.dirty), ("G", self.global_))
                 if on]
        if extra:
            text += " " + "".join(extra)
        if self.anomalies:
            text += " [anomalies: %s]" % ", ".join(flag_names(self.anomalies, PteAnomaly))
        return text

    def __repr__(self) -> str:
        return "PagingEntry(raw=%#x, mode=%s, level=%d)" % (self.raw, self.mode.value, self.level)

    def to_dict(self) -> dict:
        result = {
            "present": self.present, "writable": self.writable, "user": self.user,
            "pwt": self.pwt, "pcd": self.pcd, "accessed": self.accessed, "dirty": self.dirty,
            "large": self.large, "global": self.global_, "pat": self.pat, "nx": self.nx,
            "pkey": self.pkey, "frame": self.frame, "page_size": self.page_size,
            "memory_type": self.memory_type, "anomalies": flag_names(self.anomalies, PteAnomaly),
            "leaf": self.leaf, "level": self.level, "level_name": self.level_name,
            "mode": self.mode.value, "raw": self.raw, "reserved_bits": self.reserved_bits,
        }
        if self.address is not None:
            result["address"] = self.address
        return result

    def _source(self) -> str:
        return self.mode.facts.entry_source

    def fields(self) -> List[BitField]:
        """The entry's bit fields as the manual draws them for this mode and level."""
        raw, mode, level = self.raw, self.mode, self.level
        top = 31 if mode is PagingMode.BITS32 else 63
        if not self.present:
            return [field(raw, top, 1, "Ignored", "ignored by the processor; free for software "
                          "(e.g. swap or transition information)"),
                    field(raw, 0, 0, "P", "0: not present, any access raises #PF")]
        fields = [field(raw, 0, 0, "P", "present")]
        pae_pdpte = mode is PagingMode.PAE and level == 3
        if pae_pdpte:
            fields.append(field(raw, 2, 1, "Reserved", "reserved (must be 0)"))
        else:
            fields += [
                field(raw, 1, 1, "R/W", "writable" if self.writable else "read-only"),
                field(raw, 2, 2, "U/S", "user-mode accesses allowed" if self.user
                      else "supervisor only"),
            ]
        fields += [
            field(raw, 3, 3, "PWT", "page-level write-through"),
            field(raw, 4, 4, "PCD", "page-level cache disable"),
        ]
        if pae_pdpte:
            fields += [field(raw, 8, 5, "Reserved", "reserved (must be 0)"),
                       field(raw, 11, 9, "Ignored", "ignored")]
        else:
            fields.append(field(raw, 5, 5, "A", "accessed"))
            if self.leaf:
                fields.append(field(raw, 6, 6, "D", "dirty (written)"))
            else:
                fields.append(field(raw, 6, 6, "Ignored", "ignored in a table pointer"))
            if level == 1:
                fields.append(field(raw, 7, 7, "PAT", "PAT index bit 2"))
            elif level >= 4 and mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
                fields.append(field(raw, 7, 7, "Reserved", "PS is reserved (must be 0) here"))
            else:
                fields.append(field(raw, 7, 7, "PS", "maps a %s page" % size_text(self.page_size)
                                    if self.large else "points to a table"))
            fields.append(field(raw, 8, 8, "G" if self.leaf else "Ignored",
                                "global: kept in the TLB across CR3 loads (with CR4.PGE)"
                                if self.leaf else "ignored in a table pointer"))
            fields.append(field(raw, 11, 9, "Ignored", "free for software"))
        fields += self._address_fields()
        if mode is not PagingMode.BITS32:
            if self.leaf and mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
                fields.append(field(raw, 62, 59, "PK", "protection key %d (with CR4.PKE/PKS)"
                                    % self._d[_I_PKEY]))
                fields.append(field(raw, 58, 52, "Ignored", "ignored"))
            else:
                fields.append(field(raw, 62, 52, "Ignored", "ignored"))
            fields.append(field(raw, 63, 63, "XD" if self.nxe and not pae_pdpte else "Reserved",
                                ("execute disable" if self.nx else "execution allowed")
                                if self.nxe and not pae_pdpte else "reserved (must be 0)"))
        return fields

    def _address_fields(self) -> List[BitField]:
        raw = self.raw
        if self.mode is PagingMode.BITS32:
            if self.large:
                return [field(raw, 12, 12, "PAT", "PAT index bit 2"),
                        field(raw, 20, 13, "PA 39:32", "PSE-36: physical address bits 39:32"),
                        field(raw, 21, 21, "Reserved", "reserved (must be 0)"),
                        field(raw, 31, 22, "PA 31:22", "4 MiB frame at %#x" % self.frame)]
            return [field(raw, 31, 12, "PFN", "page frame number: the %s at physical %#x "
                          "(PFN x 4 KiB)" % ("4 KiB page" if self.leaf else "page table",
                                             self.frame))]
        low = {1: 12, 2: 21, 3: 30}.get(self.level, 12) if self.large else 12
        fields = []
        if self.large:
            fields += [field(raw, 12, 12, "PAT", "PAT index bit 2"),
                       field(raw, low - 1, 13, "Reserved", "reserved (must be 0)")]
        # The address bits hold a frame number (physical address >> low): a
        # PFN in 4 KiB units, or the number of a 2 MiB / 1 GiB page frame.
        if self.large:
            fields.append(field(raw, self.maxphyaddr - 1, low, "Page frame",
                                "%s page frame number: the page at physical %#x "
                                "(number x %s)" % (size_text(self.page_size), self.frame,
                                                   size_text(self.page_size))))
        else:
            fields.append(field(raw, self.maxphyaddr - 1, low, "PFN",
                                "page frame number: the %s at physical %#x (PFN x 4 KiB)"
                                % ("4 KiB page" if self.leaf else "next table", self.frame)))
        if self.maxphyaddr < 52:
            fields.append(field(raw, 51, self.maxphyaddr, "Reserved",
                                "above MAXPHYADDR=%d: must be 0" % self.maxphyaddr))
        return fields

    def _notes(self) -> List[str]:
        notes = [ANOMALY_TEXT[a] for a in PteAnomaly if a in self.anomalies]
        if self.present:
            notes.append("Memory type %s: PAT index %d (PAT=%d PCD=%d PWT=%d) selects byte %d of "
                         "IA32_PAT=%#018x; MTRRs may still override it (§11.5.2.2)." % (
                             self.memory_type, self.pat_index, self.pat, self.pcd, self.pwt,
                             self.pat_index, self.pat_msr))
            if not self.leaf:
                notes.append("A table pointer's R/W, U/S and XD combine with every level below: "
                             "the most restrictive wins (§4.6).")
        return notes

    def explanation_parts(self) -> Explanation:
        """Title, source, fields and notes: what explain() prints and to_svg() draws."""
        digits = 8 if self.mode is PagingMode.BITS32 else 16
        title = "%#0*x: %s" % (digits + 2, self.raw, self)
        return Explanation(title, self._source(), self.fields(), self._notes(),
                           self.reserved_bits)


def decode_paging_entries(data, mode="4level", level: int = 1, maxphyaddr: int = 52,
                          pat: Optional[int] = None, pse: bool = True, nxe: bool = True,
                          base_address: Optional[int] = None) -> DecodedBatch:
    """Decode a run of entries (e.g. a whole 4 KiB table) in one C call.

    Returns a sequence of :class:`PagingEntry`, built lazily from the C output.

    Raises:
        TruncatedDataError: the length is not a multiple of the entry size.
        DecodeError: unknown mode or level.
    """
    mode = paging_mode(mode)
    _check_level(mode, level)
    pat = PAT_DEFAULT if pat is None else pat
    rows = _native.decode_pte_table(data, _MODE_CODE[mode], level, maxphyaddr,
                                    pat, _options(pse, nxe))
    width = mode.entry_size

    def make(i: int, d: Tuple[int, ...]) -> PagingEntry:
        obj = _new(PagingEntry)
        _set(obj, "__dict__", {"raw": d[0], "mode": mode, "level": level, "maxphyaddr": maxphyaddr,
                               "pat_msr": pat, "pse": pse, "nxe": nxe,
                               "address": None if base_address is None else base_address + i * width,
                               "_d": d})
        return obj

    return DecodedBatch(rows, _native.PTE_FIELDS, _native.PTE_RECORD, make)


# PagingEntry.decode's value built in C (csrc/python/percall.c: new_pte) when
# the glue is built and agrees with this module on the ksi_pte record and the
# attributes (it fills them in this order, as decode's own path does).
_ENTRY_KEYS = ("raw", "mode", "level", "maxphyaddr", "pat_msr", "pse", "nxe", "address", "_d")
_new_entry = None
if (_percall is not None and getattr(_percall, "PTE_FIELDS", None) == _native.PTE_FIELDS
        and {f.name for f in dc_fields(PagingEntry)} == set(_ENTRY_KEYS)):
    _new_entry = _percall.new_pte
    _ENTRY_SPEC = (PagingEntry, _ENTRY_KEYS, _MODE_INFO)
