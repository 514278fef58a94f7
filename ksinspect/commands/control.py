"""Control-register decoders: cr0, cr4, efer, rflags, pf (the #PF error code)."""
from ..render import emit
from ..x86.control import REGISTER_TYPES, OperatingMode
from ._args import add_svg_option, parse_int
from .decode import emit_value

_HELP = {
    "cr0": ("decode CR0", "Decode CR0 (Intel SDM vol. 3A §2.5, Figure 2-7)."),
    "cr4": ("decode CR4", "Decode CR4 (Intel SDM vol. 3A §2.5, Figure 2-7)."),
    "efer": ("decode IA32_EFER", "Decode the IA32_EFER MSR C000_0080h (Intel SDM vol. 3A "
                                 "§2.2.1; AMD APM vol. 2 §3.1.7)."),
    "rflags": ("decode RFLAGS / EFLAGS", "Decode RFLAGS or EFLAGS (Intel SDM vol. 1 §3.4.3, "
                                         "Figure 3-8)."),
    "pf": ("decode a page-fault error code", "Decode the error code #PF pushes (Intel SDM "
                                             "vol. 3A §4.7, Figure 4-12)."),
}


def _command(register):
    def run(args, out):
        value = REGISTER_TYPES[register].decode(parse_int(args.value, "VALUE"))
        return emit_value(args, out, value)
    return run


def cmd_cpu_mode(args, out):
    mode = OperatingMode.of(parse_int(args.cr0, "CR0"), parse_int(args.cr4, "--cr4"),
                            parse_int(args.efer, "--efer"), parse_int(args.rflags, "--rflags"),
                            args.cs_long)
    document = mode.to_dict()
    emit(out, args.format, [document], document=document, text=mode.explain())
    return 0


def register(sub, output) -> None:
    for name, (short, description) in _HELP.items():
        p = sub.add_parser(name, parents=[output], help=short,
                           description=description + " Numbers are hex; prefix 0n for decimal. "
                           "Reserved bits set are reported as anomalies.")
        p.add_argument("value", metavar="ERRORCODE" if name == "pf" else "VALUE",
                       help="the page-fault error code (hex)" if name == "pf" else
                       "the register's value (hex)")
        add_svg_option(p)
        p.set_defaults(func=_command(name))

    p = sub.add_parser("cpu-mode", parents=[output], help="the operating mode registers select",
                       description="Which of real-address, protected, virtual-8086, IA-32e "
                                   "compatibility and 64-bit mode, and which paging mode, CR0, "
                                   "CR4, IA32_EFER, RFLAGS and CS.L select (Intel SDM vol. 3A "
                                   "§2.2, Figure 2-3; §4.1.1, Table 4-1), with the combinations "
                                   "the processor refuses.")
    p.add_argument("cr0", metavar="CR0", help="CR0's value (hex)")
    p.add_argument("--cr4", default="0", metavar="X")
    p.add_argument("--efer", default="0", metavar="X")
    p.add_argument("--rflags", default="2", metavar="X")
    p.add_argument("--cs-long", action="store_true", help="CS.L=1 (a 64-bit code segment)")
    p.set_defaults(func=cmd_cpu_mode)
