"""`python -m memae_ts.cli` runs the command line."""

from memae_ts.cli import main

raise SystemExit(main())
