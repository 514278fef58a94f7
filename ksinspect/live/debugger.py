"""The breakpoint lab's front door: ``Debugger``, the name scripts and
notebooks use, and the values it reports.

``Debugger`` is the backend of this system, with one interface:

* Linux x86-64: :class:`~ksinspect.live.ptrace_debugger.PtraceDebugger`
  (ptrace; the module explains the three kinds of breakpoint there);
* Windows (or the Windows CPython under Wine):
  :class:`ksinspect.live.win32_debugger.Debugger` (the Win32 debug API).

What both share is in :mod:`ksinspect.live.debug_session` (bookkeeping,
arming, the close) and :mod:`ksinspect.live.debug_events` (breakpoints,
hits, exits, the cleanup report)::

    from ksinspect.live.debugger import Debugger, HardwareHit
    with Debugger.start(["./calls", "5"]) as dbg:
        dbg.add_hardware("counter", "write", 4)
        for event in dbg.events(count=5, timeout=5):
            print(event)
"""
import sys

from .debug_events import (PROT_EXEC, PROT_READ, PROT_WRITE, CleanupReport,
                           Event, ExecEvent, ExitEvent, GuardHit, GuardPage, HardwareBreakpoint,
                           HardwareHit, SignalEvent, SoftwareBreakpoint, SoftwareHit,
                           WindowsGuardPage, prot_text)
from .debug_session import DebugSession
from .ptrace_debugger import PtraceDebugger, Tracee, signal_name

if sys.platform == "win32":
    # On Windows the name scripts use is the Win32 debug API backend, so that a
    # script or notebook written for the ptrace lab runs there unchanged.
    from .win32_debugger import Debugger
else:
    Debugger = PtraceDebugger

__all__ = ["Debugger", "PtraceDebugger", "DebugSession", "Tracee", "signal_name", "prot_text",
           "PROT_READ", "PROT_WRITE", "PROT_EXEC", "Event", "HardwareHit", "SoftwareHit",
           "GuardHit", "SignalEvent", "ExitEvent", "ExecEvent", "CleanupReport",
           "HardwareBreakpoint", "SoftwareBreakpoint", "GuardPage", "WindowsGuardPage"]
