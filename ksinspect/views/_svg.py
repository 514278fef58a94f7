"""A few SVG primitives shared by the diagrams: escaping, text fitting, colours.

Every piece of text goes through :func:`esc` (XML escaping, quotes too), so
a string read from a dump cannot inject markup into a notebook or a slide.
Text is set in a monospace font, so its width can be estimated without a
font engine.
"""
from typing import List, Sequence

FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
CHAR_WIDTH = 0.61          # advance of one monospace character, in font sizes
# What xml.sax.saxutils.escape(text, {'"': "&quot;", "'": "&#x27;"}) does,
# without importing it: xml.sax pulls in urllib, http, email and ssl
# (0.06-0.13 s, most of the command line's start).
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                          "'": "&#x27;"})

# Meaningful fields are filled by name (views/colours.py); reserved and
# ignored bits are grey and hatched, anomalies red (see PATTERNS).
EDGE = "#5b5b5b"
ANOMALY = "#c0392b"

PATTERNS = """<defs>
<pattern id="ksi-reserved" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
<rect width="6" height="6" fill="#e3e3e3"/><line x1="0" y1="0" x2="0" y2="6" stroke="#b4b4b4" stroke-width="2"/></pattern>
<pattern id="ksi-ignored" width="6" height="6" patternUnits="userSpaceOnUse">
<rect width="6" height="6" fill="#f3f3f3"/><circle cx="3" cy="3" r="0.9" fill="#bdbdbd"/></pattern>
<pattern id="ksi-anomaly" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
<rect width="6" height="6" fill="#fadbd8"/><line x1="0" y1="0" x2="0" y2="6" stroke="#e6a19a" stroke-width="2"/></pattern>
</defs>"""


def esc(text: object) -> str:
    """XML-escape text for element content and attribute values."""
    return str(text).translate(_ESCAPES)


def text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_WIDTH


def fit(text: str, width: float, size: float) -> str:
    """Cut text to fit width at this font size (an ellipsis marks the cut)."""
    room = int(width / (size * CHAR_WIDTH))
    if len(text) <= room:
        return text
    if room <= 1:
        return text[:max(room, 0)]
    return text[:room - 1] + "\u2026"


def wrap(text: str, columns: int) -> List[str]:
    """Greedy word wrap; words longer than a line are cut."""
    lines: List[str] = []
    line = ""
    for word in text.split():
        while len(word) > columns:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:columns])
            word = word[columns:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= columns:
            line += " " + word
        else:
            lines.append(line)
            line = word
    if line or not lines:
        lines.append(line)
    return lines


def text(x: float, y: float, content: str, size: float = 11, anchor: str = "start",
         cls: str = "", weight: str = "normal", fill: str = "#222") -> str:
    attributes = ' class="%s"' % esc(cls) if cls else ""
    bold = ' font-weight="bold"' if weight != "normal" else ""
    return ('<text x="%.1f" y="%.1f" font-size="%g" text-anchor="%s" fill="%s"%s%s>%s</text>'
            % (x, y, size, anchor, fill, bold, attributes, esc(content)))


def document(width: float, height: float, body: Sequence[str], title: str) -> str:
    """A standalone SVG document (white background, patterns defined)."""
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
            'viewBox="0 0 %d %d" font-family="%s">\n<title>%s</title>\n%s\n'
            '<rect width="100%%" height="100%%" fill="#ffffff"/>\n%s\n</svg>\n'
            % (width, height, width, height, esc(FONT), esc(title), PATTERNS, "\n".join(body)))
