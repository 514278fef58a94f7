"""Pictures of a whole address space, drawn with matplotlib (the ``notebooks`` extra).

A 64-bit address space is far too wide to draw to scale, so the map cuts
it into *regions*: runs of mappings whose gaps are smaller than ``gap``.
Each region is one row drawn to its own scale (its start and size are in
the row label); each mapped range is a bar coloured by its rights (W, X)
and hatched when user mode may touch it (U/S=1), its height saying the
page size. The histogram counts pages and bytes per page size.

Given the kernel's symbols (or ``layout="linux"``), each row is named
after the kernel region it lies in (direct map, vmalloc, vmemmap,
cpu_entry_area, espfix, kernel text, modules, fixmap...: the layouts of
:mod:`ksinspect.linux_layout`, from the kernel's mm.rst), rows are cut
where a region ends, and a dashed line marks the user/kernel split: the
non-canonical hole of an IA-32e space (drawn for any IA-32e space), or
PAGE_OFFSET on i386.

matplotlib is imported on first use, so the core never needs it.
"""
import bisect
import textwrap
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import UnsupportedError
from ..linux_layout import KernelLayout, linux_layout
from ..paging import AddressSpace
from ..modes import PagingMode, size_text

# Facecolours by (writable, executable): W+X stands out, as it should.
RIGHTS_COLOURS = {(True, True): "#d62728", (True, False): "#1f77b4",
                  (False, True): "#2ca02c", (False, False): "#9e9e9e"}
RIGHTS_LABELS = {(True, True): "W+X", (True, False): "W (no X)",
                 (False, True): "X (read-only)", (False, False): "read-only, no X"}


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise UnsupportedError("drawing needs matplotlib: pip install 'ksinspect[notebooks]'") \
            from None
    return plt


@dataclass(frozen=True)
class Region:
    """Adjacent mappings drawn as one row of the map."""

    start: int
    end: int
    ranges: Tuple[Tuple[int, int, bool, bool, bool, int], ...]  # start, size, W, U, NX, page size

    @property
    def mapped(self) -> int:
        return sum(r[1] for r in self.ranges)

    @property
    def user(self) -> bool:
        return any(r[3] for r in self.ranges)


def _rows(space_or_table: Any) -> List[Tuple[int, int, bool, bool, bool, int]]:
    table = space_or_table.mapping_table() if isinstance(space_or_table, AddressSpace) \
        else space_or_table
    return [(m.start, m.size, m.writable, m.user, m.nx, m.page_size) for m in table]


def regions(space_or_table: Any, gap: Optional[int] = None,
            cuts: Sequence[int] = ()) -> List[Region]:
    """Group the mapped ranges into regions separated by more than ``gap`` bytes
    (default: 256 MiB for IA-32e spaces, 64 MiB for 32-bit ones), and never
    across one of ``cuts`` (e.g. :meth:`KernelLayout.boundaries`)."""
    rows = sorted(_rows(space_or_table))
    if gap is None:
        wide = any(start >> 32 for start, *_ in rows)
        gap = (256 << 20) if wide else (64 << 20)
    cuts = sorted(cuts)
    result: List[Region] = []
    current: List[Tuple[int, int, bool, bool, bool, int]] = []
    for row in rows:
        if current and (row[0] - (current[-1][0] + current[-1][1]) > gap
                        or _crosses(cuts, current[0][0], row[0])):
            result.append(Region(current[0][0], current[-1][0] + current[-1][1], tuple(current)))
            current = []
        current.append(row)
    if current:
        result.append(Region(current[0][0], current[-1][0] + current[-1][1], tuple(current)))
    return result


def _crosses(cuts: Sequence[int], low: int, high: int) -> bool:
    """Is there a cut c with low < c <= high (a row may not hold both sides)?"""
    i = bisect.bisect_right(cuts, low)
    return i < len(cuts) and cuts[i] <= high


