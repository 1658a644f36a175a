"""``python -m onion``: the ``onion`` console script (``python -m onion serve`` …), for
environments where the script is not on ``PATH`` (a venv not activated, ``pipx run``)."""

from .cli import main

raise SystemExit(main())
