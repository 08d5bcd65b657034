"""`python -m chatd run [options]`, the same as the `chatd` command."""

import sys

from chatd.cli import main

sys.exit(main())
