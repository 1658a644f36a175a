"""``python -m onion.eval``: the same as ``onion eval``."""

from ._cli import main

raise SystemExit(main())
