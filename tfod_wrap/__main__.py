"""`python -m tfod_wrap` is the `tfod-wrap` command."""

from tfod_wrap.cli import run

run()
