"""The CPU's path: ``access`` (logical -> linear -> physical with every check
and the fault it raises) and ``tss`` (the task-state segment TR names)."""
from typing import IO

from ..errors import DecodeError
from ..render import emit, table
from ..views.columns import STEP_COLUMNS, TSS_COLUMNS
from ._args import UsageError, names_input, parse_int, provenance
from .options import add_cr3, add_image, add_registers, add_symbols, load_symbols, open_memory

# The access simulator and the TSS reader are imported by their commands only:
# every other command starts without them.
SEGMENT_REGISTERS = ("cs", "ss", "ds", "es", "fs", "gs")


@names_input("image")
def cmd_access(args, out: IO[str]) -> int:
    from ..access import simulate_access
    if args.address.count(":") != 1:
        raise UsageError("argument SEL:OFFSET: %r is not SEL:OFFSET" % args.address)
    selector, offset_text = (part.strip() for part in args.address.split(":"))
    offset = parse_int(offset_text, "OFFSET")
    if selector.lower() not in SEGMENT_REGISTERS:
        selector = parse_int(selector, "SEL", 16)
    if args.cpl is not None and not 0 <= args.cpl <= 3:
        raise UsageError("argument --cpl: %d is not a privilege level 0..3" % args.cpl)
    if not 1 <= args.size <= 64:
        raise UsageError("argument --size: %d bytes is outside 1..64" % args.size)
    pkru = parse_int(args.pkru, "--pkru", 32) if args.pkru is not None else None
    if args.access in ("call", "jmp"):
        return _far_transfer(args, out, selector, offset, args.cr3)
    with open_memory(args) as memory:
        try:
            result = simulate_access(memory, selector, offset, args.access, args.size, args.cpl,
                                     args.register, args.cr3, pkru, args.implicit)
        except DecodeError as exc:
            raise UsageError(str(exc)) from None
    document = result.to_dict()
    records = [s.to_dict() for s in result.steps]
    emit(out, args.format, records, document=document, text=result.explain(),
         columns=STEP_COLUMNS)
    provenance(args, result.notes)
    return 0


def _far_transfer(args, out: IO[str], selector, offset: int, cr3) -> int:
    """``access --far-call`` / ``--far-jmp``: the transfer through the selector's descriptor."""
    from ..transfer.image import simulate_far_transfer
    if isinstance(selector, str):
        raise UsageError("argument SEL:OFFSET: a far %s needs a hex selector, not %s"
                         % (args.access.upper(), selector))
    with open_memory(args) as memory:
        try:
            result = simulate_far_transfer(memory, selector, offset, args.access, args.cpl, cr3)
        except DecodeError as exc:
            raise UsageError(str(exc)) from None
    emit(out, args.format, result.rows(), document=result.to_dict(), text=result.explain(),
         columns=STEP_COLUMNS)
    provenance(args, result.notes)
    return 0


PRIVILEGED_COLUMNS = ("mnemonic", "encoding", "governed_by", "bit", "sdm_at_cpl3", "linux",
                      "observed", "agrees")


def privileged_table_output(args, out: IO[str]) -> int:
    """``live --privileged``: the table of privileged instructions at CPL 3."""
    from ..live.cpu_probe import cr4_view, privileged_table
    rows = [r.to_dict() for r in privileged_table()]
    view = cr4_view()
    text = "\n".join([
        "Privileged instructions at CPL 3 (each run once in a child process; Intel SDM vol. 3A "
        "§5.9 and vol. 2):",
        "This machine: " + "; ".join(view.how), "",
        table(rows, PRIVILEGED_COLUMNS, headers=("instruction", "bytes", "governed by", "value",
                                                 "SDM at CPL 3", "Linux", "this CPU did",
                                                 "agrees")),
        "", "%d of %d agree." % (sum(r["agrees"] for r in rows), len(rows))])
    emit(out, args.format, rows, document={"cr4": {"tsd": view.tsd, "pce": view.pce,
                                                   "umip": view.umip, "how": list(view.how)},
                                           "instructions": rows},
         text=text, columns=PRIVILEGED_COLUMNS)
    return 0


