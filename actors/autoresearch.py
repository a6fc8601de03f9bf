"""`python -m actors.autoresearch run|status|parse-log`: the AutoResearch command line.

Kept under this name because it is the command the README gives; the loop
itself is the `actors.research` package.
"""

import sys

from actors.research.cli import main

if __name__ == "__main__":
    sys.exit(main())
