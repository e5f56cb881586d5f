"""``python -m training.sweep``."""

from training.sweep.cli import main

raise SystemExit(main())
