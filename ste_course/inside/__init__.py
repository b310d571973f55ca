"""The code that runs inside the sandbox: the fork server and the harness that executes a
notebook's cells.

Nothing here imports the parent's side (collect, preflight, judge, record, grade, the CLI...):
``tests/test_layout.py`` enforces it. Besides this package, the sandbox imports only
``ste_utils``, the kernel-side checking helpers (``ste_course.checks``, ``ste_course.specs``,
``ste_course.evidence``) and third-party libraries.
"""
