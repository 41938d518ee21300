"""`python -m tfod_wrap` is the `tfod-wrap` command."""

import sys

from tfod_wrap.cli import main

sys.exit(main())
