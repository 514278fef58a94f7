"""Page-table commands over a memory image: vtop, maps, ptov, read."""
import re
import struct
import sys
import time
from typing import IO, Iterable, Iterator, List, Optional

from ..paging import DEFAULT_MAX_ALIASES, DEFAULT_MAX_ENTRIES, AddressSpace, WalkLimitError
from ..render import FORMATS, emit, emit_stream, table
from ..text_input import CAPS, cap_text, read_text_input
from ..modes import PagingMode
from ..views.qemu_text import info_mem_line, info_tlb_line, tlb_flags
from ..views.windbg import UNITS_PER_LINE, dps_line, dump_lines, join_flags, pte_flags
from ._args import (UsageError, add_svg_option, count_argument, names_input, parse_int,
                    write_svg)
from .options import (add_image, add_maxphyaddr, add_page_tables, add_symbols, load_symbols,
                      note_page_tables, open_memory, page_table_options)

TRANSLATION_COLUMNS = ("va", "pa", "page_size", "writable", "user", "nx", "pfn", "flags",
                       "error")
TRANSLATION_HEX = ("va", "pa", "page_size")
MAPPING_COLUMNS = ("start", "end", "size", "writable", "user", "nx", "pa", "page_size")
ALIAS_COLUMNS = ("va", "pa", "page_start", "page_size", "writable", "user", "nx")
MAX_READ = 1 << 30
# Ranges `maps` lists before it stops: about 1 KiB of memory each while the
# output is built; a real Linux guest has 65,774.
MAX_LISTED_RANGES = 1 << 18
PROGRESS_AFTER = 0.5     # seconds before a progress bar appears


def _open(args):
    return open_memory(args)


def _space(args, memory) -> AddressSpace:
    if getattr(memory, "virtual", False):
        raise UsageError("%s is a Windows minidump: its addresses are the process's virtual "
                         "addresses and there are no page tables to walk (read, peb, teb, "
                         "threads and modules work on it)" % args.image)
    with page_table_options(args.image, " (or --registers FILE)"):
        space = AddressSpace(memory, cr3=args.cr3, mode=args.mode, maxphyaddr=args.maxphyaddr,
                             ignore_reserved=args.ignore_reserved)
    note_page_tables(args, space)     # json/jsonl/csv: how the result was read, on stderr
    return space


def _usage(message: str) -> UsageError:
    return UsageError("argument --from-file: " + message)


def _read_addresses(path: str) -> List[str]:
    """The words of an address file (``-``: standard input), at most the
    addresses cap (ksinspect.text_input), which must be UTF-8 text."""
    if path == "-":
        cap = CAPS["addresses"]
        data = sys.stdin.buffer.read(cap + 1) if sys.stdin is not None else b""
        if len(data) > cap:
            raise _usage("standard input holds more than %s of addresses" % cap_text("addresses"))
    else:
        data = read_text_input(path, "addresses", _usage, "address file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _usage("%s: not UTF-8 text (byte %#x at offset %d)" % (
            "standard input" if path == "-" else path, data[exc.start], exc.start)) from None
    words = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            words.extend(line.replace(",", " ").split())
    if not words:
        raise _usage("%s holds no linear address" % ("standard input" if path == "-" else path))
    return words


def _path_text(path: Iterable[dict]) -> str:
    return " ".join("L%d[%d]@%#x=%#x" % (s["level"], s["index"], s["address"], s["value"])
                    for s in path)


_SYMBOL_EXPRESSION = re.compile(r"^([A-Za-z_.$][\w.$@]*)(?:\s*([+-])\s*(\S+))?$")


