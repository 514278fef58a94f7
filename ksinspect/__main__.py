"""``python -m ksinspect`` runs the command-line tool."""
import sys

from ._entry import main

sys.exit(main())
