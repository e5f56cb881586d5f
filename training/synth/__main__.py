"""``python -m training.synth``: see :mod:`training.synth.cli`."""

from training.synth.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
