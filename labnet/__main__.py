"""``python -m labnet``: see ``labnet.cli``."""

import sys

from .cli import main

sys.exit(main())
