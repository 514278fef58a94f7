"""Text from the outside (a dump, a symbol file, a file name) made safe for a terminal.

A symbol name, an ELF note owner, a PEB string or a file name is hostile
input: ``\\x1b]0;owned\\x07`` sets a terminal's title, ``\\x1b[2J`` clears it,
a newline forges a second line of output, U+202E reverses what follows.
:func:`printable` escapes every character that is not printable
(``str.isprintable``: C0 and C1 controls, DEL, format characters such as the
bidirectional overrides, line and paragraph separators, lone surrogates)
and keeps the rest, non-ASCII letters included. Text outputs (tables,
explanations, error messages) use it; JSON keeps the exact string.
"""
__all__ = ["printable"]


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:               # a raw byte kept by surrogateescape
        return "\\x%02x" % (code - 0xDC00)
    if code < 0x100:
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, "\\x%02x" % code)
    if code < 0x10000:
        return "\\u%04x" % code
    return "\\U%08x" % code


def printable(text) -> str:
    """*text* with every non-printable character written as an escape
    (``\\x1b``, ``\\n``, ``\\u202e``); a backslash itself is kept as is.
    Anything that is not a string is converted with ``str()`` first."""
    if not isinstance(text, str):
        text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)
