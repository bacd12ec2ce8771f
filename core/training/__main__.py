"""``python -m core.training cache|train ID``: build a bundle from its config."""

from __future__ import annotations

import argparse
import sys

from core.training.configs import CONFIGS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.training")
    parser.add_argument("action", choices=["cache", "train"])
    parser.add_argument("bundle", choices=sorted(CONFIGS))
    parser.add_argument("--out", default=None, help="models folder (default: the repo's models/)")
    args = parser.parse_args(argv)
    from core.training import classifier

    config = CONFIGS[args.bundle]
    if args.action == "cache":
        classifier.prepare(config)
    else:
        classifier.train(config, out_root=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
