"""``ksinspect gdt|ldt|idt SOURCE``: whole descriptor tables."""
from ..errors import ImageFormatError
from ..memory.elf import ELF_MAGIC
from ..memory.image import GZIP_MAGIC, XZ_MAGIC
from ..memory.lime import LIME_SIGNATURE
from ..render import emit, table
from ..table_source import MAX_TABLE_LIMIT, read_table
from .. import tables
from ..views.columns import GDT_COLUMNS, IDT_COLUMNS
from ._args import UsageError, add_max_decompressed, names_input, parse_int, provenance
from .options import (add_cr3, add_registers, add_symbols, add_table_modes, load_symbols,
                      open_memory, page_table_options)

# CSV cells written in hex besides the address columns every command shares
# (render.ADDRESS_COLUMNS: selectors, offsets, bases, limits, raw bits), as in the table.
CSV_HEX = ("vector",)

# A descriptor table holds at most 64 KiB (a 16-bit limit, SDM §2.4.1); a
# raw table file is read up to one byte past that, never a whole image.
MAX_TABLE_BYTES = MAX_TABLE_LIMIT + 1
_IMAGE_MAGIC = (ELF_MAGIC, LIME_SIGNATURE, XZ_MAGIC, GZIP_MAGIC)


def _read_raw_table(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        raise ImageFormatError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None


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
    base = None if args.base is None else parse_int(args.base, "--base")
    limit = None if args.limit is None else parse_int(args.limit, "--limit")
    cr3 = args.cr3
    if base is not None and limit is None:
        raise UsageError("argument --limit: --base needs --limit (the table's size minus one)")
    with open_memory(args, "source") as memory:
        with page_table_options(args.source, " to translate the linear --base (or --physical "
                                             "for a physical one)"):
            found = read_table(memory, which, base, limit, cr3, args.physical,
                               args.paging_mode)
        if args.descriptor_format is None and found.mode is not None:
            args.descriptor_format = found.mode.value
        return found.data, found.base, found.limit, memory.cpu, found.notes


def _table(spec, entries) -> str:
    """The text table of entries in their column spec (the notebook view's columns)."""
    return table(spec.records(entries), spec.names, hex_columns=spec.hex_columns)


def _selector_range(text):
    """WinDbg's `dg FIRST [LAST]` as SEL[-SEL] (hex): (first index, last index).
    Selectors name slots by their index (bits 15:3, SDM §3.4.2); the TI and
    RPL bits of either end do not move the range."""
    if text is None:
        return None
    first_text, sep, last_text = text.partition("-")
    first = parse_int(first_text, "SELECTORS", 16)
    last = parse_int(last_text, "SELECTORS", 16) if sep else first
    if last < first:
        raise UsageError("argument SELECTORS: %#x is below %#x" % (last, first))
    return first >> 3, last >> 3


@names_input("source")
def cmd_segment_table(args, out):
    which = "GDT" if args.command == "gdt" else "LDT"
    wanted = _selector_range(args.selectors)
    data, base, limit, cpu, notes = _source(args, which)
    result = tables.decode_table(data, which, args.descriptor_format, base, limit, cpu, notes)
    entries = [e for e in result if wanted is None or wanted[0] <= e.index <= wanted[1]]
    records = [e.to_dict() for e in entries]
    text = "\n".join(list(result.notes) + [_table(GDT_COLUMNS, entries)])
    emit(out, args.format, records, document=records, text=text, hex_columns=CSV_HEX)
    provenance(args, result.notes)
    return 0


@names_input("source")
def cmd_idt(args, out):
    data, base, limit, _cpu, notes = _source(args, "IDT")
    symbols = load_symbols(args)
    result = tables.decode_idt(data, args.descriptor_format, base, limit, symbols,
                               _text_range(args), notes)
    records = [e.to_dict(symbols is not None) for e in result]
    text = "\n".join(list(result.notes) + [_table(IDT_COLUMNS, result.entries)])
    emit(out, args.format, records, document=records, text=text, hex_columns=CSV_HEX)
    provenance(args, result.notes)
    return 0


def register(sub, output) -> None:
    for name, what in (("gdt", "the global descriptor table"), ("ldt", "a local descriptor table"),
                       ("idt", "the interrupt descriptor table")):
        p = sub.add_parser(name, parents=[output], help="walk %s" % what,
                           description="Walk %s from SOURCE: a file of raw table bytes, a memory "
                                       "image with --base/--limit, or a QEMU dump-guest-memory "
                                       "core on its own (its CPU state gives the table)." % what)
        p.add_argument("source", metavar="SOURCE",
                       help="raw table bytes, or a memory image (raw, LiME, ELF core; .xz/.gz)")
        if name != "idt":
            p.add_argument("selectors", metavar="SELECTORS", nargs="?",
                           help="only these slots, SEL or FIRST-LAST (hex selectors, as "
                                "WinDbg's dg FIRST LAST)")
        add_table_modes(p)
        p.add_argument("--base", metavar="ADDRESS", help="the table's address in the image")
        p.add_argument("--limit", metavar="N", help="the table's limit (size - 1), hex")
        add_cr3(p, "page-table root for a linear --base")
        p.add_argument("--physical", action="store_true", help="--base is a physical address")
        add_registers(p)
        add_max_decompressed(p)
        if name == "idt":
            add_symbols(p, "System.map / kallsyms (.xz/.gz ok; a regular file of at most 64 MiB "
                           "once decompressed), or a PE kernel with --image-base", pe=True)
            p.add_argument("--text-range", metavar="START-END",
                           help="kernel text range for the handler check")
            p.set_defaults(func=cmd_idt)
        else:
            p.set_defaults(func=cmd_segment_table)
