"""The reproduction harness: every method x bit length trained, evaluated, tabulated, drawn.

``python -m common.reproduce`` (or ``./run.sh reproduce``) is the entry point; the work
is in :func:`common.reproduce.harness.reproduce`, which tests call directly. Every deep
cell runs in a process of its own (``python -m common.reproduce.run_cell``, see
:mod:`common.reproduce.isolation`), so no cell inherits another's state.
"""
