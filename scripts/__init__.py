"""Experiment and maintenance scripts (run as files: ``.venv/bin/python scripts/NAME.py``)."""
