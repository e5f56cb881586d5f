"""Entry point of ``python -m prompts_db`` (see :mod:`prompts_db.cli`)."""

import sys

from prompts_db.cli import main

if __name__ == "__main__":
    sys.exit(main())
