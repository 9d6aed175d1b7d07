"""The command line, `python -m studio <command>`, and the Python API behind it."""