def _address_word(word: str, symbols, what: str = "VA") -> int:
    """A linear address as typed: a number (hex; 0n decimal) or, with
    --symbols, ``name``, ``name+OFFSET`` or ``name-OFFSET`` (OFFSET hex). A
    word that reads as a hex number is that number (``add`` is 0xadd)."""
    try:
        return parse_int(word, what)
    except UsageError:
        if symbols is None:
            raise UsageError("argument %s: %r is not a hex number (give --symbols FILE to use "
                             "symbol names such as name+0x10)" % (what, word)) from None
    found = _SYMBOL_EXPRESSION.match(word.strip())
    if found is None:
        raise UsageError("argument %s: %r is neither a hex number nor NAME[+-OFFSET]"
                         % (what, word))
    name, sign, offset_text = found.groups()
    base = symbols.address_of(name)
    if base is None:
        raise UsageError("argument %s: no symbol named %r in %s" % (what, name, symbols.source))
    offset = parse_int(offset_text, what + " offset") if sign else 0
    value = base + offset if sign != "-" else base - offset
    if not 0 <= value < 1 << 64:
        raise UsageError("argument %s: %s is outside the 64-bit address space" % (what, word))
    return value


def _level_views(steps, nxe: bool) -> List[tuple]:
    """(pfn, WinDbg !pte letters) of each step of a walk; (None, None) for an
    entry that is not present (WinDbg: "not valid")."""
    views = []
    for step in steps:
        entry = step.entry
        if not entry.present:
            views.append((None, None))
            continue
        nx_capable = nxe and entry.mode is not PagingMode.BITS32
        views.append((entry.frame >> 12, pte_flags(entry.raw, entry.large and entry.leaf,
                                                   nx_capable)))
    return views


def _translation_document(t, nxe: bool) -> dict:
    """to_dict() with each path step's pfn and !pte letters (None when not present)."""
    document = t.to_dict()
    for step, (pfn, flags) in zip(document["path"], _level_views(t.path, nxe)):
        step["pfn"], step["flags"] = pfn, flags
    return document


def _translation_record(document: dict, fmt: str) -> dict:
    """A table / CSV row: the per-level PFNs and letters joined top level first."""
    path = document["path"]
    record = dict(document,
                  pfn="/".join("-" if s["pfn"] is None else "%#x" % s["pfn"] for s in path),
                  flags=join_flags(s["flags"] for s in path))
    if fmt == "csv":
        record["path"] = _path_text(path)
    return record


def _pte_text(t, document: dict) -> str:
    """The walk as WinDbg's !pte shows it: each level's entry, PFN and letters."""
    lines = ["WinDbg !pte view (letters C G L D A N T U/K W/R E V):"]
    for step, shown in zip(t.path, document["path"]):
        where = "%s at %#x contains %#0*x" % (step.name, step.address,
                                              10 if t.mode is PagingMode.BITS32 else 18,
                                              step.value)
        if shown["pfn"] is None:
            lines.append("  %-48s not valid" % where)
        else:
            lines.append("  %-48s pfn %x %s" % (where, shown["pfn"], shown["flags"]))
    return "\n".join(lines)


@names_input("image")
def cmd_vtop(args, out: IO[str]) -> int:
    words = list(args.va)
    if args.from_file:
        words += _read_addresses(args.from_file)
    if not words:
        raise UsageError("argument VA: give at least one linear address (or --from-file FILE)")
    symbols = load_symbols(args)
    vas = [_address_word(w, symbols) for w in words]
    if args.svg is not None and len(vas) != 1:
        raise UsageError("argument --svg: the picture draws one walk: give exactly one VA")
    with _open(args) as memory:
        space = _space(args, memory)
        if len(vas) == 1:
            translation = space.translate(vas[0])
            if translation.reason.invalid_address:      # bad input (exit 1)
                translation.check()
            write_svg(args.svg, translation)
            document = _translation_document(translation, space.nxe)
            text = None
            if args.format == "table":
                text = translation.explain() + "\n\n" + _pte_text(translation, document)
            emit(out, args.format, [_translation_record(document, args.format)],
                 document=[document], text=text,
                 columns=TRANSLATION_COLUMNS + ("path",), hex_columns=TRANSLATION_HEX)
            return 0
        _stream_translations(space, vas, args.format, out,
                             getattr(args, "errors", None) or sys.stderr)
    return 0


VTOP_BATCH = 1 << 16      # translations decoded and written at a time


