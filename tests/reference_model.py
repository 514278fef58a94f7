"""A plain, pure-Python reference decoder written straight from the manuals.

It exists only to be compared with ksinspect's C core (tests/test_differential.py),
so it is deliberately slow and literal: every field is a ``bits(v, hi, lo)``
slice named after the figure or table it comes from. It was written from the
Intel SDM (vol. 3A chapters 3-7 and 11, vol. 3B chapter 17), the AMD APM
vol. 2 and the public headers csrc/*.h (which name the anomalies); it never
looks at ksinspect's implementation.

Where the manual leaves something to the tool (for instance which bits of a
gate the tool calls "reserved"), the choice is written next to the code and
taken from the anomaly definitions in csrc/ksi_segment.h / ksi_paging.h /
ksi_debugreg.h.
"""

PAT_DEFAULT = 0x0007040600070406  # SDM vol. 3A Table 11-12: IA32_PAT after power-up/reset


def bits(v, hi, lo):
    """Bits hi..lo (inclusive) of v, shifted down to bit 0."""
    if hi < lo:
        return 0
    return (v >> lo) & ((1 << (hi - lo + 1)) - 1)


def bit(v, n):
    return bool((v >> n) & 1)


def mask(hi, lo):
    """A mask with bits hi..lo set (empty when hi < lo)."""
    if hi < lo:
        return 0
    return ((1 << (hi - lo + 1)) - 1) << lo


def canonical(addr, width=48):
    """SDM vol. 1 3.3.7.1: bits 63:width-1 all equal (4-level paging: 48-bit)."""
    top = addr >> (width - 1)
    return top == 0 or top == (1 << (65 - width)) - 1


def _ordered(names, flags):
    return [n for n in names if n in flags]


# --------------------------------------------------------------- selectors ---

def ref_selector(value):
    """SDM vol. 3A 3.4.2, Figure 3-6: index 15:3, TI bit 2, RPL 1:0."""
    return {
        "raw": value,
        "index": bits(value, 15, 3),
        "table": "LDT" if bit(value, 2) else "GDT",
        "rpl": bits(value, 1, 0),
    }


# ------------------------------------------------------------- descriptors ---

DESCRIPTOR_ANOMALIES = [  # bit order of enum ksi_descriptor_anomaly
    "reserved-type", "l-and-d", "noncanonical-offset", "upper-type-nonzero",
    "upper-missing", "noncanonical-base", "gate-reserved-bits", "l-reserved",
    "upper-reserved",
]

# SDM vol. 3A Table 3-2, "32-Bit Mode" column: kind and operand width.
LEGACY_SYSTEM_TYPES = {
    0x0: ("reserved", 0),
    0x1: ("tss-available", 16),   # 16-bit TSS (Available)
    0x2: ("ldt", 0),
    0x3: ("tss-busy", 16),        # 16-bit TSS (Busy)
    0x4: ("call-gate", 16),       # 16-bit Call Gate
    0x5: ("task-gate", 0),
    0x6: ("interrupt-gate", 16),  # 16-bit Interrupt Gate
    0x7: ("trap-gate", 16),       # 16-bit Trap Gate
    0x8: ("reserved", 0),
    0x9: ("tss-available", 32),
    0xA: ("reserved", 0),
    0xB: ("tss-busy", 32),
    0xC: ("call-gate", 32),
    0xD: ("reserved", 0),
    0xE: ("interrupt-gate", 32),
    0xF: ("trap-gate", 32),
}

# SDM vol. 3A Table 3-2, "IA-32e Mode" column: only LDT, 64-bit TSS and
# 64-bit call/interrupt/trap gates exist; type 0 is "upper 8 bytes of a
# 16-byte descriptor", everything else is reserved.
LONG_SYSTEM_TYPES = {t: ("reserved", 0) for t in range(16)}
LONG_SYSTEM_TYPES.update({
    0x2: ("ldt", 0),
    0x9: ("tss-available", 64),
    0xB: ("tss-busy", 64),
    0xC: ("call-gate", 64),
    0xE: ("interrupt-gate", 64),
    0xF: ("trap-gate", 64),
})

