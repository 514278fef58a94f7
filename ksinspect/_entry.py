"""The ``ksinspect`` console script: a Ctrl-C while the modules are still
being imported (the first few tenths of a second) ends with one line and
exit status 130, not a KeyboardInterrupt traceback. Kept tiny on purpose:
importing it imports nothing heavy."""
import sys


def main() -> int:
    try:
        from .cli import main as run
        return run()
    except KeyboardInterrupt:
        if sys.stderr is not None:
            try:
                sys.stderr.write("ksinspect: interrupted\n")
            except (OSError, ValueError):
                pass
        return 130
