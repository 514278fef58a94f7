"""Windows structure commands: layouts, peb (from an image or a live process)."""
import re
from typing import IO

from ..memory import open_image
from ..render import emit, table
from ..findings import finding_dicts
from ..windows.layout_files import available_layouts, load_layout
from ._args import UsageError, decompress_cap, parse_int, provenance
from .options import (WINDOWS_MODE_HELP, add_image, add_layout, add_page_tables, open_memory,
                      page_table_options)

LAYOUT_COLUMNS = ("name", "os", "arch", "nt_version")
MODULE_FIELDS = ("base", "size", "entry_point", "name", "path")


# -- layouts ------------------------------------------------------------------------------

def cmd_layouts(args, out: IO[str]) -> int:
    records = []
    for name in available_layouts():
        layout = load_layout(name)
        if args.arch and layout.arch != args.arch:
            continue
        records.append({"name": layout.name, "os": layout.os, "arch": layout.arch,
                        "nt_version": layout.nt_version, "pointer_size": layout.pointer_size,
                        "structs": sorted(layout.structs)})
    text = None
    if args.format == "table":
        # The table shows the short form; JSON keeps each source's full wording.
        short = [dict(r, os=re.split(r" \(|, ", r["os"])[0],
                      nt_version=r["nt_version"].split()[0]) for r in records]
        text = table(short, LAYOUT_COLUMNS) + (
            "\n\n%d layouts; offsets read from Microsoft's PDBs through public sources "
            "(ksinspect/windows/layouts/README.md). `--layout` takes a name, a unique part of "
            "one (win7-sp1-x64, 10.0.19041-x64) or a JSON / Volatility 3 ISF file."
            % len(records))
    emit(out, args.format, [dict(r, structs=len(r["structs"])) for r in records],
         document=records, text=text, columns=LAYOUT_COLUMNS + ("pointer_size", "structs"))
    return 0


# -- peb and teb --------------------------------------------------------------------------

MODULE_RECORD_COLUMNS = MODULE_FIELDS + ("lists",)
TEB_COLUMNS = ("address", "self", "peb", "process_id", "thread_id", "stack_base",
               "stack_limit", "structure", "layout", "findings")


def _layout_notes(value, given_note) -> list:
    """The provenance lines of a PEB / TEB: the layout used and why (given, or
    chosen and the note says from what), then the value's own notes."""
    notes = list(value.notes)
    if given_note is not None and not any(value.layout.name in n for n in notes):
        notes.insert(0, given_note)
    return notes


def _emit_peb(args, out: IO[str], peb, given_note=None) -> int:
    document = peb.to_dict()
    records = [dict(m) for m in document["modules"]]
    text = peb.explain() if args.format == "table" else None
    if args.format in ("csv", "jsonl"):
        emit(out, args.format, records, columns=MODULE_RECORD_COLUMNS)
    else:
        emit(out, args.format, records, document=document, text=text)
    provenance(args, _layout_notes(peb, given_note))
    return 0


def _emit_teb(args, out: IO[str], teb, given_note=None) -> int:
    emit(out, args.format, [teb.to_dict()], document=teb.to_dict(),
         text=teb.explain() if args.format == "table" else None, columns=TEB_COLUMNS)
    provenance(args, _layout_notes(teb, given_note))
    return 0



def _given(layout) -> str:
    return "layout %s as given (--layout)" % layout.name


