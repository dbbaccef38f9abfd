"""Offline training entry points: `python -m training.<name> --help`."""
