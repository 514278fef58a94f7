"""GDT, LDT and IDT walkers over table bytes.

Where the bytes come from (a raw file, an address space at GDTR/IDTR) is
the caller's business; this module decodes whole tables in one C call,
marks the entries that segment registers select, symbolises gate targets
and reports findings as data.

Rules: Intel SDM vol. 3A §3.5.1 (GDT/LDT), §6.10-6.11 and §6.14.1 (IDT),
Table 6-1 (vectors 0-31); AMD APM vol. 2 Table 8-1 for #HV, #VC and #SX.
"""
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .errors import DecodeError, TruncatedDataError
from .findings import Finding
from .memory.cpu import SEGMENT_NAMES
from .symbols import SymbolTable
from .views.html import descriptor_table_html, interrupt_table_html
from .x86 import DescriptorKind, DescriptorMode, SegmentDescriptor, decode_descriptor_table

# Vector -> (mnemonic, description): SDM vol. 3A Table 6-1; 28-30 from AMD APM.
VECTOR_NAMES: Dict[int, Tuple[str, str]] = {
    0: ("#DE", "Divide Error"), 1: ("#DB", "Debug Exception"),
    2: ("NMI", "Nonmaskable Interrupt"), 3: ("#BP", "Breakpoint (INT3)"),
    4: ("#OF", "Overflow (INTO)"), 5: ("#BR", "BOUND Range Exceeded"),
    6: ("#UD", "Invalid Opcode"), 7: ("#NM", "Device Not Available"),
    8: ("#DF", "Double Fault"), 9: ("CSO", "Coprocessor Segment Overrun (reserved)"),
    10: ("#TS", "Invalid TSS"), 11: ("#NP", "Segment Not Present"),
    12: ("#SS", "Stack-Segment Fault"), 13: ("#GP", "General Protection"),
    14: ("#PF", "Page Fault"), 15: ("-", "Reserved"),
    16: ("#MF", "x87 FPU Floating-Point Error"), 17: ("#AC", "Alignment Check"),
    18: ("#MC", "Machine Check"), 19: ("#XM", "SIMD Floating-Point Exception"),
    20: ("#VE", "Virtualization Exception"), 21: ("#CP", "Control Protection Exception"),
    22: ("-", "Reserved"), 23: ("-", "Reserved"), 24: ("-", "Reserved"),
    25: ("-", "Reserved"), 26: ("-", "Reserved"), 27: ("-", "Reserved"),
    28: ("#HV", "Hypervisor Injection Exception (AMD)"),
    29: ("#VC", "VMM Communication Exception (AMD SEV-ES)"),
    30: ("#SX", "Security Exception (AMD)"), 31: ("-", "Reserved"),
}

# Gates user code may reach with INT n: #BP (INT3), #OF (INTO) and 0x80, the
# 32-bit system call (also on x86-64 kernels with IA-32 emulation).
USUAL_USER_VECTORS = frozenset({3, 4, 0x80})
_GATE_KINDS = (DescriptorKind.INTERRUPT_GATE, DescriptorKind.TRAP_GATE, DescriptorKind.TASK_GATE)
# Attribute bits compared between a segment cache and the descriptor in memory:
# type (without the accessed bit), S, DPL, P, AVL, L, D/B, G.
_ATTRIBUTE_MASK = 0x00F0FE00
_TSS_BUSY_BIT = 0x200


def _descriptor_findings(descriptor: SegmentDescriptor) -> List[Finding]:
    from .x86.descriptor import ANOMALY_TEXT, DescriptorAnomaly
    return [Finding("anomaly-" + a.name.lower().replace("_", "-"), ANOMALY_TEXT[a])
            for a in DescriptorAnomaly if a in descriptor.anomalies]


@dataclass(frozen=True)
class TableEntry:
    """One GDT or LDT slot (a 16-byte descriptor takes two slots, listed once)."""

    index: int
    table: str
    descriptor: SegmentDescriptor
    registers: Tuple[str, ...] = ()
    findings: Tuple[Finding, ...] = ()

    @property
    def selector(self) -> int:
        return self.index << 3 | (4 if self.table == "LDT" else 0)

    @property
    def offset(self) -> int:
        return self.index * 8

    def to_dict(self) -> dict:
        result = {"index": self.index, "selector": self.selector, "offset": self.offset}
        result.update(self.descriptor.to_dict())
        result["registers"] = [r.upper() for r in self.registers]
        result["findings"] = [f.to_dict() for f in self.findings]
        return result


