"""`python -m shiftbook` is the `shiftbook` command."""

import sys

from shiftbook.cli import main

sys.exit(main())
