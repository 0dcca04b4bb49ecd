"""One ComponentResource per infrastructure concern of a region stack (see infra/program.py)."""
