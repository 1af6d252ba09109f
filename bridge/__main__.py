"""`python -m bridge` runs the command-line interface."""

import sys

from bridge.cli import main

sys.exit(main())
