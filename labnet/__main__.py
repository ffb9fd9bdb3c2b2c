"""``python -m labnet``: see ``labnet.cli``."""

import sys

from labnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
