"""`python -m actors.work_tracker list|clean|...`: the WorkTracker's command line.

Kept under this name because it is the command the design card and the README
give; the tracker itself is the `actors.tracker` package.
"""

import sys

from actors.tracker.cli import main

if __name__ == "__main__":
    sys.exit(main())
