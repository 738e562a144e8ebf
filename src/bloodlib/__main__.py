"""``python -m bloodlib``: the command line (:mod:`bloodlib.cli`)."""
import sys

from bloodlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
