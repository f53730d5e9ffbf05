"""The checkout's root folder, wherever a test file sits below tests/: the tests that start
the project's commands in new processes put it on their PYTHONPATH (and run there), and
some read its files (README.md, bench/, tests/data/)."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
