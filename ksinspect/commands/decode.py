"""Single-value decoders: selector, desc, pte, dr7, dr6."""
from typing import IO, List, Optional, Sequence

from ..errors import DecodeError, EncodeError
from ..render import emit
from ..x86 import (DR6, DR7, LEVEL_NAMES, Breakpoint, PagingEntry, PagingMode,
                   SegmentDescriptor, Selector, encode_dr7)
from ._args import (UsageError, add_svg_option, parse_hex_bytes, parse_int,
                    split_breakpoint_spec, write_svg)
from .options import add_maxphyaddr, add_paging_mode


def emit_value(args, out: IO[str], value, records: Optional[List[dict]] = None,
                columns: Optional[Sequence[str]] = None) -> int:
    write_svg(getattr(args, "svg", None), value)
    document = value.to_dict()
    emit(out, args.format, records if records is not None else [_flat(document)],
         document=document, text=value.explain(), columns=columns)
    return 0


def _flat(record: dict) -> dict:
    return {k: v for k, v in record.items() if not isinstance(v, (dict,))}


def cmd_selector(args, out):
    return emit_value(args, out, Selector.decode(parse_int(args.value, "VALUE", 16)))


def cmd_desc(args, out):
    if args.bytes is not None:
        if args.qwords:
            raise UsageError("argument --bytes: give either QWORD [QWORD2] or --bytes, not both")
        data = parse_hex_bytes(args.bytes, "--bytes")
        if len(data) not in (8, 16):
            raise UsageError("argument --bytes: a descriptor is 8 or 16 bytes, got %d" % len(data))
        lo = int.from_bytes(data[:8], "little")
        hi = int.from_bytes(data[8:], "little") if len(data) == 16 else None
    else:
        if not args.qwords or len(args.qwords) > 2:
            raise UsageError("argument QWORD: give one or two qwords (or --bytes HEX)")
        lo = parse_int(args.qwords[0], "QWORD")
        hi = parse_int(args.qwords[1], "QWORD2") if len(args.qwords) == 2 else None
    return emit_value(args, out, SegmentDescriptor.decode(lo, hi, args.mode))


def cmd_pte(args, out):
    mode = PagingMode(args.mode)
    if args.level not in LEVEL_NAMES[mode]:
        raise UsageError("argument --level: level %d does not exist in %s paging (levels %s)" % (
            args.level, mode.value, ", ".join(str(n) for n in sorted(LEVEL_NAMES[mode]))))
    value = parse_int(args.value, "VALUE", 32 if mode is PagingMode.BITS32 else 64)
    pat = None if args.pat is None else parse_int(args.pat, "--pat")
    entry = PagingEntry.decode(value, mode, args.level, args.maxphyaddr, pat,
                               pse=not args.no_pse, nxe=not args.no_nxe)
    return emit_value(args, out, entry)


def parse_breakpoint(text: str) -> Breakpoint:
    """SLOT:CONDITION:LENGTH[:local|global|both][:ADDRESS]"""
    slot_text, cond, length, extras = split_breakpoint_spec(
        text, "--set", "SLOT:CONDITION:LENGTH[:local|global][:ADDRESS]")
    try:
        slot = int(slot_text, 10)
    except ValueError:
        raise UsageError("argument --set: %r: SLOT and LENGTH are decimal numbers" % text) from None
    scope, address = "local", None
    for extra in extras:
        if extra.lower() in ("local", "global", "both"):
            scope = extra.lower()
        else:
            address = parse_int(extra, "--set ADDRESS")
    return Breakpoint(slot, cond, length, scope, address)


def cmd_dr7(args, out):
    if args.value is not None and args.set:
        raise UsageError("argument --set: give a DR7 VALUE to decode or --set ... to encode, "
                         "not both")
    if args.value is None and not args.set:
        raise UsageError("argument VALUE: give a DR7 VALUE to decode, or --set ... to encode")
    long_mode = not args.legacy
    if args.value is not None:
        dr7 = DR7.decode(parse_int(args.value, "VALUE"), long_mode, args.cr4_de)
    else:
        requests = [parse_breakpoint(text) for text in args.set]
        try:
            dr7 = encode_dr7(requests, long_mode, args.cr4_de, args.le, args.ge, args.gd)
        except (EncodeError, DecodeError) as exc:
            raise UsageError("argument --set: %s" % exc) from None
    records = [dict(raw=dr7.raw, **b.to_dict()) for b in dr7.breakpoints]
    return emit_value(args, out, dr7, records,
                       ["raw", "index", "enabled", "local", "global", "condition", "length"])


