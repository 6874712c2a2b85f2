"""Test-session defaults shared by unit tests and notebook (nbval) tests.

Notebook kernels inherit this process's environment, so quick mode set here reaches them too.
"""

import os

# CI and the README's test command run every notebook in quick mode unless told otherwise.
os.environ.setdefault("DPEDU_QUICK", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