def _image_structure(args, out: IO[str], what: str) -> int:
    """``peb`` / ``teb`` IMAGE --address VA: through page tables, or --flat.

    Without --layout the layout is chosen from the structure's own version
    fields (the PEB's; a TEB's through its ProcessEnvironmentBlock), as
    ``--pid`` does, and the note says which and why."""
    from dataclasses import replace
    from ..windows import peb as windows_peb
    if args.address is None:
        raise UsageError("argument --address: the %s's linear address is required with IMAGE"
                         % what.upper())
    address = parse_int(args.address, "--address")
    if args.flat and (args.cr3 is not None or args.mode is not None):
        raise UsageError("argument --flat: the image's addresses are the virtual addresses; "
                         "--cr3 and --paging-mode do not apply")
    layout = args.layout
    with open_memory(args) as memory:
        if args.flat or getattr(memory, "virtual", False):
            space = memory          # a process memory sample or a minidump: no page tables
        else:
            from ..paging import AddressSpace
            from ..windows.pslist import layout_space
            cpu = getattr(memory, "cpu", None)
            if layout is None and args.mode is None and (cpu is None or not cpu.paging_mode()):
                raise UsageError("argument --layout: %s carries no CPU state: give the layout "
                                 "(`ksinspect layouts` lists them) or --paging-mode for the "
                                 "layout to be chosen from the %s's own version fields (or "
                                 "--flat for a process memory sample)" % (args.image,
                                                                         what.upper()))
            with page_table_options(args.image, " (or --registers FILE, or --flat for a "
                                                "process memory sample)"):
                space = layout_space(memory, layout, args.cr3, args.mode) if layout is not None \
                    else AddressSpace(memory, cr3=args.cr3, mode=args.mode)
        given_note, chosen_note = None, None
        if layout is None:
            choose = windows_peb.choose_peb_layout if what == "peb" else \
                windows_peb.choose_teb_layout
            layout, chosen_note = choose(space, address, wow64=args.wow64)
        else:
            given_note = _given(layout)
        if what == "teb":
            value = windows_peb.read_teb(space, address, layout, wow64=args.wow64)
        elif args.wow64:
            value = windows_peb.read_peb32(space, address, layout, max_modules=args.max_modules)
        else:
            value = windows_peb.read_peb(space, address, layout, max_modules=args.max_modules)
        if chosen_note is not None:
            value = replace(value, notes=(chosen_note,) + value.notes)
        if what == "teb":
            return _emit_teb(args, out, value, given_note)
        return _emit_peb(args, out, value, given_note)


def _live_refusal(args) -> None:
    if args.image is not None or args.address is not None or args.cr3 is not None or args.flat:
        raise UsageError("argument --pid: give either --pid N or IMAGE --address VA, not both")
    if args.pid <= 0:
        raise UsageError("argument --pid: %d is not a process ID" % args.pid)


def cmd_peb(args, out: IO[str]) -> int:
    if args.max_modules < 1:
        raise UsageError("argument --max-modules: %d is not a positive number" % args.max_modules)
    if args.pid is not None:
        _live_refusal(args)
        from ..live.windows_process import inspect_live_peb
        return _emit_peb(args, out, inspect_live_peb(args.pid, layout=args.layout))
    if args.image is None:
        raise UsageError("give a memory IMAGE with --address VA --layout L, or --pid N")
    if args.address is None and args.cr3 is None and not args.flat:
        with open_image(args.image, max_decompressed=decompress_cap(args)) as memory:
            if memory.format == "minidump":     # the PEB is found from the dump's own threads
                from .dump import peb_of_dump
                return _emit_peb(args, out, peb_of_dump(memory, args.layout, args.max_modules))
    return _image_structure(args, out, "peb")


def cmd_teb(args, out: IO[str]) -> int:
    thread = None if args.thread is None else parse_int(args.thread, "--thread")
    if args.pid is not None:
        _live_refusal(args)
        from ..live.windows_process import inspect_live_teb
        return _emit_teb(args, out, inspect_live_teb(args.pid, thread, layout=args.layout))
    if args.image is None:
        raise UsageError("give a minidump IMAGE.dmp, a memory IMAGE with --address VA, or "
                         "--pid N")
    if args.address is None and args.cr3 is None and not args.flat:
        with open_image(args.image, max_decompressed=decompress_cap(args)) as memory:
            if memory.format == "minidump":     # the TEB of one of the dump's threads
                from ..windows.dump import dump_teb
                return _emit_teb(args, out, dump_teb(memory, thread, args.layout))
    if thread is not None:
        raise UsageError("argument --thread: a thread is chosen in a minidump or a live "
                         "process (--pid); in a memory image give the TEB's --address")
    return _image_structure(args, out, "teb")


def register_layouts(sub, output) -> None:
    p = sub.add_parser("layouts", parents=[output], help="list the Windows structure layouts",
                       description="List the Windows builds whose structure layouts ship with "
                                   "ksinspect (x86 and x64, XP SP2 to Windows 11 25H2), with "
                                   "where each was read from.")
    p.add_argument("--arch", choices=("x86", "x64"), help="only this architecture")
    p.set_defaults(func=cmd_layouts)


