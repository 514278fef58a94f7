"""Page-table commands over a memory image: vtop, maps, ptov, read."""
import sys
import time
from typing import IO, Iterable, List, Optional

from ..errors import InvalidAddressError
from ..memory import open_image
from ..paging import DEFAULT_MAX_ALIASES, DEFAULT_MAX_ENTRIES, AddressSpace, Mapping, WalkLimitError
from ..render import emit, table
from ..x86 import PagingMode
from ._args import UsageError, add_svg_option, names_input, parse_int, write_svg

TRANSLATION_COLUMNS = ("va", "pa", "page_size", "writable", "user", "nx", "error")
MAPPING_COLUMNS = ("start", "end", "size", "writable", "user", "nx", "pa", "page_size")
ALIAS_COLUMNS = ("va", "pa", "page_start", "page_size", "writable", "user", "nx")
MAX_READ = 1 << 30
# Ranges `maps` lists before it stops: about 1 KiB of memory each while the
# output is built; a real Linux guest has 65,774.
MAX_LISTED_RANGES = 1 << 18
PROGRESS_AFTER = 0.5     # seconds before a progress bar appears


def _open(args):
    return open_image(args.image, registers=args.registers)


def _space(args, memory) -> AddressSpace:
    cr3 = None if args.cr3 is None else parse_int(args.cr3, "--cr3")
    if memory.cpu is None and (cr3 is None or args.mode is None):
        raise UsageError("argument --cr3/--mode: %s carries no CPU state: give --cr3 and --mode "
                         "(or --registers FILE)" % args.image)
    if not 32 <= args.maxphyaddr <= 52:
        raise UsageError("argument --maxphyaddr: %d is outside 32..52" % args.maxphyaddr)
    return AddressSpace(memory, cr3=cr3, mode=args.mode, maxphyaddr=args.maxphyaddr,
                        ignore_reserved=args.ignore_reserved)


def _read_addresses(path: str) -> List[str]:
    try:
        with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise UsageError("argument --from-file: cannot read %s: %s" % (
            path, exc.strerror or exc)) from None
    words = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            words.extend(line.replace(",", " ").split())
    return words


def _path_text(path: Iterable[dict]) -> str:
    return " ".join("L%d[%d]@%#x=%#x" % (s["level"], s["index"], s["address"], s["value"])
                    for s in path)


@names_input("image")
def cmd_vtop(args, out: IO[str]) -> int:
    words = list(args.va)
    if args.from_file:
        words += _read_addresses(args.from_file)
    if not words:
        raise UsageError("argument VA: give at least one linear address (or --from-file FILE)")
    vas = [parse_int(w, "VA") for w in words]
    if args.svg is not None and len(vas) != 1:
        raise UsageError("argument --svg: the picture draws one walk: give exactly one VA")
    with _open(args) as memory:
        space = _space(args, memory)
        if len(vas) == 1:
            translations = [space.translate(vas[0])]
            write_svg(args.svg, translations[0])
        else:
            batch = space.translate_many(vas)
            translations = list(batch)
            for t in translations:
                if t.reason in ("not canonical", "above 4 GiB"):
                    raise InvalidAddressError("linear address %#x is %s" % (t.va, t.error),
                                              address=t.va)
        documents = [t.to_dict() for t in translations]
        if args.format == "csv":
            records = [dict(d, path=_path_text(d["path"])) for d in documents]
        else:
            records = documents
        text = None
        if args.format == "table":
            if len(translations) == 1:
                text = translations[0].explain()
            else:
                text = table(records, TRANSLATION_COLUMNS,
                             hex_columns=("va", "pa", "page_size"))
        emit(out, args.format, records, document=documents, text=text,
             columns=TRANSLATION_COLUMNS + ("path",))
    return 0


