"""Commands on a Windows minidump (``.dmp``): threads, modules; and the minidump
part of ``info`` and ``peb`` (``teb`` is in ksinspect.commands.windows, with
``peb``). WinDbg's ``~``/``r``, ``lm``."""
from typing import IO, List

from ..memory import open_image
from ..render import emit, table
from ..windows.dump import dump_of, dump_peb, dump_threads
from ._args import UsageError, decompress_cap, parse_int
from .options import add_image

# ip/sp: Rip/Rsp of an x64 CONTEXT, Eip/Esp of an x86 one.
THREAD_COLUMNS = ("thread_id", "teb", "stack_start", "stack_size", "ip", "sp", "eflags",
                  "cs", "dr7", "context")
MODULE_COLUMNS = ("base", "size", "checksum", "timestamp", "name", "file_version", "path")
STREAM_COLUMNS = ("index", "type", "name", "size", "rva")
RANGE_COLUMNS = ("start", "end", "size", "rva", "stream")
MINIDUMP_HELP = "a Windows minidump (.dmp; .xz/.gz)"


def _open_dump(path: str, cap: int):
    memory = open_image(path, max_decompressed=cap)
    try:
        dump_of(memory)
    except Exception:
        memory.close()
        raise
    return memory


def _thread_row(state) -> dict:
    c = state.context
    row = {"thread_id": state.thread_id, "teb": state.teb, "stack_start": state.thread.stack_start,
           "stack_size": state.thread.stack_size, "exception_thread": state.exception}
    if c is None:
        row["context"] = state.problem
        return row
    row.update({"ip": c.instruction_pointer, "sp": c.stack_pointer, "eflags": c.eflags,
                "cs": c.segments["SegCs"].raw if "SegCs" in c.segments else None,
                "dr7": c.registers.get("Dr7"),
                "context": ", ".join(n[8:].lower() for n in c.flags.names)})
    return row


def cmd_threads(args, out: IO[str]) -> int:
    if (args.image is None) == (args.pid is None):
        raise UsageError("give a minidump (IMAGE.dmp) or --pid PID of a live Windows process, "
                         "not both")
    if args.pid is not None:
        from .debugging import live_threads
        return live_threads(args, out)
    with _open_dump(args.image, decompress_cap(args)) as memory:
        states = dump_threads(memory)
        if args.thread is not None:
            wanted = parse_int(args.thread, "--thread")
            states = [s for s in states if s.thread_id == wanted]
            if not states:
                raise UsageError("argument --thread: no thread %d in %s" % (wanted, args.image))
        rows = [_thread_row(s) for s in states]
        text = None
        if args.format == "table":
            parts = [table(rows, THREAD_COLUMNS, hex_columns=("teb", "stack_start", "stack_size",
                                                             "ip", "sp", "eflags", "cs", "dr7"))]
            if args.explain or args.thread is not None:
                parts += ["", "\n\n".join(s.explain() for s in states)]
            text = "\n".join(parts)
        emit(out, args.format, rows, document=[s.to_dict() for s in states], text=text,
             columns=THREAD_COLUMNS)
    return 0


def cmd_modules(args, out: IO[str]) -> int:
    with _open_dump(args.image, decompress_cap(args)) as memory:
        rows = [m.to_dict() for m in dump_of(memory).modules]
        emit(out, args.format, rows, columns=MODULE_COLUMNS,
             text=table(rows, MODULE_COLUMNS, hex_columns=("base", "size", "checksum",
                                                           "timestamp"))
             if args.format == "table" else None)
    return 0


def peb_of_dump(memory, layout, max_modules):
    """``peb IMAGE.dmp``: no --address or --layout needed."""
    return dump_peb(memory, layout, max_modules)


