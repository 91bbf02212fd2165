"""Offline quickstart (same as `hf-unlearn quickstart`): python examples/quickstart.py --help"""

import argparse

from hf_unlearn.commands import quickstart

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=quickstart.DESCRIPTION)
    quickstart.add_arguments(parser)
    quickstart.run(parser.parse_args())
