"""The dock widget: layout only. Every action is a call into :class:`SessionController`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from qtpy.QtCore import QEvent, QObject, QPointF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QHeaderView,
                            QLabel, QLineEdit, QPushButton, QScrollArea, QSizePolicy, QSpinBox, QTableWidget,
                            QTableWidgetItem, QVBoxLayout, QWidget)

from ..core.classes import PAINTED_BACKGROUND, UNPAINTED
from ..core.io import LABEL_WRITE_SUFFIXES, InputError, suffix_of
from ..core.methods import METHODS
from ..core.trainer import TrainConfig
from ..core.variants import parse_settings, route_settings
from .controller import LIVE_LAYERS, OVERLAYS, TRAINING_PLACES, SessionController
from .shortcuts import register as register_shortcuts

NEW_LABELS = "(new labels layer)"
EXPORT_FORMATS = {"nifti": "NIfTI (*.nii.gz *.nii)", "tiff": "TIFF (*.tif *.tiff)", "png": "PNG, 2D (*.png)"}
UNPAINTED_WORDS = {"background": "background (slices painted whole)", "unknown": "unknown (paint background too)"}


class LossCurve(QWidget):
    """A small live plot of the training loss against iterations, with its axes (no plotting library)."""

    LEFT, BOTTOM = 44, 16  # room for the axis labels

    def __init__(self):
        super().__init__()
        self.points: list[tuple[int, float]] = []
        self.setMinimumHeight(90)
        self.setObjectName("loss_curve")
        self.setToolTip("Training loss (the method's total) against iterations; it should trend down")

    def set_values(self, points: list[tuple[int, float]]) -> None:
        self.points = points[-500:]
        self.update()

    def paintEvent(self, event):  # noqa: N802 (Qt naming)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(30, 30, 30))
        text = QColor(200, 200, 200)
        if len(self.points) < 2:
            p.setPen(QColor(150, 150, 150))
            p.drawText(4, self.height() - 4, "the loss curve appears while training")
            p.end()
            return
        its, values = zip(*self.points)
        lo, hi = min(values), max(values)
        span, it_span = (hi - lo) or 1.0, (its[-1] - its[0]) or 1
        x0, y0 = self.LEFT, 4
        w, h = self.width() - x0 - 6, self.height() - y0 - self.BOTTOM
        p.setPen(QPen(QColor(120, 120, 120), 1))
        p.drawLine(x0, y0, x0, y0 + h)
        p.drawLine(x0, y0 + h, x0 + w, y0 + h)
        p.setPen(text)
        p.drawText(2, y0 + 10, f"{hi:.3g}")
        p.drawText(2, y0 + h, f"{lo:.3g}")
        p.drawText(x0, self.height() - 3, f"{its[0]}")
        p.drawText(x0 + w // 2 - 30, self.height() - 3, "iteration")
        p.drawText(x0 + w - 40, self.height() - 3, f"{its[-1]}")
        pts = [QPointF(x0 + w * (i - its[0]) / it_span, y0 + h * (1 - (v - lo) / span)) for i, v in self.points]
        p.setPen(QPen(QColor(90, 200, 250), 1.5))
        p.drawPolyline(QPolygonF(pts))
        p.end()


class _VerticalScroll(QScrollArea):
    """Scrolls up and down only: as wide as its content needs (after napari's style sheet), as short as the dock."""

    def __init__(self, content: QWidget):
        super().__init__(objectName="semiseg_scroll", widgetResizable=True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(content)

    def minimumSizeHint(self):
        hint = super().minimumSizeHint()
        hint.setWidth(self.widget().minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
                      + 2 * self.frameWidth())  # napari's style sheet draws a frame anyway
        return hint

    def sizeHint(self):
        hint = self.widget().sizeHint()
        hint.setWidth(max(hint.width(), self.minimumSizeHint().width()))
        return hint


class SemisegWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        # napari hands plugins a public-only proxy; layers compared by identity need the real viewer
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.setObjectName("semiseg_widget")
        self.controller = SessionController(self.viewer, on_change=self._schedule_refresh)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(100)
        self._refresh_timer.timeout.connect(self.refresh)
        self._build()
        self._connect_viewer()
        register_shortcuts(self)
        self._refill_layers()
        self.refresh()

    # ------------------------------------------------------------------ layout
    def _button(self, text: str, name: str, slot, tip: str) -> QPushButton:
        b = QPushButton(text)
        b.setObjectName(name)
        b.clicked.connect(lambda: self._run(slot))
        self._tip(b, tip)
        return b

    def _tip(self, widget, tip: str):
        """Every control says what it does; a disabled button says instead why it cannot run yet."""
        self._tips[widget] = tip
        widget.setToolTip(tip)
        return widget

    def _able(self, widget, reason: str | None) -> None:
        widget.setEnabled(reason is None)
        widget.setToolTip(self._tips[widget] if reason is None else reason)

    def _build(self) -> None:
        self._tips: dict = {}
        tip = self._tip
        # the panel scrolls rather than squashing its buttons when the dock is shorter than it
        content = QWidget(objectName="semiseg_content")
        scroll = _VerticalScroll(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        root = QVBoxLayout(content)
        data = QGroupBox("Data")
        form = QFormLayout(data)
        self.image_combo = tip(QComboBox(objectName="image_combo"), "The image to segment")
        self.labels_combo = tip(QComboBox(objectName="labels_combo"),
                                "Your labels: what you paint here is what the trainer learns from")
        self.axis_spin = tip(QSpinBox(objectName="axis_spin"),
                             "The axis whose slices you label; napari's view turns to show them (and follows "
                             "napari's roll and transpose buttons)")
        self.axis_spin.setRange(0, 2)
        self.axis_words = QLabel(objectName="axis_words")
        axis_row = QHBoxLayout()
        axis_row.addWidget(self.axis_spin)
        axis_row.addWidget(self.axis_words, 1)
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Slice axis", axis_row)
        self.unpainted_combo = tip(QComboBox(objectName="unpainted_combo"),
                                   "background: a painted slice is complete, its unpainted pixels are background. "
                                   "unknown: only what you paint is taught (paint background too, with "
                                   "'background (painted)'); for scribbles and partly painted images")
        self.unpainted_combo.addItems([UNPAINTED_WORDS[m] for m in UNPAINTED])
        self.unpainted_combo.currentIndexChanged.connect(self._unpainted_chosen)
        form.addRow("Unpainted pixels", self.unpainted_combo)
        self.labeled_label = QLabel(objectName="labeled_label")
        self.labeled_label.setWordWrap(True)
        form.addRow(self.labeled_label)
        self.mark_labeled_button = self._button(
            "Mark slice as labeled (nothing here)", "mark_labeled_button", self._mark,
            "A slice with no structure on it counts as labeled only when marked: it then teaches background")
        form.addRow(self.mark_labeled_button)
        self.restore_button = self._button(
            "Restore autosaved labels", "restore_button", self.controller.restore_autosaved,
            "Labels you painted on this image in an earlier session, autosaved a few seconds after each edit; "
            "they come back as a new layer")
        form.addRow(self.restore_button)
        root.addWidget(data)

        classes = QGroupBox("Classes")
        clay = QVBoxLayout(classes)
        self.class_table = tip(QTableWidget(0, 2, objectName="class_table"),
                               "Each class's name and colour, kept with your labels and written into the exported "
                               "file; click a row to paint that class, the colour to change it")
        self.class_table.setHorizontalHeaderLabels(["Name", "Colour"])
        header = self.class_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # names in full; the colour is a swatch
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Fixed)
        self.class_table.setColumnWidth(1, 70)
        self.class_table.verticalHeader().setDefaultSectionSize(22)
        self.class_table.setMinimumHeight(100)
        self.class_table.setMaximumHeight(130)
        self.class_table.itemChanged.connect(self._class_renamed)
        self.class_table.cellClicked.connect(self._class_clicked)
        clay.addWidget(self.class_table)
        self.add_class_button = self._button("Add class", "add_class_button", self._add_class,
                                             "A new class, painted with the next label value")
        clay.addWidget(self.add_class_button)
        root.addWidget(classes)

        train = QGroupBox("Training")
        tform = QFormLayout(train)
        self.method_combo = tip(QComboBox(objectName="method_combo"),
                                "The semi-supervised method (README: what each does and where it loses)")
        self.method_combo.addItems(list(METHODS))
        self.method_combo.setCurrentText("mean-teacher")
        # what the chosen method costs and where it loses, so that nobody picks one blind
        self.method_advice = QLabel(objectName="method_advice")
        self.method_advice.setWordWrap(True)
        self.method_combo.currentTextChanged.connect(self._method_chosen)
        self._method_chosen(self.method_combo.currentText())
        self.device_combo = tip(QComboBox(objectName="device_combo"),
                                "auto: the GPU when there is one, else the CPU")
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.budget_spin = tip(QDoubleSpinBox(objectName="budget_spin"),
                               "Training time; 'until stopped' trains until you press Stop")
        self.budget_spin.setRange(0.0, 600.0)
        self.budget_spin.setValue(0.0)
        self.budget_spin.setSuffix(" min")
        self.budget_spin.setSpecialValueText("until stopped")
        tform.addRow("Method", self.method_combo)
        tform.addRow("", self.method_advice)
        tform.addRow("Device", self.device_combo)
        tform.addRow("Budget", self.budget_spin)
        root.addWidget(train)

        self.advanced = tip(QGroupBox("Advanced", objectName="advanced_box"), "Settings most users never change")
        self.advanced.setCheckable(True)
        self.advanced.setChecked(False)
        aform = QFormLayout(self.advanced)
        d = TrainConfig()
        self.batch_spin = tip(_spin(0, 64, 0, "batch_spin"), "Patches per step; auto: by device memory")
        self.batch_spin.setSpecialValueText("auto")
        self.labeled_batch_spin = tip(_spin(0, 64, 0, "labeled_batch_spin"),
                                      "Of which labeled; auto: half")
        self.labeled_batch_spin.setSpecialValueText("auto")
        self.patch_spin = tip(_spin(0, 1024, 0, "patch_spin", step=16),
                              "Side of the training patches, in working pixels; auto: 128 on a CPU, 512 on a "
                              "GPU, or the whole slice when it is smaller")
        self.patch_spin.setSpecialValueText("auto")
        self.scale_spin = tip(QDoubleSpinBox(objectName="scale_spin", decimals=2, singleStep=0.25),
                              "Working resolution: 1 = the image's own; 0.5 trains and predicts at half "
                              "(faster, but thin structures may vanish)")
        self.scale_spin.setRange(0.1, 1.0)
        self.scale_spin.setValue(d.scale)
        self.context_spin = tip(_spin(0, 3, d.context, "context_spin"),
                                "Neighbouring slices on each side given to the network as extra channels")
        self.refresh_spin = tip(_spin(1, 120, int(d.refresh_seconds), "refresh_spin"),
                                "How often the pseudo-labels and uncertainty are refreshed")
        self.lr_spin = tip(QDoubleSpinBox(objectName="lr_spin", decimals=5, singleStep=1e-4),
                           "Learning rate (SGD with momentum, decayed to 0 over the budget)")
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setValue(d.lr)
        self.seed_spin = tip(_spin(0, 2**31 - 1, d.seed, "seed_spin"), "The same seed repeats a run")
        self.method_settings_edit = tip(QLineEdit(objectName="method_settings_edit"),
                                        "The method's settings as KEY=VALUE, comma-separated (see the README)")
        self.method_settings_edit.setPlaceholderText("e.g. encoder=dinov2:/models/dinov2-small, blend=box")
        self.unlabeled_dir_edit = tip(QLineEdit(objectName="unlabeled_dir_edit"),
                                      "A folder of extra (e.g. synthetic) unlabeled images, for SRA-Seg")
        self.unlabeled_dir_edit.setPlaceholderText("optional folder of extra (e.g. synthetic) unlabeled images")
        self.unlabeled_source_combo = tip(QComboBox(objectName="unlabeled_source_combo"),
                                          "Unlabeled patches from this image (real), the folder (extra), or both")
        self.unlabeled_source_combo.addItems(["real", "extra", "both"])
        self.place_combo = tip(QComboBox(objectName="place_combo"),
                               "process: training in a separate process, so that a crash or running out of memory "
                               "there leaves the viewer and your labels alone; thread: in napari's own process; "
                               "server: on a training server (napari-semiseg serve), e.g. a machine with a GPU")
        self.place_combo.addItems(list(TRAINING_PLACES))
        self.place_combo.currentTextChanged.connect(lambda text: setattr(self.controller, "training_place", text))
        self.server_url_edit = tip(QLineEdit(objectName="server_url_edit"),
                                   "The training server's address, as `napari-semiseg serve` printed it")
        self.server_url_edit.setPlaceholderText("http://gpu-server:8765")
        self.server_url_edit.textChanged.connect(lambda text: setattr(self.controller, "server_url", text))
        self.server_token_edit = tip(QLineEdit(objectName="server_token_edit"),
                                     "The token `napari-semiseg serve` printed (or was given)")
        self.server_token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.server_token_edit.textChanged.connect(lambda text: setattr(self.controller, "server_token", text))
        for label, w in (("Batch size", self.batch_spin), ("Labeled per batch", self.labeled_batch_spin),
                         ("Patch size", self.patch_spin), ("Working scale", self.scale_spin),
                         ("Context slices", self.context_spin),
                         ("Refresh every (s)", self.refresh_spin), ("Learning rate", self.lr_spin),
                         ("Seed", self.seed_spin), ("Method settings", self.method_settings_edit),
                         ("Unlabeled folder", self.unlabeled_dir_edit),
                         ("Unlabeled images from", self.unlabeled_source_combo), ("Train in", self.place_combo),
                         ("Server URL", self.server_url_edit), ("Server token", self.server_token_edit)):
            aform.addRow(label, w)
        self.advanced.toggled.connect(lambda on: [aform.itemAt(i).widget().setVisible(on)
                                                  for i in range(aform.count()) if aform.itemAt(i).widget()])
        self.advanced.toggled.emit(False)
        root.addWidget(self.advanced)

        row = QHBoxLayout()
        self.train_button = self._button("Train", "train_button", self._train,
                                         "Train on the labeled slices and the rest of the image (Shift+T)")
        self.pause_button = self._button("Pause", "pause_button", self._pause,
                                         "Pause or resume training; the clock stops while paused")
        self.stop_button = self._button("Stop", "stop_button", self.controller.stop,
                                        "Stop training; the model is saved (Shift+T)")
        for b in (self.train_button, self.pause_button, self.stop_button):
            row.addWidget(b)
        root.addLayout(row)
        self.progress_label = QLabel("Not training.", objectName="progress_label")
        self.progress_label.setWordWrap(True)
        # a long model path must wrap or elide, never widen the dock
        self.progress_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        root.addWidget(self.progress_label)
        self.message_label = QLabel("", objectName="message_label")
        self.message_label.setWordWrap(True)  # napari's toast shows one line; here the whole message stays
        self.message_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        root.addWidget(self.message_label)
        self.loss_curve = LossCurve()
        root.addWidget(self.loss_curve)

        review = QGroupBox("Review")
        rlay = QVBoxLayout(review)
        self.next_uncertain_button = self._button(
            "Next uncertain slice", "next_uncertain_button", self.controller.next_uncertain_slice,
            "Go to the slice whose label would help most: uncertain, amid uncertain slices, far from yours (Shift+N)")
        self.accept_slice_button = self._button(
            "Accept slice", "accept_slice_button", self.controller.accept_slice,
            "Copy the proposal on this slice into your labels (one undo step); your own strokes are kept (Shift+A)")
        self.accept_next_button = self._button(
            "Accept + next", "accept_next_button", self.controller.accept_and_next,
            "Accept this slice, then go to the next uncertain one (Shift+Enter)")
        rrow = QHBoxLayout()
        for b in (self.next_uncertain_button, self.accept_slice_button, self.accept_next_button):
            rrow.addWidget(b)
        rlay.addLayout(rrow)
        urow = QHBoxLayout()
        self.overlay_combo = tip(QComboBox(objectName="overlay_combo"),
                                 "What lies over the scan: the proposal's outlines, the uncertainty, or nothing")
        self.overlay_combo.addItems(list(OVERLAYS))
        self.threshold_spin = tip(QDoubleSpinBox(objectName="threshold_spin", decimals=2, singleStep=0.05),
                                  "Uncertainty below this is not drawn, so the scan shows through")
        self.threshold_spin.setRange(0.0, 0.99)
        self.threshold_spin.setValue(self.controller.uncertainty_threshold)
        self.threshold_spin.setPrefix("above ")
        self.overlay_combo.currentTextChanged.connect(self._overlay)
        self.threshold_spin.valueChanged.connect(self._overlay)
        urow.addWidget(QLabel("Overlay"))
        urow.addWidget(self.overlay_combo, 1)
        urow.addWidget(self.threshold_spin)
        rlay.addLayout(urow)
        self.finish_button = self._button(
            "Finish: build the segmentation layer", "finish_button", self.controller.finish,
            "Your labels where you labeled, the proposal elsewhere, as a new layer; a volume is shown in 3D with "
            "each class's volume")
        erow = QHBoxLayout()
        erow.addWidget(self.finish_button, 1)
        self.export_button = self._button(
            "Export…", "export_button", self._export,
            "Write the segmentation (before Finish: your labels) to NIfTI, TIFF or, for a 2D image, PNG; "
            "you choose the name and folder")
        erow.addWidget(self.export_button)
        rlay.addLayout(erow)
        mrow = QHBoxLayout()
        self.save_model_button = self._button("Save model…", "save_model_button", self._save_model,
                                              "Save the trained model into a folder")
        self.load_model_button = self._button("Load model…", "load_model_button", self._load_model,
                                              "Load a saved model: the next Train continues from it")
        mrow.addWidget(self.save_model_button)
        mrow.addWidget(self.load_model_button)
        rlay.addLayout(mrow)
        root.addWidget(review)
        root.addStretch(1)

        self.image_combo.currentIndexChanged.connect(self._layers_chosen)
        self.labels_combo.currentIndexChanged.connect(self._layers_chosen)
        self.labels_combo.activated.connect(self._labels_activated)
        self.axis_spin.valueChanged.connect(self._axis_chosen)

    def _method_chosen(self, name: str) -> None:
        self.method_advice.setText(METHODS[name].advice)  # the combo holds only METHODS' names

    # ------------------------------------------------------------------ actions
    def _run(self, action):
        """Run a button's action; user errors become one-sentence notifications."""
        try:
            return action()
        except InputError as err:
            self.controller.notify("error", str(err))
        finally:
            self.refresh()

    def config(self) -> TrainConfig:
        minutes = self.budget_spin.value() or None
        method = self.method_combo.currentText()
        # typed settings follow the command line's rule (core.variants.route_settings)
        extra, settings = route_settings(parse_settings(self.method_settings_edit.text()), method)
        try:  # unknown keys now, in one sentence, rather than from the training thread
            METHODS[method].Settings.from_dict(settings)
        except ValueError as err:
            raise InputError(f"{method}: {err}") from None
        config = TrainConfig(method=method, device=self.device_combo.currentText(),
                             minutes=minutes, batch_size=self.batch_spin.value() or None,
                             labeled_batch=(min(self.labeled_batch_spin.value(), self.batch_spin.value() or 64)
                                            or None),
                             patch_size=self.patch_spin.value() or None, scale=self.scale_spin.value(),
                             context=self.context_spin.value(),
                             refresh_seconds=float(self.refresh_spin.value()), lr=self.lr_spin.value(),
                             seed=self.seed_spin.value(),
                             method_settings=settings,
                             unlabeled_dir=self.unlabeled_dir_edit.text().strip() or None,
                             unlabeled_source=self.unlabeled_source_combo.currentText())
        return replace(config, **extra).check()

    def shortcut(self, action: str) -> None:
        """A keyboard shortcut (see shortcuts.py): the same as the button, refused the same way."""
        c = self.controller
        slots = {"train_or_stop": c.stop if c.running else self._train, "next_uncertain": c.next_uncertain_slice,
                 "accept": c.accept_slice, "accept_and_next": c.accept_and_next}
        self._run(slots[action])

    def _train(self):
        self._layers_chosen()
        self.controller.start(self.config())

    def _pause(self):
        if self.controller.paused:
            self.controller.resume()
        else:
            self.controller.pause()

    def _mark(self):
        self.controller.toggle_mark_labeled()

    def _overlay(self, *_):
        self.controller.set_overlay(self.overlay_combo.currentText(), self.threshold_spin.value())

    def _save_model(self):
        path = QFileDialog.getExistingDirectory(self, "Save the model into a folder")
        if path:
            out = self.controller.save_model(path)
            self.controller.notify("info", f"Model saved in {out}.")

    def _export(self):
        default = self.controller.default_export_path()
        suffixes = {"nifti": ".nii.gz", "tiff": ".tif", "png": ".png"}
        kinds = [k for k in suffixes if k != "png" or not self.controller.is_3d]
        kinds.sort(key=lambda k: suffixes[k] != suffix_of(default))  # the default's format first
        chosen_filter = {EXPORT_FORMATS[k]: k for k in kinds}
        path, chosen = QFileDialog.getSaveFileName(self, "Export the segmentation", str(default),
                                                   ";;".join(EXPORT_FORMATS[k] for k in kinds))
        if path:
            if suffix_of(path) not in LABEL_WRITE_SUFFIXES:  # a bare name: the format chosen in the dialog
                path += suffixes[chosen_filter.get(chosen, kinds[0])]
            out = self.controller.export(path)
            self.controller.notify("info", f"Exported {out}.")

    def _load_model(self):
        path = QFileDialog.getExistingDirectory(self, "Folder of a saved napari-semiseg model")
        if path:
            meta = self.controller.load_model(path)
            self.method_combo.setCurrentText(meta["method"])
            self.controller.notify("info", f"Loaded a {meta['method']} model ({meta['iteration']} iterations): Train resumes from it.")

    # ------------------------------------------------------------------ layers
    def _connect_viewer(self) -> None:
        self.viewer.layers.events.inserted.connect(self._refill_layers)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.dims.events.current_step.connect(self._schedule_refresh)
        self.viewer.dims.events.current_step.connect(self.controller.follow_view)
        self.viewer.dims.events.order.connect(self.controller.view_changed)
        self.viewer.dims.events.ndisplay.connect(self.controller.view_changed)
        # closing the viewer window never reaches a dock widget's closeEvent: watch the window itself
        window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        if window is not None:
            self._close_watcher = _CloseWatcher(self.controller.shutdown)
            window.installEventFilter(self._close_watcher)
        controller = self.controller
        self.destroyed.connect(lambda *_: controller.shutdown())

    def _image_layers(self):
        return [ly for ly in self.viewer.layers if ly._type_string == "image" and ly.name not in LIVE_LAYERS]

    def _labels_layers(self):
        return [ly for ly in self.viewer.layers if ly._type_string == "labels" and ly.name not in LIVE_LAYERS]

    def _refill_layers(self, *_):
        for combo, layers, extra in ((self.image_combo, self._image_layers(), None),
                                     (self.labels_combo, self._labels_layers(), NEW_LABELS)):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([ly.name for ly in layers] + ([extra] if extra else []))
            if current and combo.findText(current) >= 0:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        self._layers_chosen()

    def _on_layer_removed(self, event=None):
        st = self.controller.state
        if len(self.viewer.layers) == 0 and not self.controller.running:
            st.image_layer = st.labels_layer = None  # viewer closing or emptied: nothing to choose from
            return
        if st.image_layer is not None and st.image_layer not in self.viewer.layers:
            if self.controller.running:
                self.controller.notify("warning", "The image being trained on was removed: training stops (the model is kept).")
                self.controller.stop()
            st.image_layer = None
        if st.labels_layer is not None and st.labels_layer not in self.viewer.layers:
            st.labels_layer = None
        self._refill_layers()

    def _layers_chosen(self, *_):
        if self.controller.running:
            return
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            return
        image = self.viewer.layers[name]
        lname = self.labels_combo.currentText()
        labels = self.viewer.layers[lname] if lname in self.viewer.layers else None
        if labels is not None and tuple(labels.data.shape) != self.controller._spatial_shape(image):
            labels = None
        try:
            axis = self.axis_spin.value() if self.controller.state.image_layer is image else None
            self.controller.set_layers(image, labels, axis)
        except InputError:
            return
        self.axis_spin.blockSignals(True)
        self.axis_spin.setValue(self.controller.state.axis)
        self.axis_spin.setEnabled(self.controller.is_3d)
        self.axis_spin.blockSignals(False)
        self._fill_classes()
        lab = self.controller.state.labels_layer
        if lab is not None and self.labels_combo.currentText() != lab.name:
            self.labels_combo.blockSignals(True)
            self.labels_combo.setCurrentText(lab.name)
            self.labels_combo.blockSignals(False)

    # ------------------------------------------------------------------ classes
    def _fill_classes(self) -> None:
        table = self.controller.class_table()
        self.class_table.blockSignals(True)
        self.class_table.setRowCount(len(table))
        self.class_table.setVerticalHeaderLabels([str(v) for v in table])
        for row, entry in enumerate(table.values()):
            self.class_table.setItem(row, 0, QTableWidgetItem(entry["name"]))
            swatch = QTableWidgetItem(entry["colour"])
            swatch.setBackground(QColor(entry["colour"]))
            swatch.setFlags(swatch.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.class_table.setItem(row, 1, swatch)
        self.class_table.blockSignals(False)

    def _class_value(self, row: int) -> int:
        return int(self.class_table.verticalHeaderItem(row).text())

    def _class_renamed(self, item) -> None:
        if item.column() == 0:
            self._run(lambda: self.controller.set_class(self._class_value(item.row()), name=item.text()))
            self._fill_classes()

    def _class_clicked(self, row: int, column: int) -> None:
        value = self._class_value(row)
        lab = self.controller.state.labels_layer
        if lab is not None:
            lab.selected_label = value  # paint this class next
        if column == 1:
            from qtpy.QtWidgets import QColorDialog

            colour = QColorDialog.getColor(QColor(self.class_table.item(row, 1).text()), self, "Class colour")
            if colour.isValid():
                self._run(lambda: self.controller.set_class(value, colour=colour.name()))
                self._fill_classes()

    def _add_class(self) -> None:
        classes = [v for v in self.controller.class_table() if v != PAINTED_BACKGROUND]
        self.controller.set_class(max(classes, default=0) + 1)
        self._fill_classes()

    def _unpainted_chosen(self, index: int) -> None:
        self._run(lambda: self.controller.set_unpainted(UNPAINTED[index]))
        self._fill_classes()

    def _labels_activated(self, index: int) -> None:
        """The user picked an entry of the labels list: "(new labels layer)" makes one."""
        if self.labels_combo.itemText(index) == NEW_LABELS and not self.controller.running:
            layer = self._run(self.controller.new_labels_layer)
            if layer is not None:
                self.labels_combo.blockSignals(True)
                self.labels_combo.setCurrentText(layer.name)
                self.labels_combo.blockSignals(False)

    def _axis_chosen(self, value):
        if not self.controller.running and self.controller.state.image_layer is not None:
            self._run(lambda: self.controller.set_axis(int(value)))

    # ------------------------------------------------------------------ state -> widgets
    _shown_running = False

    def _schedule_refresh(self, *_):
        try:
            if self.controller.running != self._shown_running:  # start/stop: buttons must follow at once
                self.refresh()
            elif not self._refresh_timer.isActive():
                self._refresh_timer.start()
        except RuntimeError:  # the widget was deleted (viewer closed) while a report was in flight
            pass

    def refresh(self) -> None:
        c = self.controller
        labeled = sorted(c.labeled_slices())
        shown = ", ".join(map(str, labeled[:12])) + (" …" if len(labeled) > 12 else "")
        self.labeled_label.setText(f"Labeled slices: {len(labeled)}" + (f" ({shown})" if labeled else
                                   " — paint a few slices, or mark empty ones, then Train."))
        self.axis_spin.blockSignals(True)
        self.axis_spin.setValue(c.state.axis)
        self.axis_spin.blockSignals(False)
        self.axis_words.setText(c.axis_words() if c.is_3d else "")
        if c.state.labels_layer is not None:
            here = c.current_slice()
            self.mark_labeled_button.setText(f"Unmark slice {here}" if here in c.state.marked_empty
                                             else f"Mark slice {here} as labeled (nothing here)")
        running = c.running
        self._shown_running = running
        self.restore_button.setEnabled(c.autosave_offer is not None and not running)
        self.restore_button.setText("Restore labels " + c.autosave_offer if c.autosave_offer
                                    else "Restore autosaved labels (none)")
        self.unpainted_combo.blockSignals(True)
        self.unpainted_combo.setCurrentIndex(UNPAINTED.index(c.state.unpainted))
        self.unpainted_combo.blockSignals(False)
        for w in (self.image_combo, self.labels_combo, self.axis_spin, self.unpainted_combo, self.method_combo,
                  self.device_combo, self.advanced):
            w.setEnabled(not running)
        why = c.unavailable()
        for w, action in ((self.train_button, "train"), (self.pause_button, "pause"), (self.stop_button, "stop"),
                          (self.next_uncertain_button, "next"), (self.accept_slice_button, "accept"),
                          (self.accept_next_button, "accept_next"), (self.finish_button, "finish"),
                          (self.export_button, "export"),
                          (self.mark_labeled_button, "mark"), (self.save_model_button, "save"),
                          (self.load_model_button, "load")):
            self._able(w, why[action])
        self.pause_button.setText("Resume" if c.paused else "Pause")
        r = c.state.last_report
        if running and c.paused:
            self.progress_label.setText("Paused" + (f" at iteration {r.iteration}." if r is not None else "."))
        elif running and r is not None:
            mins, secs = divmod(int(r.elapsed), 60)
            self.progress_label.setText(f"Iteration {r.iteration} · {r.slices_per_second:.0f} slices/s · "
                                        f"{mins}:{secs:02d}")
        elif running:
            self.progress_label.setText("Starting…")
        elif r is not None:
            model = c.state.model_dir
            self.progress_label.setText(f"Stopped after {r.iteration} iterations." +
                                        (f" Model: …/{Path(model).parent.name}/{Path(model).name}" if model else ""))
            self.progress_label.setToolTip(f"The model is saved in {model}" if model else "")
        self.loss_curve.set_values(c.state.loss_history)
        if c.last_message is not None:
            severity, text = c.last_message
            colour = {"error": "#ff6b6b", "warning": "#ffb347"}.get(severity, "")
            self.message_label.setStyleSheet(f"color: {colour}" if colour else "")
            self.message_label.setText(text)

    def closeEvent(self, event):  # noqa: N802
        self.controller.shutdown()
        super().closeEvent(event)


class _CloseWatcher(QObject):
    def __init__(self, on_close):
        super().__init__()
        self.on_close = on_close

    def eventFilter(self, obj, event):  # noqa: N802
        if event.type() == QEvent.Type.Close:
            self.on_close()
        return False


def _spin(lo: int, hi: int, value: int, name: str, step: int = 1) -> QSpinBox:
    s = QSpinBox(objectName=name)
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    return s
