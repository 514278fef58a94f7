"""The machine you are on: live selectors, the LDT, GDT probing with LAR/LSL,
and a breakpoint lab on a traced process (:mod:`ksinspect.live.debugger`,
over :mod:`ksinspect.live.ptrace` and :mod:`ksinspect.live.elf_symbols`).

Linux on x86 / x86-64 is in :mod:`ksinspect.live.linux`; its functions raise
:class:`ksinspect.errors.UnsupportedError` elsewhere, saying why.
"""
