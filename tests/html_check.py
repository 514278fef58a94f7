"""Structure checks for the notebook views (HTML with inline SVG).

The markup is well-formed XML, so it is parsed rather than matched: a
string that was not escaped would break the parse or add elements.
"""
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"


def parse_view(markup: str, must_contain: str) -> ET.Element:
    """Parse a ``_repr_html_`` result; check it holds an SVG picture and,
    as plain text, ``must_contain`` (typically the value's ``str()``)."""
    root = ET.fromstring(markup)
    assert root.find(".//%ssvg" % SVG) is not None, "no SVG picture in the view"
    text = "".join(root.itertext())
    assert must_contain in text, "%r not in the view's text" % must_contain
    return root
