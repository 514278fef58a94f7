"""Subcommands of the ``ksinspect`` tool, one module per concern.

Each module has ``register(subparsers, output)`` which adds its subcommands
(``output`` is the parent parser holding --format/--json) and sets ``func``
on each; a command function takes ``(args, out)`` and returns an exit status.
Commands parse and render; the library does the work.
"""
from ._args import HelpFormatter, Parser, UsageError, standard_input_refused

# What cli.py builds the top-level parser from (commands/_args.py is this
# package's own; these four are its public face).
__all__ = ["HelpFormatter", "Parser", "UsageError", "standard_input_refused"]
