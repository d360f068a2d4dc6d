"""``python -m smithers``."""

from __future__ import annotations

import sys

from smithers.cli import main

sys.exit(main())
