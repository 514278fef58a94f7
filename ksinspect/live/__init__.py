"""The machine you are on: live selectors, the LDT, GDT probing with LAR/LSL,
and a breakpoint lab on a traced process: :mod:`ksinspect.live.debugger`
(``Debugger``, this system's backend), over :mod:`ksinspect.live.ptrace_debugger`
(Linux, with :mod:`ksinspect.live.ptrace` and :mod:`ksinspect.live.elf_symbols`)
or :mod:`ksinspect.live.win32_debugger` (the Win32 debug API), which share
:mod:`ksinspect.live.debug_session` and :mod:`ksinspect.live.debug_events`.

Linux on x86 / x86-64 is in :mod:`ksinspect.live.linux`; its functions raise
:class:`ksinspect.errors.UnsupportedError` elsewhere, saying why.
"""
