"""`python tools/sample_data.py ARGS` is `tfod-wrap sample ARGS` (README, "The demo"): the sample dataset of
tfod_wrap.sample, for the scripts and notes that call it by this path."""

import sys

from tfod_wrap.cli import main

if __name__ == "__main__":
    sys.exit(main(["sample", *sys.argv[1:]]))
