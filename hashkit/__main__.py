"""``python -m hashkit`` — the same as the ``hashkit`` console script."""

import sys

from hashkit.cli import main

sys.exit(main())