def _stream_translations(space: AddressSpace, vas: List[int], fmt: str, out: IO[str],
                         errors: Optional[IO[str]] = None) -> None:
    """Many translations, written a batch at a time (a million addresses
    must not build a million dicts first). Every address gets its row: a
    non-canonical one (or one above 4 GiB in a 32-bit mode) says so in its
    error column, as an unmapped one does; the count of those and the first
    go to stderr as one note, so a list with one bad address is not lost."""
    opened = False
    invalid, first_invalid = 0, None
    try:
        for first in range(0, len(vas), VTOP_BATCH):
            documents = []
            for t in space.translate_many(vas[first:first + VTOP_BATCH]):
                if t.reason.invalid_address:
                    invalid += 1
                    first_invalid = t.va if first_invalid is None else first_invalid
                documents.append(_translation_document(t, space.nxe))
            _write_translations(out, fmt, documents, first == 0, opened)
            opened = opened or fmt == "json"
    finally:
        if opened:
            out.write("\n]\n")
    if invalid and errors is not None:
        errors.write("ksinspect: note: %d of %d addresses cannot be translated in %s paging "
                     "(the first is %#x): their rows say why\n" % (
                         invalid, len(vas), space.mode.value, first_invalid))


def _write_translations(out: IO[str], fmt: str, documents: List[dict], first: bool,
                        opened: bool) -> None:
    if fmt == "json":
        import json
        import textwrap
        text = ",\n".join(textwrap.indent(json.dumps(d, indent=2), "  ") for d in documents)
        out.write(("[\n" if not opened else (",\n" if text else "")) + text)
    elif fmt == "table":
        if not documents:
            return
        lines = table([_translation_record(d, fmt) for d in documents], TRANSLATION_COLUMNS,
                      hex_columns=TRANSLATION_HEX).split("\n")
        out.write("\n".join(lines if first else lines[2:]) + "\n")
    else:
        records = [_translation_record(d, fmt) for d in documents] if fmt == "csv" \
            else documents
        if fmt == "csv" and not first:
            import io
            buffer = io.StringIO()
            emit(buffer, fmt, records, columns=TRANSLATION_COLUMNS + ("path",),
                 hex_columns=TRANSLATION_HEX)
            out.write(buffer.getvalue().split("\n", 1)[1])
        else:
            emit(out, fmt, records, columns=TRANSLATION_COLUMNS + ("path",),
                 hex_columns=TRANSLATION_HEX)


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
    """A one-line progress bar on stderr for a long walk, from the command's
    start to its last row. Drawn only when stderr is a terminal and the rows
    are not going to a terminal themselves (there they show the progress, and
    a bar between them would break their lines)."""

    def __init__(self, stream: IO[str], rows: Optional[IO[str]] = None,
                 started: Optional[float] = None):
        self.stream = stream
        self.enabled = _is_terminal(stream) and not _is_terminal(rows)
        self.started = time.monotonic() if started is None else started
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
            self.shown = False


def _is_terminal(stream) -> bool:
    try:
        return stream is not None and hasattr(stream, "isatty") and bool(stream.isatty())
    except (OSError, ValueError):
        return False


PAGE_COLUMNS = ("va", "pa", "page_size", "entry", "flags")
PAGE_BATCH = 1 << 14      # pages translated at a time by `maps --pages`


def _pages(space: AddressSpace, ranges: Iterable) -> Iterator[tuple]:
    """(va, pa, page size, leaf entry) of every page of the ranges, in order:
    the pages of each range looked up a batch at a time (translate_many)."""
    pending: List[int] = []

    def flush():
        batch = space.translate_many(pending)
        for va, pa, size, leaf in zip(pending, batch.pas(), batch.page_sizes(),
                                      batch.column("leaf")):
            yield va, pa, size, leaf
        pending.clear()

    for m in ranges:
        size = m.page_size
        for va in range(m.start, m.end, size):
            pending.append(va)
            if len(pending) == PAGE_BATCH:
                yield from flush()
    if pending:
        yield from flush()


