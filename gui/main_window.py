"""Main window: menus, viewer, docks; every slow step runs off the GUI thread."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSlider,
    QToolBar,
    QVBoxLayout,
)

from core import __version__
from core.errors import DiagnosticError
from core.imaging import ImageRecord, Modality, WindowPreset, load_image
from core.imaging.windowing import min_window_width
from core.history import History
from core.inference.analyzer import Analyzer, Engine
from core.inference.overlays import colorbar_rgb, heatmap_rgba, mask_rgba
from core.inference.results import Analysis
from core.models.registry import Registry
from gui.history_panel import HistoryPanel
from gui.panels import MetadataPanel, ModelInfoPanel, OverlayPanel, ProbabilityPanel, WarningsPanel
from gui.viewer import ImageViewer
from gui.workers import FutureBridge

DISCLAIMER = "Decision support only — not a medical device. Every finding must be confirmed by a qualified reader."
IMAGE_FILTER = "Images (*.dcm *.dicom *.png *.jpg *.jpeg *.tif *.tiff *.bmp);;All files (*)"
COLORMAPS = {"jet": 2, "inferno": 14, "viridis": 16, "hot": 11}  # OpenCV colormap ids
MASK_COLOR = (0, 220, 120)
MAX_RECENT = 10


class MainWindow(QMainWindow):
    def __init__(self, engine: Engine | None = None, registry: Registry | None = None, settings: QSettings | None = None,
                 history: History | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Medical Image Diagnostic Assistant")
        self.settings = settings or QSettings("MIDA", "Medical Image Diagnostic Assistant")
        self.registry = registry or Registry()
        self.engine = engine or Engine(Analyzer(self.registry))
        self.history = history or History()
        self.anonymise_exports = True
        self.bridge = FutureBridge(self)
        self.record: ImageRecord | None = None
        self.frame = 0
        self.window: WindowPreset | None = None
        self.analysis: Analysis | None = None
        self.chosen_models: list[str] = []
        self.last_error: str | None = None
        self.last_export: Path | None = None
        self.previous_analyses: list = []
        self.auto_analyse = self.settings.value("auto_analyse", True, type=bool)
        self._busy_jobs = 0

        self.viewer = ImageViewer(self)
        self.setCentralWidget(self.viewer)
        self.probabilities = ProbabilityPanel()
        self.warnings = WarningsPanel()
        self.metadata = MetadataPanel()
        self.model_info = ModelInfoPanel()
        self.overlays = OverlayPanel()
        self.files = QListWidget()
        self.history_panel = HistoryPanel(self.history)
        self.docks = {}
        for title, widget, area in (
            ("Findings", self.probabilities, Qt.DockWidgetArea.RightDockWidgetArea),
            ("Warnings", self.warnings, Qt.DockWidgetArea.RightDockWidgetArea),
            ("Overlays", self.overlays, Qt.DockWidgetArea.RightDockWidgetArea),
            ("Models", self.model_info, Qt.DockWidgetArea.RightDockWidgetArea),
            ("DICOM tags", self.metadata, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("Folder", self.files, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("History", self.history_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(title)
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[title] = dock
        self.tabifyDockWidget(self.docks["Overlays"], self.docks["Models"])
        self.docks["Overlays"].raise_()
        self.tabifyDockWidget(self.docks["DICOM tags"], self.docks["Folder"])
        self.tabifyDockWidget(self.docks["Folder"], self.docks["History"])
        for name in ("DICOM tags", "Folder", "History"):
            self.docks[name].hide()
        self.history_panel.openRequested.connect(self.open_path)
        self.history_panel.exportRequested.connect(self.export_history)

        self._build_toolbar()
        self._build_menus()
        self._build_statusbar()
        self.overlays.changed.connect(self._refresh_overlays)
        self.overlays.set_colorbar(colorbar_rgb(120, 14))
        self.overlays.heatmap_opacity.setValue(int(self.settings.value("heatmap_opacity", 45)))
        self.overlays.mask_opacity.setValue(int(self.settings.value("mask_opacity", 40)))
        self.probabilities.gradcamClassChosen.connect(self._gradcam_for_class)
        self.viewer.cursorMoved.connect(self._show_cursor)
        self.viewer.windowDragged.connect(self._drag_window)
        self.viewer.zoomChanged.connect(lambda z: self.zoom_label.setText(ImageViewer.nice_zoom_text(z)))
        self.files.itemActivated.connect(lambda item: self.open_path(item.data(Qt.ItemDataRole.UserRole)))
        self.cine = QTimer(self)
        self.cine.timeout.connect(lambda: self.step_frame(1, wrap=True))
        self.setAcceptDrops(True)
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 900)
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
        self.recent_menu = file_menu.addMenu("&Recent files")
        self._refresh_recent()
        export_menu = file_menu.addMenu("&Export")
        export_menu.addAction(self._action("View as PNG + findings JSON…", self.export, "Ctrl+E"))
        export_menu.addAction(self._action("PDF report…", self.export_report, "Ctrl+P"))
        export_menu.addAction(self._action("Segmentation as DICOM SEG…", self.export_seg))
        export_menu.addAction(self._action("Overlay as DICOM Secondary Capture…", self.export_sc))
        export_menu.addSeparator()
        export_menu.addAction(self._action("Anonymise exports", self._set_anonymise, checkable=True, checked=True))
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", self.close, QKeySequence.StandardKey.Quit))

        analysis = bar.addMenu("&Analysis")
        self.analyse_action = self._action("&Analyse image", self.analyse, "Ctrl+R")
        analysis.addAction(self.analyse_action)
        analysis.addAction(self._action("Analyse &folder…", self.batch, "Ctrl+Shift+R"))
        analysis.addAction(self._action("Choose &models…", self.choose_models))
        analysis.addAction(self._action("Analyse automatically on open", self._set_auto, checkable=True, checked=self.auto_analyse))

        view = bar.addMenu("&View")
        view.addAction(self._action("Zoom &in", lambda: self.viewer.zoom(1.25), ["+", "=", "Ctrl++"]))
        view.addAction(self._action("Zoom &out", lambda: self.viewer.zoom(0.8), ["-", "Ctrl+-"]))
        view.addAction(self._action("&Fit to window", self.viewer.fit, "F"))
        view.addAction(self._action("Actual size (1:1)", self.viewer.actual_size, "1"))
        view.addAction(self._action("&Reset window/level", self.reset_window, "R"))
        self.presets_menu = view.addMenu("Window &presets")
        view.addSeparator()
        view.addAction(self._action("Next frame", lambda: self.step_frame(1), ["Right", "PgDown"]))
        view.addAction(self._action("Previous frame", lambda: self.step_frame(-1), ["Left", "PgUp"]))
        view.addAction(self._action("Play / stop cine", self.toggle_cine, "Space"))
        view.addSeparator()
        view.addAction(self._action("Toggle heatmap", self.overlays.heatmap.toggle, "H"))
        view.addAction(self._action("Toggle mask", self.overlays.mask.toggle, "M"))
        view.addAction(self._action("Toggle lesion outlines", self.overlays.lesions.toggle, "L"))
        view.addSeparator()
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())

        help_menu = bar.addMenu("&Help")
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
        toolbar.addWidget(self.modality_box)
        self.modality_note = QLabel("")
        toolbar.addWidget(self.modality_note)
        toolbar.addSeparator()
        toolbar.addWidget(QLabel(" Frame: "))
        self.frame_slider = QSlider(Qt.Orientation.Horizontal)
        self.frame_slider.setMaximumWidth(220)
        self.frame_slider.setEnabled(False)
        self.frame_slider.valueChanged.connect(self.show_frame)
        toolbar.addWidget(self.frame_slider)
        self.frame_label = QLabel("1/1")
        toolbar.addWidget(self.frame_label)

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

    def open_folder(self, folder: str | Path) -> None:
        """List the folder's images in the Folder panel and open the first one."""
        from core.batch.discover import discover_images

        paths = discover_images(Path(folder))
        self.files.clear()
        for path in paths:
            item = QListWidgetItem(str(path.relative_to(folder)))
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            self.files.addItem(item)
        self.docks["Folder"].show()
        self.docks["Folder"].raise_()
        if paths:
            self.open_path(paths[0])
        else:
            self._error(f"No images found in {folder}.")

    def open_path(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            self.open_folder(path)
            return
        self._busy(f"Opening {path.name}…")
        modality = self.modality_box.currentData()
        self.bridge.run(load_image, path, modality, on_done=self._loaded, on_error=self._load_failed)

    def _loaded(self, record: ImageRecord) -> None:
        self._busy(None)
        self.record, self.frame, self.window, self.analysis = record, 0, None, None
        self.settings.setValue("last_dir", str(record.path.parent))
        self._remember(record.path)
        self.setWindowTitle(f"{record.path.name} — Medical Image Diagnostic Assistant")
        self.viewer.pixel_spacing_mm = record.pixel_spacing_mm
        self.frame_slider.blockSignals(True)
        self.frame_slider.setRange(0, record.frames - 1)
        self.frame_slider.setValue(0)
        self.frame_slider.setEnabled(record.frames > 1)
        self.frame_slider.blockSignals(False)
        self.frame_label.setText(f"1/{record.frames}")
        self._update_modality_note()
        self._fill_presets()
        self.viewer.set_image(record.display(0), reset_view=True)
        self._clear_results()
        self.metadata.show_rows(record.metadata)
        self._update_wl_label()
        self.statusBar().showMessage(f"Opened {record.path.name}: {record.columns}×{record.rows}, "
                                     f"{record.frames} frame(s), {record.modality.label} ({record.modality_source})", 5000)
        self.bridge.run(self.history.for_file, record.path, on_done=self._show_earlier, on_error=lambda e: None)
        if self.auto_analyse:
            self.analyse()

    def _show_earlier(self, entries: list) -> None:
        self.previous_analyses = entries
        if entries:
            self.statusBar().showMessage(f"This image was analysed {len(entries)} time(s) before; last on "
                                         f"{entries[0].analysed_at}: {entries[0].labels}", 10000)

    def _load_failed(self, error: BaseException) -> None:
        self._busy(None)
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
        if self.record is None:
            return
        value = self.modality_box.currentData()
        if value is None:
            self.open_path(self.record.path)  # re-open to restore the file's own modality
            return
        self.record.modality, self.record.modality_source = Modality(value), "user"
        self._update_modality_note()
        self._clear_results()

    def _update_modality_note(self) -> None:
        r = self.record
        if r is None:
            return
        note = f"  {r.modality.label} — from {r.modality_source}"
        if r.modality_source == "guess" and r.modality_confidence is not None:
            note += f" ({r.modality_confidence:.0%}); set it if wrong"
        self.modality_note.setText(note)

    def choose_models(self) -> None:
        dialog = QDialog(self)
        dialog.setWindowTitle("Models to run")
        layout = QVBoxLayout(dialog)
        layout.addWidget(QLabel("Tick models to run them on every image; none ticked = automatic by modality."))
        listing = QListWidget()
        for bundle in self.registry.bundles.values():
            item = QListWidgetItem(f"{bundle.id}  ({bundle.modality.label}, {bundle.task})")
            item.setData(Qt.ItemDataRole.UserRole, bundle.id)
            item.setCheckState(Qt.CheckState.Checked if bundle.id in self.chosen_models else Qt.CheckState.Unchecked)
            listing.addItem(item)
        layout.addWidget(listing)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(dialog.accept)
        buttons.rejected.connect(dialog.reject)
        layout.addWidget(buttons)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.chosen_models = [listing.item(i).data(Qt.ItemDataRole.UserRole) for i in range(listing.count())
                                  if listing.item(i).checkState() == Qt.CheckState.Checked]

    def batch(self):
        """Open the batch dialog (non-modal: the viewer stays usable while a folder runs)."""
        from gui.batch_dialog import BatchDialog

        dialog = BatchDialog(self.engine, self.chosen_models, self)
        dialog.openRequested.connect(self.open_path)
        dialog.show()
        return dialog

    def _set_auto(self, on: bool) -> None:
        self.auto_analyse = on
        self.settings.setValue("auto_analyse", on)

    # ----- analysis
    def analyse(self) -> None:
        if self.record is None:
            return
        self._busy("Analysing (loading models on first use)…")
        self.analyse_action.setEnabled(False)  # one analysis of the shown image at a time
        future = self.engine.submit(self.record, frame=self.frame, model_ids=self.chosen_models or None)
        record = self.record
        self.bridge.watch(future, lambda a: self._analysed(a, record), self._analysis_failed)

    def _analysed(self, analysis: Analysis, record: ImageRecord) -> None:
        self._busy(None)
        self.analyse_action.setEnabled(True)
        if record is not self.record:
            return  # the user opened another image meanwhile
        self.analysis = analysis
        titles = {b.id: b.manifest.get("title", b.id) for b in self.registry.bundles.values()}
        self.probabilities.show_analysis(analysis, titles)
        if not analysis.results:
            self.probabilities.clear(" ".join(analysis.warnings))
        self.warnings.show_warnings(analysis.warnings + [w for r in analysis.results for w in r.warnings])
        self.model_info.show_models([self._model_summary(r.model_id) for r in analysis.results])
        self._refresh_overlays()
        if analysis.results:
            self.bridge.run(self.history.add, analysis, on_done=lambda _: self.history_panel.refresh(),
                            on_error=lambda e: self.statusBar().showMessage(f"History not saved: {e}", 5000))

    def _model_summary(self, model_id: str) -> dict:
        bundle = self.registry.bundles.get(model_id)
        if bundle is None:
            return {"id": model_id, "version": "?", "title": "", "modality": "", "task": "", "architecture": "",
                    "classes": [], "metrics": {}}
        summary = bundle.summary()
        summary["training"] = bundle.manifest.get("training", {}).get("data", "")
        return summary

    def _analysis_failed(self, error: BaseException) -> None:
        self._busy(None)
        self.analyse_action.setEnabled(True)
        self._error(str(error) if isinstance(error, DiagnosticError) else f"Analysis failed: {error}")

    def _gradcam_for_class(self, model_id: str, class_name: str) -> None:
        if self.record is None or self.analysis is None:
            return
        self._busy(f"Grad-CAM for {class_name}…")
        future = self.engine.submit(self.record, frame=self.frame, model_ids=[model_id], target_class=class_name)

        def replace(update: Analysis) -> None:
            self._busy(None)
            if self.analysis is None:
                return
            for i, result in enumerate(self.analysis.results):
                if result.model_id == model_id:
                    result.heatmap, result.heatmap_class = update.results[0].heatmap, update.results[0].heatmap_class
            self._refresh_overlays()

        self.bridge.watch(future, replace, self._analysis_failed)

    def _clear_results(self) -> None:
        self.analysis = None
        self.probabilities.clear()
        self.warnings.show_warnings([])
        self.viewer.set_heatmap(None)
        self.viewer.set_mask(None)
        self.viewer.set_lesions([], QColor(*MASK_COLOR))

    def _refresh_overlays(self) -> None:
        self.settings.setValue("heatmap_opacity", self.overlays.heatmap_opacity.value())
        self.settings.setValue("mask_opacity", self.overlays.mask_opacity.value())
        colormap = COLORMAPS[self.overlays.colormap.currentText()]
        self.overlays.set_colorbar(colorbar_rgb(120, 14, colormap))
        heat = next((r for r in self.analysis.results if r.heatmap is not None), None) if self.analysis else None
        seg = next((r for r in self.analysis.results if r.mask is not None), None) if self.analysis else None
        self.overlays.tile_cam.setVisible(heat is not None and heat.tile_gradcam is not None)
        if heat is not None and self.overlays.heatmap.isChecked():
            use_tile = heat.tile_gradcam is not None and self.overlays.tile_cam.isChecked()
            self.viewer.set_heatmap(heatmap_rgba(heat.tile_gradcam if use_tile else heat.heatmap,
                                                 self.overlays.heatmap_opacity.value() / 100,
                                                 self.overlays.threshold.value() / 100, colormap))
        else:
            self.viewer.set_heatmap(None)
        if seg is not None and self.overlays.mask.isChecked():
            self.viewer.set_mask(mask_rgba(seg.mask, MASK_COLOR, self.overlays.mask_opacity.value() / 100,
                                           self.overlays.contour.isChecked()))
        else:
            self.viewer.set_mask(None)
        self.viewer.set_lesions(seg.lesions if seg else [], QColor(*MASK_COLOR), self.overlays.lesions.isChecked())

    # ----- frames and window/level
    def show_frame(self, index: int) -> None:
        if self.record is None:
            return
        self.frame = index
        self.frame_label.setText(f"{index + 1}/{self.record.frames}")
        self.viewer.set_image(self.record.display(index, self.window))
        if self.analysis is not None and self.analysis.frame != index:
            self._clear_results()

    def step_frame(self, delta: int, wrap: bool = False) -> None:
        if self.record is None or self.record.frames < 2:
            return
        target = self.frame + delta
        target = target % self.record.frames if wrap else max(0, min(self.record.frames - 1, target))
        self.frame_slider.setValue(target)

    def toggle_cine(self) -> None:
        if self.cine.isActive():
            self.cine.stop()
        elif self.record is not None and self.record.frames > 1:
            self.cine.start(66)

    def _fill_presets(self) -> None:
        self.presets_menu.clear()
        for preset in self.record.window_presets if self.record else []:
            self.presets_menu.addAction(f"{preset.name}  (C {preset.center:g}, W {preset.width:g})",
                                        lambda p=preset: self.set_window(p))

    def set_window(self, preset: WindowPreset | None) -> None:
        if self.record is None or self.record.is_color:
            return
        self.window = preset
        self.viewer.set_image(self.record.display(self.frame, preset))
        self._update_wl_label()

    def reset_window(self) -> None:
        self.set_window(None)

    def _drag_window(self, d_center: float, d_width: float) -> None:
        if self.record is None or self.record.is_color:
            return
        # Steps relative to the current width, so dragging feels the same on 8-bit, CT and 0-1 float data.
        current = self.window or self.record.window_presets[0]
        self.set_window(WindowPreset("Custom", current.center + d_center * current.width / 256.0,
                                     max(min_window_width(current.function), current.width * 2.0 ** (d_width / 128.0)),
                                     current.function))

    def _update_wl_label(self) -> None:
        if self.record is None or self.record.is_color:
            self.wl_label.setText("")
            return
        w = self.window or self.record.window_presets[0]
        self.wl_label.setText(f"C {w.center:.5g} / W {w.width:.5g}")  # float data has windows below 1

    def _show_cursor(self, x: int, y: int) -> None:
        if self.record is None or x < 0:
            self.cursor_label.setText("")
            return
        value = self.record.values(self.frame)[y, x]
        text = f"x {x}, y {y}: {value if self.record.is_color else f'{float(value):g}'}"
        if self.record.pixel_spacing_mm:
            dy, dx = self.record.pixel_spacing_mm
            text += f"  ({x * dx:.1f} mm, {y * dy:.1f} mm)"
        self.cursor_label.setText(text)

    # ----- export, about, drag and drop, close
    def export(self) -> None:
        if self.record is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export view", str(self.record.path.with_suffix(".findings.png")),
                                              "PNG image (*.png)")
        if path:
            self.save_view(Path(path))

    def save_view(self, path: Path) -> None:
        """The rendered view as PNG plus the findings as JSON beside it."""
        import json

        self.viewer.viewport().grab().save(str(path))
        if self.analysis is not None:
            path.with_suffix(".json").write_text(json.dumps(self.analysis.to_dict(), indent=2))
        self.statusBar().showMessage(f"Exported {path.name}", 5000)

    def _set_anonymise(self, on: bool) -> None:
        self.anonymise_exports = on

    def _export_target(self, title: str, suffix: str, pattern: str) -> Path | None:
        if self.record is None or self.analysis is None:
            self._error("Analyse the image first: there is nothing to export yet.")
            return None
        path, _ = QFileDialog.getSaveFileName(self, title, str(self.record.path.with_suffix(suffix)), pattern)
        return Path(path) if path else None

    def export_report(self, path: Path | None = None) -> None:
        from core.export.report import write_image_report

        path = path or self._export_target("PDF report", ".report.pdf", "PDF (*.pdf)")
        if path:
            self._run_export(write_image_report, path, self.record, self.analysis, self.anonymise_exports)

    def export_seg(self, path: Path | None = None) -> None:
        from core.export.dicom_export import export_seg

        seg = next((r for r in self.analysis.results if r.mask is not None), None) if self.analysis else None
        if self.analysis is not None and seg is None:
            self._error("No segmentation model ran on this image: there is no mask to export.")
            return
        path = path or self._export_target("DICOM SEG", ".seg.dcm", "DICOM (*.dcm)")
        if path:
            self._run_export(export_seg, self.record, seg, path, self.analysis.frame, self.anonymise_exports)

    def export_sc(self, path: Path | None = None) -> None:
        from core.export.dicom_export import export_overlay_sc
        from core.export.report import overlay_picture

        path = path or self._export_target("DICOM Secondary Capture", ".overlay.dcm", "DICOM (*.dcm)")
        if path:
            picture = overlay_picture(self.record, self.analysis)
            self._run_export(export_overlay_sc, self.record, picture, path, self.analysis.frame, self.anonymise_exports)

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
        path, _ = QFileDialog.getSaveFileName(self, "Export history", "history.csv", "CSV (*.csv)")
        if path:
            self.history.export_csv(Path(path))

    def about(self) -> None:
        import platform

        import PySide6

        models = "".join(f"<li>{b.id} v{b.manifest['version']}</li>" for b in self.registry.bundles.values())
        QMessageBox.about(self, "About", f"<h3>Medical Image Diagnostic Assistant {__version__}</h3>"
                          f"<p><b>{DISCLAIMER}</b></p><p>Python {platform.python_version()}, PySide6 {PySide6.__version__}; "
                          f"TensorFlow is loaded on first analysis.</p><p>Models:</p><ul>{models or '<li>none installed</li>'}</ul>")

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_path(urls[0])

    def closeEvent(self, event) -> None:  # noqa: N802
        self.settings.setValue("geometry", self.saveGeometry())
        self.cine.stop()
        self.bridge.shutdown()
        self.engine.shutdown()
        super().closeEvent(event)
