"""``python -m crfpose``: the :mod:`crfpose.cli` command line."""

from crfpose.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
