"""Moved to fakes.py (the one module of shared test fakes); this name stays for branches still importing it."""
from fakes import *  # noqa: F401,F403