SIXTEEN_BYTE_KINDS = ("ldt", "tss-available", "tss-busy", "call-gate", "interrupt-gate",
                      "trap-gate")


def ref_descriptor(lo, hi=None, mode="legacy"):
    """One descriptor or gate.

    Segment descriptor layout: SDM vol. 3A 3.4.5, Figure 3-8.
      limit 15:0 = bits 15:0, limit 19:16 = bits 51:48
      base 23:0 = bits 39:16, base 31:24 = bits 63:56
      type 43:40, S 44, DPL 46:45, P 47, AVL 52, L 53, D/B 54, G 55
    """
    long_mode = mode == "long"
    typ = bits(lo, 43, 40)
    s = bit(lo, 44)
    raw_limit = bits(lo, 15, 0) | (bits(lo, 51, 48) << 16)
    g = bit(lo, 55)
    flags = set()
    d = {
        "kind": None, "type": typ, "system": not s, "dpl": bits(lo, 46, 45),
        "present": bit(lo, 47), "base": bits(lo, 39, 16) | (bits(lo, 63, 56) << 24),
        # 3.4.5 "Segment limit field": with G=1 the limit is scaled by 4 KiB and
        # the low 12 bits are all ones.
        "limit": (raw_limit << 12) | 0xFFF if g else raw_limit,
        "raw_limit": raw_limit, "granularity": g, "long": bit(lo, 53), "db": bit(lo, 54),
        "avl": bit(lo, 52), "accessed": False, "readable": False, "writable": False,
        "conforming": False, "expand_down": False, "executable": False, "range": None,
        "width": 0, "size": 8, "mode": mode, "raw": lo, "raw_high": None,
    }

    if lo == 0 and (not long_mode or not hi):
        # The null descriptor (3.4.2: GDT entry 0 is not used; an all-zero entry).
        # Protected-mode descriptors are 8 bytes, so the next qword never matters.
        # In IA-32e mode a caller that hands over a non-zero upper qword says the
        # slot is 16 bytes: type 0 there is "upper 8 bytes of a 16-byte
        # descriptor", i.e. reserved (a tool convention, csrc/ksi_segment.h).
        d["kind"] = "null"
        if long_mode and hi is not None:
            # Tool convention: an all-zero 16-byte IA-32e slot (e.g. an unused IDT
            # vector) is one null entry occupying 16 bytes; raw_high stays None.
            d["size"] = 16
        d["anomalies"] = []
        return d

    if s:
        # Table 3-1: type bit 3 = code, bit 0 = accessed; code: bit 2 conforming,
        # bit 1 readable; data: bit 2 expand-down, bit 1 writable.
        code = bit(typ, 3)
        d["executable"] = code
        d["accessed"] = bit(typ, 0)
        if code:
            d["kind"] = "code"
            d["conforming"] = bit(typ, 2)
            d["readable"] = bit(typ, 1)
            # 3.4.5: "L (64-bit code segment) flag ... If L-bit is set, then D-bit
            # must be cleared. When not in IA-32e mode or for non-code segments,
            # bit 21 is reserved and should always be set to 0."
            if long_mode and d["long"]:
                d["width"] = 64
                if d["db"]:
                    flags.add("l-and-d")
            else:
                d["width"] = 32 if d["db"] else 16
                if d["long"]:
                    flags.add("l-reserved")
        else:
            d["kind"] = "data"
            d["expand_down"] = bit(typ, 2)
            d["writable"] = bit(typ, 1)
            d["width"] = 32 if d["db"] else 16   # the B flag
            if d["long"]:
                flags.add("l-reserved")
        if d["expand_down"]:
            # 3.4.5.1: expand-down offsets run from limit+1 to 0xFFFFFFFF (B=1)
            # or 0xFFFF (B=0); none when limit+1 is beyond that.
            top = 0xFFFFFFFF if d["db"] else 0xFFFF
            first = d["limit"] + 1
            d["range"] = [first, top] if first <= top else None
        else:
            d["range"] = [0, d["limit"]]
        d["anomalies"] = _ordered(DESCRIPTOR_ANOMALIES, flags)
        return d

    # System descriptor or gate (S = 0).
    kind, width = (LONG_SYSTEM_TYPES if long_mode else LEGACY_SYSTEM_TYPES)[typ]
    d["kind"] = kind
    d["width"] = width
    if kind == "reserved":
        flags.add("reserved-type")
        d["anomalies"] = _ordered(DESCRIPTOR_ANOMALIES, flags)
        return d

    sixteen = long_mode and kind in SIXTEEN_BYTE_KINDS
    if sixteen:
        d["size"] = 16
        d["raw_high"] = hi
        if hi is None:
            flags.add("upper-missing")

    if kind in ("ldt", "tss-available", "tss-busy"):
        # LDT and TSS descriptors keep the segment-descriptor layout (Figure 7-3);
        # in IA-32e mode bytes 11:8 hold base 63:32 (Figure 7-4).
        d["range"] = [0, d["limit"]]
        if sixteen and hi is not None:
            d["base"] |= bits(hi, 31, 0) << 32
            if not canonical(d["base"]):
                flags.add("noncanonical-base")
            # Figure 7-4: upper dword bits 12:8 are type 00000, the rest reserved.
            if bits(hi, 44, 40):
                flags.add("upper-type-nonzero")
            if hi & (mask(63, 45) | mask(39, 32)):
                flags.add("upper-reserved")
        d["anomalies"] = _ordered(DESCRIPTOR_ANOMALIES, flags)
        return d

    # Gates: no base or limit. Tool convention: the G, D/B, L and AVL flags
    # still echo bits 55, 54, 53 and 52 although in a gate they are offset bits.
    d["base"] = d["limit"] = d["raw_limit"] = 0
    d["selector"] = bits(lo, 31, 16)
    d["offset"] = bits(lo, 15, 0) | (bits(lo, 63, 48) << 16)
    if width == 16:
        # 16-bit (80286-format) gates hold a 16-bit offset; their last word is
        # reserved and must be zero (Intel 80286 manual, Figure 2.6: "reserved
        # for iAPX 386, must be zero"; SDM Table 3-2 "16-bit ... Gate").
        d["offset"] = bits(lo, 15, 0)
        if bits(lo, 63, 48):
            flags.add("gate-reserved-bits")
    d["ist"] = 0
    d["param_count"] = 0
    if kind == "task-gate":
        # Figure 7-6 / 6-2: only the TSS selector (31:16), type, DPL and P are
        # defined; 15:0, 39:32 and 63:48 are reserved.
        d["offset"] = 0
        if lo & (mask(15, 0) | mask(39, 32) | mask(63, 48)):
            flags.add("gate-reserved-bits")
    elif not long_mode:
        if kind == "call-gate":
            # Figure 5-8: parameter count 36:32, bits 39:37 are 000.
            d["param_count"] = bits(lo, 36, 32)
            if bits(lo, 39, 37):
                flags.add("gate-reserved-bits")
        else:
            # Figure 6-2: interrupt/trap gate bits 39:37 are 000 (36:32 unused).
            if bits(lo, 39, 37):
                flags.add("gate-reserved-bits")
    else:
        if kind == "call-gate":
            # Figure 5-9: no parameter count in IA-32e mode; byte 4 reserved.
            if bits(lo, 39, 32):
                flags.add("gate-reserved-bits")
        else:
            # Figure 6-8: IST 34:32, bits 39:35 are 00000.
            d["ist"] = bits(lo, 34, 32)
            if bits(lo, 39, 35):
                flags.add("gate-reserved-bits")
        if hi is not None:
            d["offset"] |= bits(hi, 31, 0) << 32
            # 5.8.3.1 / 6.14.1: #GP if the target offset is not canonical.
            if not canonical(d["offset"]):
                flags.add("noncanonical-offset")
            if kind == "call-gate":
                # Figure 5-9 (and 5.8.3.1): upper dword bits 12:8 are a type
                # field that must be 00000, the other bits reserved.
                if bits(hi, 44, 40):
                    flags.add("upper-type-nonzero")
                if hi & (mask(63, 45) | mask(39, 32)):
                    flags.add("upper-reserved")
            elif bits(hi, 63, 32):
                # Figure 6-8: the whole upper dword of an IDT gate is reserved.
                flags.add("upper-reserved")
    d["anomalies"] = _ordered(DESCRIPTOR_ANOMALIES, flags)
    return d


