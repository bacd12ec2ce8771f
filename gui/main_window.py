"""Main window: menus, viewer, docks; every slow step runs off the GUI thread.

What is shown (image or series, slice, window/level, chosen models, analysis, series analysis, overlay
layers) lives in ``self.state``, a Qt-free ``core.viewer_state.ViewerState``; the window, the viewer and
the panels change it when the user acts and follow its events. File ▸ Open folder (or DICOMDIR) indexes
the studies (``core.series``) into the Studies panel; a series chosen there is shown slice by slice.
"""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

from PySide6.QtCore import QByteArray, QEvent, QObject, QPoint, QRect, QRectF, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QImage, QKeySequence, QPainter, QRegion
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QScrollArea,
    QSlider,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabBar,
    QTextEdit,
    QToolBar,
    QVBoxLayout,
    QWidget,
)
from shiboken6 import isValid

from core import __version__
from core.errors import DiagnosticError
from core.imaging import ImageRecord, Modality, WindowPreset, load_image
from core.history import History
from core.inference.analyzer import Analyzer, Engine
from core.inference.results import Analysis
from core.models.registry import Registry
from core.models.scale import MAGNIFICATIONS, PLAUSIBLE_UM, magnification_at, um_at_magnification
from core.series.analysis import VERDICT_RULE, SeriesAnalysis, submit_series, verdict_text
from core.series.contralateral import other_breast, partner_in_exam
from core.series.exam_display import hung_film
from core.series.hanging import HANGING_ORDER, Exam, exam_to_hang, exams_of_woman, screening_exams
from core.series.index import Series, StudyIndex, index_path, index_paths
from core.series.linking import same_patient
from core.series.opening import read_for_viewer
from core.series.stack import SeriesStack, open_stack
from core.viewer_state import ViewerState, ViewSettings
from gui.compare_view import CompareView, SeriesLink
from gui.history_panel import MAX_ROWS, HistoryPanel
from gui.panels import MetadataPanel, ModelInfoPanel, OverlayPanel, ProbabilityPanel, SeriesPanel, WarningsPanel
from gui.study_browser import StudyBrowser, thumbnail
from gui.viewer import ImageViewer
from gui.workers import FutureBridge

DISCLAIMER = "Decision support only — not a medical device. Every finding must be confirmed by a qualified reader."
IMAGE_FILTER = "Images (*.dcm *.dicom *.png *.jpg *.jpeg *.tif *.tiff *.bmp);;All files (*)"
MAX_RECENT = 10
TAGS_DELAY_MS = 150  # the DICOM tags follow the slice shown this long after the last step
CUSTOM_SCALE = "custom"  # the scale box item that asks for micrometres per pixel


class KeepNavigationKeys(QObject):
    """Arrows, Page Up/Down, Home, End and Space go to the focused control (a list, tree or table, a box, a slider,
    a text field or panel; Space to a focused button or tick box) instead of the window's slice and cine
    shortcuts, which act everywhere else (on the image above all).

    Installed on the window, its docks and its toolbar: a key's ShortcutOverride climbs from the focused widget to
    them, so controls made later (the Grad-CAM class chooser of the Findings panel) are covered too. What decides is
    the type of the widget that has the focus, not which widget the filter sits on."""

    KEYS = {Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_Left, Qt.Key.Key_Right, Qt.Key.Key_PageUp,
            Qt.Key.Key_PageDown, Qt.Key.Key_Home, Qt.Key.Key_End, Qt.Key.Key_Space}
    # controls that use every navigation key (a combo box's Space opens its list; a list's Space selects)
    CONTROLS = (QAbstractSlider, QComboBox, QAbstractItemView, QTextEdit, QPlainTextEdit, QLineEdit, QAbstractSpinBox,
                QTabBar)

    @classmethod
    def keeps(cls, widget, key) -> bool:
        """Whether the focused ``widget`` uses ``key`` itself (then no window shortcut may take it)."""
        if widget is None or key not in cls.KEYS:
            return False
        if isinstance(widget, cls.CONTROLS):
            return True
        return key == Qt.Key.Key_Space and isinstance(widget, QAbstractButton)  # Space presses a button

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.ShortcutOverride and self.keeps(QApplication.focusWidget(), event.key()):
            event.accept()  # the focused control takes the key; no shortcut fires
        return False


PART_NAMES = {"train": "training", "val": "validation", "all": "in all"}  # a manifest's training.counts keys


def training_text(training: dict) -> str:
    """What a bundle was fitted on, for the Models panel: its data set (or the reader that gathers several, whose
    manifest names the data folder '.') and the images of each part of its split. A user bundle's manifest may
    leave ``training`` or its ``counts`` out, null or malformed: the panel then says less, never fails."""
    training = training if isinstance(training, dict) else {}
    counts_by_part = training.get("counts")
    data = str(training.get("data") or "")
    name = (data if data not in ("", ".") else str(training.get("reader") or "")).replace("_", " ")
    parts = []
    for part, counts in (counts_by_part if isinstance(counts_by_part, dict) else {}).items():
        total = sum(v for v in counts.values() if isinstance(v, int)) if isinstance(counts, dict) else counts
        if isinstance(total, int):
            parts.append(f"{total:,} {PART_NAMES.get(part, part)}")
    return f"{name} ({', '.join(parts)} images)" if parts else name


def _open_history(history: History | None) -> tuple[History | None, str]:
    """The history given, else the user's; one that cannot be opened (corrupt, read-only, locked) leaves the
    window without a history, and why: images are still analysed, only not recorded."""
    if history is not None:
        return history, ""
    try:
        return History(), ""
    except DiagnosticError as exc:
        return None, str(exc)


