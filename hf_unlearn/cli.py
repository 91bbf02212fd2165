"""The `hf-unlearn` command line: one subcommand per module of `hf_unlearn.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands import COMMAND_MODULES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-unlearn",
        description="Machine unlearning for language models on the Hugging Face stack.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMAND_MODULES:
        command = importlib.import_module(f"hf_unlearn.commands.{module_name}")
        cmd_parser = sub.add_parser(
            command.NAME,
            help=command.HELP,
            description=getattr(command, "DESCRIPTION", None) or command.HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(cmd_parser)
        cmd_parser.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.handler(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"hf-unlearn {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
