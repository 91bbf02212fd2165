"""The `hf-unlearn` command line: one subcommand per module of `hf_unlearn.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .commands import COMMAND_MODULES
from .exceptions import NonFiniteLossError


def build_parser(command_name: str | None = None) -> argparse.ArgumentParser:
    """The `hf-unlearn` parser. Every command is listed with its one-line help; only `command_name`'s options are
    added (None: every command's), so that `hf-unlearn --help` and a light command never import what another one
    needs (torch for the quickstart, trl for train)."""
    parser = argparse.ArgumentParser(
        prog="hf-unlearn",
        description="Machine unlearning for language models on the Hugging Face stack.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMAND_MODULES:
        command = importlib.import_module(f"hf_unlearn.commands.{module_name}")
        if command_name is not None and command.NAME != command_name:
            sub.add_parser(command.NAME, help=command.HELP)
            continue
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
    argv = list(sys.argv[1:] if argv is None else argv)
    command_name = argv[0] if argv else None
    try:
        # Commands with a `main(argv)` parse their own options (trl's recipe parser): hand them the rest as is.
        own_parser = _command_with_own_parser(command_name)
        if own_parser is not None:
            return int(own_parser.main(argv[1:]) or 0)
        args = build_parser(command_name).parse_args(argv)
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError) as err:  # bad input
        print(f"hf-unlearn {command_name}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if not _explained_failure(err):
            raise
        print(f"hf-unlearn {command_name}: error: {err}", file=sys.stderr)
        return 1


def _explained_failure(err: Exception) -> bool:
    """A failure whose message says what happened and what to do (no traceback needed): a Hub error or a
    non-finite loss. The Hub module is only consulted if it was imported (otherwise no HubError can exist)."""
    hub_errors = sys.modules.get("hf_unlearn.hub.errors")
    return isinstance(err, NonFiniteLossError) or (hub_errors is not None and isinstance(err, hub_errors.HubError))


def _command_with_own_parser(name: str | None):
    for module_name in COMMAND_MODULES:
        command = importlib.import_module(f"hf_unlearn.commands.{module_name}")
        if command.NAME == name:
            return command if hasattr(command, "main") else None
    return None


if __name__ == "__main__":
    sys.exit(main())