def _merge_rule(args) -> str:
    if args.pages:
        # Pages are enumerated from ranges of one page size each (contiguous merging).
        if args.merge is not None:
            raise UsageError("argument --merge: --pages lists single pages: there is nothing "
                             "to merge")
        return "contiguous"
    if args.format == "qemu":
        if args.merge == "contiguous":
            raise UsageError("argument --merge: --format qemu prints `info mem`, which merges "
                             "on R/W and U/S alone (--merge rights): drop --merge contiguous")
        return "rights"
    return args.merge or "contiguous"


@names_input("image")
def cmd_maps(args, out: IO[str], errors: Optional[IO[str]] = None) -> int:
    started = time.monotonic()
    start, end = _parse_range(args.range)
    if args.max_ranges < 1:
        raise UsageError("argument --max-ranges: give a positive number")
    merge = _merge_rule(args)
    err = errors or getattr(args, "errors", None) or sys.stderr
    with _open(args) as memory:
        space = _space(args, memory)
        top = space.top
        if start >= top or (end is not None and end > top):
            raise UsageError("argument --range: the %s linear address space ends at %#x"
                             % (space.mode.value, top))
        progress = _Progress(err, out, started)
        stream = space.mappings(start, end, merge=merge, max_entries=args.max_entries,
                                progress=progress)
        failure = []
        mode = space.mode.value
        position_mask = (1 << space.va_bits) - 1

        def items():
            # The rows go out as the walk finds them; a limit ends the listing
            # after what was found, and is raised once the output is complete.
            listed = 0
            try:
                for item in (_pages(space, stream) if args.pages else stream):
                    if listed == args.max_ranges:
                        at = item[0] if args.pages else item.start
                        failure.append(WalkLimitError(
                            "listed the first %d %s (--max-ranges), up to linear address "
                            "%#x: raise the limit or give --range" % (
                                args.max_ranges, "pages" if args.pages else "ranges", at),
                            resume_at=at, entries_read=stream.entries_read))
                        return
                    listed += 1
                    yield item
            except WalkLimitError as exc:
                failure.append(exc)
            finally:
                progress.close()

        if args.format == "qemu":
            write = out.write
            if args.pages:
                for va, _pa, size, leaf in items():
                    write(info_tlb_line(va & position_mask, leaf, size, mode) + "\n")
            else:
                for m in items():
                    first = m.start & position_mask
                    write(info_mem_line(first, first + m.size, m.user, m.writable, mode) + "\n")
        elif args.pages:
            records = ({"va": va, "pa": pa, "page_size": size, "entry": leaf,
                        "flags": tlb_flags(leaf, size)} for va, pa, size, leaf in items())
            emit_stream(out, args.format, records, PAGE_COLUMNS, _page_widths(space),
                        hex_columns=("va", "pa", "page_size", "entry"))
        else:
            emit_stream(out, args.format, (m.to_dict() for m in items()), MAPPING_COLUMNS,
                        _mapping_widths(space),
                        hex_columns=("start", "end", "size", "pa", "page_size"))
        if stream.tables_missing or stream.reserved_skipped:
            err.write("ksinspect: note: %d page tables named by present entries are not in "
                      "the image (their ranges are unknown, not listed); %d present entries "
                      "skipped for reserved bits\n" % (stream.tables_missing,
                                                       stream.reserved_skipped))
        if failure:
            raise failure[0]
    return 0


def _mapping_widths(space: AddressSpace) -> List[int]:
    """The widest cell each `maps` column can hold in this space (hex, yes/no)."""
    va = len("%#x" % space.top)                       # an end may be the top itself
    pa = len("%#x" % ((1 << space.maxphyaddr) - 1))
    page = len("%#x" % space.mode.facts.page_sizes[-1])
    return [va, va, va, 3, 3, 3, pa, page]


def _page_widths(space: AddressSpace) -> List[int]:
    """The widest cell each `maps --pages` column can hold in this space."""
    va = len("%#x" % (space.top - 1))
    pa = len("%#x" % ((1 << space.maxphyaddr) - 1))
    page = len("%#x" % space.mode.facts.page_sizes[-1])
    entry = len("%#x" % ((1 << (8 * space.mode.entry_size)) - 1))
    return [va, pa, page, entry, 9]


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
        emit(out, args.format, records, text=text, columns=ALIAS_COLUMNS,
             hex_columns=("va", "pa", "page_start", "page_size"))
    return 0


