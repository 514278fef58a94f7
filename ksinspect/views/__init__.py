"""Views of the values: how they are explained and drawn, apart from what they are.

* :mod:`.explanation` -- the explanation model (``BitField``, ``Explanation``)
  that every value's ``explain()`` and pictures are drawn from;
* :mod:`.bitfield_svg` -- a value's bits as an SVG diagram;
* :mod:`.walk_svg` -- a page walk (CR3, each level, the page) as an SVG;
* :mod:`.html` -- escaped notebook views (``_repr_html_``): one function per
  kind of value (a descriptor table, an IDT, a TSS, an access, a control
  transfer, a walk);
* :mod:`.columns` -- one column spec per kind of table row (a GDT/LDT slot,
  an IDT vector), laid out alike by the CLI and by the notebook views;
* :mod:`.text` -- text tables, and the ``explain()`` text of the values that
  are lists of checks (an access, a control transfer, a TSS);
* :mod:`.colours` -- one colour per field name, shared by every picture;
* :mod:`.qemu_text` -- QEMU's ``info mem`` / ``info tlb`` lines of a walk;
* :mod:`.windbg` -- WinDbg's ``!pte`` letters and ``dd``/``dq``/``dps`` lines.

Views import only the mode facts (:mod:`ksinspect.modes`) and the text
escaping (:mod:`ksinspect.safe_text`), and take the values they draw as
arguments; the values keep ``explain()``, ``_repr_html_()`` and ``to_svg()``
as one-line calls into here, so no arrow points up (tests/test_layers.py). Command-line output (tables, JSON, CSV)
is :mod:`ksinspect.render`.
"""
