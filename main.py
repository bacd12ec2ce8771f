"""Medical Image Diagnostic Assistant: `python main.py` opens the window, subcommands run headless."""

import sys

from core.cli import main

if __name__ == "__main__":
    sys.exit(main())