def kernel_layout_of(space_or_table: Any, symbols: Any = None,
                     layout: Any = None) -> Optional[KernelLayout]:
    """The layout a map is named by: ``layout`` itself, the Linux layout when
    asked (``"linux"``) or when the kernel's symbols are given, else None."""
    if isinstance(layout, KernelLayout):
        return layout
    if layout not in (None, "linux"):
        raise UnsupportedError("unknown layout %r (give 'linux' or a KernelLayout)" % (layout,))
    if (layout == "linux" or symbols is not None) and isinstance(space_or_table, AddressSpace):
        return linux_layout(space_or_table, symbols)
    return None


def _split(space_or_table: Any, layout: Optional[KernelLayout]) -> Optional[Tuple[int, int, str]]:
    """(user end, kernel start, label) of the user/kernel split, where it is known."""
    if layout is not None:
        user_end, kernel_start = layout.user_end, layout.kernel_start
    elif isinstance(space_or_table, AddressSpace) and \
            space_or_table.mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        # IA-32e: the lower canonical half is user space on every kernel
        user_end = 1 << (space_or_table.mode.facts.va_bits - 1)
        kernel_start = (1 << 64) - user_end
    else:
        return None                    # 32-bit: where the split is depends on the kernel
    if user_end == kernel_start:
        return user_end, kernel_start, "user/kernel split at %#x" % user_end
    return (user_end, kernel_start, "user/kernel split: the non-canonical hole %#x-%#x"
            % (user_end, kernel_start - 1))


def _height(page_size: int) -> float:
    return 0.3 if page_size <= 4096 else (0.65 if page_size < 1 << 30 else 0.9)


