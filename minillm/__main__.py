"""`python -m minillm ...`: the same command line as `minillm ...`."""

import sys

from minillm.cli import main

if __name__ == "__main__":
    sys.exit(main())
