"""Tests of ``studio`` (one file per module or command, mirroring the package)."""