def _structure_options(p, what: str) -> None:
    """The options peb and teb share: an image and where in it, or a live process."""
    add_image(p, "memory image (raw, LiME, ELF core) or a minidump (.dmp); .xz/.gz",
              nargs="?")
    p.add_argument("--address", metavar="VA", help="the %s's linear address" % what)
    add_layout(p, "the Windows build (default: chosen from the version fields of %s, and the "
                  "note says which; a minidump: from its SystemInfo): a name from `ksinspect "
                  "layouts`, a unique part of one, or a layout JSON / Volatility 3 ISF file"
               % ("the PEB" if what == "PEB" else "the PEB the TEB points to"))
    add_page_tables(p, "the process's page-table root (DirectoryTableBase; default the image's "
                       "CR3)", WINDOWS_MODE_HELP)
    p.add_argument("--flat", action="store_true",
                   help="the image's addresses are the process's virtual addresses (a process "
                        "memory sample, e.g. tests/data/wine): no paging")
    p.add_argument("--wow64", action="store_true",
                   help="the address is a WoW64 process's 32-bit %s (_%s32)" % (what, what))


def register_peb(sub, output) -> None:
    p = sub.add_parser("peb", parents=[output], help="decode a process's PEB",
                       description="Decode a PEB, its process parameters (image path, command "
                                   "line, current directory, environment) and the three loader "
                                   "module lists, from a memory image (IMAGE --address VA, "
                                   "through the process's page tables, or --flat for a sample "
                                   "of process memory), a minidump, or a live process (--pid "
                                   "N). Without --layout the layout is chosen from the PEB's "
                                   "OSMajorVersion, OSMinorVersion and OSBuildNumber. Numbers "
                                   "are hex; 0n for decimal.")
    _structure_options(p, "PEB")
    p.add_argument("--max-modules", type=int, default=4096, metavar="N",
                   help="stop each loader list after N entries (default 4096)")
    p.add_argument("--pid", type=int, metavar="N",
                   help="a live process instead of an image (Windows; Linux: a Wine process)")
    p.set_defaults(func=cmd_peb)


def register_teb(sub, output) -> None:
    p = sub.add_parser("teb", parents=[output], help="decode a thread's TEB",
                       description="Decode a TEB (NtTib.Self, the stack bounds, ClientId, the "
                                   "PEB pointer) from a memory image (IMAGE --address VA, "
                                   "through page tables, or --flat for a sample of process "
                                   "memory), from a thread of a full-memory minidump "
                                   "(IMAGE.dmp --thread TID), or from a thread of a live "
                                   "process (--pid N --tid TID: on Windows, and on Linux for "
                                   "a Windows program under Wine). Without --layout the layout "
                                   "is chosen from the version fields of the PEB the TEB points "
                                   "to (a minidump: from its SystemInfo).")
    _structure_options(p, "TEB")
    p.add_argument("--thread", "--tid", dest="thread", metavar="TID",
                   help="the thread of a minidump or a live process (hex; 0n for decimal; "
                        "default the first / the main thread)")
    p.add_argument("--pid", type=int, metavar="N",
                   help="a live process instead of an image (Windows; Linux: a Wine process)")
    p.set_defaults(func=cmd_teb)


def register(sub, output) -> None:
    register_layouts(sub, output)
    register_peb(sub, output)
    register_teb(sub, output)
    register_processes(sub, output)


# -- eprocess, pslist, psscan (process objects in a memory image) ---------------------------

PROCESS_COLUMNS = ("pid", "ppid", "name", "eprocess", "dtb", "peb", "create_time", "exit_time",
                   "wow64")
# CSV and JSON lines: the columns, then the findings ({code, message} each).
RECORD_COLUMNS = PROCESS_COLUMNS + ("findings",)
SCAN_COLUMNS = ("physical",) + PROCESS_COLUMNS + ("status", "findings")


def _note(errors, text: str) -> None:
    import sys
    (errors or sys.stderr).write("ksinspect: note: %s\n" % text)


def _kernel_space_args(args, memory, layout):
    from ..windows.pslist import kernel_space
    return kernel_space(memory, layout, args.cr3, args.mode)


def cmd_eprocess(args, out: IO[str]) -> int:
    layout = args.layout
    address = parse_int(args.address, "--address")
    from ..windows.eprocess import read_eprocess
    with open_memory(args) as memory:
        space, _ = _kernel_space_args(args, memory, layout)
        process = read_eprocess(space, address, layout)
        findings = finding_dicts(process.anomalies)
        document = dict(process.to_dict(), physical=process.physical,
                        active_process_links={"flink": process.links[0],
                                              "blink": process.links[1]},
                        wow64_pointer=process.wow64_pointer, findings=findings,
                        layout=layout.name)
        record = dict(process.to_dict(), findings=findings)
        emit(out, args.format, [record], document=document,
             text=process.explain() if args.format == "table" else None,
             columns=RECORD_COLUMNS)
    return 0


