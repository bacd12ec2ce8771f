"""The stable command line: ``info``, ``analyze``, ``batch``, ``models``; no argument opens the GUI.

Heavy modules (TensorFlow, Qt) are imported only by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core import __version__
from core.errors import DiagnosticError

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "samples" / "brain_mri_glioma.jpg"


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_info(args: argparse.Namespace) -> int:
    from core.imaging import load_image

    try:
        record = load_image(args.path, modality=args.modality)
    except DiagnosticError as exc:
        _print_json({"path": str(args.path), "error": str(exc)})
        return 2
    _print_json(record.info())
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    from gui.app import run

    return run(args.paths or [str(SAMPLE)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Medical Image Diagnostic Assistant - decision support only, not a medical device.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")

    info = sub.add_parser("info", help="print what an image file is (JSON)")
    info.add_argument("path", type=Path)
    info.add_argument("--modality", choices=["MR", "MG", "US", "SM", "OT"], help="override the modality")
    info.set_defaults(func=cmd_info)

    gui = sub.add_parser("gui", help="open the viewer (default when no command is given)")
    gui.add_argument("paths", nargs="*")
    gui.set_defaults(func=cmd_gui)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or (argv[0] not in parser._subparsers._group_actions[0].choices and not argv[0].startswith("-")):
        argv = ["gui", *argv]  # `main.py image.dcm` opens that image in the window
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
