"""Makes the test guards of ``cache_toys.py`` importable by the tests in this folder."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
