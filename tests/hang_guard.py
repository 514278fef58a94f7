"""A deadline for tests of hostile input: a body that runs too long fails
the test (SIGALRM) instead of hanging the suite.

Where there is no SIGALRM (Windows), a timer thread interrupts the main
thread instead (``_thread.interrupt_main``: a KeyboardInterrupt at the next
bytecode, which is turned into the same failure).
"""
import _thread
import signal
import threading
from contextlib import contextmanager

HANG_SECONDS = 20


@contextmanager
def deadline(seconds: int = HANG_SECONDS):
    message = "no answer after %d s: a hang" % seconds
    if not hasattr(signal, "SIGALRM"):
        fired = threading.Event()

        def interrupt():
            fired.set()
            _thread.interrupt_main()
        timer = threading.Timer(seconds, interrupt)
        timer.daemon = True
        timer.start()
        try:
            yield
        except KeyboardInterrupt:
            if fired.is_set():
                raise AssertionError(message) from None
            raise
        finally:
            timer.cancel()
        return

    def expired(_signum, _frame):
        raise AssertionError(message)
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