class MainWindow(QMainWindow):
    def __init__(self, engine: Engine | None = None, registry: Registry | None = None, settings: QSettings | None = None,
                 history: History | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Medical Image Diagnostic Assistant")
        self.settings = settings or QSettings("MIDA", "Medical Image Diagnostic Assistant")
        self.registry = registry or Registry()
        self.engine = engine or Engine(Analyzer(self.registry))
        self.history, self.history_error = _open_history(history)
        self.anonymise_exports = True
        self.bridge = FutureBridge(self)
        self.state = ViewerState()
        self.state.overlays.heatmap.opacity = self._saved_percent("heatmap_opacity", 45) / 100
        self.state.overlays.mask.opacity = self._saved_percent("mask_opacity", 40) / 100
        self.last_error: str | None = None
        self.last_export: Path | None = None
        self.previous_analyses: list = []
        self.auto_analyse = self.settings.value("auto_analyse", True, type=bool)
        self._busy_jobs = 0
        self.study_index: StudyIndex | None = None
        self.series_cancel: threading.Event | None = None  # set while a series analysis runs
        self._series_running: Series | None = None  # the series that analysis is of (maybe not the one shown)
        self._series_superseded = False  # that run was cancelled because the modality or models changed
        self.exam_view = None  # the mammography exam window, made on first use
        self._wanted_series: Series | None = None  # the series last asked for (its first slice may be loading)
        self._open_request = 0  # the file or folder last asked for (see _new_open_request)
        self._compare_request = 0  # the series last asked for beside the main one
        self._analyses_running = 0  # single-image analyses submitted and not yet back
        self.shortcuts_dialog: QDialog | None = None
        self._summaries: dict[str, tuple] = {}  # model id -> (bundle, its summary for the Models panel)
        self._warnings_shown: list[str] = []  # what the Warnings and Models panels show (see _show_results)
        self._models_shown: list[tuple] = []  # (model id, its bundle) of each result

        self.viewer = ImageViewer(self)
        self.compare = CompareView()  # a second series beside the first, hidden until asked for
        self.compare.hide()
        central = QSplitter(Qt.Orientation.Horizontal)
        central.addWidget(self.viewer)
        central.addWidget(self.compare)
        central.setChildrenCollapsible(False)
        self.setCentralWidget(central)
        self.probabilities = ProbabilityPanel()
        self.warnings = WarningsPanel()
        self.metadata = MetadataPanel()
        self.model_info = ModelInfoPanel(self.registry.problems)
        self.overlays = OverlayPanel()
        self.studies = StudyBrowser()
        self.series_panel = SeriesPanel()
        self.series_verdict = QLabel("")
        self.series_verdict.setWordWrap(True)
        self.series_verdict.setTextFormat(Qt.TextFormat.PlainText)
        self.series_verdict.setToolTip(VERDICT_RULE)
        self.series_verdict.hide()
        findings_body = QWidget()
        findings_layout = QVBoxLayout(findings_body)
        findings_layout.setContentsMargins(0, 0, 0, 0)
        findings_layout.addWidget(self.series_verdict)
        findings_layout.addWidget(self.probabilities, 1)
        findings = QScrollArea()  # many models or a long series verdict scroll instead of stretching the window
        findings.setWidgetResizable(True)
        findings.setFrameShape(QScrollArea.Shape.NoFrame)
        findings.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        findings.setWidget(findings_body)
        overlays = QScrollArea()  # its controls scroll on a small screen rather than squeezing the findings above
        overlays.setWidgetResizable(True)
        overlays.setFrameShape(QScrollArea.Shape.NoFrame)
        overlays.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        overlays.setWidget(self.overlays)
        self.history_panel = HistoryPanel()
        self.docks = {}
        for title, widget, area in (
            ("Findings", findings, Qt.DockWidgetArea.RightDockWidgetArea),
            ("Warnings", self.warnings, Qt.DockWidgetArea.RightDockWidgetArea),
            ("Overlays", overlays, Qt.DockWidgetArea.RightDockWidgetArea),
            ("Models", self.model_info, Qt.DockWidgetArea.RightDockWidgetArea),
            ("DICOM tags", self.metadata, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("Studies", self.studies, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("History", self.history_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("Series", self.series_panel, Qt.DockWidgetArea.BottomDockWidgetArea),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(title)
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[title] = dock
        self.tabifyDockWidget(self.docks["Overlays"], self.docks["Models"])
        self.docks["Overlays"].raise_()
        self.tabifyDockWidget(self.docks["DICOM tags"], self.docks["Studies"])
        self.tabifyDockWidget(self.docks["Studies"], self.docks["History"])
        for name in ("DICOM tags", "Studies", "History", "Series"):
            self.docks[name].hide()
        # scrolling a series updates the tags only while they are seen: shown again, they catch up
        self.docks["DICOM tags"].visibilityChanged.connect(self._tags_seen)
        # side docks run the full height; the series strip sits under the image only
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.history_panel.openRequested.connect(self.open_from_history)
        self.history_panel.exportRequested.connect(self.export_history)

        self._build_toolbar()
        self._build_menus()
        self._keys_to_widgets = KeepNavigationKeys(self)
        # the window and what can float off it as a window of its own: a docked or floating panel, the toolbar
        for widget in (self, *self.docks.values(), *self.findChildren(QToolBar)):
            widget.installEventFilter(self._keys_to_widgets)
        self._build_statusbar()
        self.viewer.bind(self.state)
        self.series_link = SeriesLink(self.state, self.viewer, self.compare)
        self.compare.closeRequested.connect(self.close_comparison)
        self.overlays.bind(self.state)
        self.studies.bind(self.state)
        self.series_panel.strip.bind(self.state, {b.id: list(b.classes) for b in self.registry.bundles.values()})
        self.studies.seriesChosen.connect(self.open_series_key)
        self.studies.compareRequested.connect(self._compare_key)
        self.series_panel.cancelRequested.connect(self.cancel_series_analysis)
        self.state.events.series.connect(self._series_changed)
        self.state.events.series_analysis.connect(self._show_series_analysis)
        self.state.events.record.connect(self._record_changed)
        self.state.events.slice.connect(self._slice_changed)
        self._refresh_history()  # earlier analyses, images and series, read in the background
        self.state.events.window.connect(lambda _: self._update_wl_label())
        self.state.events.modality.connect(lambda _: self._update_modality_note())
        self.state.events.scale.connect(self._show_scale)
        self.state.events.chosen_models.connect(lambda _: self._supersede_series_run())
        self.state.events.analysis.connect(self._show_results)
        self.state.events.overlays.connect(self._remember_overlays)
        self.state.events.rulers.connect(lambda rulers: self._show_measurement("Distance", rulers))
        self.state.events.regions.connect(lambda regions: self._show_measurement("Region", regions))
        self.state.events.inverted.connect(self._show_inverted)
        self.probabilities.gradcamClassChosen.connect(self._gradcam_for_class)
        self.probabilities.findingChosen.connect(self.viewer.show_region)
        self.viewer.cursorMoved.connect(lambda x, y: self.cursor_label.setText(self.state.pixel_text(x, y)))
        self.viewer.zoomChanged.connect(lambda z: self.zoom_label.setText(ImageViewer.nice_zoom_text(z)))
        self.cine = QTimer(self)
        self.cine.timeout.connect(lambda: self.state.step(1, wrap=True))
        # The tags of the slice shown, filled once scrolling pauses: refilling the table at every step would cost
        # each step more than drawing the slice.
        self._tags_timer = QTimer(self)
        self._tags_timer.setSingleShot(True)
        self._tags_timer.setInterval(TAGS_DELAY_MS)
        self._tags_timer.timeout.connect(self._show_tags)
        self.setAcceptDrops(True)
        geometry = self.settings.value("geometry")
        # a hand-edited or damaged settings file holds text here: the default size, not a failed start
        if not isinstance(geometry, (QByteArray, bytes)) or not self.restoreGeometry(geometry):
            screen = self.screen().availableGeometry()  # 1,400 x 900, or the screen less a margin
            self.resize(min(1400, int(screen.width() * 0.95)), min(900, int(screen.height() * 0.9)))
        # the right column shared in proportion to the window: fixed heights had left the findings 200 px of 800
        right = [self.docks[name] for name in ("Findings", "Warnings", "Overlays")]
        self.resizeDocks(right, [round(self.height() * share) for share in (0.56, 0.11, 0.33)], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["Findings"]], [380], Qt.Orientation.Horizontal)
        self.model_info.show_models([])
        self.warnings.show_warnings([])

    # ----- construction
    def _action(self, text: str, slot, shortcut=None, checkable: bool = False, checked: bool = False) -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcuts(shortcut if isinstance(shortcut, list) else [QKeySequence(shortcut)])
        action.setCheckable(checkable)
        if checkable:
            action.setChecked(checked)
            action.toggled.connect(slot)
        else:
            action.triggered.connect(slot)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self._action("&Open file…", self.choose_file, QKeySequence.StandardKey.Open))
        file_menu.addAction(self._action("Open &folder…", self.choose_folder, "Ctrl+Shift+O"))
        file_menu.addAction(self._action("Open &DICOMDIR…", self.choose_dicomdir))
        self.recent_menu = file_menu.addMenu("&Recent files")
        self._refresh_recent()
        export_menu = file_menu.addMenu("&Export")
        export_menu.addAction(self._action("View as PNG + findings JSON…", self.export, "Ctrl+E"))
        export_menu.addAction(self._action("PDF report…", self.export_report, "Ctrl+P"))
        export_menu.addAction(self._action("Series report (PDF)…", self.export_series_report))
        export_menu.addAction(self._action("Segmentation as DICOM SEG…", self.export_seg))
        export_menu.addAction(self._action("Overlay as DICOM Secondary Capture…", self.export_sc))
        export_menu.addAction(self._action("Results as DICOM Structured Report…", self.export_sr))
        export_menu.addAction(self._action("Series results as DICOM Structured Report…", self.export_series_sr))
        export_menu.addSeparator()
        export_menu.addAction(self._action("Anonymise exports", self._set_anonymise, checkable=True, checked=True))
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", self.close, QKeySequence.StandardKey.Quit))

        analysis = bar.addMenu("&Analysis")
        self.analyse_action = self._action("&Analyse image", self.analyse, "Ctrl+R")
        analysis.addAction(self.analyse_action)
        self.analyse_series_action = self._action("Analyse &series", self.analyse_series, "Ctrl+Shift+A")
        analysis.addAction(self.analyse_series_action)
        analysis.addAction(self._action("&Cancel series analysis", self.cancel_series_analysis))
        analysis.addAction(self._action("Analyse &folder…", self.batch, "Ctrl+Shift+R"))
        analysis.addAction(self._action("Choose &models…", self.choose_models))
        analysis.addAction(self._action("Analyse automatically on open", self._set_auto, checkable=True, checked=self.auto_analyse))

        view = bar.addMenu("&View")
        view.addAction(self._action("Zoom &in", lambda: self.viewer.zoom(1.25), ["+", "=", "Ctrl++"]))
        view.addAction(self._action("Zoom &out", lambda: self.viewer.zoom(0.8), ["-", "Ctrl+-"]))
        view.addAction(self._action("&Fit to window", self.viewer.fit, "F"))
        view.addAction(self._action("Actual size (1:1)", self.viewer.actual_size, "1"))
        view.addAction(self._action("&Reset window/level and inversion", self.reset_window, "R"))
        self.invert_action = self._action("In&vert grey levels", self._set_inverted, "I", checkable=True)
        view.addAction(self.invert_action)
        self.presets_menu = view.addMenu("Window &presets")
        self.presets_menu.aboutToShow.connect(self._fill_presets)  # the MR brain window is measured on the slice shown
        view.addSeparator()
        view.addAction(self._action("Next slice", lambda: self._keyed_state().step(1), ["Down", "Right", "PgDown"]))
        view.addAction(self._action("Previous slice", lambda: self._keyed_state().step(-1), ["Up", "Left", "PgUp"]))
        view.addAction(self._action("First slice", lambda: self._keyed_state().set_slice(0), "Home"))
        view.addAction(self._action("Last slice", lambda: (s := self._keyed_state()).set_slice(s.slice_count - 1),
                                    "End"))
        view.addAction(self._action("Play / stop cine", self.toggle_cine, "Space"))
        view.addAction(self._action("Mammography &exam (four views)", lambda: self.show_exam(), "Ctrl+Shift+M"))
        self.compare_menu = view.addMenu("&Compare with series")
        self.compare_menu.aboutToShow.connect(self._fill_compare_menu)
        view.addAction(self._action("Close comparison", self.close_comparison))
        view.addSeparator()
        view.addAction(self._action("Toggle heatmap", self.state.overlays.heatmap.toggle, "H"))
        view.addAction(self._action("Toggle mask", self.state.overlays.mask.toggle, "M"))
        view.addAction(self._action("Toggle lesion outlines", self.state.overlays.lesions.toggle, "L"))
        view.addSeparator()
        self.measure_action = self._action("Measure &distance (drag)", lambda on: self._measure("distance", on), "D",
                                           checkable=True)
        self.region_action = self._action("Measure &region: area and values (drag an ellipse)",
                                          lambda on: self._measure("region", on), "E", checkable=True)
        view.addAction(self.measure_action)
        view.addAction(self.region_action)
        view.addAction(self._action("Clear measurements on this slice", self.state.clear_measurements, "Shift+D"))
        view.addSeparator()
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self._action("&Keyboard shortcuts", self.show_shortcuts, "F1"))
        help_menu.addAction(self._action("&About", self.about))

    def _build_toolbar(self) -> None:
        toolbar = QToolBar("Main", self)
        toolbar.setObjectName("main toolbar")
        self.addToolBar(toolbar)
        toolbar.addWidget(QLabel(" Modality: "))
        self.modality_box = QComboBox()
        self.modality_box.addItem("Automatic", None)
        for modality in (Modality.MR, Modality.MG, Modality.US, Modality.SM):
            self.modality_box.addItem(modality.label, modality.value)
        self.modality_box.activated.connect(self._modality_chosen)
        # A click chooses without taking the keys (Tab still reaches it): Down after a choice is the next slice,
        # not the next modality (which had re-read the series as a mammogram and dropped its analysis).
        self.modality_box.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        toolbar.addWidget(self.modality_box)
        self.modality_note = QLabel("")
        toolbar.addWidget(self.modality_note)
        self.scale_box = QComboBox()
        self.scale_box.addItem("From file", None)
        for magnification in MAGNIFICATIONS:
            self.scale_box.addItem(f"{magnification}x", um_at_magnification(magnification))
        self.scale_box.addItem("Custom µm/px…", CUSTOM_SCALE)
        self.scale_box.setToolTip("Magnification of this microscopy image: histology models tile at a physical "
                                  "scale. From file: the scale the file states (DICOM, TIFF, BreakHis-style name), "
                                  "else the model's usual one, with a warning. 40x–400x: a BreakHis-type camera.")
        self.scale_box.activated.connect(self._scale_chosen)
        self.scale_box.setFocusPolicy(Qt.FocusPolicy.TabFocus)  # as the modality box
        # a toolbar shows or hides its widgets through their actions
        self.scale_actions = [toolbar.addSeparator(), toolbar.addWidget(QLabel(" Scale: ")),
                              toolbar.addWidget(self.scale_box)]
        self._update_scale_control()
        toolbar.addSeparator()
        toolbar.addWidget(QLabel(" Slice: "))
        self.frame_slider = QSlider(Qt.Orientation.Horizontal)
        self.frame_slider.setMaximumWidth(260)
        self.frame_slider.setEnabled(False)
        self.frame_slider.valueChanged.connect(self.state.set_slice)
        # Dragged or clicked, never focused: the slice keys stay the window's (the slider's own ran the other way,
        # Down to the slice before and Page Down ten back)
        self.frame_slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        toolbar.addWidget(self.frame_slider)
        self.frame_label = QLabel("1/1")
        toolbar.addWidget(self.frame_label)

    def _keyed_state(self) -> ViewerState:
        """The series the slice keys move: the compared one where its view has the focus (clicked in), else the
        main one (the keys had always moved the main series: a crossing series beside it only scrolled by wheel)."""
        focus = QApplication.focusWidget()
        compared = self.compare.isVisible() and focus is not None and (
            focus is self.compare.viewer or self.compare.viewer.isAncestorOf(focus))
        return self.compare.state if compared else self.state

    def _build_statusbar(self) -> None:
        status = self.statusBar()
        self.cursor_label = QLabel("")
        self.wl_label = QLabel("")
        self.zoom_label = QLabel("")
        self.busy_label = QLabel("")
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumWidth(120)
        self.busy_bar.hide()
        status.addWidget(self.cursor_label, 1)
        for widget in (self.wl_label, self.zoom_label, self.busy_label, self.busy_bar):
            status.addPermanentWidget(widget)
        status.addPermanentWidget(QLabel("Decision support only"))

    # ----- busy state
    def _busy(self, text: str | None) -> None:
        self._busy_jobs += 1 if text else -1
        self._busy_jobs = max(self._busy_jobs, 0)
        if text:
            self.busy_label.setText(text)
        self.busy_bar.setVisible(self._busy_jobs > 0)
        if self._busy_jobs == 0:
            self.busy_label.setText("")

    @property
    def is_busy(self) -> bool:
        return self._busy_jobs > 0

    # ----- opening
    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", str(self.settings.value("last_dir", "")), IMAGE_FILTER)
        if path:
            self.open_path(path)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open folder", str(self.settings.value("last_dir", "")))
        if folder:
            self.open_folder(folder)

    def choose_dicomdir(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open DICOMDIR", str(self.settings.value("last_dir", "")),
                                              "DICOMDIR (DICOMDIR dicomdir *.dir);;All files (*)")
        if path:
            self.open_folder(path)

    def open_from_history(self, path: str, series_uid: str = "", frame: int = 0) -> None:
        """A History entry: its image at the frame analysed, or its series (the folder indexed, that series shown
        rather than the first)."""
        if series_uid:
            self.open_folder(path, series_uid)
        else:
            self.open_path(path, ViewSettings(slice=frame))

    def open_folder(self, folder: str | Path, series_uid: str = "") -> None:
        """Index a folder (or a DICOMDIR) into the Studies panel, in the background, and show its first series (or
        the one with ``series_uid``, where it holds it)."""
        folder = Path(folder).absolute()  # remembered as opened, whatever the working folder later
        self._busy(f"Reading the studies in {folder.name}…")
        request = self._new_open_request()
        self.bridge.run(index_path, folder, on_done=lambda index: self._indexed(index, request, series_uid),
                        on_error=lambda e: self._open_failed(e, request))

    def _new_open_request(self) -> int:
        """A number for the file or folder now asked for: what an earlier, slower request loads is not shown
        over it."""
        self._open_request += 1
        return self._open_request

    def _open_failed(self, error: BaseException, request: int) -> None:
        if request == self._open_request:
            self._load_failed(error)
        else:
            self._busy(None)  # its job is over all the same

    def _indexed(self, index: StudyIndex, request: int, series_uid: str = "") -> None:
        self._busy(None)
        if request != self._open_request:
            return  # the reader opened something else meanwhile
        problems = f" {len(index.problems)} file(s) could not be read: {index.problems[0]}" if index.problems else ""
        if not index.series:  # said; the studies listed, the series shown and any comparison beside it stay
            self._error(f"No images found in {index.root}.{problems}")
            return
        self.study_index = index
        if self.compare.state.series is not None and self.compare.state.series not in index.series:
            self.close_comparison()  # another folder: a series of another study must not stay beside its images
        self.studies.show_index(index)
        self.docks["Studies"].show()
        self.docks["Studies"].raise_()
        self.settings.setValue("last_dir", str(index.root))
        self.statusBar().showMessage(f"{len(index.patients)} patient(s), {len(index.series)} series.{problems}", 10000)
        wanted = [s for s in index.series if series_uid and s.history_key == series_uid] or \
            [s for s in index.series if series_uid and s.uid == series_uid]  # an entry from before a split
        first = wanted[0] if wanted else next((s for s in index.series if s.modality != "SEG"),
                                              index.series[0])  # images first
        # MG, or pictures without a modality (PNG exports) whose names give side and view (core.series.hanging)
        exams = screening_exams(index) if first.modality in ("MG", "", "OT") else []
        if exams and not series_uid:  # the most recent exam's first view, not a prior's listed first (by date)
            hung = exam_to_hang(exams)
            first = next(hung.views[name].series for name in HANGING_ORDER if name in hung.views)
        self.open_series(first)  # queued before the thumbnails: the first slice shows first
        if exams:
            self.show_exam(first)  # a screening exam hangs itself, as on a mammography workstation
        elif self.exam_view is not None:
            self.exam_view.close()  # another folder: the exam of the one before must not stay up beside it
        for series in index.series:  # behind any slice the reader opens, and skipped once another folder is shown
            self.bridge.run_background(self._thumbnail, series, index,
                                       on_done=lambda picture, key=series.key: picture is not None
                                       and self.studies.set_thumbnail(key, picture), on_error=lambda e: None)

    def _thumbnail(self, series: Series, index: StudyIndex):
        """(background thread) the series' thumbnail, or None when its folder is no longer the one listed."""
        return thumbnail(series) if index is self.study_index else None

    def open_series_key(self, key: str) -> None:
        if self.study_index is not None:
            self.open_series(self.study_index.find(key))

    def open_series(self, series: Series) -> None:
        """Show ``series``: its first slice is loaded on an I/O thread, the rest as the reader scrolls."""
        if series.modality == "SEG" and series.slices:  # a segmentation: shown over the image it segments
            self.open_path(series.slices[0].path)
            return
        self._wanted_series = series
        if self.state.series is series:
            return
        self._new_open_request()  # a file or folder asked for earlier and arriving later is not shown over it
        self._busy(f"Opening {series.description or 'series'}…")

        def opened(prepared: tuple[SeriesStack, int, str]) -> None:
            stack, start, problem = prepared
            self._busy(None)
            if self._wanted_series is not series:  # the reader chose another series meanwhile
                stack.close()
                return
            try:
                self.state.open_series(series, stack=stack, start=start)
            except DiagnosticError as exc:
                self._error(str(exc))
                return
            if start:
                self.statusBar().showMessage(f"Showing slice {start + 1}, the first that can be read; slice 1: "
                                             f"{problem}", 15000)
            if self.auto_analyse and self.state.series_analysis is None:
                self.analyse_series()

        def failed(error: BaseException) -> None:
            self._load_failed(error)
            if self._wanted_series is series:  # the tree shows again the series on screen, not the one that failed
                self._wanted_series = self.state.series
                self.studies.select(self.state.series.key if self.state.series is not None else None)

        self.bridge.run(open_stack, series, on_done=opened, on_error=failed)

    def _fill_compare_menu(self) -> None:
        """The other series of the patient whose series is shown."""
        self.compare_menu.clear()
        shown = self.state.series
        for series in self.study_index.series if self.study_index is not None and shown is not None else []:
            if series is shown or series.modality == "SEG" or not same_patient(series, shown):
                continue
            name = f"{series.number}: " if series.number is not None else ""
            action = self.compare_menu.addAction(f"{name}{series.description or 'series'} ({len(series)} slices, "
                                                 f"{series.plane or 'orientation unknown'})")
            action.triggered.connect(lambda _=False, s=series: self.compare_series(s))
        if self.compare_menu.isEmpty():
            self.compare_menu.addAction("(open a series: the patient's other series are listed here)"
                                        ).setEnabled(False)

    def _compare_key(self, key: str) -> None:
        """The Studies panel's context menu: the series of that row (gone if the folder was read again meanwhile)."""
        try:
            series = self.study_index.find(key) if self.study_index is not None else None
        except KeyError:
            series = None
        if series is not None:
            self.compare_series(series)

    def compare_series(self, series: Series) -> None:
        """Show ``series`` beside the main view's series, a series of the same patient (its stack read on an I/O
        thread; a later request, a close or another patient in the main view wins over it)."""
        shown = self.state.series
        if series.modality == "SEG" or not series.slices:
            self._error(f"{series.description or 'This series'} holds no pictures to compare.")
            return
        if shown is None or not same_patient(series, shown):
            self._error("Compare shows another series of the patient whose series is shown: open a series of "
                        f"that patient first ({series.description or 'this series'} is "
                        f"{'not beside any series' if shown is None else 'of another patient'}).")
            return
        self._compare_request += 1
        request = self._compare_request
        self._busy(f"Opening {series.description or 'series'} beside…")

        def opened(prepared) -> None:
            self._busy(None)
            stack, start, problem = prepared
            main = self.state.series
            if request != self._compare_request or main is None or not same_patient(series, main):
                stack.close()  # asked for something else since, or the main view moved to another patient
                return
            if start:
                self.statusBar().showMessage(f"Compare: showing slice {start + 1}, the first that can be read; "
                                             f"slice 1: {problem}", 15000)
            if self.compare.isHidden():
                self.compare.show()
                central = self.centralWidget()
                central.setSizes([central.width() // 2] * 2)  # side by side, each half
            self.compare.show_series(series, stack, start)
            QTimer.singleShot(0, self.viewer.fit)  # both pictures fitted to their new halves
            QTimer.singleShot(0, self.compare.viewer.fit)

        def failed(error: BaseException) -> None:
            self._busy(None)
            if request == self._compare_request:
                self._error(str(error))

        self.bridge.run(open_stack, series, on_done=opened, on_error=failed)

    def close_comparison(self) -> None:
        self._compare_request += 1  # a comparison still loading is not shown after the close
        was_shown = not self.compare.isHidden()
        self.compare.clear()
        self.compare.hide()
        self.viewer.set_reference_lines([])
        if was_shown:
            QTimer.singleShot(0, self.viewer.fit)

    def _series_changed(self, series: Series | None) -> None:
        shown_beside = self.compare.state.series
        if shown_beside is not None and (series is None or not same_patient(series, shown_beside)):
            self.close_comparison()  # a file, or another patient's series: nothing of theirs stays beside it
        if series is None:
            self.docks["Series"].hide()
            return
        self.docks["Series"].setVisible(len(series) > 1 or self.state.series_analysis is not None)
        self._show_series_run()  # a run still going may be of the series left
        warnings = "".join(f"  ⚠ {w}" for w in series.warnings)
        self.statusBar().showMessage(f"{series.description or 'Series'}: {len(series)} slice(s), "
                                     f"{series.plane or 'orientation unknown'}{warnings}", 10000)

    def open_path(self, path: str | Path, view: ViewSettings | None = None) -> None:
        """Open a file (a folder: its studies); ``view``: the frame, window, inversion and rulers to show it with."""
        path = Path(path).absolute()  # Recent files and History name this file, whatever the working folder later
        try:
            is_folder = path.is_dir()
        except OSError:  # a folder above it cannot be read: load_image names that problem
            is_folder = False
        if is_folder:
            self.open_folder(path)
            return
        self._wanted_series = None  # a series still loading is not shown over this file
        self._busy(f"Opening {path.name}…")
        request = self._new_open_request()

        def opened(got) -> None:  # a DICOMDIR lists studies, as a folder does
            if isinstance(got, StudyIndex):
                self._indexed(got, request)
            else:
                self._loaded(got[0], request, view, got[1], path)

        self.bridge.run(read_for_viewer, path, on_done=opened, on_error=lambda e: self._open_failed(e, request))

    def _loaded(self, record: ImageRecord, request: int | None = None, view: ViewSettings | None = None,
                imported: Analysis | None = None, opened: Path | None = None) -> None:
        """``imported``: the segments of a DICOM SEG opened (``opened``) over ``record``, the image it segments."""
        self._busy(None)
        if request is not None and request != self._open_request:
            return  # the reader opened something else meanwhile
        exam = self.exam_view.exam if self.exam_view is not None else None
        if exam is not None and all(v.ref.path != record.path for v in exam.views.values()):
            self.exam_view.close()  # a file of another exam (or woman): the one hung must not stay up beside it
        self.state.open(record)
        if view is not None:
            self.state.restore_view(view)
        self.settings.setValue("last_dir", str(record.path.parent))
        self._remember(opened or record.path)
        self.statusBar().showMessage(f"Opened {record.path.name}: {record.columns}×{record.rows}, "
                                     f"{record.frames} frame(s), {record.modality.label} ({record.modality_source})"
                                     + (f", with the outlines of {opened.name}" if imported is not None else ""), 5000)
        if self.history is not None:
            self.bridge.run(self.history.for_file, record.path, on_done=self._show_earlier, on_error=lambda e: None)
        if imported is not None:
            self.state.set_slice(imported.frame)
            self.state.set_analysis(imported)  # not run automatically over them: the reader opened them to see them
        elif self.auto_analyse:
            self.analyse()

    def _record_changed(self, record: ImageRecord | None) -> None:
        """Another image: title, slice slider, modality note, presets, tags, W/L and the Invert tick follow it; cine
        playback of the last one stops (it would play the new one on its own)."""
        self.cine.stop()
        if record is None:
            return
        self._show_inverted(self.state.inverted)
        series = self.state.series
        name = (series.description or record.path.parent.name) if series is not None else record.path.name
        self.setWindowTitle(f"{name} — Medical Image Diagnostic Assistant")
        self.frame_slider.blockSignals(True)
        self.frame_slider.setRange(0, self.state.slice_count - 1)
        self.frame_slider.setValue(self.state.slice_index)
        self.frame_slider.setEnabled(self.state.slice_count > 1)
        self.frame_slider.blockSignals(False)
        self.frame_label.setText(self.state.slice_text())
        self._update_modality_note()  # the Modality box, and the scale box, shown for microscopy only
        self._fill_presets()
        self._show_results(self.state.analysis)
        self.metadata.show_rows(record.metadata)
        self._update_wl_label()

    def _slice_changed(self, index: int) -> None:
        self.frame_slider.blockSignals(True)
        self.frame_slider.setValue(index)
        self.frame_slider.blockSignals(False)
        self.frame_label.setText(self.state.slice_text())
        if self.state.slice_error:
            self.statusBar().showMessage(f"Cannot show {self.state.slice_error}", 10000)
        elif self.state.series is not None and self.docks["DICOM tags"].isVisible():
            self._tags_timer.start()  # the tags of the slice shown, once the reader stops on it (restarted per step)
        self._update_wl_label()

    def _show_tags(self) -> None:
        """The tags of the slice on screen, where the tags are seen (the timer's end: the reader stopped scrolling)."""
        if self.state.record is not None and self.docks["DICOM tags"].isVisible():
            self.metadata.show_rows(self.state.record.metadata)

    def _tags_seen(self, visible: bool) -> None:
        if visible and self.state.record is not None:
            self._tags_timer.stop()
            self.metadata.show_rows(self.state.record.metadata)

    def _show_earlier(self, entries: list) -> None:
        self.previous_analyses = entries
        if entries:
            self.statusBar().showMessage(f"This image was analysed {len(entries)} time(s) before; last on "
                                         f"{entries[0].analysed_at}: {entries[0].labels}", 10000)

    def _load_failed(self, error: BaseException) -> None:
        self._busy(None)
        self._show_modality()  # Automatic chosen and the file re-read failed: the image keeps the reader's modality
        self._error(str(error) if isinstance(error, DiagnosticError) else f"Unexpected problem: {error}")

    def _error(self, message: str) -> None:
        """Show a problem without losing the current image or results."""
        self.last_error = message
        self.statusBar().showMessage(message, 10000)
        box = QMessageBox(QMessageBox.Icon.Warning, "Cannot complete", message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _remember(self, path: Path) -> None:
        recent = [p for p in self.settings.value("recent", [], type=list) if p != str(path)]
        self.settings.setValue("recent", [str(path), *recent][:MAX_RECENT])
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.value("recent", [], type=list):
            self.recent_menu.addAction(path, lambda p=path: self.open_path(p))

    # ----- modality and models
    def _modality_chosen(self) -> None:
        if self.state.record is None:
            self._show_modality()  # nothing to set it for: the box says Automatic again
            return
        value = self.modality_box.currentData()
        if value == self._user_modality():
            return  # what the image is already read as (Automatic chosen again: nothing was set)
        self._supersede_series_run()  # a series run for the old modality's models is not wanted any more
        view = self.state.view_settings()  # the re-read image keeps the reader's slice, window and rulers
        if value is None and self.state.series is not None:  # re-open to restore the files' own modality
            series, start = self.state.series, self.state.slice_index
            for at in dict.fromkeys((start, 0)):  # the slice shown may be one that cannot be read
                try:
                    self.state.open_series(series, SeriesStack(series, prefetch=True), start=at)
                    self.state.restore_view(view)
                    return
                except DiagnosticError as exc:
                    problem = exc
            self._show_modality()  # still the reader's modality
            self._error(f"Cannot show the series with its own modality: {problem}")
            return
        if value is None:
            self.open_path(self.state.record.path, view)  # re-open to restore the file's own modality
            return
        self.state.set_modality(Modality(value))
        self._show_results(None)

    def _update_modality_note(self) -> None:
        if self.state.record is not None:
            self.modality_note.setText(self.state.modality_text())
        self._show_modality()
        self._update_scale_control()

    def _user_modality(self) -> str | None:
        """The modality the reader set for the image shown (its value), None where the file's own is used."""
        record = self.state.record
        return record.modality.value if record is not None and record.modality_source == "user" else None

    def _show_modality(self) -> None:
        """The Modality box follows the state: the reader's modality where they set one, else Automatic (another
        image opened, or an open that failed and left the image shown as it was)."""
        index = self.modality_box.findData(self._user_modality())
        self.modality_box.setCurrentIndex(max(index, 0))

    # ----- microscopy scale
    def _update_scale_control(self) -> None:
        """The scale box is there for microscopy images only: no other image has a magnification to set."""
        for action in self.scale_actions:
            action.setVisible(self.state.scale_applies)

    def _scale_chosen(self) -> None:
        """The user set or confirmed the magnification: results at another scale go, and (when analysing
        automatically) the image is analysed again at this one."""
        um = self.scale_box.currentData()
        if um == CUSTOM_SCALE:
            um = self._ask_microns()
            if um is None:  # cancelled: the box shows the scale still in use
                self._show_scale(self.state.microns_per_pixel)
                return
        if um == self.state.microns_per_pixel:
            return
        self.state.set_microns_per_pixel(um)
        if self.auto_analyse:  # as on opening: a series' verdicts are made again at this scale
            self.analyse_series() if self.state.series is not None else self.analyse()

    def _ask_microns(self) -> float | None:
        """Micrometres per pixel typed by the user, or None when cancelled."""
        lo, hi = PLAUSIBLE_UM
        um, ok = QInputDialog.getDouble(self, "Image scale", "Micrometres per image pixel:",
                                        self.state.microns_per_pixel or 0.5, lo, hi, 4)
        return um if ok else None

    def _show_scale(self, um: float | None) -> None:
        """The box follows the state's scale: From file, a magnification, or the custom value."""
        custom = self.scale_box.findData(CUSTOM_SCALE)
        magnification = None if um is None else magnification_at(um)
        if um is None:
            index = 0
        elif magnification is not None:
            index = 1 + MAGNIFICATIONS.index(magnification)
        else:
            index = custom
        self.scale_box.setItemText(custom, f"{um:g} µm/px" if index == custom else "Custom µm/px…")
        self.scale_box.setCurrentIndex(index)

    def choose_models(self) -> None:
        dialog = QDialog(self)
        dialog.setWindowTitle("Models to run")
        layout = QVBoxLayout(dialog)
        layout.addWidget(QLabel("Tick models to run them on every image; none ticked = automatic by modality."))
        listing = QListWidget()
        for bundle in self.registry.bundles.values():
            item = QListWidgetItem(f"{bundle.id}  ({bundle.modality.label}, {bundle.task})")
            item.setData(Qt.ItemDataRole.UserRole, bundle.id)
            item.setCheckState(Qt.CheckState.Checked if bundle.id in self.state.chosen_models else Qt.CheckState.Unchecked)
            listing.addItem(item)
        layout.addWidget(listing)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(dialog.accept)
        buttons.rejected.connect(dialog.reject)
        layout.addWidget(buttons)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.state.set_chosen_models([listing.item(i).data(Qt.ItemDataRole.UserRole) for i in range(listing.count())
                                          if listing.item(i).checkState() == Qt.CheckState.Checked])

    def batch(self):
        """Open the batch dialog (non-modal: the viewer stays usable while a folder runs)."""
        from gui.batch_dialog import BatchDialog

        for old in self._batch_dialogs():  # each Analyse folder makes a new dialog: those closed, their runs over, go
            if old.closed and not old.running:
                old.deleteLater()
        dialog = BatchDialog(self.engine, self.state.chosen_models, self, history=self.history)
        dialog.openRequested.connect(lambda path, frame: self.open_path(path, ViewSettings(slice=frame)))
        dialog.runEnded.connect(self._refresh_history)
        dialog.show()
        return dialog

    def _set_auto(self, on: bool) -> None:
        self.auto_analyse = on
        self.settings.setValue("auto_analyse", on)

    # ----- analysis
    def analyse(self) -> None:
        state = self.state
        if state.record is None:
            return
        self.cine.stop()  # the result is for the frame shown now: playback would move off it before it came
        if state.slice_error:
            self._error(f"Cannot analyse {state.slice_error}")
            return
        self._busy("Analysing (loading models on first use)…")
        self.analyse_action.setEnabled(False)  # one analysis of the shown image at a time
        self._analyses_running += 1
        um = state.microns_per_pixel
        future = self.engine.submit(state.record, frame=state.frame, model_ids=state.chosen_models or None,
                                    microns_per_pixel=um, find_other_breast=other_breast)
        record, series, key = state.record, state.series, state.slice_key
        self.bridge.watch(future, lambda a: self._analysed(a, record, series, key, um), self._analysis_failed)

    def _analysed(self, analysis: Analysis, record: ImageRecord, series=None, key: str | None = None,
                  um: float | None = None) -> None:
        self._analysis_ended()
        if um != self.state.microns_per_pixel:
            return  # made at a scale the user has changed since
        if series is not None:
            if series is not self.state.series:
                return  # the user opened another series meanwhile
            self.state.set_analysis(analysis, slice_key=key)  # kept for its slice, shown if still on it
        elif record is not self.state.record:
            return  # the user opened another image meanwhile
        else:
            self.state.set_analysis(analysis)
        if analysis.results:
            self._record_in_history(analysis)

    def _refresh_history(self) -> None:
        if self.history is None:  # the database could not be opened: the window works without it, and says so
            self.history_panel.show_unavailable(self.history_error)
            self.statusBar().showMessage(f"History unavailable: {self.history_error}")
            return
        self.bridge.run(self.history.recent, MAX_ROWS, on_done=self.history_panel.show_entries,
                        on_error=lambda e: self.history_panel.show_unavailable(str(e)))

    def _record_in_history(self, analysis, series: bool = False) -> None:
        """An image's analysis (a series' with ``series``) recorded in the background, the panel refreshed after;
        without a history (its database could not be opened), nothing."""
        if self.history is not None:
            add = self.history.add_series if series else self.history.add
            self.bridge.run(add, analysis, on_done=lambda _: self._refresh_history(),
                            on_error=lambda e: self.statusBar().showMessage(f"History not saved: {e}", 5000))

    def _show_results(self, analysis: Analysis | None) -> None:
        """Findings, warnings and model panels follow the state's analysis (empty when it is cleared)."""
        if analysis is None:
            self.probabilities.clear()
            self._warnings_shown, self._models_shown = [], []
            self.warnings.show_warnings([])
            self.model_info.show_models([])
            return
        titles = {b.id: b.info.title or b.id for b in self.registry.bundles.values()}
        self.probabilities.show_analysis(analysis, titles, self._scales(analysis), analysis.downsample)
        if not analysis.results:
            self.probabilities.clear(" ".join(analysis.warnings))
        # Scrolling an analysed series shows each slice's results: the warnings and the models that ran are mostly
        # the same from one slice to the next, and are drawn again only where they differ.
        warnings = (analysis.file_warnings + analysis.warnings + [f.message for f in analysis.failures]
                    + [w for r in analysis.results for w in r.warnings])
        if warnings != self._warnings_shown:
            self._warnings_shown = warnings
            self.warnings.show_warnings(warnings)
        models = [(r.model_id, self.registry.bundles.get(r.model_id)) for r in analysis.results]
        same = len(models) == len(self._models_shown) and all(
            m == n and bundle is shown for (m, bundle), (n, shown) in zip(models, self._models_shown))
        if not same:
            self._models_shown = models
            self.model_info.show_models([self._model_summary(m) for m, _ in models])

    def _scales(self, analysis: Analysis) -> dict[str, str]:
        """Which scale of the image each result of a bundle that tiles at a physical scale used, and whence."""
        return {r.model_id: r.scale["text"].replace(" um ", " µm ") for r in analysis.results if r.scale is not None}

    def _model_summary(self, model_id: str) -> dict:
        bundle = self.registry.bundles.get(model_id)
        if bundle is None:
            return {"id": model_id, "version": "?", "title": "", "modality": "", "task": "", "architecture": "",
                    "classes": [], "metrics": {}}
        # A bundle does not change while the program runs: its summary (which looks for its changelog on disk) is
        # made once per bundle, not at every slice step of an analysed series.
        cached = self._summaries.get(model_id)
        if cached is None or cached[0] is not bundle:
            summary = bundle.summary()
            summary["training"] = training_text(bundle.info.extra.get("training", {}))
            cached = self._summaries[model_id] = (bundle, summary)
        return dict(cached[1])

    # ----- mammography exam
    def show_exam(self, series: Series | None = None):
        """The screening exam of ``series`` (the series shown by default; a folder just opened passes the series it
        is opening, not yet the state's), hung in its own window; its title says its date and which of her exams
        it is. With nothing shown, the most recent exam of the folder's first woman (a prior exam is listed first);
        an image shown that is in no exam of the folder listed hangs nothing: never another woman's films."""
        from gui.hanging_view import ExamView

        exams = screening_exams(self.study_index) if self.study_index is not None else []
        if not exams:
            self._error("No mammography exam here: open a folder with R/L CC/MLO views (File ▸ Open folder).")
            return None
        shown = series or self.state.series
        if shown is None and self.state.record is not None:
            self._error("The image shown is in no mammography exam of the folder listed: open its own folder to "
                        "hang its exam (File ▸ Open folder).")
            return None
        exam = exam_to_hang(exams, shown)
        if exam is None:
            self._error("The series shown is in no mammography exam of this folder (it needs R/L CC/MLO views).")
            return None
        if self.exam_view is None:
            self.exam_view = ExamView(self)
            self.exam_view.analyse_requested.connect(self.analyse_exam)
            self.exam_view.prior_requested.connect(self._hang_prior)
        view_window = self.exam_view
        view_window.show_exam(exam, exams_of_woman(exams, exam))
        view_window.show()
        view_window.raise_()
        self._load_films(exam, prior=False)
        return view_window

    def _hang_prior(self, prior: Exam) -> None:
        """The films of ``prior`` (chosen in the exam window's "Compare with") into the row under the hung exam."""
        self._load_films(prior, prior=True)

    def _load_films(self, exam: Exam, prior: bool) -> None:
        """``exam``'s films read off the GUI thread into the exam window's first row (or the prior's); a film that
        arrives or fails after another exam was hung in that row, or the window was closed, is dropped."""
        view_window = self.exam_view
        row = view_window.prior if prior else view_window.current

        def wanted() -> bool:
            return view_window.isVisible() and row.exam is exam

        for name, view in exam.views.items():
            self.bridge.run(hung_film, view,
                            on_done=lambda film, name=name: wanted() and view_window.set_film(name, film, prior),
                            on_error=lambda e, name=name: wanted() and view_window.film_failed(name, e, prior))

    def analyse_exam(self) -> None:
        """Every view of the hung exam through the models, each scored against the other breast's view of that exam
        (``partner_in_exam``), wherever its file is: the exam, not the view's folder, says which film that is."""
        from functools import partial

        from gui.hanging_view import same_exam

        view_window = self.exam_view
        exam = view_window.exam if view_window is not None else None
        if exam is None:
            return
        view_window.analyse_button.setEnabled(False)
        view_window.analysing.append(exam)
        left = set(exam.views)

        def analyse(view):
            record = load_image(view.ref.path)
            analysis = self.engine.analyzer.analyze(record, frame=view.ref.frame, gradcam=False,
                                                    find_other_breast=partial(partner_in_exam, exam))
            return analysis

        def done(name: str, result=None, error: BaseException | None = None) -> None:
            left.discard(name)
            if not left:
                view_window.analysing = [e for e in view_window.analysing if e is not exam]
                if same_exam(view_window.exam, exam):
                    view_window.analyse_button.setEnabled(True)
            if error is None and result.results:  # recorded as any analysis is, the exam still shown or not
                self._record_in_history(result)
            if not same_exam(view_window.exam, exam):  # hung again (closed and reopened): still this exam
                return
            if error is not None:
                view_window.captions[name].setText(f"{name}: {error}")
            else:
                view_window.show_analysis(name, result)

        for name, view in exam.views.items():
            self.bridge.watch(self.engine.call(analyse, view), lambda r, name=name: done(name, r),
                              lambda e, name=name: done(name, error=e))

    # ----- series analysis
    def analyse_series(self) -> None:
        """Every slice of the series shown through the models, in the background, with progress and Cancel."""
        state = self.state
        if state.series is None:
            self._error("Open a series first: File ▸ Open folder shows the studies of a folder.")
            return
        if self.series_cancel is not None:
            return  # one series analysis at a time
        series, cancel = state.series, threading.Event()
        self.series_cancel, self._series_running, self._series_superseded = cancel, series, False
        self.analyse_series_action.setEnabled(False)
        self.docks["Series"].show()
        self.series_panel.started(len(series))
        self._show_series_run()
        self._busy(f"Analysing {len(series)} slices…")
        # the state's modality, not the box's: the box shows the state's, but only once an open has succeeded
        modality, um, shown_as = self._user_modality(), state.microns_per_pixel, state.record.modality
        chosen = list(state.chosen_models)
        panel, bridge = self.series_panel, self.bridge

        def progress(p) -> None:  # on the engine thread; the window may have been closed and deleted meanwhile
            if not bridge.closed and isValid(panel):
                try:
                    panel.progressed.emit(p.done, p.total)
                except RuntimeError:  # deleted between the check and the call
                    pass

        future = submit_series(series, self.engine, model_ids=chosen or None, cancel=cancel,
                               cache=state.slice_cache, modality=modality, microns_per_pixel=um, progress=progress)
        self.bridge.watch(future, lambda a: self._series_analysed(a, um, shown_as, chosen), self._series_failed)

    def _show_series_run(self) -> None:
        """The Series panel's progress names the series it is for when that is not the series shown: its Cancel
        stops that run, not one of the series on screen."""
        running = self._series_running
        if self.series_cancel is None or running is None or self.series_cancel.is_set():
            return
        if running is self.state.series:
            self.series_panel.status.setText("Analysing the series…")
        else:
            name = f"{running.number}: " if running.number is not None else ""
            self.series_panel.status.setText(f"Analysing another series, {name}{running.description or 'series'}"
                                             f" (not the one shown)…")

    def _supersede_series_run(self) -> None:
        """The modality or the models changed: a series run made with the old ones is cancelled (its result would
        be discarded) and, when analysing automatically, made again with the new ones once it stopped."""
        if self.series_cancel is not None and not self.series_cancel.is_set():
            self._series_superseded = True
            self.cancel_series_analysis()
            self.series_panel.status.setText("Cancelling: the modality or the models changed…")

    def cancel_series_analysis(self) -> None:
        if self.series_cancel is not None:
            self.series_cancel.set()
            self.series_panel.cancel.setEnabled(False)
            self.series_panel.status.setText("Cancelling after this slice…")

    def _series_done(self) -> bool:
        """The run is over; whether it was cancelled because the modality or the models changed."""
        self._busy(None)
        superseded = self._series_superseded
        self.series_cancel, self._series_running, self._series_superseded = None, None, False
        self.analyse_series_action.setEnabled(True)
        return superseded

    def _series_analysed(self, analysis: SeriesAnalysis, um: float | None = None,
                         modality: Modality | None = None, chosen: list[str] | None = None) -> None:
        superseded = self._series_done()
        record, shown = self.state.record, self.state.series
        same_models = chosen is None or chosen == self.state.chosen_models  # not one of models chosen out since
        if analysis.series is shown:
            done = f"{analysis.slices_analysed} slice(s) analysed in {analysis.seconds:.1f} s"
            every = [o for v in analysis.results for o in v.slices]
            if analysis.slices_analysed == 0 and every and all(o is not None and not o.error for o in every):
                done = "every slice's result kept from the earlier analysis (nothing to run again)"  # not '0 analysed'
            # Not one made at a scale, for a modality or with models the user has changed since.
            current = (um == self.state.microns_per_pixel and record is not None and record.modality == modality
                       and same_models)
            if current:
                self.series_panel.finished(("Cancelled: " if analysis.cancelled else "") + done)
                self.state.set_series_analysis(analysis)
            else:  # said, not shown as if it were the result: the reader asked for another modality, models or scale
                what = "Cancelled" if analysis.cancelled else "Discarded"
                self.series_panel.finished(f"{what}: the modality, the models or the scale changed during the run "
                                           f"({done}); analyse the series again.")
                if self.auto_analyse and (superseded or not analysis.cancelled):
                    self.analyse_series()  # made again as asked now (the new scale or models), as on opening
        else:  # the reader chose another series while this one ran: kept for its own series, not shown here
            self.series_panel.finished("")
            if not analysis.cancelled and same_models:
                self.state.set_series_analysis(analysis)
            if self.auto_analyse and shown is not None and self.state.series_analysis is None:
                self.analyse_series()  # the series now shown, as it would have been on opening
        if analysis.results and not analysis.cancelled:  # a cancelled run is not recorded: its verdicts are partial
            self._record_in_history(analysis, series=True)

    def _series_failed(self, error: BaseException) -> None:
        self._series_done()
        self.series_panel.finished("")
        self._error(str(error) if isinstance(error, DiagnosticError) else f"Series analysis failed: {error}")

    def _show_series_analysis(self, analysis: SeriesAnalysis | None) -> None:
        """The series verdicts above the findings, with what qualifies them (the run's warnings, the series' own: a gap,
        slices at one position, order by InstanceNumber; each verdict's); their rule (VERDICT_RULE) as the tooltip."""
        if analysis is None:
            self.series_verdict.hide()
            self.series_verdict.setText("")
            return
        lines = ["Series: " + verdict_text(v) for v in analysis.results]
        said = analysis.warnings + analysis.series.warnings + [w for v in analysis.results for w in v.warnings]
        lines += dict.fromkeys(f"⚠ {w}" for w in said)
        self.series_verdict.setText("\n".join(lines) or "Series: no model ran.")
        self.series_verdict.show()

    def _analysis_ended(self) -> None:
        self._busy(None)  # one busy job per analysis submitted
        self._analyses_running -= 1
        if not self._analyses_running:  # another image's analysis may still run (opened, then another opened)
            self.analyse_action.setEnabled(True)

    def _analysis_failed(self, error: BaseException) -> None:
        self._analysis_ended()
        self._error(str(error) if isinstance(error, DiagnosticError) else f"Analysis failed: {error}")

    def _gradcam_for_class(self, model_id: str, class_name: str) -> None:
        """``model_id``'s Grad-CAM for ``class_name``, drawn in place of the heatmap shown (computed where that
        model's heatmap is of another class)."""
        state = self.state
        if state.record is None or state.analysis is None:
            return
        result = next((r for r in state.analysis.results if r.model_id == model_id), None)
        if result is not None and (result.heatmap_class or result.label) == class_name:
            state.show_heatmap_of(model_id)
            return
        self._busy(f"Grad-CAM for {class_name}…")
        future = self.engine.submit(state.record, frame=state.frame, model_ids=[model_id], target_class=class_name,
                                    microns_per_pixel=state.microns_per_pixel)
        shown = state.analysis

        def replace(update: Analysis) -> None:
            self._busy(None)
            state.replace_heatmap(model_id, update.results[0], shown)  # kept with its slice if the reader moved on

        def failed(error: BaseException) -> None:
            self._busy(None)
            if result is not None:  # the chooser names the class its heatmap still shows
                self.probabilities.show_gradcam_class(model_id, result.heatmap_class or result.label)
            self._error(str(error) if isinstance(error, DiagnosticError) else f"Grad-CAM failed: {error}")

        self.bridge.watch(future, replace, failed)

    def _saved_percent(self, key: str, default: int) -> int:
        """A saved slider value, 0-100 (a hand-edited settings file cannot stop the start)."""
        try:
            return min(100, max(0, int(self.settings.value(key, default))))
        except (TypeError, ValueError):
            return default

    def _remember_overlays(self, _layer=None) -> None:
        self.settings.setValue("heatmap_opacity", round(self.state.overlays.heatmap.opacity * 100))
        self.settings.setValue("mask_opacity", round(self.state.overlays.mask.opacity * 100))

    def _set_inverted(self, on: bool) -> None:
        self.state.set_inverted(on)
        self._show_inverted(self.state.inverted)  # a colour image stays as it is: the tick says so

    def _show_inverted(self, on: bool) -> None:
        self.invert_action.blockSignals(True)
        self.invert_action.setChecked(on)
        self.invert_action.blockSignals(False)

    def _show_measurement(self, kind: str, drawn: list) -> None:
        """The last ruler or region drawn on the slice, in the status bar ('Distance: 18.0 mm')."""
        if drawn:
            spacing = self.state.pixel_spacing_mm
            implausible = self.state.spacing_warning
            note = "" if spacing else f" ({implausible})" if implausible else " (pixel spacing unknown)"
            self.statusBar().showMessage(f"{kind}: {drawn[-1].text(spacing)}{note}", 10000)

    def _measure(self, mode: str, on: bool) -> None:
        """One measure mode at a time: turning on the ruler turns off the region, and the other way round."""
        self.viewer.set_measuring(mode if on else None)
        for action, kind in ((self.measure_action, "distance"), (self.region_action, "region")):
            action.blockSignals(True)
            action.setChecked(self.viewer.measuring == kind)
            action.blockSignals(False)

    # ----- frames and window/level
    def toggle_cine(self) -> None:
        if self.cine.isActive():
            self.cine.stop()
        elif self.state.slice_count > 1:
            self.cine.start(66)

    def _fill_presets(self) -> None:
        self.presets_menu.clear()
        for preset in self.state.presets:
            self.presets_menu.addAction(f"{preset.name}  (C {preset.center:g}, W {preset.width:g})",
                                        lambda p=preset: self.set_window(p))

    def set_window(self, preset: WindowPreset | None) -> None:
        self.state.set_window(preset)

    def reset_window(self) -> None:
        """R: back to the file's own rendering, its window and its grey levels the right way round."""
        self.state.reset_window()
        self.state.set_inverted(False)

    def _update_wl_label(self) -> None:
        self.wl_label.setText(self.state.window_text())

    # ----- export, about, drag and drop, close
    def export(self) -> None:
        if self.state.record is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export view", str(self.state.record.path.with_suffix(".findings.png")),
                                              "PNG image (*.png)")
        if path:
            self.save_view(Path(path))

    def save_view(self, path: Path) -> None:
        """The rendered view as PNG plus, beside it as JSON, the findings and the distances and regions measured on
        the slice. With Anonymise exports, as in the PDF report: the text a scanner burns in around an ultrasound
        scan is blacked out (the export refused, with why, where the scan area is not found) and no file is named."""
        from core.export.files import WriteError

        if path.suffix.lower() != ".png":  # a name typed without it: Qt would pick no format and write nothing
            path = path.with_name(path.name + ".png")
        try:
            picture = self._view_picture()
        except DiagnosticError as exc:
            self._error(str(exc))
            return
        if not picture.save(str(path), "PNG"):
            self._error(f"Could not write {path}: check the folder exists and can be written to.")
            return
        try:
            self._write_view_findings(path.with_suffix(".json"), self._view_findings())
        except WriteError as exc:
            self._error(f"The view was saved as {path.name}, but its findings were not: {exc}.")
            return
        self.statusBar().showMessage(f"Exported {path.name}", 5000)

    def _view_picture(self) -> QImage:
        """The view as shown; with Anonymise exports, all but the scan area of a screen capture black."""
        from core.export.anonymise import carries_screen_text

        image = self.viewer.viewport().grab().toImage()
        if self.anonymise_exports and carries_screen_text(self.state.record):
            shown = self.viewer.viewport().rect()
            outside = QRegion(shown).subtracted(QRegion(self._scan_area_in_view()))
            painter = QPainter(image)  # in viewport pixels: the grab carries the viewport's device pixel ratio
            painter.setClipRegion(outside)
            painter.fillRect(shown, Qt.GlobalColor.black)
            painter.end()
        return image

    def _scan_area_in_view(self) -> QRect:
        """The part of the picture ``without_screen_text`` keeps (so that the view and the report black out the
        same, and refuse alike: DiagnosticError), in viewport pixels rounded inwards: no sliver of the text."""
        import numpy as np

        from core.export.anonymise import without_screen_text

        record = self.state.record
        kept = without_screen_text(np.ones((record.rows, record.columns), np.uint8), record, self.state.frame)
        rows, columns = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
        if not rows.size:
            return QRect()
        top, left = int(rows[0]), int(columns[0])
        box = self.viewer.viewportTransform().mapRect(
            QRectF(left, top, int(columns[-1]) + 1 - left, int(rows[-1]) + 1 - top))
        return QRect(QPoint(math.ceil(box.left()), math.ceil(box.top())),
                     QPoint(math.floor(box.right()) - 1, math.floor(box.bottom()) - 1))

    def _view_findings(self) -> dict:
        """The exported view's JSON: the analysis shown, its positions in the file's own pixels and the file's
        warnings with its own (as the command line's JSON), the measurements, how the picture was rendered; the
        file named only in identified exports."""
        state, record = self.state, self.state.record
        found = state.analysis.file_dict() if state.analysis is not None else {}
        if state.rulers or state.regions:  # which picture they were measured on, analysed or not
            found.setdefault("path", str(record.path))
            found.setdefault("frame", state.frame)
        if self.anonymise_exports:
            found.pop("path", None)
        if state.rulers:
            found["measurements"] = [r.to_dict(state.pixel_spacing_mm) for r in state.rulers]
        if state.regions:
            found["regions"] = [r.to_dict(state.pixel_spacing_mm) for r in state.regions]
        if found or state.window is not None or state.inverted:  # the picture is not the file's own
            found["view"] = self._view_rendering()
        return found

    @staticmethod
    def _write_view_findings(target: Path, found: dict) -> None:
        """``found`` written whole beside the PNG; with nothing found, an earlier file under that name removed (a
        findings file describes the PNG beside it). WriteError where either cannot be done."""
        import json

        from core.export.files import WriteError, os_reason, write_bytes_atomic

        if found:
            write_bytes_atomic(target, json.dumps(found, indent=2).encode())
            return
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise WriteError(target, os_reason(exc)) from exc

    def _view_rendering(self) -> dict:
        """How the exported picture was rendered: its window (None for a colour picture), whether the reader chose
        it (else the file's own), and whether the grey levels were shown inverted."""
        state = self.state
        window = state.effective_window
        return {"frame": state.frame,
                "window": None if window is None else {"name": window.name, "center": float(window.center),
                                                       "width": float(window.width), "function": window.function},
                "window_chosen": state.window is not None, "inverted": state.inverted}

    def _set_anonymise(self, on: bool) -> None:
        self.anonymise_exports = on

    def _nothing_to_export(self) -> bool:
        """Whether no analysis is shown (said), before any export of one: also where the caller names the file."""
        if self.state.record is None or self.state.analysis is None:
            self._error("Analyse the image first: there is nothing to export yet.")
            return True
        return False

    def _export_target(self, title: str, suffix: str, pattern: str) -> Path | None:
        path, _ = QFileDialog.getSaveFileName(self, title, str(self.state.record.path.with_suffix(suffix)), pattern)
        return Path(path) if path else None

    def export_report(self, path: Path | None = None) -> None:
        from core.export.report import write_image_report

        if self._nothing_to_export():
            return
        path = path or self._export_target("PDF report", ".report.pdf", "PDF (*.pdf)")
        if path:
            self._run_export(write_image_report, path, self.state.record, self.state.analysis, self.anonymise_exports,
                             self.state.heatmap_model)

    def export_series_report(self, path: Path | None = None) -> None:
        """The series analysis shown as a PDF page: verdicts with their rule, the strip plot, the key slices."""
        from core.series.pdf import write_series_report

        target = self._series_export_target("Series report", "series.report.pdf", "PDF (*.pdf)", path)
        if target is not None:
            analysis, path = target
            self._run_export(write_series_report, path, [analysis], self.anonymise_exports)

    def _series_export_target(self, title: str, name: str, pattern: str, path: Path | None
                              ) -> tuple[SeriesAnalysis, Path] | None:
        """The series analysis shown and where to write it (asked, beside the series, where not given); None when
        there is none (said) or the reader cancels."""
        analysis = self.state.series_analysis
        if analysis is None:
            self._error("Analyse the series first (Analysis ▸ Analyse series): there is no series result yet.")
            return None
        if path is None:
            suggested = analysis.series.slices[0].path.parent / name
            chosen, _ = QFileDialog.getSaveFileName(self, title, str(suggested), pattern)
            path = Path(chosen) if chosen else None
        return (analysis, path) if path else None

    def export_seg(self, path: Path | None = None) -> None:
        from core.export.dicom_export import export_seg

        state = self.state
        seg = state.segmentation_result
        if self._nothing_to_export():
            return
        if seg is None:
            self._error("No segmentation model ran on this image: there is no mask to export.")
            return
        path = path or self._export_target("DICOM SEG", ".seg.dcm", "DICOM (*.dcm)")
        if path:
            self._run_export(export_seg, state.record, seg, path, state.analysis.frame, self.anonymise_exports)

    def export_sc(self, path: Path | None = None) -> None:
        from core.export.dicom_export import export_overlay_sc
        from core.export.report import overlay_picture

        if self._nothing_to_export():
            return
        path = path or self._export_target("DICOM Secondary Capture", ".overlay.dcm", "DICOM (*.dcm)")
        if path:
            state = self.state
            picture = overlay_picture(state.record, state.analysis, state.heatmap_model)
            self._run_export(export_overlay_sc, state.record, picture, path, state.analysis.frame, self.anonymise_exports)

    def export_sr(self, path: Path | None = None) -> None:
        """The analysis shown as a DICOM SR (labels, probabilities, lesion outlines, marks), for a PACS."""
        from core.export.structured_report import export_sr

        if self._nothing_to_export():
            return
        path = path or self._export_target("DICOM Structured Report", ".sr.dcm", "DICOM (*.dcm)")
        if path:
            self._run_export(export_sr, self.state.record, self.state.analysis, path, self.anonymise_exports)

    def export_series_sr(self, path: Path | None = None) -> None:
        """The series analysis shown as a DICOM SR: each verdict, and every slice's outlines on that slice."""
        from core.series.structured_report import export_series_sr

        target = self._series_export_target("Series results as DICOM SR", "series.sr.dcm", "DICOM (*.dcm)", path)
        if target is not None:
            analysis, path = target
            self._run_export(export_series_sr, analysis, path, self.anonymise_exports)

    def _run_export(self, fn, *args) -> None:
        self._busy("Exporting…")

        def done(path) -> None:
            self._busy(None)
            self.last_export = Path(path)
            self.statusBar().showMessage(f"Exported {Path(path).name}", 8000)

        def failed(error: BaseException) -> None:
            self._busy(None)
            self._error(f"Export failed: {error}")

        self.bridge.run(fn, *args, on_done=done, on_error=failed)

    def export_history(self) -> None:
        if self.history is None:
            self._error(f"The history is unavailable: {self.history_error}")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export history", "history.csv", "CSV (*.csv)")
        if path:  # on an I/O thread: a long history takes seconds to write
            self.bridge.run(self.history.export_csv, Path(path),
                            on_done=lambda out: self.statusBar().showMessage(f"History exported to {out}", 8000),
                            on_error=lambda exc: self._error(f"The history was not exported: "
                                                             f"{getattr(exc, 'strerror', None) or exc}"))

    def shortcuts(self) -> list[tuple[str, str, str]]:
        """(menu, command, keys) of every menu command that has a shortcut, read from the menus themselves."""
        rows = []

        def walk(menu, path: str) -> None:
            for action in menu.actions():
                if action.menu() is not None:
                    walk(action.menu(), f"{path} > {action.menu().title().replace('&', '')}")
                elif keys := [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()
                              if not k.isEmpty()]:  # a standard key this platform does not define is empty
                    rows.append((path, action.text().replace("&", ""), ", ".join(keys)))

        for top in self.menuBar().actions():
            walk(top.menu(), top.text().replace("&", ""))
        return rows

    def show_shortcuts(self) -> None:
        if self.shortcuts_dialog is not None:
            self.shortcuts_dialog.show()
            self.shortcuts_dialog.raise_()
            return
        dialog = QDialog(self)
        dialog.setWindowTitle("Keyboard shortcuts")
        rows = self.shortcuts()
        table = QTableWidget(len(rows), 3, dialog)
        table.setHorizontalHeaderLabels(["Menu", "Command", "Keys"])
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                table.setItem(r, c, QTableWidgetItem(text))
        table.verticalHeader().setVisible(False)
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)
        extra = QLabel("Mouse: wheel = next/previous slice, Ctrl+wheel = zoom, left drag = pan (a ruler or an "
                       "ellipse region in a measure mode), right drag = window/level.")
        extra.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, dialog)
        buttons.rejected.connect(dialog.reject)
        layout = QVBoxLayout(dialog)
        for widget in (table, extra, buttons):
            layout.addWidget(widget)
        dialog.resize(640, 560)
        self.shortcuts_dialog = dialog
        dialog.show()

    def about(self) -> None:
        import platform

        import PySide6

        models = "".join(f"<li>{b.id} v{b.version}</li>" for b in self.registry.bundles.values())
        QMessageBox.about(self, "About", f"<h3>Medical Image Diagnostic Assistant {__version__}</h3>"
                          f"<p><b>{DISCLAIMER}</b></p><p>Python {platform.python_version()}, PySide6 {PySide6.__version__}; "
                          f"TensorFlow is loaded on first analysis.</p><p>Models:</p><ul>{models or '<li>none installed</li>'}</ul>")

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if len(urls) > 1:  # several files or folders (slices, an exam's views, series): read together as studies
            self.open_files([Path(u) for u in urls])
        elif urls:
            self.open_path(urls[0])

    def open_files(self, paths: list[Path]) -> None:
        """Several files and folders at once, indexed together as studies (their series listed, the first shown),
        as one folder is."""
        paths = [p.absolute() for p in paths]
        self._busy(f"Reading {len(paths)} items…")
        request = self._new_open_request()
        self.bridge.run(index_paths, paths, on_done=lambda index: self._indexed(index, request),
                        on_error=lambda e: self._open_failed(e, request))

    def _batch_dialogs(self) -> list:
        module = sys.modules.get("gui.batch_dialog")  # none was ever opened where it is not imported
        return [] if module is None else [d for d in self.findChildren(module.BatchDialog) if isValid(d)]

    def closeEvent(self, event) -> None:  # noqa: N802
        dialogs = self._batch_dialogs()
        running = [d for d in dialogs if d.running and not d.cancel_event.is_set()]
        if running and not running[0].ask_to_stop():  # as closing the dialog itself asks
            event.ignore()
            return
        for dialog in dialogs:  # the folders stop after their current file; their dialogs close with the window
            if dialog.running:
                dialog.cancel()
            dialog.close()
        self.settings.setValue("geometry", self.saveGeometry())
        self.cine.stop()
        if self.exam_view is not None:
            self.exam_view.close()
        if self.series_cancel is not None:
            self.series_cancel.set()
        self.bridge.shutdown()
        self.engine.shutdown()
        super().closeEvent(event)