def info_document(memory) -> dict:
    dump = dump_of(memory)
    return {"path": memory.path, "format": memory.format, "description": memory.description,
            "file_size": memory.file_size, "compression": memory.compression,
            "version": dump.version, "timestamp": dump.timestamp, "flags": dump.flags,
            "streams": [s.to_dict() for s in dump.streams],
            "system_info": None if dump.system_info is None else dump.system_info.to_dict(),
            "misc_info": None if dump.misc_info is None else dump.misc_info.to_dict(),
            "exception": None if dump.exception is None else dump.exception.to_dict(),
            "threads": [t.to_dict() for t in dump.threads],
            "modules": [m.to_dict() for m in dump.modules],
            "memory": [r.to_dict() for r in dump.ranges], "memory_size": memory.size,
            "comments": dump.comments, "warnings": list(memory.warnings)}


def info_records(memory) -> List[dict]:
    dump = dump_of(memory)
    records = [dict(kind="stream", name=s.name, value=s.type, size=s.size, offset=s.rva)
               for s in dump.streams]
    records += [dict(kind="range", start=r.start, end=r.end, size=r.size, offset=r.rva,
                     detail=r.stream) for r in dump.ranges]
    return records


def info_text(memory, max_ranges: int = 40) -> str:
    dump = dump_of(memory)
    lines = ["Image:   %s%s" % (memory.name, " (%s)" % memory.compression
                                 if memory.compression else ""),
             "Format:  minidump: %s" % memory.description]
    if dump.system_info is not None:
        lines.append("System:  %s" % dump.system_info)
    if dump.misc_info is not None and dump.misc_info.process_id is not None:
        lines.append("Process: id %d" % dump.misc_info.process_id)
    if dump.exception is not None:
        lines.append("Exception: %s" % dump.exception)
    lines += ["", "Streams:", table([s.to_dict() for s in dump.streams], STREAM_COLUMNS,
                                    hex_columns=("type", "size", "rva"))]
    lines += ["", "Threads:", table([t.to_dict() for t in dump.threads],
                                    ("thread_id", "teb", "stack_start", "stack_size",
                                     "context_size"),
                                    hex_columns=("teb", "stack_start", "stack_size"))]
    lines += ["", "Modules:", table([m.to_dict() for m in dump.modules],
                                    ("base", "size", "name", "file_version"),
                                    hex_columns=("base", "size"))]
    ranges = [r.to_dict() for r in dump.ranges]
    lines += ["", "Memory (the process's virtual addresses): %#x bytes in %d ranges%s:" % (
        memory.size, len(ranges), "; the first %d" % max_ranges if len(ranges) > max_ranges
        else ""), table(ranges[:max_ranges], RANGE_COLUMNS,
                        hex_columns=("start", "end", "size", "rva"))]
    lines += ["Comment: " + c for c in dump.comments]
    lines += ["Warning: " + w for w in memory.warnings]
    return "\n".join(lines)


def register(sub, output) -> None:
    p = sub.add_parser("threads", parents=[output],
                       help="a minidump's (or a live process's) threads and registers",
                       description="List the threads of a Windows minidump: TID, TEB, stack and "
                                   "each CONTEXT decoded (registers, EFLAGS, selectors, "
                                   "Dr0-Dr3, Dr6, Dr7), like WinDbg's ~ and r. With --pid, "
                                   "a live process's threads (Windows, or Wine through "
                                   "tools/winpython.py): Toolhelp32, OpenThread, "
                                   "GetThreadContext (and Wow64GetThreadContext).")
    add_image(p, MINIDUMP_HELP, "IMAGE.dmp", nargs="?")
    p.add_argument("--pid", metavar="PID", help="a live process instead (a Windows PID)")
    p.add_argument("--thread", metavar="TID", help="only this thread (hex; 0n for decimal), "
                                                   "with every register explained")
    p.add_argument("--explain", action="store_true",
                   help="explain every thread's CONTEXT member by member")
    p.set_defaults(func=cmd_threads)

    p = sub.add_parser("modules", parents=[output], help="a minidump's module list",
                       description="The ModuleList stream: base, size, checksum, timestamp, "
                                   "file version and path of each module, like WinDbg's lm.")
    add_image(p, MINIDUMP_HELP, "IMAGE.dmp")
    p.set_defaults(func=cmd_modules)
