"""The dock widget: layout only. Every action is a call into :class:`SessionController`."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QPointF, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                            QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..core.io import InputError
from ..core.methods import METHODS
from ..core.trainer import TrainConfig
from ..core.variants import parse_settings
from .controller import PSEUDO, SEGMENTATION, UNCERTAIN_REGIONS, UNCERTAINTY, SessionController

_LIVE = {PSEUDO, UNCERTAINTY, UNCERTAIN_REGIONS, SEGMENTATION}


class LossCurve(QWidget):
    """A small live plot of the training loss (no plotting library needed)."""

    def __init__(self):
        super().__init__()
        self.values: list[float] = []
        self.setMinimumHeight(70)
        self.setObjectName("loss_curve")

    def set_values(self, values: list[float]) -> None:
        self.values = values[-500:]
        self.update()

    def paintEvent(self, event):  # noqa: N802 (Qt naming)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(30, 30, 30))
        if len(self.values) > 1:
            lo, hi = min(self.values), max(self.values)
            span = (hi - lo) or 1.0
            w, h = self.width() - 4, self.height() - 14
            pts = [QPointF(2 + w * i / (len(self.values) - 1), 2 + h * (1 - (v - lo) / span))
                   for i, v in enumerate(self.values)]
            p.setPen(QPen(QColor(90, 200, 250), 1.5))
            p.drawPolyline(QPolygonF(pts))
            p.setPen(QColor(200, 200, 200))
            p.drawText(4, self.height() - 2, f"loss {self.values[-1]:.3f} (min {lo:.3f})")
        else:
            p.setPen(QColor(150, 150, 150))
            p.drawText(4, self.height() - 4, "loss curve appears while training")
        p.end()


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
        self._refill_layers()
        self.refresh()

    # ------------------------------------------------------------------ layout
    def _button(self, text: str, name: str, slot) -> QPushButton:
        b = QPushButton(text)
        b.setObjectName(name)
        b.clicked.connect(lambda: self._run(slot))
        return b

    def _build(self) -> None:
        root = QVBoxLayout(self)
        data = QGroupBox("Data")
        form = QFormLayout(data)
        self.image_combo = QComboBox(objectName="image_combo")
        self.labels_combo = QComboBox(objectName="labels_combo")
        self.axis_spin = QSpinBox(objectName="axis_spin")
        self.axis_spin.setRange(0, 2)
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Slice axis", self.axis_spin)
        self.labeled_label = QLabel(objectName="labeled_label")
        self.labeled_label.setWordWrap(True)
        form.addRow(self.labeled_label)
        self.mark_labeled_button = self._button("Mark slice as labeled (nothing here)", "mark_labeled_button",
                                                self._mark)
        form.addRow(self.mark_labeled_button)
        self.restore_button = self._button("Restore autosaved labels", "restore_button",
                                           self.controller.restore_autosaved)
        self.restore_button.setToolTip("Labels you painted on this image in an earlier session, autosaved a few "
                                       "seconds after each edit; they come back as a new layer")
        form.addRow(self.restore_button)
        root.addWidget(data)

        train = QGroupBox("Training")
        tform = QFormLayout(train)
        self.method_combo = QComboBox(objectName="method_combo")
        self.method_combo.addItems(list(METHODS))
        self.method_combo.setCurrentText("mean-teacher")
        self.device_combo = QComboBox(objectName="device_combo")
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.budget_spin = QDoubleSpinBox(objectName="budget_spin")
        self.budget_spin.setRange(0.0, 600.0)
        self.budget_spin.setValue(0.0)
        self.budget_spin.setSuffix(" min")
        self.budget_spin.setSpecialValueText("until stopped")
        tform.addRow("Method", self.method_combo)
        tform.addRow("Device", self.device_combo)
        tform.addRow("Budget", self.budget_spin)
        root.addWidget(train)

        self.advanced = QGroupBox("Advanced", objectName="advanced_box")
        self.advanced.setCheckable(True)
        self.advanced.setChecked(False)
        aform = QFormLayout(self.advanced)
        d = TrainConfig()
        self.batch_spin = _spin(0, 64, 0, "batch_spin")
        self.batch_spin.setSpecialValueText("auto")
        self.labeled_batch_spin = _spin(0, 64, 0, "labeled_batch_spin")
        self.labeled_batch_spin.setSpecialValueText("auto")
        self.patch_spin = _spin(0, 1024, 0, "patch_spin", step=16)
        self.patch_spin.setSpecialValueText("auto")
        self.patch_spin.setToolTip("Side of the training patches, in working pixels; auto: 128 on a CPU, 512 on a "
                                   "GPU, or the whole slice when it is smaller")
        self.scale_spin = QDoubleSpinBox(objectName="scale_spin", decimals=2, singleStep=0.25)
        self.scale_spin.setRange(0.1, 1.0)
        self.scale_spin.setValue(d.scale)
        self.scale_spin.setToolTip("Working resolution: 1 = the image's own; 0.5 trains and predicts at half "
                                   "(faster, but thin structures may vanish)")
        self.context_spin = _spin(0, 3, d.context, "context_spin")
        self.refresh_spin = _spin(1, 120, int(d.refresh_seconds), "refresh_spin")
        self.lr_spin = QDoubleSpinBox(objectName="lr_spin", decimals=5, singleStep=1e-4)
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setValue(d.lr)
        self.seed_spin = _spin(0, 2**31 - 1, d.seed, "seed_spin")
        self.method_settings_edit = QLineEdit(objectName="method_settings_edit")
        self.method_settings_edit.setPlaceholderText("e.g. encoder=dinov2:/models/dinov2-small, blend=box")
        self.method_settings_edit.setToolTip("The method's settings as KEY=VALUE, comma-separated (see the README)")
        self.unlabeled_dir_edit = QLineEdit(objectName="unlabeled_dir_edit")
        self.unlabeled_dir_edit.setPlaceholderText("optional folder of extra (e.g. synthetic) unlabeled images")
        self.unlabeled_source_combo = QComboBox(objectName="unlabeled_source_combo")
        self.unlabeled_source_combo.addItems(["real", "extra", "both"])
        for label, w in (("Batch size", self.batch_spin), ("Labeled per batch", self.labeled_batch_spin),
                         ("Patch size", self.patch_spin), ("Working scale", self.scale_spin),
                         ("Context slices", self.context_spin),
                         ("Refresh every (s)", self.refresh_spin), ("Learning rate", self.lr_spin),
                         ("Seed", self.seed_spin), ("Method settings", self.method_settings_edit),
                         ("Unlabeled folder", self.unlabeled_dir_edit),
                         ("Unlabeled images from", self.unlabeled_source_combo)):
            aform.addRow(label, w)
        self.advanced.toggled.connect(lambda on: [aform.itemAt(i).widget().setVisible(on)
                                                  for i in range(aform.count()) if aform.itemAt(i).widget()])
        self.advanced.toggled.emit(False)
        root.addWidget(self.advanced)

        row = QHBoxLayout()
        self.train_button = self._button("Train", "train_button", self._train)
        self.pause_button = self._button("Pause", "pause_button", self._pause)
        self.stop_button = self._button("Stop", "stop_button", self.controller.stop)
        for b in (self.train_button, self.pause_button, self.stop_button):
            row.addWidget(b)
        root.addLayout(row)
        self.progress_label = QLabel("Not training.", objectName="progress_label")
        root.addWidget(self.progress_label)
        self.loss_curve = LossCurve()
        root.addWidget(self.loss_curve)

        review = QGroupBox("Review")
        rlay = QVBoxLayout(review)
        self.next_uncertain_button = self._button("Next uncertain slice", "next_uncertain_button",
                                                  self.controller.next_uncertain_slice)
        self.accept_slice_button = self._button("Accept slice", "accept_slice_button", self.controller.accept_slice)
        rrow = QHBoxLayout()
        rrow.addWidget(self.next_uncertain_button)
        rrow.addWidget(self.accept_slice_button)
        rlay.addLayout(rrow)
        urow = QHBoxLayout()
        self.regions_check = QCheckBox("Show uncertain regions above", objectName="regions_check")
        self.threshold_spin = QDoubleSpinBox(objectName="threshold_spin", decimals=2, singleStep=0.05)
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setValue(0.5)
        self.regions_check.toggled.connect(self._regions)
        self.threshold_spin.valueChanged.connect(self._regions)
        urow.addWidget(self.regions_check)
        urow.addWidget(self.threshold_spin)
        rlay.addLayout(urow)
        self.finish_button = self._button("Finish: build the segmentation layer", "finish_button",
                                          self.controller.finish)
        rlay.addWidget(self.finish_button)
        mrow = QHBoxLayout()
        self.save_model_button = self._button("Save model…", "save_model_button", self._save_model)
        self.load_model_button = self._button("Load model…", "load_model_button", self._load_model)
        mrow.addWidget(self.save_model_button)
        mrow.addWidget(self.load_model_button)
        rlay.addLayout(mrow)
        root.addWidget(review)
        root.addStretch(1)

        self.image_combo.currentIndexChanged.connect(self._layers_chosen)
        self.labels_combo.currentIndexChanged.connect(self._layers_chosen)
        self.axis_spin.valueChanged.connect(self._axis_chosen)

    # ------------------------------------------------------------------ actions
    def _run(self, action):
        """Run a button's action; user errors become one-sentence notifications."""
        from napari.utils.notifications import show_error

        try:
            return action()
        except InputError as err:
            show_error(str(err))
        finally:
            self.refresh()

    def config(self) -> TrainConfig:
        minutes = self.budget_spin.value() or None
        method = self.method_combo.currentText()
        settings = parse_settings(self.method_settings_edit.text())
        try:  # unknown keys now, in one sentence, rather than from the training thread
            METHODS[method].Settings.from_dict(settings)
        except ValueError as err:
            raise InputError(f"{method}: {err}") from None
        return TrainConfig(method=method, device=self.device_combo.currentText(),
                           minutes=minutes, batch_size=self.batch_spin.value() or None,
                           labeled_batch=(min(self.labeled_batch_spin.value(), self.batch_spin.value() or 64) or None),
                           patch_size=self.patch_spin.value() or None, scale=self.scale_spin.value(),
                           context=self.context_spin.value(),
                           refresh_seconds=float(self.refresh_spin.value()), lr=self.lr_spin.value(),
                           seed=self.seed_spin.value(),
                           method_settings=settings,
                           unlabeled_dir=self.unlabeled_dir_edit.text().strip() or None,
                           unlabeled_source=self.unlabeled_source_combo.currentText())

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

    def _regions(self, *_):
        self.controller.set_uncertain_regions(self.regions_check.isChecked(), self.threshold_spin.value())

    def _save_model(self):
        path = QFileDialog.getExistingDirectory(self, "Save the model into a folder")
        if path:
            out = self.controller.save_model(path)
            from napari.utils.notifications import show_info

            show_info(f"Model saved in {out}.")

    def _load_model(self):
        path = QFileDialog.getExistingDirectory(self, "Folder of a saved napari-semiseg model")
        if path:
            meta = self.controller.load_model(path)
            self.method_combo.setCurrentText(meta["method"])
            from napari.utils.notifications import show_info

            show_info(f"Loaded a {meta['method']} model ({meta['iteration']} iterations): Train resumes from it.")

    # ------------------------------------------------------------------ layers
    def _connect_viewer(self) -> None:
        self.viewer.layers.events.inserted.connect(self._refill_layers)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.dims.events.current_step.connect(self._schedule_refresh)
        self.viewer.dims.events.current_step.connect(self.controller.follow_view)
        # closing the viewer window never reaches a dock widget's closeEvent: watch the window itself
        window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        if window is not None:
            self._close_watcher = _CloseWatcher(self.controller.shutdown)
            window.installEventFilter(self._close_watcher)
        controller = self.controller
        self.destroyed.connect(lambda *_: controller.shutdown())

    def _image_layers(self):
        return [ly for ly in self.viewer.layers if ly._type_string == "image" and ly.name not in _LIVE]

    def _labels_layers(self):
        return [ly for ly in self.viewer.layers if ly._type_string == "labels" and ly.name not in _LIVE]

    def _refill_layers(self, *_):
        for combo, layers, extra in ((self.image_combo, self._image_layers(), None),
                                     (self.labels_combo, self._labels_layers(), "(new labels layer)")):
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
                from napari.utils.notifications import show_warning

                show_warning("The image being trained on was removed: training stops (the model is kept).")
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
        lab = self.controller.state.labels_layer
        if lab is not None and self.labels_combo.currentText() != lab.name:
            self.labels_combo.blockSignals(True)
            self.labels_combo.setCurrentText(lab.name)
            self.labels_combo.blockSignals(False)

    def _axis_chosen(self, value):
        if not self.controller.running and self.controller.state.image_layer is not None:
            self.controller.state.axis = int(value)
            self.refresh()

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
        if c.state.labels_layer is not None:
            here = c.current_slice()
            self.mark_labeled_button.setText(f"Unmark slice {here}" if here in c.state.marked_empty
                                             else f"Mark slice {here} as labeled (nothing here)")
        running = c.running
        self._shown_running = running
        self.restore_button.setEnabled(c.autosave_offer is not None and not running)
        self.restore_button.setText("Restore labels " + c.autosave_offer if c.autosave_offer
                                    else "Restore autosaved labels (none)")
        for w in (self.image_combo, self.labels_combo, self.axis_spin, self.method_combo, self.device_combo,
                  self.advanced, self.load_model_button):
            w.setEnabled(not running)
        self.train_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        self.pause_button.setText("Resume" if c.paused else "Pause")
        r = c.state.last_report
        if running and r is not None:
            mins, secs = divmod(int(r.elapsed), 60)
            self.progress_label.setText(("Paused · " if r.paused else "") + f"iteration {r.iteration} · "
                                        f"{r.slices_per_second:.0f} slices/s · {mins}:{secs:02d}")
        elif running:
            self.progress_label.setText("Starting…")
        elif r is not None:
            self.progress_label.setText(f"Stopped after {r.iteration} iterations." +
                                        (f" Model: {c.state.model_dir}" if c.state.model_dir else ""))
        self.loss_curve.set_values(c.state.loss_history)

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