def plot_address_space(space_or_table: Any, ax: Any = None, gap: Optional[int] = None,
                       max_rows: int = 14, title: Optional[str] = None,
                       symbols: Any = None, layout: Any = None) -> Any:
    """Draw the map; returns the matplotlib Figure.

    Args:
        space_or_table: an AddressSpace, or the MappingTable it returned.
        ax: an Axes to draw into (default: a new figure).
        gap: bytes of unmapped space that split two regions.
        max_rows: regions drawn (the ones with most bytes mapped; the rest are counted).
        symbols: the kernel's SymbolTable (System.map, kallsyms): rows are named
            by the Linux layout, refined by the symbols and the image.
        layout: ``"linux"`` for the documented Linux layout without symbols,
            or a :class:`ksinspect.linux_layout.KernelLayout`.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch
    named = kernel_layout_of(space_or_table, symbols, layout)
    split = _split(space_or_table, named)
    cuts = list(named.boundaries()) if named else []
    if split:
        cuts += split[:2]
    found = regions(space_or_table, gap, cuts)
    shown = sorted(sorted(found, key=lambda r: -r.mapped)[:max_rows], key=lambda r: r.start)
    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 0.55 * max(len(shown), 3) + 1.6))
    else:
        fig = ax.figure
    ordered = list(reversed(shown))
    names = [named.name_of(r.start) if named else "" for r in ordered]
    # right-aligned tick labels line up in columns only if every column is padded
    widths = [max((len(n) for n in names), default=0),
              max((len("%#x" % r.start) for r in ordered), default=0),
              max((len(_size_text_loose(max(r.end - r.start, 1))) for r in ordered), default=0)]
    labels = []
    for row, region in enumerate(reversed(shown)):
        span = max(region.end - region.start, 1)
        groups: Dict[Tuple[bool, bool, bool, int], List[Tuple[float, float]]] = {}
        for start, size, writable, user, nx, page_size in region.ranges:
            groups.setdefault((writable, not nx, user, page_size), []).append(
                ((start - region.start) / span, max(size / span, 0.0015)))
        for (writable, executable, user, page_size), bars in groups.items():
            bars = _coalesce(bars)
            h = _height(page_size)
            ax.broken_barh(bars, (row - h / 2, h), facecolors=RIGHTS_COLOURS[writable, executable],
                           edgecolors="black" if user else "none", linewidth=0.4,
                           hatch="////" if user else None)
        label = "%*s  %*s  %-10s" % (widths[1], "%#x" % region.start, widths[2],
                                     _size_text_loose(span),
                                     "user" if region.user else "supervisor")
        labels.append("%-*s  %s" % (widths[0], names[row], label) if widths[0] else label)
    if split:
        # rows run from the highest address (row 0, at the bottom) up
        kernel_rows = sum(1 for r in shown if r.start >= split[1])
        if 0 < kernel_rows < len(shown):
            ax.axhline(kernel_rows - 0.5, color="black", linestyle="--", linewidth=1,
                       gid="user-kernel-split")
            ax.text(1.0, kernel_rows - 0.5, split[2] + "  (user above, kernel below)",
                    fontsize=7, ha="right", va="bottom", gid="user-kernel-split-label")
    if named:
        ax.annotate("\n".join(textwrap.wrap("regions: " + named.source, 110)), (0, 0),
                    (0, -34), xycoords="axes fraction", textcoords="offset points",
                    fontsize=7, color="#555", va="top", gid="layout-source")
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels(labels, fontsize=8, family="monospace")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, len(shown) - 0.3)
    ax.set_xlabel("position within the region (each row has its own scale; start and span "
                  "on the left)")
    hidden = len(found) - len(shown)
    ax.set_title(title or "Address space: %d regions%s" % (
        len(found), " (%d smallest not drawn)" % hidden if hidden else ""), fontsize=10)
    handles = [Patch(facecolor=RIGHTS_COLOURS[k], label=RIGHTS_LABELS[k]) for k in RIGHTS_COLOURS]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="////",
                         label="user (U/S=1)"))
    from matplotlib.lines import Line2D
    handles += [Line2D([0], [0], color="#9e9e9e", linewidth=width, label=label)
                for width, label in ((2.5, "4 KiB pages"), (5.5, "2 MiB / 4 MiB pages"),
                                     (8, "1 GiB pages"))]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _coalesce(bars: List[Tuple[float, float]], resolution: float = 0.0005
              ) -> List[Tuple[float, float]]:
    """Merge bars closer than the picture can show (65,536 espfix aliases become
    a few hundred bars: same picture, a fraction of the drawing time)."""
    merged: List[Tuple[float, float]] = []
    for x, w in sorted(bars):
        if merged and x <= merged[-1][0] + merged[-1][1] + resolution:
            last_x, last_w = merged[-1]
            merged[-1] = (last_x, max(last_x + last_w, x + w) - last_x)
        else:
            merged.append((x, w))
    return merged


def _size_text_loose(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return ("%d %s" if value == int(value) else "%.1f %s") % (value, unit)
    return "%d B" % size


def page_size_counts(space_or_table: Any) -> Dict[int, Tuple[int, int]]:
    """Page size -> (pages, bytes mapped)."""
    table = space_or_table.mapping_table() if isinstance(space_or_table, AddressSpace) \
        else space_or_table
    counts: Dict[int, Tuple[int, int]] = {}
    for page_size, size in zip(table.column("page_size"), table.column("size")):
        pages, total = counts.get(page_size, (0, 0))
        counts[page_size] = (pages + size // page_size, total + size)
    return dict(sorted(counts.items()))


def plot_page_sizes(space_or_table: Any, axes: Optional[Sequence[Any]] = None,
                    title: Optional[str] = None) -> Any:
    """Bar charts of the pages of each size, by count (log scale) and by bytes mapped."""
    plt = _pyplot()
    counts = page_size_counts(space_or_table)
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    else:
        fig = axes[0].figure
    names = [size_text(size) for size in counts]
    pages = [c[0] for c in counts.values()]
    mapped = [c[1] / (1 << 20) for c in counts.values()]
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"][:len(names)]
    bars = axes[0].bar(names, pages, color=colours)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("pages (log scale)")
    axes[0].bar_label(bars, labels=["{:,}".format(p) for p in pages], fontsize=8)
    bars = axes[1].bar(names, mapped, color=colours)
    axes[1].set_ylabel("MiB mapped")
    axes[1].bar_label(bars, labels=["%.1f" % m for m in mapped], fontsize=8)
    for ax in axes:
        ax.set_xlabel("page size")
        ax.margins(y=0.15)
    fig.suptitle(title or "Page sizes", fontsize=10)
    fig.tight_layout()
    return fig
