"""Ending signals for a debugging session: a clean shutdown, never a damaged target.

A debugger that dies while its breakpoints are armed kills the program it
debugs: the next INT3 (0xCC) or debug-register hit raises SIGTRAP in a
process nobody traces, whose default action is to dump core. So every
signal that can end ksinspect and can be caught is turned into the same
path as Ctrl-C: an exception at a safe point, then a restore (bytes, debug
registers, page protections) and a detach, then exit.

The rule, the same for every backend (ptrace here, the Win32 debug API
under Windows):

* The **first** ending signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT) raises
  :class:`SessionInterrupted` (a ``KeyboardInterrupt``) in the main thread,
  but never inside a :func:`critical` section: one that arrives there is
  held and raised when the outermost section ends, so register surgery and
  single-steps are never cut in half.
* From that moment on, the handler never raises again: the **second** and
  every later ending signal (a second Ctrl-C 2 ms after the first, a third,
  a SIGTERM from a service manager that lost patience) are only counted,
  and the first of them calls the ``notice`` callback once (the CLI prints
  one line saying the restore goes on). Nothing but SIGKILL can stop a
  restore; the restore itself is bounded in time by the backend (each
  thread gets a few seconds to stop).
* A signal already ignored when the block starts (``nohup`` ignores SIGHUP,
  a shell's background job SIGINT) stays ignored.
* SIGPIPE is ignored, as Python does at start-up: a closed output makes the
  write fail with EPIPE (``BrokenPipeError``), which ends the session
  through the same restore.

Outside a :func:`shutdown_on_signals` block (a notebook calling the library)
:func:`critical` blocks SIGINT and SIGTERM with ``pthread_sigmask`` instead,
so a Ctrl-C lands after the section.

The exit status after a clean shutdown is ``128 + signal number`` (130 for
SIGINT, 143 for SIGTERM), what a shell reports for a program killed by it.
Which signal ended the session is decided by kind, not by arrival
(:func:`ending_signal`): a request to go away (SIGTERM, SIGHUP, SIGQUIT,
SIGBREAK) wins over Ctrl-C, because two signals pending at once are taken
lowest number first (the kernel delivers them so and Python runs their
handlers so), so a SIGTERM sent just before a Ctrl-C may be handled after it.
"""
import contextlib
import signal
import threading
from typing import Callable, Iterator, List, Optional

#: Signals that end a process by default and can be caught (POSIX; some do
#: not exist on Windows, where SIGINT comes from Ctrl-C and SIGBREAK from Ctrl-Break).
ENDING_SIGNALS = tuple(getattr(signal, name) for name in
                       ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGBREAK")
                       if hasattr(signal, name))


#: The ending signals that ask the process to go away rather than interrupt
#: what it does (a service manager, a closed terminal, Ctrl-\\, Ctrl-Break).
LEAVING_SIGNALS = tuple(s for s in ENDING_SIGNALS if s != signal.SIGINT)


