"""``python -m metaseg`` entry point."""

import sys

from metaseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
