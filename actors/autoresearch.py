"""`python -m actors.autoresearch run|status|parse-log`: the AutoResearch command line.

Kept under this name because it is the command the README gives; the loop
itself is the `actors.research` package.
"""

import sys
from pathlib import Path

# `python -m` puts the working directory first on sys.path. Run from inside a research
# repository laid out like karpathy/autoresearch, its train.py would shadow our `train`
# package (and start a training run on import): our own packages come first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.research.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
