"""Helpers for the end-to-end tests: shared workflows and subprocess workers (``python -m procs.…``)."""