@names_input("image")
def cmd_tss(args, out: IO[str]) -> int:
    from ..task import read_tss
    selector = parse_int(args.selector, "--selector", 16) if args.selector is not None else None
    symbols = load_symbols(args)
    with open_memory(args) as memory:
        report = read_tss(memory, selector, args.cr3, symbols)
    emit(out, args.format, report.tss.rows(), document=report.to_dict(), text=report.explain(),
         columns=TSS_COLUMNS, hex_columns=("value",))
    provenance(args, ["TSS found from " + report.how])
    return 0


def register(sub, output) -> None:
    p = sub.add_parser("access", parents=[output],
                       help="take a logical address through segmentation and paging",
                       description="Simulate one memory access the way the processor makes "
                                   "it: the selector's descriptor, the type, privilege and "
                                   "limit checks (SDM vol. 3A §3.4-3.5, §5.3-5.8), then the "
                                   "page walk and its rights (§4.6); the result is the physical "
                                   "address or the fault (#GP, #SS, #NP, #PF) with its error "
                                   "code and CR2. SEL is a segment register (cs, ds, es, fs, "
                                   "gs, ss: its cached descriptor) or a hex selector (its "
                                   "descriptor from the image's GDT or LDT).")
    add_image(p)
    p.add_argument("address", metavar="SEL:OFFSET",
                   help="a segment register or hex selector, a colon, a hex offset")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--read", dest="access", action="store_const", const="read",
                      help="a data read (the default)")
    kind.add_argument("--write", dest="access", action="store_const", const="write")
    kind.add_argument("--execute", dest="access", action="store_const", const="execute",
                      help="an instruction fetch (through CS)")
    kind.add_argument("--far-call", dest="access", action="store_const", const="call",
                      help="a far CALL to SEL:OFFSET: code segment, call gate, task gate or "
                           "TSS (SDM vol. 3A §5.8, §7.3)")
    kind.add_argument("--far-jmp", dest="access", action="store_const", const="jmp",
                      help="a far JMP to SEL:OFFSET")
    p.set_defaults(access="read")
    p.add_argument("--cpl", type=int, help="current privilege level (default: the image's CS.RPL)")
    p.add_argument("--size", type=int, default=1, help="bytes accessed, 1..64 (default 1)")
    p.add_argument("--register", choices=("ds", "es", "fs", "gs", "ss"),
                   help="the register a hex SEL is loaded into (default ds; ss raises #SS)")
    add_cr3(p, "walk these page tables (e.g. PTI's user CR3)")
    p.add_argument("--pkru", metavar="X", help="PKRU for protection-key checks (not in images)")
    p.add_argument("--implicit", action="store_true",
                   help="an implicit supervisor access (SMAP ignores EFLAGS.AC)")
    add_registers(p)
    p.set_defaults(func=cmd_access)

    p = sub.add_parser("tss", parents=[output], help="decode the task-state segment",
                       description="Decode the TSS that TR (or --selector, a GDT selector) "
                                   "names, read through the image's paging: the 32-bit TSS "
                                   "(SDM vol. 3A §8.2.1, Figure 8-2) or the 64-bit TSS (§8.7, "
                                   "Figure 8-11), the I/O permission bitmap, what a task "
                                   "switch loads (§8.3), and findings.")
    add_image(p)
    p.add_argument("--selector", metavar="SEL", help="a GDT selector naming a TSS descriptor "
                                                     "(default: TR)")
    add_symbols(p, "System.map or /proc/kallsyms (.xz ok) to name the task's EIP")
    add_cr3(p, "read through these page tables")
    add_registers(p)
    p.set_defaults(func=cmd_tss)
