"""Windows structure commands: layouts, peb (from an image or a live process)."""
import re
from typing import IO

from ..memory import open_image
from ..render import emit, table
from ..windows.layout_files import available_layouts, load_layout
from ._args import UsageError, decompress_cap, parse_int
from .options import (WINDOWS_MODE_HELP, add_image, add_layout, add_page_tables, open_memory,
                      page_table_options)

LAYOUT_COLUMNS = ("name", "os", "arch", "nt_version")
MODULE_COLUMNS = ("base", "size", "entry_point", "name", "path")


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


# -- peb ----------------------------------------------------------------------------------

def _emit_peb(args, out: IO[str], peb) -> int:
    document = peb.to_dict()
    records = [dict(m) for m in document["modules"]]
    text = peb.explain() if args.format == "table" else None
    if args.format in ("csv", "jsonl"):
        emit(out, args.format, records, columns=MODULE_COLUMNS)
    else:
        emit(out, args.format, records, document=document, text=text)
    return 0


def cmd_peb(args, out: IO[str]) -> int:
    if args.pid is not None:
        if args.image is not None or args.address is not None or args.cr3 is not None:
            raise UsageError("argument --pid: give either --pid N or IMAGE --address VA, not both")
        if args.pid <= 0:
            raise UsageError("argument --pid: %d is not a process ID" % args.pid)
        from ..live.windows_process import inspect_live_peb
        return _emit_peb(args, out, inspect_live_peb(args.pid, layout=args.layout))
    if args.image is None:
        raise UsageError("give a memory IMAGE with --address VA --layout L, or --pid N")
    if args.address is None and args.cr3 is None and not args.flat:
        with open_image(args.image, max_decompressed=decompress_cap(args)) as memory:
            if memory.format == "minidump":     # the PEB is found from the dump's own threads
                from .dump import peb_of_dump
                return _emit_peb(args, out, peb_of_dump(memory, args.layout, args.max_modules))
    if args.address is None:
        raise UsageError("argument --address: the PEB's linear address is required with IMAGE")
    if args.layout is None:
        raise UsageError("argument --layout: required with IMAGE (`ksinspect layouts` lists them)")
    if args.max_modules < 1:
        raise UsageError("argument --max-modules: %d is not a positive number" % args.max_modules)
    layout = args.layout
    address = parse_int(args.address, "--address")
    from ..windows.peb import read_peb, read_peb32
    if args.flat and (args.cr3 is not None or args.mode is not None):
        raise UsageError("argument --flat: the image's addresses are the virtual addresses; "
                         "--cr3 and --paging-mode do not apply")
    with open_memory(args) as memory:
        if args.flat or getattr(memory, "virtual", False):
            space = memory          # a process memory sample or a minidump: no page tables
        else:
            from ..windows.pslist import layout_space
            with page_table_options(args.image, " (or --registers FILE, or --flat for a "
                                                "process memory sample)"):
                space = layout_space(memory, layout, args.cr3, args.mode)
        if args.wow64:
            peb = read_peb32(space, address, layout, max_modules=args.max_modules)
        else:
            peb = read_peb(space, address, layout, max_modules=args.max_modules)
        return _emit_peb(args, out, peb)


def register_layouts(sub, output) -> None:
    p = sub.add_parser("layouts", parents=[output], help="list the Windows structure layouts",
                       description="List the Windows builds whose structure layouts ship with "
                                   "ksinspect (x86 and x64, XP SP2 to Windows 11 25H2), with "
                                   "where each was read from.")
    p.add_argument("--arch", choices=("x86", "x64"), help="only this architecture")
    p.set_defaults(func=cmd_layouts)


def register_peb(sub, output) -> None:
    p = sub.add_parser("peb", parents=[output], help="decode a process's PEB",
                       description="Decode a PEB, its process parameters (image path, command "
                                   "line, current directory, environment) and the three loader "
                                   "module lists, from a memory image (IMAGE --address VA "
                                   "--layout L, through the process's page tables, or --flat "
                                   "for a sample of process memory) or from a "
                                   "live process (--pid N). Numbers are hex; 0n for decimal.")
    add_image(p, nargs="?")
    p.add_argument("--address", metavar="VA", help="the PEB's linear address")
    add_layout(p)
    add_page_tables(p, "the process's page-table root (DirectoryTableBase; default the image's "
                       "CR3)", WINDOWS_MODE_HELP)
    p.add_argument("--flat", action="store_true",
                   help="the image's addresses are the process's virtual addresses (a process "
                        "memory sample, e.g. tests/data/wine): no paging")
    p.add_argument("--wow64", action="store_true",
                   help="the address is a WoW64 process's 32-bit PEB (_PEB32)")
    p.add_argument("--max-modules", type=int, default=4096, metavar="N",
                   help="stop each loader list after N entries (default 4096)")
    p.add_argument("--pid", type=int, metavar="N",
                   help="a live process instead of an image (Windows; Linux: a Wine process)")
    p.set_defaults(func=cmd_peb)


def register(sub, output) -> None:
    register_layouts(sub, output)
    register_peb(sub, output)
    register_processes(sub, output)


# -- eprocess, pslist, psscan (process objects in a memory image) ---------------------------

PROCESS_COLUMNS = ("pid", "ppid", "name", "eprocess", "dtb", "peb", "create_time", "exit_time",
                   "wow64")
SCAN_COLUMNS = ("physical",) + PROCESS_COLUMNS + ("status",)


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
        process = read_eprocess(space, layout, address)
        document = dict(process.to_dict(), physical=process.physical,
                        active_process_links={"flink": process.links[0],
                                              "blink": process.links[1]},
                        wow64_pointer=process.wow64_pointer, anomalies=list(process.anomalies),
                        layout=layout.name)
        record = process.to_dict()
        emit(out, args.format, [record], document=document,
             text=process.explain() if args.format == "table" else None,
             columns=PROCESS_COLUMNS)
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
             else None, columns=PROCESS_COLUMNS)
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
                                   "with a finding (stderr for json/csv).")
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
