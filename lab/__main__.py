"""``python -m lab [flags]``: the lab's page (``python -m experiments lab`` runs the same)."""

from __future__ import annotations

import argparse
import logging
import sys

from lab import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=cli.__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