# ---------------------------------------------------------- paging entries ---

PTE_ANOMALIES = ["reserved-phys", "reserved-level", "xd-reserved", "reserved-memtype"]
LEVEL_NAMES = {1: "PTE", 2: "PDE", 3: "PDPTE", 4: "PML4E", 5: "PML5E"}
MODE_LEVELS = {"32": 2, "pae": 3, "4level": 4, "5level": 5}
# SDM vol. 3A Table 11-10: memory types that can be encoded in the PAT.
MEMORY_TYPES = {0: "UC", 1: "WC", 4: "WT", 5: "WP", 6: "WB", 7: "UC-"}

KIB4, MIB2, MIB4, GIB1 = 1 << 12, 1 << 21, 1 << 22, 1 << 30


def ref_paging(raw, mode, level, maxphyaddr=52, pat=None, pse=True, nxe=True):
    """One paging-structure entry (SDM vol. 3A chapter 4).

    Tool convention (csrc/ksi_paging.h "physical address of the page or next
    table"): in 64-bit entries the frame is bits 51:12 (51:21, 51:30 for large
    pages) as stored, even when bits at or above MAXPHYADDR are set; those bits
    are also reported through reserved_bits and the reserved-phys anomaly.
    """
    pat_msr = PAT_DEFAULT if pat is None else pat
    M = maxphyaddr
    d = {
        "present": False, "writable": False, "user": False, "pwt": False, "pcd": False,
        "accessed": False, "dirty": False, "large": False, "global": False, "pat": False,
        "nx": False, "pkey": None, "frame": 0, "page_size": 0, "memory_type": None,
        "anomalies": [], "leaf": False, "level": level, "level_name": LEVEL_NAMES[level],
        "mode": mode, "raw": raw, "reserved_bits": 0,
    }
    if not bit(raw, 0):
        # P = 0: "the entry is not used", every other bit is ignored (4.3 - 4.5).
        return d
    d["present"] = True
    d["pwt"] = bit(raw, 3)
    d["pcd"] = bit(raw, 4)
    phys = 0    # reserved because of MAXPHYADDR
    lvl = 0     # reserved at this level / page size
    xd = 0      # bit 63 while it is not XD

    if mode == "32":
        # 4.3, Tables 4-4 to 4-6. No XD, no reserved bit 63.
        d["writable"], d["user"], d["accessed"] = bit(raw, 1), bit(raw, 2), bit(raw, 5)
        if level == 2 and pse and bit(raw, 7):
            # Table 4-4: 4-MByte page. PSE-36: bits (M-20):13 are address bits
            # (M-1):32 with M = min(MAXPHYADDR, 40); bits 21:(M-19) reserved.
            m36 = min(M, 40)
            d["large"] = d["leaf"] = True
            d["page_size"] = MIB4
            d["frame"] = (bits(raw, 31, 22) << 22) | (bits(raw, m36 - 20, 13) << 32)
            d["dirty"], d["global"], d["pat"] = bit(raw, 6), bit(raw, 8), bit(raw, 12)
            lvl |= raw & mask(21, 21)
            phys |= raw & mask(20, m36 - 19)
        elif level == 2:
            # Table 4-5: page table; bit 7 ignored when CR4.PSE=0.
            d["frame"] = bits(raw, 31, 12) << 12
        else:
            # Table 4-6: 4-KByte page, PAT is bit 7.
            d["leaf"] = True
            d["page_size"] = KIB4
            d["frame"] = bits(raw, 31, 12) << 12
            d["dirty"], d["global"], d["pat"] = bit(raw, 6), bit(raw, 8), bit(raw, 7)
    else:
        # Tables 4-14 to 4-20: bits 51:M reserved (must be 0).
        phys |= raw & mask(51, M)
        if mode == "pae":
            # Tables 4-8 to 4-11: in PAE entries the row is "62:M Reserved (must
            # be 0)" (63:M for a PDPTE): unlike 4-level paging, bits 62:52 are
            # not ignored. They belong to the same M-driven row: reserved-phys.
            phys |= raw & mask(62, 52)
        if mode == "pae" and level == 3:
            # Table 4-8: PDPTE: bits 2:1 and 8:5 reserved, 63:M reserved (no XD).
            lvl |= raw & (mask(2, 1) | mask(8, 5))
            xd |= raw & mask(63, 63)
            d["frame"] = bits(raw, 51, 12) << 12
        else:
            d["writable"], d["user"], d["accessed"] = bit(raw, 1), bit(raw, 2), bit(raw, 5)
            if nxe:
                d["nx"] = bit(raw, 63)
            else:
                xd |= raw & mask(63, 63)   # 4.4.2 / 4.5.4: reserved if NXE=0
            ps = bit(raw, 7)
            if level >= 4:
                # Tables 4-14, 4-15: PML5E / PML4E bit 7 (PS) reserved.
                lvl |= raw & mask(7, 7)
                d["frame"] = bits(raw, 51, 12) << 12
            elif level == 3 and mode != "pae" and ps:
                # Table 4-16: 1-GByte page; 29:13 reserved, PAT bit 12.
                d["large"] = d["leaf"] = True
                d["page_size"] = GIB1
                d["frame"] = bits(raw, 51, 30) << 30
                lvl |= raw & mask(29, 13)
                d["pat"] = bit(raw, 12)
            elif level == 2 and ps:
                # Tables 4-9 / 4-18: 2-MByte page; 20:13 reserved, PAT bit 12.
                d["large"] = d["leaf"] = True
                d["page_size"] = MIB2
                d["frame"] = bits(raw, 51, 21) << 21
                lvl |= raw & mask(20, 13)
                d["pat"] = bit(raw, 12)
            elif level == 1:
                # Tables 4-11 / 4-20: 4-KByte page; PAT bit 7.
                d["leaf"] = True
                d["page_size"] = KIB4
                d["frame"] = bits(raw, 51, 12) << 12
                d["pat"] = bit(raw, 7)
            else:
                # Tables 4-10 / 4-17 / 4-19: reference to the next table.
                d["frame"] = bits(raw, 51, 12) << 12
            if d["leaf"]:
                d["dirty"], d["global"] = bit(raw, 6), bit(raw, 8)
                if mode in ("4level", "5level"):
                    # 4.6.2: protection key in bits 62:59 of leaf entries.
                    d["pkey"] = bits(raw, 62, 59)

    # 4.9.2: PAT index = PAT:PCD:PWT for a page; a table reference selects with
    # PCD:PWT only. 11.12.2: PAi is byte i of IA32_PAT; its bits 7:3 are reserved
    # (must be 0), so a byte above 7 is itself a reserved encoding and is
    # reported whole, e.g. "reserved(248)".
    index = (int(d["pat"]) << 2) | (int(d["pcd"]) << 1) | int(d["pwt"])
    mt = bits(pat_msr, 8 * index + 7, 8 * index)
    flags = set()
    if mt in MEMORY_TYPES:
        d["memory_type"] = MEMORY_TYPES[mt]
    else:
        d["memory_type"] = "reserved(%d)" % mt
        flags.add("reserved-memtype")
    if phys:
        flags.add("reserved-phys")
    if lvl:
        flags.add("reserved-level")
    if xd:
        flags.add("xd-reserved")
    d["reserved_bits"] = phys | lvl | xd
    d["anomalies"] = _ordered(PTE_ANOMALIES, flags)
    return d


