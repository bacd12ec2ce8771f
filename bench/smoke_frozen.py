"""Headless smoke test of the frozen one-folder build: ``python bench/smoke_frozen.py dist/mida``.

Checks output, not only exit codes: --version, info and analyze on bundled samples, batch on a small
folder, and the GUI offscreen for a few seconds (window opens, sample shown). Also prints the folder
size and cold start-up of the frozen app vs running from source.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "samples" / "brain_mri_sample.jpg"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def main(folder: str) -> int:
    exe = Path(folder) / "mida"
    failures = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        print(f"{'PASS' if ok else 'FAIL'}  {name} {detail}")
        if not ok:
            failures.append(name)

    version = _run([str(exe), "--version"])
    check("--version", version.returncode == 0 and "0." in version.stdout, version.stdout.strip())
    info = _run([str(exe), "info", str(SAMPLE)])
    check("info", info.returncode == 0 and json.loads(info.stdout)["modality"] == "MR")
    start = time.perf_counter()
    analyze = _run([str(exe), "analyze", str(SAMPLE), "--json", "--no-history"])
    frozen_first = time.perf_counter() - start
    payload = json.loads(analyze.stdout) if analyze.returncode == 0 else {}
    check("analyze", bool(payload.get("results")) and "probabilities" in payload["results"][0], analyze.stderr[-300:])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "in"
        data.mkdir()
        shutil.copy(SAMPLE, data / "a.jpg")
        (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        batch = _run([str(exe), "batch", str(data), "--out", str(Path(tmp) / "out"), "--no-history"])
        import csv

        results = Path(tmp) / "out" / "results.csv"
        rows = list(csv.DictReader(results.open())) if results.exists() else []
        analysed = [r for r in rows if r["file"] == "a.jpg" and r["label"] and not r["error"]]
        failed = [r for r in rows if r["file"] == "broken.png" and r["error"]]
        check("batch", bool(analysed) and bool(failed), batch.stderr[-300:])
        # Every export of the command line: each library reads data files of its own that the freeze must carry
        # (highdicom's IOD tables had been left out: every DICOM SEG and SR failed in the app alone).
        outputs = {"--report-out": "r.pdf", "--dicom-sr-out": "r.sr.dcm", "--dicom-seg-out": "r.seg.dcm",
                   "--mask-out": "m.png", "--heatmap-out": "h.png"}
        exported = _run([str(exe), "analyze", str(SAMPLE), "--json", "--no-history", "--model",
                         "brain-mri-tumor-4class", "--model", "brain-mri-tumor-seg",  # one heatmap, one mask
                         *[part for flag, name in outputs.items() for part in (flag, str(Path(tmp) / name))]])
        said = json.loads(exported.stdout) if exported.stdout.strip().startswith("{") else {}
        missing = [name for name in outputs.values() if not (Path(tmp) / name).is_file()]
        check("exports", exported.returncode == 0 and not missing, f"{missing} {said.get('error', '')}"[:300])
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", MIDA_SMOKE_SECONDS="4")
        gui = _run([str(exe)], env=env)
        check("gui offscreen", gui.returncode == 0 and "window shown" in gui.stdout, gui.stderr[-300:])
    start = time.perf_counter()
    _run([sys.executable, str(REPO / "main.py"), "analyze", str(SAMPLE), "--json", "--no-history"])
    source_first = time.perf_counter() - start
    # Symbolic links not counted: PyInstaller links libraries' other names (libQt6Widgets.so.6, ...) to one file,
    # which a sum over rglob's is_file() counted once per name (992 MiB for a folder of 778 MiB, as du says).
    size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())
    print(f"folder size {size / 2**20:.0f} MiB; cold first result: frozen {frozen_first:.1f} s, source {source_first:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
