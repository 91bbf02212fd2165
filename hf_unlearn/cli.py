"""The `hf-unlearn` command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-unlearn",
        description="Machine unlearning for language models on the Hugging Face stack.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from . import quickstart

    quick = sub.add_parser(
        "quickstart",
        help="Offline demo: teach a tiny model TOFU authors, then unlearn two.",
        description=quickstart.__doc__,
    )
    quickstart.add_arguments(quick)
    quick.set_defaults(handler=quickstart.main_from_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"hf-unlearn {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
