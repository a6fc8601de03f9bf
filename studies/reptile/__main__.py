"""`python -m studies.reptile`: the Reptile N_tasks scaling study (see `studies.reptile.ntasks`)."""

import sys

from studies.reptile.ntasks import main

sys.exit(main())
