"""`python -m studio …`: see studio.cli (`python -m studio --help`)."""

from studio.cli import main

raise SystemExit(main())
