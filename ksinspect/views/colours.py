"""One colour per field, keyed by the field's name, in every picture.

A student who has learnt that DPL is pink in the code-segment picture
finds it pink in the TSS, gate and LDT pictures too; the parts of a split
field (Base 31:24, Base 23:16, Base 15:00) share the colour of the field
they belong to; the fields of one debug-register slot (L0, G0, R/W0, LEN0
in DR7, B0 in DR6) share the colour of that slot, so the picture groups
them as the manual's text does (SDM vol. 3B §17.2.4).

Fields not named below get a colour from the palette chosen by a stable
hash of their name (CRC-32, the same in every run and on every machine).
Reserved, ignored and anomalous bits are not coloured here: the diagrams
give them patterns (:data:`ksinspect.views._svg.PATTERNS`).
"""
import re
import zlib

__all__ = ["PALETTE", "FIELD_COLOURS", "SLOT_COLOURS", "colour_key", "field_colour"]

# Light fills that keep black text readable and stay apart from one another.
PALETTE = ("#cfe2f3", "#d9ead3", "#fff2cc", "#f4cccc", "#d9d2e9", "#fce5cd",
           "#d0e0e3", "#ead1dc", "#c9daf8", "#e6f4d7", "#f9e4b7", "#e0d7f5",
           "#cdeee9", "#f6d5c4", "#dfe8c4", "#f2d6ea", "#d6e4f0", "#efe3d0")

# DR0-DR3: one colour per breakpoint slot.
SLOT_COLOURS = ("#f6b26b", "#93c47d", "#6fa8dc", "#c27ba0")

# Names as the SDM figures spell them, with the bit range taken off
# (colour_key). Fields that sit side by side in one figure differ.
FIELD_COLOURS = {
    # segment descriptors and gates (Figures 3-8, 5-8, 5-9, 6-2, 6-8, 7-3, 7-4)
    "Base": "#cfe2f3", "Limit": "#fce5cd", "G": "#d9ead3", "D/B": "#fff2cc",
    "L": "#f4cccc", "AVL": "#d9d2e9", "P": "#d0e0e3", "DPL": "#ead1dc",
    "S": "#c9daf8", "Type": "#e6f4d7", "Offset": "#f9e4b7", "Segment Selector": "#e0d7f5",
    "TSS Selector": "#e0d7f5", "IST": "#cdeee9", "Param Count": "#f6d5c4",
    "Null": "#efe3d0",
    # selectors (Figure 3-6)
    "Index": "#cfe2f3", "TI": "#fff2cc", "RPL": "#ead1dc",
    # paging entries (Figures 4-4, 4-9, 4-11); P and G as above
    "R/W": "#f4cccc", "U/S": "#d9d2e9", "PWT": "#fce5cd", "PCD": "#ead1dc",
    "A": "#cdeee9", "D": "#f6d5c4", "PAT": "#c9daf8", "PS": "#f2d6ea",
    "PFN": "#cfe2f3", "Page frame": "#cfe2f3", "PA": "#cfe2f3",
    "PK": "#e0d7f5", "XD": "#f9e4b7",
    # DR7 and DR6 outside the slots (Figures 17-1, 17-2)
    "GD": "#d6e4f0", "RTM": "#dfe8c4", "GE": "#efe3d0", "LE": "#e0d7f5",
    "BT": "#d6e4f0", "BS": "#efe3d0", "BD": "#cdeee9", "BLD": "#f2d6ea",
    # EFLAGS
    "IOPL": "#ead1dc",
}

_RANGE = re.compile(r"\s+\d+:\d+$")
_SLOT = re.compile(r"^(?:L|G|R/W|LEN|B)([0-3])$")


def colour_key(name: str) -> str:
    """What a field's colour is keyed by: ``slot N`` for a debug-register
    slot's field, else the name without its trailing bit range."""
    slot = _SLOT.match(name)
    if slot:
        return "slot " + slot.group(1)
    return _RANGE.sub("", name)


def field_colour(name: str) -> str:
    """The fill of a meaningful field, the same wherever the name appears."""
    key = colour_key(name)
    if key.startswith("slot "):
        return SLOT_COLOURS[int(key[5:])]
    known = FIELD_COLOURS.get(key)
    if known is not None:
        return known
    return PALETTE[zlib.crc32(key.encode("utf-8")) % len(PALETTE)]
