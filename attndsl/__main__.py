"""``python -m attndsl``: the command line."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line loads: no traceback either
    print("interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
