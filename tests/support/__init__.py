"""Helpers the stages' test folders share (importable as `tests.support`: pytest puts the
repository root on sys.path, see pyproject.toml)."""