# ---------------------------------------------------------- debug registers ---

DR7_ANOMALIES = ["reserved-bits", "exec-length", "len8-outside-64", "io-without-de"]
CONDITIONS = ["execute", "write", "io", "readwrite"]   # R/W encodings 00, 01, 10, 11


def ref_dr7(raw, long_mode=True, cr4_de=False):
    """SDM vol. 3B 17.2.4, Figure 17-2."""
    flags = set()
    bps = []
    for n in range(4):
        rw = bits(raw, 17 + 4 * n, 16 + 4 * n)
        ln = bits(raw, 19 + 4 * n, 18 + 4 * n)
        # LEN: 00 = 1 byte, 01 = 2, 11 = 4, 10 = 8 in 64-bit mode (else undefined).
        length = {0: 1, 1: 2, 3: 4, 2: 8 if long_mode else None}[ln]
        local, glob = bit(raw, 2 * n), bit(raw, 2 * n + 1)
        # The undefined encodings only matter for an enabled breakpoint (Ln or
        # Gn set); the tool (csrc/ksi_debugreg.h) flags them only there.
        if local or glob:
            if rw == 0 and ln != 0:
                flags.add("exec-length")        # instruction breakpoints need LEN=00
            if ln == 2 and not long_mode:
                flags.add("len8-outside-64")
            if rw == 2 and not cr4_de:
                flags.add("io-without-de")      # R/W=10 undefined when CR4.DE=0
        bps.append({"index": n, "local": local, "global": glob, "condition": CONDITIONS[rw],
                    "length": length, "enabled": local or glob})
    # Bit 10 reads as 1; bits 12, 14, 15 and 63:32 are 0.
    reserved = (0 if bit(raw, 10) else 1 << 10) | (raw & (mask(12, 12) | mask(15, 14) | mask(63, 32)))
    if reserved:
        flags.add("reserved-bits")
    return {
        "raw": raw, "breakpoints": bps, "le": bit(raw, 8), "ge": bit(raw, 9),
        "gd": bit(raw, 13), "rtm": bit(raw, 11), "reserved_bits": reserved,
        "anomalies": _ordered(DR7_ANOMALIES, flags),
    }