@dataclass(frozen=True)
class DescriptorTable:
    """A decoded GDT or LDT.

    Attributes:
        table: "GDT" or "LDT".
        mode: the mode the descriptors were read in.
        base: the table's linear (or physical) address, when known.
        notes: how the table was found and any assumption made (e.g. an
            inferred mode), for the reader.
    """

    table: str
    mode: DescriptorMode
    entries: Tuple[TableEntry, ...]
    base: Optional[int] = None
    limit: Optional[int] = None
    notes: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[TableEntry]:
        return iter(self.entries)

    def __getitem__(self, i: int) -> TableEntry:
        return self.entries[i]

    def by_index(self, index: int) -> Optional[TableEntry]:
        for entry in self.entries:
            if entry.index == index:
                return entry
        return None

    def to_dict(self) -> dict:
        return {"table": self.table, "mode": self.mode.value, "base": self.base,
                "limit": self.limit, "notes": list(self.notes),
                "entries": [e.to_dict() for e in self.entries]}

    def _repr_html_(self) -> str:
        return descriptor_table_html(self)


def infer_mode(data: bytes) -> Tuple[DescriptorMode, str]:
    """Guess legacy or IA-32e mode from a GDT/LDT's contents, and say why.

    A present code segment with L=1 and D=0 only exists in IA-32e mode.
    """
    for d in decode_descriptor_table(data, "legacy", "flat"):
        if d.kind is DescriptorKind.CODE and d.present and d.long and not d.db:
            return DescriptorMode.LONG, ("mode inferred as long (IA-32e): a present 64-bit "
                                         "code segment (L=1, D=0) at offset %#x" % d.slot_offset)
    return DescriptorMode.LEGACY, ("mode inferred as legacy: no 64-bit code segment "
                                   "(L=1, D=0); give --mode long if this is an IA-32e table")


def _as_mode(mode) -> DescriptorMode:
    """A mode given by name ("legacy", "long") as the enum the results carry."""
    if isinstance(mode, str):
        for member in DescriptorMode:
            if member.value == mode:
                return member
        raise DecodeError("unknown descriptor mode %r (expected 'legacy' or 'long')" % (mode,))
    return mode


def _check_length(data: bytes, what: str) -> None:
    if len(data) == 0:
        raise TruncatedDataError("%s: the table is empty" % what)
    if len(data) % 8:
        raise TruncatedDataError("%s: %d bytes is not a multiple of the 8-byte descriptor size"
                                 % (what, len(data)))


def _selected_by(cpu, table: str) -> Dict[int, List[str]]:
    """Table index -> the segment registers whose selector points at it."""
    marks: Dict[int, List[str]] = {}
    if cpu is None:
        return marks
    for name in SEGMENT_NAMES:
        cache = cpu.segments.get(name)
        if cache is None:
            continue
        in_ldt = bool(cache.selector & 4) and name not in ("ldtr", "tr")
        if (table == "LDT") == in_ldt:
            marks.setdefault(cache.selector >> 3, []).append(name)
    return marks


def cache_differences(descriptor: SegmentDescriptor, cache) -> List[str]:
    """How a segment-register cache differs from the descriptor in memory.

    Compares base, effective limit and the attribute bits; the accessed bit
    and the TSS busy bit are ignored (the processor sets both in memory when
    it loads the segment; QEMU keeps the cached TR type as available).
    """
    differences = []
    if descriptor.base != cache.base:
        differences.append("base %#x in memory, %#x cached" % (descriptor.base, cache.base))
    if descriptor.limit != cache.limit:
        differences.append("limit %#x in memory, %#x cached" % (descriptor.limit, cache.limit))
    mask = _ATTRIBUTE_MASK & ~(_TSS_BUSY_BIT if descriptor.kind in (
        DescriptorKind.TSS_AVAILABLE, DescriptorKind.TSS_BUSY) else 0)
    memory_attributes = (descriptor.raw >> 32) & mask
    if memory_attributes != cache.flags & mask:
        differences.append("attributes %#x in memory, %#x cached" % (
            memory_attributes, cache.flags & mask))
    return differences


