"""The machine you are on: live selectors, the LDT, GDT probing with LAR/LSL.

Linux on x86 / x86-64 is in :mod:`ksinspect.live.linux`; its functions raise
:class:`ksinspect.errors.UnsupportedError` elsewhere, saying why.
"""