_PRINTABLE = bytes(b if 0x20 <= b < 0x7F else ord(".") for b in range(256))


def hexdump(data: bytes, address: int) -> str:
    """16 bytes a line: address, hex bytes, the printable ASCII (others as '.')."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset:offset + 16]
        lines.append("%016x  %-47s  |%s|" % (address + offset, chunk.hex(" "),
                                            chunk.translate(_PRINTABLE).decode("ascii")))
    return "\n".join(lines)


READ_PIECE = 1 << 20      # bytes read, formatted and written at a time


def _pieces(space: AddressSpace, va: int, length: int):
    """(address, bytes) pieces of [va, va+length) up to the first missing
    byte, then None or the error that stopped the read."""
    done = 0
    while done < length:
        data, error = space.read_available(va + done, min(READ_PIECE, length - done))
        if data:
            yield va + done, data
        done += len(data)
        if error is not None:
            yield None, error
            return


# `read --dwords/--qwords`: the unit each shows (--dps: the target's pointer).
VIEW_SIZES = {"dwords": 4, "qwords": 8}
UNIT_COLUMNS = ("address", "value")
DPS_COLUMNS = ("address", "value", "symbol")


def _spans(space, va: int, length: int, errors: list):
    """(address, bytes) for what can be read and (address, count) for what
    cannot, in order, covering [va, va+length): after a gap the read goes on
    at the next 4 KiB page (the smallest unit of mapping), as WinDbg's d*
    commands go on past unreadable memory. The first error is appended to
    ``errors``."""
    from ..errors import InvalidAddressError
    pos, end = va, va + length
    while pos < end:
        try:
            data, error = space.read_available(pos, min(READ_PIECE, end - pos))
        except InvalidAddressError as exc:     # past the top, or into the canonical hole
            errors.append(exc)
            yield pos, end - pos
            return
        if data:
            yield pos, data
            pos += len(data)
        if error is not None:
            errors.append(error)
            gap_end = min((pos | 0xFFF) + 1, end)
            yield pos, gap_end - pos
            pos = gap_end


def _units(spans, va: int, size: int):
    """(address, little-endian value or None) for each size-byte unit from va;
    a unit with any unreadable byte is None (WinDbg's question marks)."""
    whole = struct.Struct("<I" if size == 4 else "<Q")
    address, held, filled, bad = va, b"", 0, False
    for _where, piece in spans:
        if isinstance(piece, int):                      # unreadable bytes
            count = piece
            if filled:                                  # the unit in progress is spoilt
                take = min(size - filled, count)
                filled, count, bad = filled + take, count - take, True
                if filled < size:
                    continue
                yield address, None
                address, held, filled, bad = address + size, b"", 0, False
            whole_units = count // size
            for i in range(whole_units):
                yield address + i * size, None
            address += whole_units * size
            if count % size:
                held, filled, bad = b"", count % size, True
            continue
        data = piece
        if filled:                                      # finish the unit in progress
            take = min(size - filled, len(data))
            held, filled, data = held + data[:take], filled + take, data[take:]
            if filled < size:
                continue
            yield address, None if bad else whole.unpack(held)[0]
            address, held, filled, bad = address + size, b"", 0, False
        count = len(data) // size
        for i, (value,) in enumerate(whole.iter_unpack(data[:count * size])):
            yield address + i * size, value
        address += count * size
        if len(data) % size:
            held, filled, bad = data[count * size:], len(data) % size, False


def _address_bits(space, memory) -> int:
    """32 or 64: how wide the target's addresses and pointers are."""
    if getattr(memory, "virtual", False):                  # a minidump: its system info
        info = getattr(getattr(memory, "container", None), "system_info", None)
        return 32 if info is not None and info.arch == "x86" else 64
    return 32 if space.mode in (PagingMode.BITS32, PagingMode.PAE) else 64


def _binary_output(args, out):
    """Where --raw writes: --output FILE, or standard output's bytes (never a terminal)."""
    if args.output is not None:
        try:
            return open(args.output, "wb"), True
        except OSError as exc:
            from ..errors import OutputError
            raise OutputError("cannot write %s: %s" % (args.output, exc.strerror or exc)) \
                from None
    if _is_terminal(out):
        raise UsageError("argument --raw: standard output is a terminal: redirect it (> FILE, "
                         "| xxd) or give --output FILE")
    binary = getattr(out, "buffer", None)
    if binary is None:
        raise UsageError("argument --raw: this standard output takes text only: give "
                         "--output FILE")
    out.flush()
    return binary, False


def _check_read_options(args, view: Optional[str]) -> None:
    if args.output is not None and view != "raw":
        raise UsageError("argument --output: only with --raw (other views are text: "
                         "redirect them with >)")
    if view == "raw" and args.format != "table":
        raise UsageError("argument --raw: raw bytes have no --format (json, jsonl and csv "
                         "are for the hexdump and the typed views)")
    if args.symbols is not None and view != "dps":
        raise UsageError("argument --symbols: names pointers only with --dps")


def _write_raw(space, va: int, length: int, args, out) -> None:
    sink, close = _binary_output(args, out)
    error = None
    try:
        for where, piece in _pieces(space, va, length):
            if where is None:
                error = piece
                break
            try:
                sink.write(piece)
            except BrokenPipeError:
                raise
            except OSError as exc:
                from ..errors import OutputError
                raise OutputError("cannot write %s: %s" % (
                    args.output or "standard output", exc.strerror or exc)) from None
        sink.flush()
    finally:
        if close:
            sink.close()
    if error is not None:
        raise error


def _write_units(space, memory, va: int, length: int, args, out, view: str) -> None:
    bits = _address_bits(space, memory)
    size = bits // 8 if view == "dps" else VIEW_SIZES[view]
    if length % size:
        raise UsageError("argument LEN: %#x is not a whole number of %d-byte units (--%s)"
                         % (length, size, view))
    symbols = load_symbols(args) if view == "dps" else None
    errors: list = []
    units = _units(_spans(space, va, length, errors), va, size)
    fmt = args.format
    if fmt == "table":
        write = out.write
        if view == "dps":
            for address, value in units:
                write(dps_line(address, value, size, bits, _symbol_name(symbols, value)) + "\n")
        else:
            row: list = []
            for unit in units:
                row.append(unit)
                if len(row) == UNITS_PER_LINE[size]:
                    write(dump_lines(row, size, bits)[0] + "\n")
                    row = []
            if row:
                write(dump_lines(row, size, bits)[0] + "\n")
    else:
        if view == "dps":
            records = ({"address": a, "value": v, "symbol": _symbol_name(symbols, v)}
                       for a, v in units)
            columns = DPS_COLUMNS
        else:
            records = ({"address": a, "value": v} for a, v in units)
            columns = UNIT_COLUMNS
        emit_stream(out, fmt, records, columns, [2 + bits // 4, 2 + size * 2, 0],
                    hex_columns=("address", "value"))
    if errors:
        _note(args, "some of the %#x bytes at %#x cannot be read (the first: %s): shown as %s"
              % (length, va, errors[0], "null" if fmt in ("json", "jsonl")
                 else "empty cells" if fmt == "csv" else "????????"))


def _symbol_name(symbols, value: Optional[int]) -> Optional[str]:
    """``name+0x10`` when value lies inside a symbol (dps), else None."""
    if symbols is None or value is None:
        return None
    found = symbols.containing(value)
    if found is None:
        return None
    symbol, offset = found
    name = symbol.name if not offset else "%s+%#x" % (symbol.name, offset)
    return name + (" [%s]" % symbol.module if symbol.module else "")


def _note(args, text: str) -> None:
    from ._args import note
    note(args, text)


@names_input("image")
def cmd_read(args, out: IO[str]) -> int:
    """Streamed: at most READ_PIECE bytes are held at a time, whatever LEN is."""
    va = parse_int(args.va, "VA")
    length = parse_int(args.length, "LEN")
    if length > MAX_READ:
        raise UsageError("argument LEN: at most %#x bytes" % MAX_READ)
    view = args.view
    _check_read_options(args, view)
    with _open(args) as memory:
        # A minidump is the process's virtual memory itself: read it without paging.
        space = memory if getattr(memory, "virtual", False) else _space(args, memory)
        space.read_available(va, 0)                  # a bad address fails before any output
        if view == "raw":
            _write_raw(space, va, length, args, out)
            return 0
        if view is not None:
            _write_units(space, memory, va, length, args, out, view)
            return 0
        error = None
        if args.format == "csv":
            # CSV gives the length before the data: count what is readable first.
            readable = 0
            for where, piece in _pieces(space, va, length):
                if where is None:
                    break
                readable += len(piece)
            out.write("va,length,data\n%#x,%d," % (va, readable))
        elif args.format in ("json", "jsonl"):
            out.write('{"va": %d, "data": "' % va)
        total = 0
        for where, piece in _pieces(space, va, length):
            if where is None:
                error = piece
                break
            total += len(piece)
            if args.format == "table":
                out.write(hexdump(piece, where) + "\n")
            else:
                out.write(piece.hex())
        if args.format in ("json", "jsonl"):
            out.write('", "length": %d}\n' % total)
        elif args.format == "csv":
            out.write("\n")
        if error is not None:
            raise error
    return 0


def _add_max_entries(p) -> None:
    """The walk's work cap, for the commands that enumerate (maps, ptov)."""
    p.add_argument("--max-entries", type=count_argument("--max-entries", 1, (1 << 64) - 1),
                   default=DEFAULT_MAX_ENTRIES, metavar="N",
                   help="stop after reading N paging entries (default 2^%d; 1 to 2^64-1: "
                        "there is no unlimited walk)" % (DEFAULT_MAX_ENTRIES.bit_length() - 1))


def _common(p) -> None:
    add_image(p)
    add_page_tables(p, "page-table root (default: the image's CR3)",
                    "paging mode (default: from the image's CR0/CR4/EFER; --mode is an alias)")
    add_maxphyaddr(p, "physical-address width, 32..52 (default 52)")
    p.add_argument("--ignore-reserved", action="store_true",
                   help="follow entries with reserved bits set (the processor faults on them)")


def _output_options(p, formats, help_text: str) -> None:
    """--format/--json as the shared output options declare them, with this
    command's own list of formats (maps adds qemu)."""
    group = p.add_argument_group("output")
    group.add_argument("--format", choices=formats, default=None, help=help_text)
    group.add_argument("--json", dest="format", action="store_const", const="json",
                       help="short for --format json")


def register(sub, output) -> None:
    p = sub.add_parser("vtop", parents=[output], help="translate linear addresses",
                       description=(
                           "Translate linear (virtual) addresses through the page tables CR3 "
                           "names (SDM vol. 3A §4.3-4.6): physical address, page size, "
                           "effective rights and the whole walk, with each level's PFN and "
                           "WinDbg !pte letters (C G L D A N T U/K W/R E V, e.g. "
                           "---DA--KWEV; JSON: pfn and flags on each path step). Numbers are "
                           "hex; prefix 0n for decimal. With --symbols an address may be a "
                           "symbol: NAME, NAME+OFFSET or NAME-OFFSET (a word that reads as a "
                           "hex number is that number)."))
    _common(p)
    p.add_argument("va", metavar="VA", nargs="*",
                   help="linear addresses (hex), or with --symbols NAME[+-OFFSET]")
    p.add_argument("--from-file", metavar="F", help="more addresses, one or more per line "
                                                    "(- for stdin; # starts a comment; a "
                                                    "regular file of at most %s)"
                                                    % cap_text("addresses"))
    add_symbols(p, "System.map or kallsyms (.xz/.gz ok) whose names VA may use")
    add_svg_option(p)
    p.set_defaults(func=cmd_vtop)

    p = sub.add_parser("maps", help="list every mapped range (or page)",
                       description=(
                           "List every mapped linear range, merged (like QEMU's `info mem`, "
                           "plus NX, physical address and page size), or with --pages every "
                           "mapped page (like QEMU's `info tlb`). Rows are written as the "
                           "walk finds them; on a terminal a progress bar shows on stderr "
                           "while the rows go to a file or a pipe. --format qemu prints "
                           "QEMU's own monitor text: `info mem` (ranges merged on R/W and "
                           "U/S), or `info tlb` with --pages (the leaf entry masked as QEMU "
                           "masks it, and its XGPDACTUW letters)."))
    _output_options(p, FORMATS + ("qemu",), "table (the default), json, jsonl, csv, or qemu: "
                    "QEMU's `info mem` text (`info tlb` with --pages)")
    _common(p)
    p.add_argument("--range", metavar="START-END", help="only this range (hex, END exclusive)")
    p.add_argument("--pages", action="store_true",
                   help="one row per mapped page (va, pa, page_size, the leaf entry and its "
                        "`info tlb` letters XGPDACTUW) instead of merged ranges")
    p.add_argument("--merge", choices=("contiguous", "rights"), default=None,
                   help="contiguous: merge pages with contiguous physical addresses and equal "
                        "rights and page size (default); rights: merge on equal R/W and U/S "
                        "alone, as QEMU's `info mem` (what --format qemu uses)")
    _add_max_entries(p)
    p.add_argument("--max-ranges", type=int, default=MAX_LISTED_RANGES, metavar="N",
                   help="stop after listing N rows: ranges, or pages with --pages "
                        "(default %d)" % MAX_LISTED_RANGES)
    p.set_defaults(func=cmd_maps)

    p = sub.add_parser("ptov", parents=[output], help="physical to linear addresses",
                       description="Every linear address that maps a physical address.")
    _common(p)
    p.add_argument("pa", metavar="PA", help="the physical address (hex)")
    _add_max_entries(p)
    p.add_argument("--max-aliases", type=int, default=DEFAULT_MAX_ALIASES, metavar="N",
                   help="stop after finding N linear addresses (default %d)"
                        % DEFAULT_MAX_ALIASES)
    p.set_defaults(func=cmd_ptov)

    p = sub.add_parser("read", parents=[output], help="read linear memory (hexdump, raw, "
                                                      "dwords, qwords, pointers)",
                       description=(
                           "Read LEN bytes of linear memory at VA (both hex). The hexdump "
                           "(default) and --raw stop at the first byte that is not mapped or "
                           "not in the image (exit status 1). --dwords and --qwords show the "
                           "bytes as WinDbg's dd and dq do (the address, then four dwords or "
                           "two qwords a line, little-endian) and --dps one pointer a line "
                           "named through --symbols as NAME+0xOFF when it lies inside a "
                           "symbol (WinDbg's dps); these go on past unreadable memory, shown "
                           "as ???????? (JSON null, an empty CSV cell), with one note on "
                           "stderr. JSON, JSON lines and CSV give one record per unit: "
                           "address and value."))
    _common(p)
    p.add_argument("va", metavar="VA", help="the first linear address (hex)")
    p.add_argument("length", metavar="LEN", help="how many bytes (hex; 0n for decimal); a "
                                                 "whole number of units for the typed views")
    views = p.add_mutually_exclusive_group()
    views.add_argument("--raw", dest="view", action="store_const", const="raw",
                       help="write the bytes themselves, to --output FILE or to standard "
                            "output (refused on a terminal)")
    views.add_argument("--dwords", dest="view", action="store_const", const="dwords",
                       help="4-byte values, four a line (WinDbg dd)")
    views.add_argument("--qwords", dest="view", action="store_const", const="qwords",
                       help="8-byte values, two a line (WinDbg dq)")
    views.add_argument("--dps", dest="view", action="store_const", const="dps",
                       help="pointer-sized values (4 or 8 bytes, from the paging mode), one a "
                            "line, each with its symbol (WinDbg dps)")
    p.add_argument("--output", metavar="FILE", help="with --raw: write the bytes to FILE")
    add_symbols(p, "System.map or kallsyms (.xz/.gz ok) that names the pointers of --dps")
    p.set_defaults(func=cmd_read, view=None)
