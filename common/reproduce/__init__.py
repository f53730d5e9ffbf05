"""The reproduction harness: every method x bit length trained, evaluated, tabulated, drawn.

``python -m common.reproduce`` (or ``./run.sh reproduce``) is the entry point; the work
is in :func:`common.reproduce.harness.reproduce`, which tests call directly.
"""
