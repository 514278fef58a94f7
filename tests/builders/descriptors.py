"""Descriptors packed from their fields, as the Intel SDM draws them (vol. 3A).

* :func:`segment_qword` -- a segment or system descriptor's (low) qword,
  Figure 3-8 (and Figure 7-3 for a TSS descriptor);
* :func:`gate_qword` -- a gate's low qword, Figures 5-8 (call gate), 6-2
  (interrupt, trap and task gates) and 6-8 (the low half of a 64-bit gate).

Written from the figures, not from ksinspect: a test that decodes one of
these checks the decoder against the manual's layout.
"""


def segment_qword(base: int = 0, limit: int = 0, type_: int = 0, s: int = 1, dpl: int = 0,
                  p: int = 1, avl: int = 0, l: int = 0, db: int = 0, g: int = 0) -> int:
    """Limit 15:0, base 23:0, type, S, DPL, P, limit 19:16, AVL, L, D/B, G, base 31:24."""
    return ((limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (type_ << 40) | (s << 44)
            | (dpl << 45) | (p << 47) | (((limit >> 16) & 0xF) << 48) | (avl << 52)
            | (l << 53) | (db << 54) | (g << 55) | (((base >> 24) & 0xFF) << 56))


def gate_qword(offset: int, selector: int, type_: int, dpl: int = 0, p: int = 1,
               byte4: int = 0) -> int:
    """Offset 15:0, selector, byte 4 (a call gate's parameter count, a 64-bit gate's
    IST), type, DPL, P, offset 31:16."""
    return ((offset & 0xFFFF) | (selector << 16) | (byte4 << 32) | (type_ << 40)
            | (dpl << 45) | (p << 47) | (((offset >> 16) & 0xFFFF) << 48))
