"""Task-state segments: the 32-bit TSS (Intel SDM vol. 3A §8.2.1, Figure 8-2)
and the 64-bit TSS (§8.7, Figure 8-11), with the I/O permission bitmap
(vol. 1 §19.5.2) and what a task switch saves and loads (§8.3).

The fields are cut from the bytes by the C core's field extractor (one call
per TSS, ``csrc/ksi_fields.c``); this module names them, says which are
*dynamic* (written back by the processor when it switches away from the
task) and which *static* (only read), and reports anomalies: a limit below
the architectural minimum, reserved fields that are not zero, an I/O map
base past the limit.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .._native import fields as _native_fields
from ..errors import DecodeError, TruncatedDataError
from ..views.html import tss_html
from ..views.text import tss_text
from .control import RFLAGS

SOURCE_32 = "Intel SDM vol. 3A §8.2.1, Figure 8-2 (32-Bit Task-State Segment)"
SOURCE_64 = "Intel SDM vol. 3A §8.7, Figure 8-11 (64-Bit TSS Format)"
MIN_LIMIT = 0x67          # 104 bytes - 1: the smallest limit a 32-bit or 64-bit TSS may have
IO_BITMAP_PORTS = 65536


@dataclass(frozen=True)
class TssField:
    """One field: name, byte offset, size, and what the manual says it holds."""

    name: str
    offset: int
    size: int
    meaning: str
    dynamic: bool = False      # saved by the processor on a task switch (§8.2.1)
    bit_length: int = 0


_SEL = "segment selector"
TSS32_LAYOUT: Tuple[TssField, ...] = (
    TssField("previous_task_link", 0x00, 2, "selector of the TSS of the previous task (set on a "
             "nested CALL/interrupt task switch, used by IRET with NT=1)", True),
    TssField("esp0", 0x04, 4, "stack pointer loaded on a privilege change to CPL 0"),
    TssField("ss0", 0x08, 2, "stack segment for CPL 0"),
    TssField("esp1", 0x0C, 4, "stack pointer for CPL 1"),
    TssField("ss1", 0x10, 2, "stack segment for CPL 1"),
    TssField("esp2", 0x14, 4, "stack pointer for CPL 2"),
    TssField("ss2", 0x18, 2, "stack segment for CPL 2"),
    TssField("cr3", 0x1C, 4, "page-directory base (PDBR) loaded by a switch to this task"),
    TssField("eip", 0x20, 4, "instruction pointer the task resumes at", True),
    TssField("eflags", 0x24, 4, "EFLAGS of the task", True),
    TssField("eax", 0x28, 4, "general register", True),
    TssField("ecx", 0x2C, 4, "general register", True),
    TssField("edx", 0x30, 4, "general register", True),
    TssField("ebx", 0x34, 4, "general register", True),
    TssField("esp", 0x38, 4, "stack pointer of the task", True),
    TssField("ebp", 0x3C, 4, "general register", True),
    TssField("esi", 0x40, 4, "general register", True),
    TssField("edi", 0x44, 4, "general register", True),
    TssField("es", 0x48, 2, _SEL, True),
    TssField("cs", 0x4C, 2, _SEL, True),
    TssField("ss", 0x50, 2, _SEL, True),
    TssField("ds", 0x54, 2, _SEL, True),
    TssField("fs", 0x58, 2, _SEL, True),
    TssField("gs", 0x5C, 2, _SEL, True),
    TssField("ldt_selector", 0x60, 2, "the task's LDT (a GDT selector)"),
    TssField("t", 0x64, 2, "debug trap flag: #DB when a task switch enters this task", False, 1),
    TssField("io_map_base", 0x66, 2, "offset of the I/O permission bitmap from the TSS base"),
)
# The upper halves of the selector dwords and bits 15:1 of the T word are reserved (0).
# (offset, size, first bit, bits; 0 = all)
TSS32_RESERVED = tuple((o, 2, 0, 0) for o in (0x02, 0x0A, 0x12, 0x1A, 0x4A, 0x4E, 0x52, 0x56,
                                              0x5A, 0x5E, 0x62)) + ((0x64, 2, 1, 15),)

TSS64_LAYOUT: Tuple[TssField, ...] = (
    TssField("rsp0", 0x04, 8, "stack pointer loaded on a privilege change to CPL 0"),
    TssField("rsp1", 0x0C, 8, "stack pointer for CPL 1"),
    TssField("rsp2", 0x14, 8, "stack pointer for CPL 2"),
) + tuple(TssField("ist%d" % n, 0x24 + 8 * (n - 1), 8, "interrupt stack table entry %d: the "
                   "stack an IDT gate with IST=%d switches to" % (n, n)) for n in range(1, 8)) + (
    TssField("io_map_base", 0x66, 2, "offset of the I/O permission bitmap from the TSS base"),
)
TSS64_RESERVED = ((0x00, 4, 0, 0), (0x1C, 8, 0, 0), (0x5C, 8, 0, 0), (0x64, 2, 0, 0))


def _extract(data: bytes, layout: Sequence[TssField],
             reserved: Sequence[Tuple[int, int, int, int]]) -> Tuple[Dict[str, int], List[int]]:
    specs = [(f.offset, f.size, False, 0, f.bit_length) for f in layout]
    specs += [(offset, size, False, bit, bits) for offset, size, bit, bits in reserved]
    values, status = _native_fields.extract(data, specs, [0])
    if status[0] != _native_fields.STATUS_OK:
        raise TruncatedDataError("TSS: %d bytes is shorter than the 104 a TSS holds" % len(data))
    names = [f.name for f in layout]
    fields = dict(zip(names, values[:len(names)]))
    return fields, list(values[len(names):])


@dataclass(frozen=True)
class TaskStateSegment:
    """A decoded TSS.

    Attributes:
        width: 32 or 64.
        base: its linear address (the TSS descriptor's base).
        limit: the descriptor's limit (bytes - 1).
        fields: field name -> value, in the manual's order.
        reserved_nonzero: offsets of reserved fields that are not 0.
        io_bitmap: the I/O permission bitmap bytes inside the limit (may be empty).
        selector: the GDT selector that names it, if known.
    """

    width: int
    base: int
    limit: int
    fields: Dict[str, int]
    reserved_nonzero: Tuple[int, ...]
    io_bitmap: bytes
    selector: Optional[int] = None

    @staticmethod
    def decode(data: bytes, width: int, base: int = 0, limit: Optional[int] = None,
               selector: Optional[int] = None) -> "TaskStateSegment":
        """Decode a TSS from its bytes (at least 104; the rest up to the limit
        may hold the I/O bitmap).

        Raises:
            DecodeError: width not 32 or 64.
            TruncatedDataError: fewer than 104 bytes.
        """
        if width not in (32, 64):
            raise DecodeError("TSS width %r is neither 32 nor 64" % (width,))
        if len(data) < MIN_LIMIT + 1:
            raise TruncatedDataError("TSS: %d bytes is shorter than the 104 a TSS holds"
                                     % len(data))
        layout, reserved = (TSS32_LAYOUT, TSS32_RESERVED) if width == 32 else (
            TSS64_LAYOUT, TSS64_RESERVED)
        fields, rest = _extract(bytes(data[:MIN_LIMIT + 1]), layout, reserved)
        offsets = [r[0] for r in reserved]
        nonzero = tuple(o for o, v in zip(offsets, rest) if v)
        limit = len(data) - 1 if limit is None else limit
        io = fields["io_map_base"]
        end = min(limit + 1, len(data), io + IO_BITMAP_PORTS // 8)
        bitmap = bytes(data[io:end]) if io < end else b""
        return TaskStateSegment(width, base, limit, fields, nonzero, bitmap, selector)

    # -- facts -------------------------------------------------------------------

    @property
    def layout(self) -> Tuple[TssField, ...]:
        return TSS32_LAYOUT if self.width == 32 else TSS64_LAYOUT

    @property
    def source(self) -> str:
        return SOURCE_32 if self.width == 32 else SOURCE_64

    @property
    def io_bitmap_inside_limit(self) -> bool:
        """The map base lies within the limit (otherwise no port is permitted by it)."""
        return self.fields["io_map_base"] <= self.limit

    def port_allowed(self, port: int) -> bool:
        """Whether the bitmap lets CPL > IOPL code use this one-byte port
        (§19.5.2): its bit must lie within the limit and be 0."""
        if not 0 <= port < IO_BITMAP_PORTS:
            raise DecodeError("port %r is outside 0..0xffff" % (port,))
        byte = port >> 3
        return byte < len(self.io_bitmap) and not self.io_bitmap[byte] >> (port & 7) & 1

    def allowed_port_ranges(self) -> List[Tuple[int, int]]:
        """Inclusive (first, last) runs of ports the bitmap permits."""
        runs, start = [], None
        for port in range(len(self.io_bitmap) * 8):
            ok = not self.io_bitmap[port >> 3] >> (port & 7) & 1
            if ok and start is None:
                start = port
            elif not ok and start is not None:
                runs.append((start, port - 1))
                start = None
        if start is not None:
            runs.append((start, len(self.io_bitmap) * 8 - 1))
        return runs

    def anomalies(self) -> List[str]:
        out = []
        if self.limit < MIN_LIMIT:
            out.append("limit %#x is below 0x67, the minimum for a %d-bit TSS: a task switch "
                       "or stack switch through it raises #TS (§8.2.2)" % (self.limit, self.width))
        if not self.io_bitmap_inside_limit:
            out.append("I/O map base %#x is past the limit %#x: no I/O permission bitmap, so "
                       "every IN/OUT at CPL > IOPL raises #GP (§19.5.2)" % (
                           self.fields["io_map_base"], self.limit))
        if self.reserved_nonzero:
            out.append("reserved fields at offsets %s are not 0" % ", ".join(
                "%#x" % o for o in self.reserved_nonzero))
        return out

    def io_summary(self) -> str:
        if not self.io_bitmap_inside_limit:
            return "no I/O permission bitmap (map base %#x past the limit %#x)" % (
                self.fields["io_map_base"], self.limit)
        ranges = self.allowed_port_ranges()
        count = sum(b - a + 1 for a, b in ranges)
        return "I/O bitmap at +%#x, %d bytes (ports 0..%#x covered): %d port(s) permitted%s" % (
            self.fields["io_map_base"], len(self.io_bitmap), max(len(self.io_bitmap) * 8 - 1, 0),
            count, (": " + ", ".join("%#x-%#x" % r if r[0] != r[1] else "%#x" % r[0]
                                     for r in ranges[:8])) if ranges else "")

    # -- teaching: task switches (§8.3) -----------------------------------------------

    def task_switch(self) -> List[str]:
        """What a switch to this task loads, and what a switch away saves (§8.3)."""
        if self.width == 64:
            return ["IA-32e mode has no hardware task switching (§8.7): the 64-bit TSS only "
                    "holds stack pointers. RSP0-2 are loaded on a privilege change through a "
                    "gate; an IDT gate with IST=n loads ISTn instead, whatever the CPL."]
        f = self.fields
        flags = RFLAGS.decode(f["eflags"])
        return [
            "A task switch (JMP/CALL to this TSS, a task gate, an interrupt through a task gate, "
            "IRET with NT=1) first checks the TSS descriptor: present, limit >= 0x67, and "
            "for JMP/CALL/IRET not busy (§8.3 steps 1-5).",
            "It saves the current task's dynamic fields (general registers, segment selectors, "
            "EFLAGS, EIP) into the current TSS; the static fields are only read (§8.2.1).",
            "It loads TR with this TSS's selector, marks it busy, sets CR0.TS and, for a CALL or "
            "an interrupt, writes the old TSS selector into previous_task_link (%#x now) and "
            "sets EFLAGS.NT in the new task (§8.3, §8.4)." % f["previous_task_link"],
            "It loads CR3 = %#x (the task's page tables), LDTR = %#x, EFLAGS = %#x (%s), "
            "EIP = %#x, ESP = %#x and the general registers, then CS = %#x, SS = %#x, DS = %#x, "
            "ES = %#x, FS = %#x, GS = %#x, checking each descriptor (§8.3 steps 10-13)." % (
                f["cr3"], f["ldt_selector"], f["eflags"], flags.summary(), f["eip"], f["esp"],
                f["cs"], f["ss"], f["ds"], f["es"], f["fs"], f["gs"]),
            "T = %d: %s." % (f["t"], "a #DB is raised as the new task starts (DR6.BT)" if f["t"]
                             else "no debug trap on entry"),
        ]

    # -- output -------------------------------------------------------------------

    def __str__(self) -> str:
        f = self.fields
        where = "TSS%d at %#x, limit %#x%s" % (self.width, self.base, self.limit, (
            " (selector %#x)" % self.selector) if self.selector is not None else "")
        if self.width == 32:
            return "%s: EIP %#x ESP %#x CR3 %#x ESP0 %#x:%#x" % (where, f["eip"], f["esp"],
                                                                f["cr3"], f["ss0"], f["esp0"])
        return "%s: RSP0 %#x IST %s" % (where, f["rsp0"], " ".join(
            "%#x" % f["ist%d" % n] for n in range(1, 8)))

    def rows(self) -> List[dict]:
        return [{"offset": fld.offset, "name": fld.name, "size": fld.size,
                 "value": self.fields[fld.name], "kind": "dynamic" if fld.dynamic else "static",
                 "meaning": fld.meaning} for fld in self.layout]

    def explain(self) -> str:
        return tss_text(self)

    def to_dict(self) -> dict:
        return {"width": self.width, "base": self.base, "limit": self.limit,
                "selector": self.selector, "fields": dict(self.fields),
                "io_bitmap_inside_limit": self.io_bitmap_inside_limit,
                "io_bitmap_bytes": len(self.io_bitmap),
                "io_allowed_ranges": [list(r) for r in self.allowed_port_ranges()],
                "reserved_nonzero": list(self.reserved_nonzero), "anomalies": self.anomalies()}

    def _repr_html_(self) -> str:
        return tss_html(self)
