"""`python -m studio …`: see studio.cli (`python -m studio --help`)."""

from studio.cli.main import main

raise SystemExit(main())
