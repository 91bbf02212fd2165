"""Offline quickstart (same as `hf-unlearn quickstart`): python examples/quickstart.py --help"""

import argparse

from hf_unlearn import quickstart

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=quickstart.__doc__)
    quickstart.add_arguments(parser)
    quickstart.main_from_args(parser.parse_args())
