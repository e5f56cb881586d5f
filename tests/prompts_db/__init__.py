"""Tests of ``prompts_db`` (one file per module or command, mirroring the package)."""