def ref_dr6(raw):
    """SDM vol. 3B 17.2.3, Figure 17-1."""
    # Bits 10:4 and 31:17 read as 1; bit 12 and 63:32 read as 0. BLD (11) and
    # RTM (16) are active-low: the processor clears them to report the event.
    reserved = ((~raw) & (mask(10, 4) | mask(31, 17))) | (raw & (mask(12, 12) | mask(63, 32)))
    return {
        "raw": raw, "hits": [n for n in range(4) if bit(raw, n)], "bd": bit(raw, 13),
        "bs": bit(raw, 14), "bt": bit(raw, 15), "bld": not bit(raw, 11),
        "rtm": not bit(raw, 16), "active_low": ["bld", "rtm"], "reserved_bits": reserved,
    }


class RefEncodeError(Exception):
    """The rule (a short name) that a DR7 request breaks, and the request index."""

    def __init__(self, rule, index):
        super().__init__(rule)
        self.rule = rule
        self.index = index


LEN_ENCODING = {1: 0b00, 2: 0b01, 8: 0b10, 4: 0b11}


def ref_encode_dr7(requests, long_mode=True, cr4_de=False, le=False, ge=False, gd=False):
    """requests: (slot, condition index 0-3, length, scope, address or None)."""
    value = 1 << 10   # bit 10 is reserved and set (Figure 17-2)
    used = set()
    for i, (slot, cond, length, scope, address) in enumerate(requests):
        if slot not in (0, 1, 2, 3):
            raise RefEncodeError("slot", i)
        if slot in used:
            raise RefEncodeError("duplicate", i)
        used.add(slot)
        if length not in LEN_ENCODING:
            raise RefEncodeError("length", i)
        if cond == 0 and length != 1:
            raise RefEncodeError("exec-length", i)       # 17.2.4: R/W=00 needs LEN=00
        if length == 8 and not long_mode:
            raise RefEncodeError("len8", i)              # LEN=10 is 8 bytes in 64-bit mode only
        if cond == 2 and not cr4_de:
            raise RefEncodeError("io", i)                # R/W=10 needs CR4.DE=1
        if address is not None and address % length:
            raise RefEncodeError("alignment", i)         # 17.2.5
        if scope in ("local", "both"):
            value |= 1 << (2 * slot)
        if scope in ("global", "both"):
            value |= 1 << (2 * slot + 1)
        value |= cond << (16 + 4 * slot)
        value |= LEN_ENCODING[length] << (18 + 4 * slot)
    value |= (le << 8) | (ge << 9) | (gd << 13)
    return value