def cmd_pslist(args, out: IO[str], errors=None) -> int:
    layout = args.layout
    start = None if args.start is None else parse_int(args.start, "--start")
    kernel_base = None if args.kernel_base is None else parse_int(args.kernel_base,
                                                                  "--kernel-base")
    if args.max_processes < 1:
        raise UsageError("argument --max-processes: %d is not a positive number"
                         % args.max_processes)
    from ..windows.pslist import pslist
    with open_memory(args) as memory:
        space, how = _kernel_space_args(args, memory, layout)
        result = pslist(memory, layout, start=start, kernel_base=kernel_base,
                        max_entries=args.max_processes, read_pebs=not args.no_peb, space=space)
        result.cr3_source = how
        records = result.to_dict()
        emit(out, args.format, records, text=result.explain() if args.format == "table"
             else None, columns=RECORD_COLUMNS)
        if args.format != "table":
            for finding in result.findings:
                _note(errors, finding)
    return 0


def cmd_psscan(args, out: IO[str], errors=None) -> int:
    layout = args.layout
    from ..errors import KsinspectError
    from ..windows.psscan import cross_reference, psscan
    from ..windows.pslist import kernel_space, pslist
    if args.max_candidates < 1:
        raise UsageError("argument --max-candidates: %d is not a positive number"
                         % args.max_candidates)
    with open_memory(args) as memory:
        result = psscan(memory, layout, max_candidates=args.max_candidates)
        why = None
        if not args.no_list:
            try:
                space, _ = kernel_space(memory, layout, args.cr3, args.mode, scan=result)
                listed = pslist(memory, layout, space=space, read_pebs=False).processes
                cross_reference(result, layout, space, listed)
            except KsinspectError as exc:
                why = str(exc)
        records = [dict(h.to_dict()) for h in result]
        emit(out, args.format, records, text=result.explain() if args.format == "table"
             else None, columns=SCAN_COLUMNS,
             hex_columns=("physical", "eprocess", "dtb", "peb", "wow64"))
        if why is not None:
            _note(errors, "no cross-reference with the process list: %s" % why)
        if args.format != "table":
            for finding in result.findings:
                _note(errors, finding)
    return 0


def _image_options(p, cr3_help: str) -> None:
    add_image(p)
    add_layout(p, required=True)
    add_page_tables(p, cr3_help, WINDOWS_MODE_HELP)


def register_processes(sub, output) -> None:
    p = sub.add_parser("eprocess", parents=[output], help="decode one _EPROCESS",
                       description="Decode the _EPROCESS at a kernel virtual address: PID, "
                                   "parent, image name, DirectoryTableBase, PEB, "
                                   "ActiveProcessLinks, create/exit time, WoW64 PEB.")
    _image_options(p, "the kernel's page-table root (default: the image's CR3, else the "
                      "System process's DirectoryTableBase found by psscan)")
    p.add_argument("--address", metavar="VA", required=True, help="the EPROCESS address")
    p.set_defaults(func=cmd_eprocess)

    p = sub.add_parser("pslist", parents=[output], help="walk the process list",
                       description="Walk ActiveProcessLinks from PsInitialSystemProcess (found "
                                   "in the kernel image with pefile) or from --start, and read "
                                   "each process's PEB through its own DirectoryTableBase. "
                                   "Loops, breaks and links outside the image end the walk "
                                   "with a finding (in the record of the process it was made "
                                   "at, {code, message}; also on stderr for json/csv).")
    _image_options(p, "the kernel's page-table root (default: the image's CR3, else the "
                      "System process's DirectoryTableBase found by psscan)")
    p.add_argument("--start", metavar="VA", help="an EPROCESS to start from")
    p.add_argument("--kernel-base", metavar="VA",
                   help="the kernel image's base (default: searched in the kernel mappings)")
    p.add_argument("--max-processes", type=int, default=1 << 16, metavar="N",
                   help="stop after N processes (default 65536)")
    p.add_argument("--no-peb", action="store_true", help="do not read the PEBs")
    p.set_defaults(func=cmd_pslist)

    p = sub.add_parser("psscan", parents=[output], help="scan physical memory for processes",
                       description="Scan physical memory (in C) for _EPROCESS structures by "
                                   "their shape, and mark those the process list does not "
                                   "reach (unlinked, or exited).")
    _image_options(p, "the kernel's page-table root, for the cross-reference with pslist")
    p.add_argument("--no-list", action="store_true",
                   help="do not walk the process list to cross-reference")
    p.add_argument("--max-candidates", type=int, default=1 << 16, metavar="N",
                   help="decode at most N candidates (default 65536)")
    p.set_defaults(func=cmd_psscan)
