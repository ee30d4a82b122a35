"""`python -m modscope` runs the same command line as the `modscope` script."""

import sys

from modscope.cli import main

sys.exit(main())
