"""``ksinspect info IMAGE``: what a memory image holds -- its format, the
physical ranges it stores, the CPU state it carries and the paging mode
that state implies."""
from typing import IO, List

from ..memory.cpu import CpuState
from ..render import emit, table
from ._args import names_input
from .options import add_image, add_registers, open_memory

RECORD_COLUMNS = ("kind", "name", "value", "start", "end", "size", "offset", "selector", "base",
                  "limit", "flags", "detail")
RUN_COLUMNS = ("start", "end", "size", "offset")
SEGMENT_COLUMNS = ("register", "selector", "base", "limit", "flags", "dpl", "kind")


def _human(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return "%.1f %s" % (size / (1 << shift), unit)
    return "%d bytes" % size


def _register_rows(cpu: CpuState) -> List[dict]:
    mode = cpu.paging_mode()
    root = cpu.table_root()
    control = cpu.control_registers()
    rows = [
        {"name": "cr0", "value": cpu.cr0, "detail": control["cr0"].summary_line()},
        {"name": "cr2", "value": cpu.cr2, "detail": "last page-fault linear address"},
        {"name": "cr3", "value": cpu.cr3,
         "detail": "" if root is None else "top paging structure at %#x" % root},
        {"name": "cr4", "value": cpu.cr4, "detail": control["cr4"].summary_line()},
        {"name": "efer", "value": cpu.efer,
         "detail": (control["efer"].summary_line() if cpu.efer is not None else
                    "not in the image (QEMU's note has none; --registers FILE gives it)")},
        {"name": "gdtr_base", "value": cpu.gdtr_base, "detail": ""},
        {"name": "gdtr_limit", "value": cpu.gdtr_limit,
         "detail": "%d descriptors" % ((cpu.gdtr_limit + 1) // 8)},
        {"name": "idtr_base", "value": cpu.idtr_base, "detail": ""},
        {"name": "idtr_limit", "value": cpu.idtr_limit,
         "detail": "%d gates" % ((cpu.idtr_limit + 1) // (16 if mode in ("4level", "5level")
                                                          else 8))},
        {"name": "rip", "value": cpu.rip, "detail": ""},
        {"name": "rsp", "value": cpu.rsp, "detail": ""},
        {"name": "rflags", "value": cpu.rflags, "detail": control["rflags"].summary_line()},
        {"name": "kernel_gs_base", "value": cpu.kernel_gs_base,
         "detail": "" if cpu.kernel_gs_base is not None else "not in the source"},
    ]
    return rows


def _segment_rows(cpu: CpuState) -> List[dict]:
    long_mode = cpu.paging_mode() in ("4level", "5level")
    return [{"register": name, "selector": seg.selector, "base": seg.base, "limit": seg.limit,
             "flags": seg.flags, "dpl": seg.dpl, "kind": seg.describe(long_mode)}
            for name, seg in cpu.segments.items()]


TEXT_RUNS = 256          # ranges the text view lists; the data formats list every one


def _text(memory, runs, registers, segments) -> str:
    lines = ["Image:   %s%s" % (memory.name, " (%s, %d bytes decompressed)" % (
        memory.compression, memory.file_size) if memory.compression else ""),
             "Format:  %s: %s" % (memory.format, memory.description),
             "Memory:  %#x bytes (%s) in %d range%s" % (
                 memory.size, _human(memory.size), len(memory.runs),
                 "" if len(memory.runs) == 1 else "s"),
             "", "Physical ranges (end is exclusive; offset is in the %sfile):" % (
                 "decompressed " if memory.compression else ""),
             table(runs[:TEXT_RUNS], RUN_COLUMNS, hex_columns=RUN_COLUMNS,
                   headers=("start", "end", "size", "file offset"))]
    if len(memory.runs) > TEXT_RUNS:
        lines.append("... and %d more ranges (--format json or csv lists them all)"
                     % (len(memory.runs) - TEXT_RUNS))
    if memory.format == "kdump":
        k = memory.container
        h = k.header
        lines += ["", "Kdump:   %s header version %d (%d-bit writer), %s pages, block %d; %d of "
                  "max_mapnr %d pages dumped (%d valid)%s" % (
                      h.signature.strip(), h.header_version, 8 * h.word_size, h.compression,
                      h.block_size, k.dumped_pages, k.max_mapnr, k.valid_pages,
                      "; flattened, %d records" % k.records if k.flattened else ""),
                  "         utsname %s; dump_level %d; phys_base %#x from %s" % (
                      " ".join(v for v in h.utsname.values() if v) or "(empty)",
                      k.sub.dump_level, k.phys_base or 0,
                      k.phys_base_source),
                  "         notes: %s" % (", ".join(k.notes) or "none")]
    if memory.absent:
        lines += ["", "Declared but not stored (p_memsz > p_filesz): %s%s" % (", ".join(
            "%#x-%#x" % (s, s + n) for s, n in memory.absent[:TEXT_RUNS]),
            " and %d more" % (len(memory.absent) - TEXT_RUNS)
            if len(memory.absent) > TEXT_RUNS else "")]
    cpu = memory.cpu
    if cpu is None:
        lines += ["", "CPU state: none in this image%s" % (
            " (give --registers FILE for QEMU `info registers` text)"
            if memory.format in ("raw", "lime") else "")]
    else:
        lines += ["", "CPU state (%s, %s; CPU 0 of %d):" % (
            " + ".join(cpu.sources) or "given", cpu.arch, len(memory.cpus)),
            table(registers, ("name", "value", "detail"),
                  hex_columns=("value",), headers=("register", "value", "")),
            "", "Segment caches (flags as QEMU stores them: the descriptor's high dword):",
            table(segments, SEGMENT_COLUMNS, hex_columns=("selector", "base", "limit", "flags"))]
        mode, why = cpu.paging_decision()
        nxe, nxe_why = cpu.nxe_decision()
        lines += ["", "Paging mode: %s" % (mode or "none (paging disabled)"),
                  "  because %s" % why, "  NXE=%d (%s)" % (nxe, nxe_why),
                  "Operating mode: %s" % cpu.operating_mode(),
                  "  because %s" % cpu.operating_mode().rule]
    if memory.prstatus and cpu is None:
        lines += ["", "NT_PRSTATUS registers for %d CPU(s) (no control registers)"
                  % len(memory.prstatus)]
    if memory.vmcoreinfo:
        lines += ["", "VMCOREINFO: %d lines (kdump)" % len(memory.vmcoreinfo.splitlines())]
    if memory.warnings:
        lines += ["", "Notes:"] + ["  " + w for w in memory.warnings]
    return "\n".join(lines)


@names_input("image")
def cmd_info(args, out: IO[str]) -> int:
    with open_memory(args) as memory:
        if memory.format == "minidump":
            from . import dump
            emit(out, args.format, dump.info_records(memory), document=dump.info_document(memory),
                 text=dump.info_text(memory), columns=RECORD_COLUMNS, hex_columns=("value",))
            return 0
        # A core may have a million ranges (PN_XNUM): the text view shows the
        # first TEXT_RUNS, and only the row formats build a row for each.
        listed = memory.runs if args.format in ("csv", "jsonl") else memory.runs[:TEXT_RUNS + 1]
        runs = [r.to_dict() for r in listed]
        cpu = memory.cpu
        registers = _register_rows(cpu) if cpu else []
        segments = _segment_rows(cpu) if cpu else []
        records = [dict(kind="run", **r) for r in runs]
        records += [dict(kind="register", **r) for r in registers]
        records += [{"kind": "segment", "name": s["register"], "selector": s["selector"],
                     "base": s["base"], "limit": s["limit"], "flags": s["flags"],
                     "detail": s["kind"]} for s in segments]
        if cpu:
            mode, why = cpu.paging_decision()
            nxe, nxe_why = cpu.nxe_decision()
            records.append({"kind": "paging", "name": "mode", "value": mode, "detail": why})
            records.append({"kind": "paging", "name": "nxe", "value": nxe, "detail": nxe_why})
            operating = cpu.operating_mode()
            records.append({"kind": "mode", "name": "operating_mode",
                            "value": operating.mode.name.lower(), "detail": str(operating)})
        records += [{"kind": "warning", "detail": w} for w in memory.warnings]
        emit(out, args.format, records,
             document=memory.to_dict() if args.format == "json" else None,
             text=_text(memory, runs, registers, segments) if args.format == "table" else None,
             columns=RECORD_COLUMNS, hex_columns=("value", "flags"))
    return 0


def register(sub, output) -> None:
    p = sub.add_parser("info", parents=[output], help="what a memory image holds",
                       description="Show a memory image's format (raw, LiME, ELF core from "
                                   "QEMU or kdump; .xz / .gz are decompressed), its physical "
                                   "ranges, the CPU state it carries (CR0-CR4, EFER, GDTR, "
                                   "IDTR, segment caches) and the paging mode that implies.")
    add_image(p)
    add_registers(p, "QEMU `info registers` output that completes the image's CPU state "
                     "(QEMU's ELF note has no EFER; a regular file, at most 4 MiB)")
    p.set_defaults(func=cmd_info)
