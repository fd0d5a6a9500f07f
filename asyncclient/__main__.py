"""``python -m asyncclient``: the command line (see :mod:`asyncclient._cli`)."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