def decode_table(data: bytes, table: str = "GDT", mode=None, base: Optional[int] = None,
                 limit: Optional[int] = None, cpu=None,
                 notes: Sequence[str] = ()) -> DescriptorTable:
    """Decode a GDT or LDT held in data.

    Args:
        data: the table's bytes (limit + 1 of them).
        table: "GDT" or "LDT".
        mode: "legacy", "long" or None to infer it (the inference is noted).
        base, limit: where the table lives, for the record.
        cpu: a ksinspect.memory.CpuState, to mark the entries each segment
            register selects and compare them with the cached descriptors.

    Raises:
        TruncatedDataError: empty data, or a length not a multiple of 8.
    """
    _check_length(data, table)
    notes = list(notes)
    if mode is None:
        mode, why = infer_mode(data)
        notes.append(why)
    mode = _as_mode(mode)
    decoded = decode_descriptor_table(data, mode, "segments", base_address=base)
    marks = _selected_by(cpu, table)
    tr_index = cpu.segments["tr"].selector >> 3 if cpu is not None and "tr" in cpu.segments else None
    entries = []
    for descriptor in decoded:
        index = descriptor.slot_offset // 8
        registers = tuple(marks.get(index, ()))
        findings = _descriptor_findings(descriptor)
        is_tss = descriptor.kind in (DescriptorKind.TSS_AVAILABLE, DescriptorKind.TSS_BUSY)
        if table == "GDT" and tr_index is not None:
            if is_tss and index != tr_index:
                findings.append(Finding("tss-not-selected-by-tr",
                                        "a TSS descriptor that TR (%#x) does not select"
                                        % cpu.segments["tr"].selector))
            if index == tr_index and not is_tss and tr_index != 0:
                findings.append(Finding("tr-selects-non-tss",
                                        "TR selects this slot but it is not a TSS descriptor"))
        for name in registers:
            cache = cpu.segments[name]
            if cache.selector >> 3 == 0 and table == "GDT":
                continue   # the null selector: nothing is cached from memory
            for difference in cache_differences(descriptor, cache):
                findings.append(Finding("cache-mismatch", "%s: %s" % (name.upper(), difference)))
        entries.append(TableEntry(index, table, descriptor, registers, tuple(findings)))
    return DescriptorTable(table, mode, tuple(entries), base, limit, tuple(notes))


@dataclass(frozen=True)
class IdtEntry:
    """One IDT vector."""

    vector: int
    gate: SegmentDescriptor
    symbol: Optional[str] = None
    findings: Tuple[Finding, ...] = ()

    @property
    def name(self) -> str:
        """The architectural mnemonic for vectors 0-31; empty for 32-255."""
        return VECTOR_NAMES.get(self.vector, ("", ""))[0]

    @property
    def description(self) -> str:
        return VECTOR_NAMES.get(self.vector, ("", "external interrupt or INT n"))[1]

    def to_dict(self, with_symbol: bool = True) -> dict:
        gate = self.gate
        result = {"vector": self.vector, "name": self.name, "kind": gate.kind.value,
                  "selector": getattr(gate, "selector", None),
                  "offset": getattr(gate, "offset", None),
                  "ist": getattr(gate, "ist", None), "dpl": gate.dpl, "present": gate.present,
                  "type": gate.type, "raw": gate.raw, "raw_high": gate.raw_high,
                  "anomalies": gate.to_dict()["anomalies"]}
        if with_symbol:
            result["symbol"] = self.symbol
        result["findings"] = [f.to_dict() for f in self.findings]
        return result