# ------------------------------------------------- real-machine fixtures ---
# tests/data/qemu/<profile>/ hold a real Linux guest captured by QEMU (see
# tools/make_qemu_fixture.py): info registers, info tlb, kallsyms and an ELF
# core holding the page tables, GDT, IDT and TSS pages. These helpers read
# them with the reference decoder only, so the real data stays an independent
# oracle for ksinspect.

import lzma as _lzma
import os as _os
import re as _re
import struct as _struct

QEMU_DIR = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "data", "qemu")


def qemu_file(profile, name, binary=False):
    """The text (or bytes) of name or name.xz in a fixture, or None."""
    for candidate in (name, name + ".xz"):
        path = _os.path.join(QEMU_DIR, profile, candidate)
        if _os.path.exists(path):
            opener = _lzma.open if candidate.endswith(".xz") else open
            with opener(path, "rb") as f:
                data = f.read()
            return data if binary else data.decode("utf-8", "replace")
    return None


def qemu_registers(text):
    """The hex registers of QEMU's "info registers" (GDT/IDT as (base, limit))."""
    regs = {}
    for name, value in _re.findall(r"\b([A-Z][A-Z0-9]*)\s*=\s*([0-9a-fA-F]+)\b", text):
        regs.setdefault(name, int(value, 16))
    for table in ("GDT", "IDT"):
        m = _re.search(r"^%s=\s+([0-9a-fA-F]+) ([0-9a-fA-F]+)" % table, text, _re.M)
        if m:
            regs[table] = (int(m.group(1), 16), int(m.group(2), 16))
    return regs


