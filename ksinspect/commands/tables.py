"""``ksinspect gdt|ldt|idt SOURCE``: whole descriptor tables."""
from ..errors import ImageFormatError
from ..render import emit, table
from ..memory import open_image
from ..symbols import SymbolTable
from ..table_source import read_table
from .. import tables
from ._args import UsageError, names_input, parse_int

GDT_COLUMNS = ("selector", "base", "limit", "type", "dpl", "size", "gran", "pres", "long",
               "flags", "registers", "findings")
IDT_COLUMNS = ("vector", "name", "kind", "selector", "offset", "ist", "dpl", "present", "symbol",
               "findings")


# A descriptor table holds at most 64 KiB (a 16-bit limit, SDM §2.4.1); a
# raw table file is read up to one byte past that, never a whole image.
MAX_TABLE_BYTES = 0x10000
_IMAGE_MAGIC = (b"\x7fELF", b"EMiL", b"\xfd7zXZ\x00", b"\x1f\x8b")


def _read_raw_table(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        raise ImageFormatError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None


def _load_symbols(args):
    if args.symbols is None:
        return None
    if args.image_base is not None:
        return SymbolTable.from_pe(args.symbols, parse_int(args.image_base, "--image-base"))
    return SymbolTable.from_system_map(args.symbols)


def _text_range(args):
    if args.text_range is None:
        return None
    start, sep, end = args.text_range.partition("-")
    if not sep:
        raise UsageError("argument --text-range: %r is not START-END" % args.text_range)
    first, last = parse_int(start, "--text-range START"), parse_int(end, "--text-range END")
    if last < first:
        raise UsageError("argument --text-range: END %#x is below START %#x" % (last, first))
    return first, last


def _source(args, which: str):
    """(bytes, base, limit, cpu, notes) for the table named by the arguments."""
    image_options = (args.base, args.limit, args.cr3, args.registers)
    if all(o is None for o in image_options) and not args.physical:
        data = _read_raw_table(args.source)
        if not (data.startswith(_IMAGE_MAGIC) or args.source.endswith((".xz", ".gz"))):
            if len(data) > MAX_TABLE_BYTES:
                raise ImageFormatError(
                    "%s: more than %d bytes, larger than any descriptor table; for a raw "
                    "memory image give --base and --limit" % (args.source, MAX_TABLE_BYTES))
            return data, None, len(data) - 1 if data else None, None, (
                "read as raw %s bytes from %s" % (which, args.source),)
    with open_image(args.source, registers=args.registers) as memory:
        found = read_table(memory, which,
                           None if args.base is None else parse_int(args.base, "--base"),
                           None if args.limit is None else parse_int(args.limit, "--limit"),
                           None if args.cr3 is None else parse_int(args.cr3, "--cr3"),
                           args.physical)
        if args.mode is None and found.mode is not None:
            args.mode = found.mode.value
        return found.data, found.base, found.limit, memory.cpu, found.notes


def _gdt_row(entry) -> dict:
    d = entry.descriptor
    return {"selector": entry.selector, "base": d.base, "limit": d.limit, "type": d.short_type,
            "dpl": d.dpl, "size": "Bg" if d.db else "Nb", "gran": "Pg" if d.granularity else "By",
            "pres": "P" if d.present else "NP", "long": "Lo" if d.long else "Nl",
            "flags": (d.raw >> 40) & 0xF0FF, "registers": [r.upper() for r in entry.registers],
            "findings": [str(f) for f in entry.findings]}


@names_input("source")
def cmd_segment_table(args, out):
    which = "GDT" if args.command == "gdt" else "LDT"
    data, base, limit, cpu, notes = _source(args, which)
    result = tables.decode_table(data, which, args.mode, base, limit, cpu, notes)
    records = [e.to_dict() for e in result]
    text = "\n".join(list(result.notes) + [table(
        [_gdt_row(e) for e in result], GDT_COLUMNS,
        hex_columns=("selector", "base", "limit", "flags"))])
    emit(out, args.format, records, document=records, text=text)
    return 0


@names_input("source")
def cmd_idt(args, out):
    data, base, limit, _cpu, notes = _source(args, "IDT")
    symbols = _load_symbols(args)
    result = tables.decode_idt(data, args.mode, base, limit, symbols, _text_range(args), notes)
    records = [e.to_dict(symbols is not None) for e in result]
    rows = [dict(r, findings=[f["message"] for f in r["findings"]]) for r in records]
    text = "\n".join(list(result.notes) + [table(rows, IDT_COLUMNS,
                                                 hex_columns=("vector", "selector", "offset"))])
    emit(out, args.format, records, document=records, text=text)
    return 0


def register(sub, output) -> None:
    for name, what in (("gdt", "the global descriptor table"), ("ldt", "a local descriptor table"),
                       ("idt", "the interrupt descriptor table")):
        p = sub.add_parser(name, parents=[output], help="walk %s" % what,
                           description="Walk %s from SOURCE: a file of raw table bytes, a memory "
                                       "image with --base/--limit, or a QEMU dump-guest-memory "
                                       "core on its own (its CPU state gives the table)." % what)
        p.add_argument("source", metavar="SOURCE")
        p.add_argument("--mode", choices=("legacy", "long"),
                       help="descriptor format; inferred (and said so) when not given")
        p.add_argument("--base", metavar="ADDRESS", help="the table's address in the image")
        p.add_argument("--limit", metavar="N", help="the table's limit (size - 1), hex")
        p.add_argument("--cr3", metavar="X", help="page-table root for a linear --base")
        p.add_argument("--physical", action="store_true", help="--base is a physical address")
        p.add_argument("--registers", metavar="FILE",
                       help="QEMU 'info registers' text to complete the image's CPU state")
        if name == "idt":
            p.add_argument("--symbols", metavar="FILE",
                           help="System.map / kallsyms (.xz/.gz ok), or a PE kernel with "
                                "--image-base")
            p.add_argument("--image-base", metavar="ADDRESS",
                           help="load address of the PE kernel given to --symbols")
            p.add_argument("--text-range", metavar="START-END",
                           help="kernel text range for the handler check")
            p.set_defaults(func=cmd_idt)
        else:
            p.set_defaults(func=cmd_segment_table)
