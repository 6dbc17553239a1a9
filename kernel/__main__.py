"""``python -m ferrousforge`` is the ``forge`` command."""

from .cli.main import main

raise SystemExit(main())
