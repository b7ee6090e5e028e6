"""Allows ``python -m watchdog``."""

from watchdog.app.cli import main

raise SystemExit(main())
