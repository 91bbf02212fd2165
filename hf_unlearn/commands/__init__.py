"""Subcommands of the `hf-unlearn` command line, one module each.

A command module defines `NAME` (the subcommand), `HELP` (one line for `hf-unlearn --help`), an optional
`DESCRIPTION`, `add_arguments(parser)` and `run(args) -> int | None`. Add a command by adding a module and
naming it in `COMMAND_MODULES`; modules are imported only when their command runs or `--help` lists them.
"""

from __future__ import annotations

#: Modules of `hf_unlearn.commands`, in the order `hf-unlearn --help` lists them.
COMMAND_MODULES = [
    "train",
    "eval",
    "robustness",
    "compare",
    "sequential",
    "quickstart",
    "push",
    "tofu_summary",
    "analyze",
    "env",
]