class SessionInterrupted(KeyboardInterrupt):
    """An ending signal asked the session to stop (raised once, at a safe point).

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int):
        super().__init__(signal_label(signum))
        self.signum = signum

    @property
    def name(self) -> str:
        return signal_label(self.signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def signal_label(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


class _Session:
    """State of the installed handlers (one per process: handlers are global)."""

    def __init__(self, notice: Optional[Callable[[int, int], None]]):
        self.notice = notice
        self.received: List[int] = []      # every ending signal, in order
        self.raised = False                # the first one became an exception
        self.depth = 0                     # critical sections entered
        self.held: Optional[int] = None    # a first signal waiting for the section to end
        self.final = False                 # restoring: nothing raises any more

    def handler(self, signum, frame) -> None:
        self.received.append(signum)
        if len(self.received) > 1 or self.raised or self.final:
            # Already shutting down: never raise again, say so once.
            if len(self.received) == 2 and self.notice is not None:
                with contextlib.suppress(Exception):
                    self.notice(signum, len(self.received))
            return
        if self.depth:
            self.held = signum
            return
        self.raised = True
        raise SessionInterrupted(signum)

    def leave_critical(self) -> None:
        self.depth -= 1
        if self.depth == 0 and self.held is not None and not self.raised and not self.final:
            signum, self.held = self.held, None
            self.raised = True
            raise SessionInterrupted(signum)


_ACTIVE: Optional[_Session] = None


@contextlib.contextmanager
def shutdown_on_signals(notice: Optional[Callable[[int, int], None]] = None,
                        exiting: bool = False) -> Iterator["_Session"]:
    """Install the handlers for the block (main thread only; elsewhere a no-op).

    Args:
        notice: called once, as ``notice(signum, count)``, when a second
            ending signal arrives while the first one is being dealt with.
        exiting: the caller exits right after the block (a command line):
            after an ending signal, the ending signals are then left ignored
            instead of getting their old handlers back, so that a late one
            cannot kill the process on its way out.

    Yields the session state: ``received`` lists the signals taken.
    """
    global _ACTIVE
    state = _Session(notice)
    if threading.current_thread() is not threading.main_thread() or _ACTIVE is not None:
        yield _ACTIVE or state
        return
    previous = {}
    for signum in ENDING_SIGNALS:
        # A signal the user made us ignore (nohup's SIGHUP, a background
        # job's SIGINT) stays ignored: it cannot end us, so needs no care.
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue
        with contextlib.suppress(OSError, ValueError):
            previous[signum] = signal.signal(signum, state.handler)
    pipe = getattr(signal, "SIGPIPE", None)
    old_pipe = None
    if pipe is not None:
        old_pipe = signal.signal(pipe, signal.SIG_IGN)
    _ACTIVE = state
    try:
        yield state
    finally:
        # After an ending signal the process is on its way out: a late
        # second Ctrl-C must not kill it between here and the exit (the
        # interpreter puts SIG_DFL back for handled signals as it finalises,
        # not for ignored ones), so they are ignored from now on. Otherwise
        # the old dispositions come back.
        state.final = True
        _ACTIVE = None
        if state.received and exiting:
            previous = dict.fromkeys(previous, signal.SIG_IGN)
        for signum, old in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(signum, old if old is not None else signal.SIG_DFL)
        if pipe is not None and old_pipe is not None:
            signal.signal(pipe, old_pipe)


def first_signal() -> Optional[int]:
    """The first ending signal taken in the active block, if any."""
    if _ACTIVE is None or not _ACTIVE.received:
        return None
    return _ACTIVE.received[0]


def ending_signal(received) -> Optional[int]:
    """The signal a session with these ending signals ends by: the first that
    asks to go away (:data:`LEAVING_SIGNALS`), else the first SIGINT, else
    None. Arrival order cannot decide it (see the module's docstring)."""
    leaving = [s for s in received if s in LEAVING_SIGNALS]
    return leaving[0] if leaving else (received[0] if received else None)


_BLOCKED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
                 if hasattr(signal, n))


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section no ending signal may cut: one that arrives is raised after it.

    Inside :func:`shutdown_on_signals` this costs nothing (a counter); outside,
    the signals are blocked with ``pthread_sigmask`` (main thread only).
    """
    state = _ACTIVE
    if state is not None:
        state.depth += 1
        try:
            yield
        finally:
            state.leave_critical()
        return
    if (threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "pthread_sigmask")):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(_BLOCKED))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def restoring() -> Iterator[None]:
    """The restore at the end: from here on no ending signal raises, whether or
    not one started the shutdown; one that arrives now is only recorded
    (:func:`first_signal` tells the caller afterwards). Outside
    :func:`shutdown_on_signals` this is :func:`critical`."""
    state = _ACTIVE
    if state is None:
        with critical():
            yield
        return
    state.final = True
    yield
