"""Analysis ▸ Analyse folder…: choose folders and models, watch progress, cancel, browse results.

An output folder that already holds a run's results is resumed or replaced only when the reader says which;
closing the dialog while a folder runs asks first (the files done stay in the output folder either way).
Every analysis is recorded in the local history, as the command line's batch does."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)
from shiboken6 import isValid

from core.batch.runner import BatchRun, Progress, earlier_results, run_settings, source_path
from core.errors import DiagnosticError
from core.history import History
from core.inference.analyzer import Engine
from gui.workers import FutureBridge

TABLE_COLUMNS = ["file", "frame", "model", "label", "probability", "lesions", "warnings", "error"]
# The table lists a run's last rows only (every row is in the output folder's results.csv): a folder of 100,000
# files would otherwise hold the window's memory and time in table items.
MAX_TABLE_ROWS = 5000
ROWS_PER_TURN = 250  # rows put in the table per turn of the event loop (a resume hands over thousands at once)


class _Relay(QObject):
    """Carries worker-thread callbacks to the GUI thread."""

    progress = Signal(object)
    rows = Signal(object)


class BatchDialog(QDialog):
    """Runs core.batch on the engine thread; the window stays responsive and Cancel stops between files."""

    openRequested = Signal(object, int)  # the row's input file (a Path: any name the OS allows), its frame
    runEnded = Signal()  # a run finished, was cancelled or stopped: its analyses are in the history

    def __init__(self, engine: Engine, model_ids: list[str], parent=None, history: History | None = None) -> None:
        super().__init__(parent)
        self.history = history
        self.setWindowTitle("Analyse folder")
        self.resize(900, 600)
        self.engine = engine
        self.bridge = FutureBridge(self)
        self.cancel_event = threading.Event()
        self.summary: dict | None = None
        self.error: str | None = None
        self.input_folder: Path | None = None  # the folder of the run listed: rows open its files
        self.output_folder: Path | None = None  # and its output folder (results.csv lists every row)
        # closed by the reader (or with the main window): the window deletes it once its run, if any, is over
        self.closed = False
        self.relay = _Relay(self)
        self.relay.progress.connect(self._progress)
        self.relay.rows.connect(self._add_rows)
        self.rows_received = 0  # rows of the run listed (a resumed run's earlier ones included), shown or not
        self._pending: deque[dict] = deque(maxlen=MAX_TABLE_ROWS)  # received, not yet in the table
        self._filler = QTimer(self)  # puts pending rows in the table a few hundred at a time
        self._filler.setInterval(0)
        self._filler.timeout.connect(self._fill_table)

        self.folder = QLineEdit()
        self.out = QLineEdit()
        self.models = QListWidget()
        self.models.setMaximumHeight(110)
        for bundle in engine.analyzer.registry.bundles.values():
            item = QListWidgetItem(f"{bundle.id} ({bundle.modality.label})")
            item.setData(Qt.ItemDataRole.UserRole, bundle.id)
            item.setCheckState(Qt.CheckState.Checked if bundle.id in model_ids else Qt.CheckState.Unchecked)
            self.models.addItem(item)
        form = QFormLayout()
        form.addRow("Folder", self._with_browse(self.folder, "Folder to analyse"))
        form.addRow("Output folder", self._with_browse(self.out, "Folder for results"))
        form.addRow("Models (none = by modality)", self.models)
        self.dicom_sr = QCheckBox("Also write each analysis as a DICOM Structured Report (de-identified, in sr/)")
        form.addRow("", self.dicom_sr)
        self.start_button = QPushButton("Start")
        self.resume_button = QPushButton("Resume")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.start_button.clicked.connect(lambda: self.start(resume=False))
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.resume_button, self.cancel_button):
            buttons.addWidget(button)
        self.bar = QProgressBar()
        self.status = QLabel("Choose a folder and an output folder.")
        self.capped = QLabel("")  # says when the table lists only the last rows
        self.capped.hide()
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(self._open_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(self.capped)
        layout.addWidget(self.table, 1)

    def _with_browse(self, edit: QLineEdit, title: str):
        row = QHBoxLayout()
        button = QPushButton("Browse…")
        button.clicked.connect(lambda: edit.setText(QFileDialog.getExistingDirectory(self, title) or edit.text()))
        row.addWidget(edit, 1)
        row.addWidget(button)
        return row

    @property
    def running(self) -> bool:
        return self.bridge.pending > 0

    def start(self, resume: bool = False) -> None:
        folder_text, out_text = self.folder.text().strip(), self.out.text().strip()
        if not folder_text or not out_text:  # Path('') is '.': the working folder, which nobody chose
            missing = " and ".join(name for name, text in (("a folder to analyse", folder_text),
                                                            ("an output folder", out_text)) if not text)
            self.status.setText(f"Not started: choose {missing}.")
            return
        folder, out = Path(folder_text), Path(out_text)
        if not folder.is_dir():
            self.status.setText(f"Not started: the folder {folder} does not exist.")
            return
        chosen = [self.models.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.models.count())
                  if self.models.item(i).checkState() == Qt.CheckState.Checked]
        overwrite = False
        if not resume and earlier_results(out):
            answer = self.ask_earlier_results(out)
            if not answer:
                self.status.setText("Not started: choose another output folder, or resume or replace its results.")
                return
            resume, overwrite = answer == "resume", answer == "replace"
        all_frames, heatmaps, microns_per_pixel = False, True, None
        if resume:  # a resumed run makes its reports, frames, heatmaps, scale and models as the run it continues
            settings = run_settings(out)  # did (CLI runs included)
            self.dicom_sr.setChecked(bool(settings.get("dicom_sr", self.dicom_sr.isChecked())))
            all_frames = bool(settings.get("all_frames", False))
            heatmaps = bool(settings.get("heatmaps", True))
            um = settings.get("microns_per_pixel")
            microns_per_pixel = um if isinstance(um, (int, float)) and not isinstance(um, bool) else None
            if "model_ids" in settings:
                chosen = [m for m in settings["model_ids"] or [] if isinstance(m, str)]
                self._tick(chosen)
        self.cancel_event.clear()
        self.summary, self.error = None, None
        self._clear_table()
        try:
            run = BatchRun(folder, out, analyzer=self.engine.analyzer, model_ids=chosen or None, resume=resume,
                           all_frames=all_frames, heatmaps=heatmaps, microns_per_pixel=microns_per_pixel,
                           overwrite=overwrite, cancel=self.cancel_event, on_progress=self._relay("progress"),
                           on_rows=self._relay("rows"), history=self.history, dicom_sr=self.dicom_sr.isChecked())
        except DiagnosticError as exc:
            self.status.setText(str(exc))
            return
        self.input_folder, self.output_folder = folder, out
        self._set_running(True)
        self.status.setText("Starting (models load on first use)…")
        self.bridge.watch(self.engine.call(run.run), self._finished, self._failed)

    def _tick(self, model_ids: list[str]) -> None:
        """The model ticks show the models a run uses (a resumed run's own, whatever was ticked before)."""
        for i in range(self.models.count()):
            item = self.models.item(i)
            wanted = item.data(Qt.ItemDataRole.UserRole) in model_ids
            item.setCheckState(Qt.CheckState.Checked if wanted else Qt.CheckState.Unchecked)

    def _relay(self, name: str):
        """A callback for the run's thread that sends its value to the GUI thread by the relay's signal ``name``,
        and drops it once the dialog was closed and deleted."""
        relay = self.relay

        def send(value) -> None:
            if isValid(relay):
                try:
                    getattr(relay, name).emit(value)
                except RuntimeError:  # deleted between the check and the call
                    pass

        return send

    def ask_earlier_results(self, out: Path) -> str:
        """'resume' the earlier run (its files done are skipped), 'replace' its results, or '' (do nothing)."""
        box = QMessageBox(QMessageBox.Icon.Question, "Output folder in use",
                          f"{out} already holds the results of a batch run.\n\nResume it (the files it has done are "
                          "kept and skipped), replace its results, or cancel and choose another output folder?",
                          QMessageBox.StandardButton.Cancel, self)
        resume = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
        replace = box.addButton("Replace", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        return "resume" if clicked == resume else "replace" if clicked == replace else ""

    def cancel(self) -> None:
        self.cancel_event.set()
        self.status.setText("Cancelling after the current file…")

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _progress(self, p: Progress) -> None:
        self.bar.setRange(0, p.total)
        self.bar.setValue(p.done)
        left = p.remaining_seconds
        eta = f", about {left:.0f} s left" if left is not None else ""
        if p.stage:  # every file done: the report is being written
            self.status.setText(f"{p.done}/{p.total} files analysed — {p.stage}…")
            return
        self.status.setText(f"{p.done}/{p.total} files, {p.rate:.2f} files/s{eta} — {p.path.name}")

    def _clear_table(self) -> None:
        """An empty table for a new run, unsorted while it runs: a sorted table sorts itself again at each row put
        in it (time growing with the rows at every file); it is sorted once the run ends."""
        self._filler.stop()
        self._pending.clear()
        self.rows_received = 0
        self.capped.hide()
        self.table.setSortingEnabled(False)
        self.table.setRowCount(0)

    def _add_rows(self, rows: list[dict]) -> None:
        """Rows of the run: listed in the table over the next turns of the event loop, the last
        ``MAX_TABLE_ROWS`` only."""
        self.rows_received += len(rows)
        self._pending.extend(rows)  # the oldest fall out beyond MAX_TABLE_ROWS
        if not self._filler.isActive():
            self._filler.start()

    def _fill_table(self, everything: bool = False) -> None:
        """Puts ``ROWS_PER_TURN`` pending rows (``everything``: all) in the table, dropping its oldest beyond
        ``MAX_TABLE_ROWS``."""
        count = len(self._pending) if everything else min(ROWS_PER_TURN, len(self._pending))
        rows = [self._pending.popleft() for _ in range(count)]
        if not self._pending:
            self._filler.stop()
        if not rows:
            return
        sorting = self.table.isSortingEnabled()
        self.table.setSortingEnabled(False)
        excess = self.table.rowCount() + len(rows) - MAX_TABLE_ROWS
        if excess > 0:
            self.table.model().removeRows(0, excess)
        start = self.table.rowCount()
        self.table.setRowCount(start + len(rows))
        for i, row in enumerate(rows, start):
            for j, column in enumerate(TABLE_COLUMNS):
                item = QTableWidgetItem(str(row.get(column, "")))
                item.setToolTip(item.text())  # a file name or an error elided in its column is read whole here
                self.table.setItem(i, j, item)
        if self.rows_received > self.table.rowCount():
            out = self.output_folder
            where = out / "results.csv" if out is not None else "results.csv"
            self.capped.setText(f"Listing the last {self.table.rowCount():,} of {self.rows_received:,} result rows; "
                                f"all of them are in {where}.")
            self.capped.show()
        self.table.setSortingEnabled(sorting)

    def _run_ended(self) -> None:
        """The rows still pending go in the table, which is then sorted (by the column the reader chose, if any)."""
        self._fill_table(everything=True)
        self.table.setSortingEnabled(True)

    def _open_row(self, row: int, _column: int) -> None:
        """The row's file at its frame. The path is made from the ``file`` cell here, not kept in the table: a
        name whose bytes are not UTF-8 does not survive a trip through Qt's text."""
        file, frame = self.table.item(row, 0), self.table.item(row, TABLE_COLUMNS.index("frame"))
        if file is not None and self.input_folder is not None:
            number = frame.text() if frame is not None else ""
            self.openRequested.emit(source_path(self.input_folder, file.text()), int(number) if number.isdigit() else 0)

    def _finished(self, summary: dict) -> None:
        self._run_ended()
        self._set_running(False)
        self.summary = summary
        state = "cancelled" if summary["cancelled"] else "finished"
        self.status.setText(f"{state}: {summary['files_done']}/{summary['files']} files, {summary['errors']} error(s); "
                            f"results in {self.output_folder / 'results.csv'}"
                            + "".join(f"\n⚠ {w}" for w in summary.get("run_warnings", [])))
        self.runEnded.emit()

    def _failed(self, error: BaseException) -> None:
        self._run_ended()
        self._set_running(False)
        self.error = str(error)
        self.status.setText(f"Stopped: {error}")
        self.runEnded.emit()

    def ask_to_stop(self) -> bool:
        """Whether the reader wants the running folder cancelled so the dialog can close."""
        return QMessageBox.question(
            self, "Batch running",
            "A folder is being analysed. Cancel it after the current file and close? The files done stay in the "
            "output folder; Resume continues the run later.") == QMessageBox.StandardButton.Yes

    def reject(self) -> None:
        """Escape and closing the window (QDialog closes through reject) while a folder runs ask first."""
        if self.running and not self.cancel_event.is_set():
            if not self.ask_to_stop():
                return  # stays open; a close event is then ignored
            self.cancel()
        super().reject()
        self.closed = True
