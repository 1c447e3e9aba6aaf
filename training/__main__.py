"""``python -m training``: see :mod:`training.cli`."""

import sys

from training.errors import missing_extra

try:
    from training.cli import main
except ModuleNotFoundError as e:  # numpy and the like: not even the command line loads
    print(missing_extra(e), file=sys.stderr)
    raise SystemExit(2) from None

raise SystemExit(main())