def cmd_dr6(args, out):
    return emit_value(args, out, DR6.decode(parse_int(args.value, "VALUE")))


def _level(text: str) -> int:
    """--level as every number is typed (hex, 0n decimal); 1..5 is checked per mode."""
    return parse_int(text, "--level", 8)


def register(sub, output) -> None:
    p = sub.add_parser("selector", parents=[output], help="decode a segment selector",
                       description="Decode a 16-bit segment selector (SDM vol. 3A §3.4.2). "
                                   "Numbers are hex; prefix 0n for decimal.")
    p.add_argument("value", metavar="VALUE", help="the 16-bit selector (hex)")
    add_svg_option(p)
    p.set_defaults(func=cmd_selector)

    p = sub.add_parser("desc", parents=[output], help="decode a segment descriptor or gate",
                       description="Decode a segment descriptor or gate (SDM vol. 3A §3.4.5, "
                                   "§6.11, §6.14.1). QWORD2 is the upper half of a 16-byte "
                                   "IA-32e system descriptor.")
    p.add_argument("qwords", metavar="QWORD", nargs="*",
                   help="the descriptor as one 64-bit hex value (two for a 16-byte one: low "
                        "then high)")
    p.add_argument("--bytes", metavar="HEX", help="the descriptor in memory byte order")
    p.add_argument("--descriptor-format", "--mode", dest="mode", choices=("legacy", "long"),
                   default="long", help="protected (legacy) or IA-32e (long) mode; default "
                                        "long (--mode is an alias)")
    add_svg_option(p)
    p.set_defaults(func=cmd_desc)

    p = sub.add_parser("pte", parents=[output], help="decode a paging-structure entry",
                       description="Decode a paging-structure entry (SDM vol. 3A chapter 4).")
    p.add_argument("value", metavar="VALUE", help="the entry (hex)")
    add_paging_mode(p, "the paging mode the entry belongs to (--mode is an alias)",
                    required=True)
    p.add_argument("--level", type=_level, required=True,
                   help="1 = PTE, 2 = PDE, 3 = PDPTE, 4 = PML4E, 5 = PML5E (0x2 and 0n2 "
                        "too: numbers are hex everywhere)")
    add_maxphyaddr(p, "physical-address width (default 52)")
    p.add_argument("--pat", metavar="VALUE", help="IA32_PAT (default: the power-on value)")
    p.add_argument("--no-pse", action="store_true", help="CR4.PSE=0 (32-bit paging)")
    p.add_argument("--no-nxe", action="store_true", help="IA32_EFER.NXE=0: bit 63 is reserved")
    add_svg_option(p)
    p.set_defaults(func=cmd_pte)

    p = sub.add_parser("dr7", parents=[output], help="decode or encode DR7",
                       description="Decode DR7, or encode it with --set (SDM vol. 3B §17.2.4).")
    p.add_argument("value", metavar="VALUE", nargs="?",
                   help="a DR7 value to decode (hex); or give --set to encode one")
    p.add_argument("--set", action="append", metavar="SLOT:CONDITION:LENGTH[:local|global|both][:ADDRESS]",
                   help="a breakpoint to encode (repeat for more); CONDITION is execute, write, "
                        "io or readwrite; LENGTH 1, 2, 4 or 8 bytes")
    p.add_argument("--legacy", action="store_true", help="not 64-bit mode (length 8 undefined)")
    p.add_argument("--cr4-de", action="store_true", help="CR4.DE=1 (allows I/O breakpoints)")
    p.add_argument("--le", action="store_true", help="set LE (local exact)")
    p.add_argument("--ge", action="store_true", help="set GE (global exact)")
    p.add_argument("--gd", action="store_true", help="set GD (general detect)")
    add_svg_option(p)
    p.set_defaults(func=cmd_dr7)

    p = sub.add_parser("dr6", parents=[output], help="decode DR6",
                       description="Decode DR6 (SDM vol. 3B §17.2.3).")
    p.add_argument("value", metavar="VALUE", help="the DR6 value (hex)")
    add_svg_option(p)
    p.set_defaults(func=cmd_dr6)
