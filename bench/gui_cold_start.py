"""Process start to the window showing the sample with its analysis, offscreen: ``python bench/gui_cold_start.py``.

Prints, from the moment Python starts this script: the window shown, the image shown, and the first analysis
result in the viewer state, for each runtime asked (``--runtime onnx tensorflow``; one process per run, runs
interleaved). ONNX needs the exports (``python main.py models export``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "samples" / "brain_mri_sample.jpg"

CHILD = """
import json, sys, time
started = float(sys.argv[1])
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from gui.main_window import MainWindow
app = QApplication(sys.argv[:1])
window = MainWindow()
window.show()
marks = {"window": time.time() - started}
window.open_path(sys.argv[2])
def poll():
    if "image" not in marks and window.state.record is not None:
        marks["image"] = time.time() - started
    if window.state.analysis is not None and window.state.analysis.results:
        marks["result"] = time.time() - started
        marks["device"] = window.state.analysis.results[0].device
        print(json.dumps(marks)); app.quit()
    elif time.time() - started > 120:
        print(json.dumps(marks)); app.quit()
timer = QTimer(); timer.timeout.connect(poll); timer.start(10)
app.exec()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runtime", nargs="+", default=["onnx", "tensorflow"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.repeat):
        for runtime in args.runtime:
            env = dict(os.environ, QT_QPA_PLATFORM="offscreen", MIDA_RUNTIME=runtime, TF_CPP_MIN_LOG_LEVEL="3",
                       MIDA_HOME=os.environ.get("MIDA_HOME", "/tmp/mida-gui-cold"))
            done = subprocess.run([sys.executable, "-c", CHILD, str(time.time()), str(SAMPLE)], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=300)
            marks = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {"error": done.stderr[-300:]}
            print(runtime, ", ".join(f"{k} {v:.2f} s" if isinstance(v, float) else f"{k} {v}" for k, v in marks.items()),
                  flush=True)


if __name__ == "__main__":
    main()