class PhysicalMemory:
    """The PT_LOAD segments of an ELF64 core (QEMU dump-guest-memory), by p_paddr."""

    def __init__(self, data):
        assert data[:4] == b"\x7fELF" and data[4] == 2, "not an ELF64 core"
        phoff, = _struct.unpack_from("<Q", data, 0x20)
        phentsize, phnum = _struct.unpack_from("<HH", data, 0x36)
        self.data = data
        self.segments = []
        for i in range(phnum):
            p_type, _, p_offset, _, p_paddr, p_filesz = _struct.unpack_from(
                "<IIQQQQ", data, phoff + i * phentsize)
            if p_type == 1:   # PT_LOAD
                self.segments.append((p_paddr, p_filesz, p_offset))

    def read(self, paddr, size):
        for start, length, offset in self.segments:
            if start <= paddr and paddr + size <= start + length:
                return self.data[offset + paddr - start: offset + paddr - start + size]
        raise KeyError("physical 0x%x not in the image" % paddr)

    def qword(self, paddr):
        return _struct.unpack("<Q", self.read(paddr, 8))[0]


def ref_translate(mem, cr3, vaddr, levels, pat=None):
    """Walk 4- or 5-level paging (SDM 4.5, Figure 4-8) with the reference decoder.

    Returns (leaf entry dict, physical address) or None when not mapped.
    """
    table = bits(cr3, 51, 12) << 12
    mode = "5level" if levels == 5 else "4level"
    for level in range(levels, 0, -1):
        index = bits(vaddr, 11 + 9 * level, 3 + 9 * level)
        entry = ref_paging(mem.qword(table + 8 * index), mode, level, pat=pat)
        if not entry["present"]:
            return None
        if entry["leaf"]:
            return entry, entry["frame"] | (vaddr & (entry["page_size"] - 1))
        table = entry["frame"]
    raise AssertionError("a level-1 entry is always a leaf")
