"""`python -m actors.scaler scan`: which MVEs the ScalerAgents would pick up."""

import sys

from actors.scaler.cli import main

sys.exit(main())
