"""Tests of ``metaseg`` (one file per module or command, mirroring the package)."""
