#!/usr/bin/env bash
# Run the whole reliability suite (slow parts included) and rewrite docs/RELIABILITY.md from it.
#
#   scripts/reliability_report.sh            # full run (~5-10 min on a loaded 2-core machine)
#   scripts/reliability_report.sh -x         # extra pytest arguments are passed through
#
# The report is written by tests/reliability/conftest.py only when METASEG_WRITE_RELIABILITY=1,
# so a normal `make test` never changes the committed file. The quick duplicates of the matrix
# tests (`[quick]`) are skipped here because their `[full]` twins cover every input.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export METASEG_WRITE_RELIABILITY=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
"$PY" -m pytest tests/reliability -m '' -k 'not quick' -q -p no:cacheprovider "$@"
echo "wrote docs/RELIABILITY.md"
