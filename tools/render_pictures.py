#!/usr/bin/env python3
"""Render one picture of each kind to PNG, to look at them.

    python tools/render_pictures.py                # the README's two pictures -> docs/images/
    python tools/render_pictures.py --all DIR      # all four kinds -> DIR

Needs the ``test`` extra (cairosvg, which needs Debian's libcairo2; matplotlib).
The pictures are drawn from the QEMU guests shipped in tests/data/qemu.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QEMU = os.path.join(ROOT, "tests", "data", "qemu")


def _space(profile):
    from ksinspect.memory import open_image
    from ksinspect.paging import AddressSpace
    return AddressSpace(open_image(os.path.join(QEMU, profile, "core-trimmed.elf.xz")))


def _png(svg, path, scale=1.5):
    import cairosvg
    cairosvg.svg2png(bytestring=svg.encode("utf-8"), write_to=path, scale=scale)
    print(path)


def _idt_gate():
    """The guest's page-fault gate (IDT vector 14), read at IDTR."""
    from ksinspect.memory import open_image
    from ksinspect.table_source import read_table
    from ksinspect.tables import decode_idt
    with open_image(os.path.join(QEMU, "x86_64-4level", "core-trimmed.elf.xz")) as memory:
        found = read_table(memory, "IDT")
        return decode_idt(found.data, found.mode)[14].gate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", metavar="DIR", help="write all four kinds to DIR")
    args = parser.parse_args(argv)
    out = args.all or os.path.join(ROOT, "docs", "images")
    os.makedirs(out, exist_ok=True)
    _png(_idt_gate().to_svg(), os.path.join(out, "idt-gate-bitfield.png"))
    _png(_space("x86_64-5level").translate(0x400123).to_svg(), os.path.join(out, "walk-5level.png"))
    if args.all:
        import matplotlib
        matplotlib.use("Agg")
        from ksinspect.render.address_map import plot_address_space, plot_page_sizes
        space = _space("x86_64-4level")
        for figure, name in ((plot_address_space(space), "address-map.png"),
                             (plot_page_sizes(space), "page-sizes.png")):
            figure.savefig(os.path.join(out, name), dpi=100)
            print(os.path.join(out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