def _parse_range(text: Optional[str]):
    if text is None:
        return 0, None
    if "-" not in text:
        raise UsageError("argument --range: %r is not START-END (hex; END exclusive)" % text)
    start_text, end_text = text.split("-", 1)
    start = parse_int(start_text, "--range START") if start_text.strip() else 0
    end = parse_int(end_text, "--range END") if end_text.strip() else None
    if end is not None and end <= start:
        raise UsageError("argument --range: END %#x is not after START %#x" % (end, start))
    return start, end


class _Progress:
    """A one-line progress bar on stderr, shown only for a long walk on a terminal."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.enabled = hasattr(stream, "isatty") and stream.isatty()
        self.started = time.monotonic()
        self.shown = False
        self.last = 0.0

    def __call__(self, fraction: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.started < PROGRESS_AFTER or (now - self.last < 0.1 and fraction < 1):
            return
        self.last = now
        self.shown = True
        width = 40
        filled = int(width * fraction)
        self.stream.write("\rmaps: [%s%s] %3d%%" % ("#" * filled, "." * (width - filled),
                                                    int(fraction * 100)))
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


@names_input("image")
def cmd_maps(args, out: IO[str], errors: Optional[IO[str]] = None) -> int:
    start, end = _parse_range(args.range)
    if args.max_ranges < 1:
        raise UsageError("argument --max-ranges: give a positive number")
    err = errors or sys.stderr
    with _open(args) as memory:
        space = _space(args, memory)
        top = space.top
        if start >= top or (end is not None and end > top):
            raise UsageError("argument --range: the %s linear address space ends at %#x"
                             % (space.mode.value, top))
        progress = _Progress(err)
        stream = space.mappings(start, end, merge=args.merge, max_entries=args.max_entries,
                                progress=progress)
        ranges: List[Mapping] = []
        failure = None
        try:
            for m in stream:
                if len(ranges) == args.max_ranges:
                    failure = WalkLimitError(
                        "listed the first %d ranges (--max-ranges), up to linear address %#x: "
                        "raise the limit or give --range" % (args.max_ranges, m.start),
                        resume_at=m.start, entries_read=stream.entries_read)
                    break
                ranges.append(m)
        except WalkLimitError as exc:
            failure = exc
        finally:
            progress.close()
        records = [m.to_dict() for m in ranges]
        emit(out, args.format, records, columns=MAPPING_COLUMNS,
             hex_columns=("start", "end", "size", "pa", "page_size"))
        if stream.tables_missing or stream.reserved_skipped:
            err.write("ksinspect: note: %d page tables named by present entries are not in "
                      "the image (their ranges are unknown, not listed); %d present entries "
                      "skipped for reserved bits\n" % (stream.tables_missing,
                                                       stream.reserved_skipped))
        if failure is not None:
            raise failure
    return 0


@names_input("image")
def cmd_ptov(args, out: IO[str]) -> int:
    pa = parse_int(args.pa, "PA")
    if args.max_aliases < 0:
        raise UsageError("argument --max-aliases: give a non-negative number")
    with _open(args) as memory:
        space = _space(args, memory)
        aliases = space.physical_to_virtual(pa, max_entries=args.max_entries,
                                            max_aliases=args.max_aliases)
        records = [a.to_dict() for a in aliases]
        text = None
        if args.format == "table":
            text = ("physical %#x is mapped at %d linear address%s" % (
                pa, len(aliases), "" if len(aliases) == 1 else "es"))
            if aliases:
                text += "\n" + table(records, ALIAS_COLUMNS,
                                     hex_columns=("va", "pa", "page_start", "page_size"))
        emit(out, args.format, records, text=text, columns=ALIAS_COLUMNS)
    return 0


def hexdump(data: bytes, address: int) -> str:
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset:offset + 16]
        hexes = " ".join("%02x" % b for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append("%016x  %-47s  |%s|" % (address + offset, hexes, text))
    return "\n".join(lines)


@names_input("image")
def cmd_read(args, out: IO[str]) -> int:
    va = parse_int(args.va, "VA")
    length = parse_int(args.length, "LEN")
    if length > MAX_READ:
        raise UsageError("argument LEN: at most %#x bytes" % MAX_READ)
    with _open(args) as memory:
        space = _space(args, memory)
        data, error = space.read_available(va, length)
        record = {"va": va, "length": len(data), "data": data.hex()}
        emit(out, args.format, [record], document=record,
             text=hexdump(data, va) if data else "", columns=("va", "length", "data"))
        if error is not None:
            raise error
    return 0


def _add_max_entries(p) -> None:
    """The walk's work cap, for the commands that enumerate (maps, ptov)."""
    p.add_argument("--max-entries", type=int, default=DEFAULT_MAX_ENTRIES, metavar="N",
                   help="stop after reading N paging entries (default 2^%d)"
                        % (DEFAULT_MAX_ENTRIES.bit_length() - 1))


