"""Qt-free core of the Medical Image Diagnostic Assistant: loading, models, inference, batch."""

__version__ = "0.1.0"
