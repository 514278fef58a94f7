"""A deadline for tests of hostile input: a body that runs too long fails
the test (SIGALRM) instead of hanging the suite."""
import signal
from contextlib import contextmanager

HANG_SECONDS = 20


@contextmanager
def deadline(seconds: int = HANG_SECONDS):
    def expired(_signum, _frame):
        raise AssertionError("no answer after %d s: a hang" % seconds)
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
