"""`hf-unlearn quickstart`: the offline demo on the bundled TOFU subset."""

from __future__ import annotations

import argparse

from .. import quickstart

NAME = "quickstart"
HELP = "Offline demo: teach a tiny model TOFU authors, then unlearn two."
DESCRIPTION = quickstart.__doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    quickstart.add_arguments(parser)


def run(args: argparse.Namespace) -> None:
    quickstart.main_from_args(args)
