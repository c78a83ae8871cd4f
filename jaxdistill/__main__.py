"""`python -m jaxdistill ...` is the `jaxdistill` command (see jaxdistill/cli.py)."""
import sys

from jaxdistill.cli import main

if __name__ == "__main__":
    sys.exit(main())
