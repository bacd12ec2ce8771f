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
    from core.training import classifier, segmenter

    config = CONFIGS[args.bundle]
    module = segmenter if config.task == "segmentation" else classifier
    if args.action == "cache":
        module.prepare(config)
    else:
        module.train(config, out_root=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
