"""``python -m omniq``: the command line."""

import sys

from omniq.cli import main

sys.exit(main())
