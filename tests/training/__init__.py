"""Tests of ``training`` (one file per module or command, mirroring the package)."""
