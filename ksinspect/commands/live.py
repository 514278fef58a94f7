"""``ksinspect live``: this machine's segments, as user mode can see them."""
from ..errors import UnsupportedError
from ..live import linux, segments
from ..render import emit, table

REGISTER_COLUMNS = ("register", "selector", "index", "table", "rpl", "kind", "type_name", "dpl",
                    "width", "limit", "base")
# What LAR/LSL tell user mode of each selector (no base: only the segment
# registers' bases are known here), not the columns of an image's GDT.
PROBED_SELECTOR_COLUMNS = ("selector", "index", "kind", "type_name", "dpl", "width", "limit",
                           "present")


def cmd_live(args, out):
    reason = linux.unavailable_reason()
    if reason:
        raise UnsupportedError("live: %s" % reason)
    if args.privileged:
        from .cpu import privileged_table_output
        return privileged_table_output(args, out)
    registers = [s.to_dict() for s in segments.live_segments()]
    visible = [v.to_dict() for v in segments.visible_gdt()]
    ldt = [d.to_dict() for d in segments.ldt()]
    cpu_umip = linux.cpu_has_umip()
    umip = {"cpu_has_umip": cpu_umip, "in_force": linux.umip_in_force() if cpu_umip else False}
    demo = segments.ldt_demo() if args.demo else None

    document = {"registers": registers, "gdt_visible": visible, "ldt": ldt, "umip": umip}
    if demo is not None:
        document["ldt_demo"] = demo.to_dict()
    records = ([dict(section="register", **r) for r in registers]
               + [dict(section="gdt-visible", **v) for v in visible]
               + [dict(section="ldt", **d) for d in ldt])

    text = ["Segment registers (descriptors rebuilt from LAR/LSL; LAR does not report the "
            "base, FS/GS bases come from arch_prctl):",
            table(registers, REGISTER_COLUMNS, hex_columns=("selector", "limit", "base")), "",
            "GDT descriptors visible from user mode (every selector probed with LAR and LSL "
            "at RPL 3):",
            table(visible, PROBED_SELECTOR_COLUMNS, hex_columns=("selector", "limit")), "",
            "LDT of this process (modify_ldt): %s" % (
                "%d descriptor(s)" % len(ldt) if ldt else "empty"),
            "UMIP: %s" % ("in force: SGDT/SIDT/SLDT/STR give dummy values or fault in user mode"
                          if umip["in_force"] else
                          "not in force" if cpu_umip else "not supported by this CPU")]
    if demo is not None:
        text += ["", "LDT demo (in a child process): wrote %s" % demo.selector,
                 demo.descriptor.explain(), "",
                 "Loaded into ES: ES = %#06x; the CPU's view through LAR/LSL: %s"
                 % (demo.loaded, demo.cpu_view)]
    emit(out, args.format, records, document=document, text="\n".join(text))
    return 0


def register(sub, output) -> None:
    p = sub.add_parser("live", parents=[output], help="this machine's segments (Linux x86)",
                       description="Decode this process's segment registers, the GDT entries "
                                   "user mode can see (LAR/LSL), the LDT (modify_ldt) and "
                                   "whether UMIP is in force.")
    p.add_argument("--demo", action="store_true",
                   help="write an LDT entry in a child process, load it into ES and decode it")
    p.add_argument("--privileged", action="store_true",
                   help="run each privileged instruction at CPL 3 in a child and set what the "
                        "CPU did beside what the SDM says (and which CR4 bits change it)")
    p.set_defaults(func=cmd_live)
