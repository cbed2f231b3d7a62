"""``python -m whisperopt.cli``: the ``whisperopt`` program."""

import sys

from . import main

sys.exit(main())
