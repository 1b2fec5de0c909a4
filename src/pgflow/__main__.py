"""``python -m pgflow``: the command line (see :mod:`pgflow.cli`)."""

from pgflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
