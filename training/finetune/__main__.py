"""``python -m training.finetune`` (see :mod:`training.finetune.cli`)."""

import sys

from training.finetune.cli import main

sys.exit(main())
