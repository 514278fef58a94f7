"""A parser for QEMU's ``info registers`` monitor output (x86).

QEMU prints it from ``x86_cpu_dump_state`` (target/i386/cpu-dump.c): the
general registers in 64-bit form (``RAX=``) when CS is a 64-bit segment and
in 32-bit form (``EAX=``) otherwise; one line per segment cache
(``CS =sel base limit flags``, flags masked with 0x00ffff00); ``GDT=`` and
``IDT=`` with a 16-digit base when EFER.LMA=1 and 8 digits otherwise; CR0,
CR2, CR3, CR4; and ``EFER=`` -- which QEMU 7.2's ELF note lacks.
"""
import re
from typing import Dict, List

from ..errors import ImageFormatError
from .cpu import CpuState, SegmentCache

_CPU_HEADER = re.compile(r"^CPU#(\d+)", re.M)
_SEGMENT = re.compile(r"^(ES|CS|SS|DS|FS|GS|LDT|TR)\s*=([0-9a-fA-F]{4})\s+([0-9a-fA-F]{1,16})"
                      r"\s+([0-9a-fA-F]{1,8})\s+([0-9a-fA-F]{1,8})\b")
_TABLE = re.compile(r"^(GDT|IDT)=\s+([0-9a-fA-F]{1,16})\s+([0-9a-fA-F]{1,8})\b")
_VALUE = re.compile(r"\b([A-Z][A-Z0-9]*)\s*=\s*([0-9a-fA-F]{1,16})\b")
_SEGMENT_KEYS = {"ES": "es", "CS": "cs", "SS": "ss", "DS": "ds", "FS": "fs", "GS": "gs",
                 "LDT": "ldtr", "TR": "tr"}
_GPR64 = ("RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP", "R8", "R9", "R10", "R11",
          "R12", "R13", "R14", "R15")
_GPR32 = ("EAX", "EBX", "ECX", "EDX", "ESI", "EDI", "EBP", "ESP")

MAX_TEXT = 4 << 20        # `info registers -a` on many CPUs is still far below this


def _blocks(text: str) -> List[str]:
    heads = list(_CPU_HEADER.finditer(text))
    if not heads:
        return [text]
    return [text[h.end():(heads[i + 1].start() if i + 1 < len(heads) else len(text))]
            for i, h in enumerate(heads)]


def _parse_block(block: str, source: str) -> CpuState:
    values: Dict[str, int] = {}
    segments: Dict[str, SegmentCache] = {}
    tables: Dict[str, tuple] = {}
    for line in block.splitlines():
        line = line.strip()
        m = _SEGMENT.match(line)
        if m:
            segments[_SEGMENT_KEYS[m.group(1)]] = SegmentCache(
                int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16),
                int(m.group(5), 16))
            continue
        m = _TABLE.match(line)
        if m:
            tables[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16), len(m.group(2)))
            continue
        for name, value in _VALUE.findall(line):
            values.setdefault(name, int(value, 16))

    missing = [name for name in ("CR0", "CR2", "CR3", "CR4", "EFER") if name not in values]
    missing += [name for name in ("GDT", "IDT") if name not in tables]
    missing += [key for key, name in _SEGMENT_KEYS.items() if name not in segments]
    wide = "RIP" in values
    for name in (("RIP", "RSP", "RFL") if wide else ("EIP", "ESP", "EFL")):
        if name not in values:
            missing.append(name)
    if missing:
        raise ImageFormatError("%s: no %s= in the text; is it QEMU's `info registers` output "
                               "for an x86 CPU?" % (source, "=, ".join(missing)))

    gdt_base, gdt_limit, digits = tables["GDT"]
    idt_base, idt_limit, _ = tables["IDT"]
    # QEMU prints a 16-digit GDT base exactly when EFER.LMA=1 (cpu-dump.c).
    arch = "x86_64" if digits == 16 else "i386"
    general = {name.lower(): values[name] for name in (_GPR64 if wide else _GPR32)
               if name in values}
    return CpuState(
        arch=arch, cr0=values["CR0"], cr2=values["CR2"], cr3=values["CR3"], cr4=values["CR4"],
        efer=values["EFER"], gdtr_base=gdt_base, gdtr_limit=gdt_limit, idtr_base=idt_base,
        idtr_limit=idt_limit, segments={k: segments[k] for k in _SEGMENT_KEYS.values()},
        rip=values["RIP" if wide else "EIP"], rsp=values["RSP" if wide else "ESP"],
        rflags=values["RFL" if wide else "EFL"], kernel_gs_base=None, general=general,
        sources=("info-registers",))


def parse_info_registers(text: str, source: str = "info registers", cpu: int = 0) -> CpuState:
    """Parse QEMU's ``info registers`` text (64-bit or i386 layout).

    Args:
        text: the monitor output; CRLF or LF; ``info registers -a`` output
            (several ``CPU#n`` blocks) is accepted.
        source: names the text in error messages (a file name).
        cpu: which block to use when there are several (0 = the first).

    Raises:
        ImageFormatError: a register the CPU state needs is missing.
    """
    if len(text) > MAX_TEXT:
        raise ImageFormatError("%s: %d characters is too long for `info registers` output"
                               % (source, len(text)))
    blocks = _blocks(text)
    if not 0 <= cpu < len(blocks):
        raise ImageFormatError("%s: no CPU #%d (the text has %d)" % (source, cpu, len(blocks)))
    return _parse_block(blocks[cpu], source)


def read_info_registers(path: str, cpu: int = 0) -> CpuState:
    """:func:`parse_info_registers` on a file (``.xz`` / ``.gz`` are decompressed).

    Raises:
        ImageFormatError: the file cannot be read or is not ``info registers`` text.
    """
    from ..text_input import read_text_input
    data = read_text_input(path, "registers", ImageFormatError, "registers file",
                           limit=MAX_TEXT)
    return parse_info_registers(data.decode("latin-1"), path, cpu)