@dataclass(frozen=True)
class InterruptTable:
    """A decoded IDT."""

    mode: DescriptorMode
    entries: Tuple[IdtEntry, ...]
    base: Optional[int] = None
    limit: Optional[int] = None
    notes: Tuple[str, ...] = ()
    symbols_source: Optional[str] = None

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[IdtEntry]:
        return iter(self.entries)

    def __getitem__(self, vector: int) -> IdtEntry:
        return self.entries[vector]

    def to_dict(self) -> dict:
        return {"mode": self.mode.value, "base": self.base, "limit": self.limit,
                "notes": list(self.notes),
                "entries": [e.to_dict(self.symbols_source is not None) for e in self.entries]}

    def _repr_html_(self) -> str:
        return interrupt_table_html(self)


def infer_idt_mode(data: bytes) -> Tuple[DescriptorMode, str]:
    """Guess whether an IDT holds 16-byte (IA-32e) or 8-byte gates, and say why."""
    def gates(mode, table):
        decoded = decode_descriptor_table(data[:len(data) - len(data) % (16 if mode == "long" else 8)]
                                          or data, mode, table)
        return sum(1 for d in decoded if d.kind in _GATE_KINDS and d.present), len(decoded)

    long_gates, long_total = gates("long", "interrupts") if len(data) >= 16 else (0, 0)
    legacy_gates, legacy_total = gates("legacy", "interrupts")
    # A 64-bit IDT read 8 bytes at a time alternates gates and upper halves.
    if long_total and long_gates / long_total > legacy_gates / max(legacy_total, 1):
        return DescriptorMode.LONG, ("mode inferred as long (IA-32e): %d of %d 16-byte entries "
                                     "are present gates" % (long_gates, long_total))
    return DescriptorMode.LEGACY, ("mode inferred as legacy: %d of %d 8-byte entries are "
                                   "present gates" % (legacy_gates, legacy_total))


def decode_idt(data: bytes, mode=None, base: Optional[int] = None, limit: Optional[int] = None,
               symbols: Optional[SymbolTable] = None,
               text_range: Optional[Tuple[int, int]] = None,
               notes: Sequence[str] = ()) -> InterruptTable:
    """Decode an IDT held in data, symbolise handlers and report findings.

    Args:
        data: the IDT's bytes (limit + 1 of them).
        mode: "legacy" (8-byte gates), "long" (16-byte) or None to infer.
        symbols: resolves each handler to symbol+offset.
        text_range: (start, end) of the kernel text; defaults to the symbol
            table's. Handlers outside it are reported.

    Raises:
        TruncatedDataError: empty data, or a length not a multiple of 8.
    """
    _check_length(data, "IDT")
    notes = list(notes)
    if mode is None:
        mode, why = infer_idt_mode(data)
        notes.append(why)
    mode = _as_mode(mode)
    decoded = decode_descriptor_table(data, mode, "interrupts", base_address=base)
    if text_range is None and symbols is not None:
        text_range = symbols.text_range
    entries = []
    for vector, gate in enumerate(decoded):
        findings = _descriptor_findings(gate)
        symbol = None
        if gate.present and gate.kind in _GATE_KINDS:
            target = getattr(gate, "offset", 0)
            if symbols is not None and gate.kind is not DescriptorKind.TASK_GATE:
                symbol = symbols.symbolize(target)
            if (text_range is not None and gate.kind is not DescriptorKind.TASK_GATE
                    and not text_range[0] <= target < text_range[1]):
                findings.append(Finding("handler-outside-text",
                                        "handler %#x is outside the kernel text %#x-%#x"
                                        % (target, text_range[0], text_range[1])))
            if gate.dpl == 3 and vector not in USUAL_USER_VECTORS:
                findings.append(Finding("user-reachable-gate",
                                        "DPL 3: user code can raise vector %#x with INT n; "
                                        "usually only #BP, #OF and 0x80 allow that" % vector))
        elif gate.present and gate.kind is not DescriptorKind.NULL:
            findings.append(Finding("not-a-gate", "a present %s in the IDT, where only "
                                    "interrupt, trap and task gates belong" % gate.kind.value))
        entries.append(IdtEntry(vector, gate, symbol, tuple(findings)))
    return InterruptTable(mode, tuple(entries), base, limit, tuple(notes),
                          symbols.source if symbols is not None else None)