def _common(p) -> None:
    p.add_argument("image", metavar="IMAGE", help="memory image (raw, LiME, ELF core; .xz/.gz)")
    p.add_argument("--cr3", metavar="X", help="page-table root (default: the image's CR3)")
    p.add_argument("--mode", choices=[m.value for m in PagingMode],
                   help="paging mode (default: from the image's CR0/CR4/EFER)")
    p.add_argument("--maxphyaddr", type=int, default=52, metavar="N",
                   help="physical-address width, 32..52 (default 52)")
    p.add_argument("--registers", metavar="FILE",
                   help="QEMU `info registers` output completing the image's CPU state")
    p.add_argument("--ignore-reserved", action="store_true",
                   help="follow entries with reserved bits set (the processor faults on them)")


def register(sub, output) -> None:
    p = sub.add_parser("vtop", parents=[output], help="translate linear addresses",
                       description="Translate linear (virtual) addresses through the page "
                                   "tables CR3 names (SDM vol. 3A §4.3-4.6): physical "
                                   "address, page size, effective rights and the whole walk. "
                                   "Numbers are hex; prefix 0n for decimal.")
    _common(p)
    p.add_argument("va", metavar="VA", nargs="*")
    p.add_argument("--from-file", metavar="F", help="more addresses, one or more per line "
                                                    "(- for stdin; # starts a comment)")
    add_svg_option(p)
    p.set_defaults(func=cmd_vtop)

    p = sub.add_parser("maps", parents=[output], help="list every mapped range",
                       description="List every mapped linear range, merged (like QEMU's "
                                   "`info mem`, plus NX, physical address and page size).")
    _common(p)
    p.add_argument("--range", metavar="START-END", help="only this range (hex, END exclusive)")
    p.add_argument("--merge", choices=("contiguous", "rights"), default="contiguous",
                   help="contiguous: merge pages with contiguous physical addresses and equal "
                        "rights and page size (default); rights: merge on equal R/W and U/S "
                        "alone, as QEMU's `info mem`")
    _add_max_entries(p)
    p.add_argument("--max-ranges", type=int, default=MAX_LISTED_RANGES, metavar="N",
                   help="stop after listing N ranges (default %d; memory grows with it)"
                        % MAX_LISTED_RANGES)
    p.set_defaults(func=cmd_maps)

    p = sub.add_parser("ptov", parents=[output], help="physical to linear addresses",
                       description="Every linear address that maps a physical address.")
    _common(p)
    p.add_argument("pa", metavar="PA")
    _add_max_entries(p)
    p.add_argument("--max-aliases", type=int, default=DEFAULT_MAX_ALIASES, metavar="N",
                   help="stop after finding N linear addresses (default %d)"
                        % DEFAULT_MAX_ALIASES)
    p.set_defaults(func=cmd_ptov)

    p = sub.add_parser("read", parents=[output], help="hexdump linear memory",
                       description="Read LEN bytes of linear memory at VA (both hex) and "
                                   "hexdump them; stops at the first byte that is not mapped "
                                   "or not in the image (exit status 1).")
    _common(p)
    p.add_argument("va", metavar="VA")
    p.add_argument("length", metavar="LEN")
    p.set_defaults(func=cmd_read)
