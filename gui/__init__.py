"""PySide6 front end: thin widgets over the Qt-free core (no model or image maths here)."""
