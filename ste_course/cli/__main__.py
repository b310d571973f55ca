"""``python -m ste_course.cli``: the ``ste-course`` command."""

import sys

from ste_course.cli import main

sys.exit(main())
