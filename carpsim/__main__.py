"""`python -m carpsim` runs the CLI."""

import sys

from carpsim.cli import main

sys.exit(main())
