"""Session state <-> napari layers: runs the trainer in a worker thread; no layout code.

Data flows one way: the user's layers are snapshotted into a ``Volume``, the trainer runs in a
napari generator worker, and its reports come back in the ``yielded`` slot, where the live layers
are updated in place. The user's labels layer is only ever written by "Accept slice", as one undo step.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info

from ..core.autosave import Autosaver, Slot, default_root
from ..core.checkpoint import is_model_folder, load_method, model_dir
from ..core.errors import InputError, is_out_of_memory, out_of_memory_message
from ..core.proposal import propose_slice
from ..core.trainer import LabelUpdate, Report, TrainConfig, Trainer
from ..core.volume import Volume, final_segmentation, labeled_slices_from_labels
from .layers import SOURCE_KEY

PSEUDO = "pseudo-labels"
UNCERTAINTY = "uncertainty"
UNCERTAIN_REGIONS = "uncertain regions"
SEGMENTATION = "segmentation"


TRAINING_GC_THRESHOLDS = (20000, 50, 50)  # Python's defaults are (700, 10, 10)


class TrainingFailed(Exception):
    """An error inside the training thread, carried to the GUI thread."""


def gui_thread_count() -> int:
    """Leave a core to the viewer: training on every core makes the GUI stutter."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass
class SessionState:
    image_layer: object | None = None
    labels_layer: object | None = None
    axis: int = 0
    marked_empty: set[int] = field(default_factory=set)
    last_report: Report | None = None
    loss_history: list[float] = field(default_factory=list)
    slice_scores: np.ndarray | None = None
    model_dir: Path | None = None
    checkpoint_iteration: int | None = None
    resume_next: bool = False  # the next Train continues model_dir (after Load, a restore or a crash)


class SessionController:
    """Everything the widget's buttons do, testable without the widget."""

    def __init__(self, viewer, on_change=None):
        self.viewer = viewer
        self.state = SessionState()
        self.trainer: Trainer | None = None
        self.worker = None
        self.on_change = on_change or (lambda: None)
        self.uncertainty_threshold = 0.5
        self.show_uncertain_regions = False
        self._pending_labels = False
        self._progress_bar = None
        self._done = threading.Event()
        self._stop_requested = False
        self._gc_thresholds = None
        self.autosave_dir = default_root()
        self.autosaver: Autosaver | None = None
        self.slot: Slot | None = None
        self.autosave_offer: str | None = None  # what "Restore autosaved labels" would bring back
        self._pending_writes: list = []  # chunks of a whole-volume result still to write into the layers

    # ------------------------------------------------------------------ layers and slices
    def set_layers(self, image_layer, labels_layer=None, axis: int | None = None, create_labels: bool = False) -> None:
        """Choose the image and the labels layer to annotate (an existing one on the image's grid, or,
        with ``create_labels``, a new one)."""
        if image_layer is None:
            raise InputError("Choose an image layer first.")
        if labels_layer is None:
            labels_layer = self._labels_for(image_layer, create=create_labels)
        if labels_layer is None:
            self._disconnect_labels()
            self.state.image_layer, self.state.labels_layer = image_layer, None
            self.state.axis = self.default_axis() if axis is None else axis
            self.on_change()
            return
        spatial = self._spatial_shape(image_layer)
        if tuple(labels_layer.data.shape) != spatial:
            raise InputError(f"The labels layer '{labels_layer.name}' has shape {labels_layer.data.shape}, "
                             f"not the image's {spatial}: pick or create a matching labels layer.")
        changed = (image_layer, labels_layer) != (self.state.image_layer, self.state.labels_layer)
        self._disconnect_labels()
        self.state.image_layer, self.state.labels_layer = image_layer, labels_layer
        self.state.axis = self.default_axis() if axis is None else axis
        labels_layer.events.paint.connect(self._on_user_edit)
        labels_layer.events.data.connect(self._on_user_edit)
        if changed or self.autosaver is None:
            self._start_autosave()
        self.on_change()

    # ------------------------------------------------------------------ autosave
    def _start_autosave(self) -> None:
        """Painted labels go to this image's slot a couple of seconds after each edit, off the GUI thread."""
        self._stop_autosave()
        img, lab = self.state.image_layer, self.state.labels_layer
        self.slot = Slot.for_image(self.autosave_dir, img.name, img.data, _source_path(img))
        self.autosaver = Autosaver(self.slot, lambda: (np.array(lab.data, copy=True), self._autosave_info(lab)),
                                   on_error=self._autosave_failed)
        found = self.autosaved()
        self.autosave_offer = None if found is None else self._describe(found)
        if self.autosave_offer:
            show_info(f"Labels of this image autosaved {self.autosave_offer} were found: 'Restore labels' "
                      "brings them back as a new layer.")

    def _describe(self, found: dict) -> str:
        stamp = time.strftime("%d %b %H:%M", time.localtime(found.get("saved", time.time())))
        labels = found["labels"]
        n = len(labeled_slices_from_labels(labels, int(found.get("axis", 0))) | set(found.get("marked_empty", []))) \
            if labels.ndim == 3 else 1
        return f"from {stamp} ({n} labeled slice{'s' if n != 1 else ''}" + \
            (", with the model" if found["model"] is not None else "") + ")"

    def _autosave_info(self, lab) -> dict:
        return {"image": self.state.image_layer.name if self.state.image_layer else "", "labels_layer": lab.name,
                "axis": self.state.axis, "marked_empty": sorted(self.state.marked_empty)}

    def _autosave_failed(self, err: Exception) -> None:
        from napari.utils.notifications import show_warning

        show_warning(f"Autosave of your labels failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
                     " Export them with File > Save Selected Layers.")

    def _stop_autosave(self) -> None:
        if self.autosaver is not None:
            self.autosaver.close()  # saves what is unsaved first
            self.autosaver = None

    def autosaved(self) -> dict | None:
        """What the slot of the chosen image holds from an earlier session, if it differs from the layer."""
        if self.slot is None or self.state.labels_layer is None:
            return None
        found = self.slot.load_labels()
        if found is None:
            return None
        labels, info = found
        if labels.shape != tuple(self.state.labels_layer.data.shape) or not labels.any() or \
                np.array_equal(labels, np.asarray(self.state.labels_layer.data)):
            return None
        model = self.slot.model_folder
        return {**info, "labels": labels, "model": model if (model / "config.json").is_file() else None}

    def restore_autosaved(self):
        """The autosaved labels as a new labels layer (nothing on screen is overwritten), and the
        autosaved model as where the next Train resumes."""
        found = self.autosaved()
        if found is None:
            raise InputError("There are no autosaved labels for this image that differ from the current ones.")
        img = self.state.image_layer
        stamp = time.strftime("%H:%M", time.localtime(found.get("saved", time.time())))
        layer = self.viewer.add_labels(found["labels"], name=f"{found.get('labels_layer', 'annotations')} "
                                       f"(restored {stamp})", scale=img.scale, translate=img.translate,
                                       metadata=_source_meta(img))
        self.set_layers(img, layer, int(found.get("axis", self.state.axis)))
        self.state.marked_empty = {int(i) for i in found.get("marked_empty", [])}
        if found["model"] is not None:
            meta = self.load_model(found["model"])
            self.state.checkpoint_iteration = int(meta.get("iteration", 0))
        self.autosave_offer = None
        self.on_change()
        return layer

    def _disconnect_labels(self) -> None:
        old = self.state.labels_layer
        if old is not None:
            for ev in (old.events.paint, old.events.data):
                try:
                    ev.disconnect(self._on_user_edit)
                except (TypeError, ValueError, RuntimeError):
                    pass

    @staticmethod
    def _spatial_shape(image_layer) -> tuple[int, ...]:
        shape = tuple(image_layer.data.shape)
        return shape[:-1] if getattr(image_layer, "rgb", False) else shape

    def _labels_for(self, image_layer, create: bool):
        """The labels layer to annotate: an existing one on the image's grid, else (``create``) a new one."""
        spatial = self._spatial_shape(image_layer)
        for layer in self.viewer.layers:
            if layer._type_string == "labels" and tuple(layer.data.shape) == spatial \
                    and layer.name not in (PSEUDO, UNCERTAIN_REGIONS, SEGMENTATION):
                return layer
        if not create:
            return None
        return self.viewer.add_labels(np.zeros(spatial, np.uint8), name="annotations", scale=image_layer.scale,
                                      translate=image_layer.translate, metadata=_source_meta(image_layer))

    def default_axis(self) -> int:
        """The axis napari is slicing (for 3D), else 0."""
        img = self.state.image_layer
        if img is None or len(self._spatial_shape(img)) < 3:
            return 0
        not_displayed = [d - (self.viewer.dims.ndim - 3) for d in self.viewer.dims.not_displayed]
        candidates = [d for d in not_displayed if 0 <= d < 3]
        return candidates[0] if candidates else 0

    @property
    def is_3d(self) -> bool:
        return self.state.image_layer is not None and len(self._spatial_shape(self.state.image_layer)) == 3

    def current_slice(self) -> int:
        if not self.is_3d:
            return 0
        layer = self.state.labels_layer
        data_pt = layer.world_to_data(self.viewer.dims.point[-layer.ndim:]) if layer.ndim <= self.viewer.dims.ndim \
            else self.viewer.dims.point
        return int(np.clip(np.round(data_pt[self.state.axis]), 0, layer.data.shape[self.state.axis] - 1))

    def go_to_slice(self, index: int) -> None:
        layer = self.state.labels_layer
        if not self.is_3d:
            return
        point = np.zeros(layer.ndim)
        point[self.state.axis] = index
        world = layer.data_to_world(point)
        offset = self.viewer.dims.ndim - layer.ndim
        self.viewer.dims.set_point(offset + self.state.axis, world[self.state.axis])

    def labeled_slices(self) -> set[int]:
        lab = self.state.labels_layer
        if lab is None:
            return set()
        painted = labeled_slices_from_labels(np.asarray(lab.data), self.state.axis) if self.is_3d else (
            {0} if np.asarray(lab.data).any() else set())
        return painted | self.state.marked_empty

    def toggle_mark_labeled(self) -> bool:
        """Mark the current slice as labeled even if all background ("nothing here"), or unmark it."""
        i = self.current_slice()
        if i in self.state.marked_empty:
            self.state.marked_empty.discard(i)
            marked = False
            if i in self.labeled_slices():
                show_info(f"Slice {i} still counts as labeled: it has painted labels.")
        else:
            self.state.marked_empty.add(i)
            marked = True
        if self.autosaver is not None:
            self.autosaver.mark_dirty()
        self._send_labels()
        self.on_change()
        return marked

    # ------------------------------------------------------------------ training
    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, config: TrainConfig, resume_from: str | os.PathLike | None = None) -> None:
        """Train; without ``resume_from``, continue the loaded, restored or crashed model if there is one."""
        if resume_from is None and self.state.resume_next:
            resume_from = self.state.model_dir
        if self.running:
            raise InputError("Training is already running.")
        config.check()  # a wrong setting is one sentence now, not a failure in the training thread
        if self.state.image_layer is None:
            raise InputError("Choose an image layer first.")
        if self.state.labels_layer is None:
            self.set_layers(self.state.image_layer, None, self.state.axis, create_labels=True)
        labeled = self.labeled_slices()
        if not labeled:
            raise InputError("No slice is labeled yet: paint a few slices (or mark empty ones with "
                             "'Mark slice as labeled'), then press Train.")
        snapshot = self._snapshot(labeled)
        # Garbage collections over napari's hundreds of thousands of objects, triggered by the
        # training thread's allocations, hold the GIL for up to 0.4 s and freeze the viewer. Freezing
        # what exists now (it is long-lived) and collecting less often while training took the worst
        # stall to about 0.1 s (benchmarks/RESULTS.md section 6); thresholds are restored afterwards.
        gc.freeze()
        if self._gc_thresholds is None:
            self._gc_thresholds = gc.get_threshold()
            gc.set_threshold(*TRAINING_GC_THRESHOLDS)
        if config.threads is None:
            config.threads = gui_thread_count()
        self.trainer = None
        self._stop_requested = False
        self.state.loss_history.clear()
        self._ensure_live_layers(arrange=True)
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self._progress_bar = progress(total=100 if (config.minutes or config.iterations) else 0,
                                      desc="semiseg: training")
        self._done = threading.Event()
        out_dir = self.slot.model_folder
        # errors are ours to report (a notification), not to re-raise in the event loop
        self.state.resume_next = False
        self.worker = create_worker(self._run_trainer, snapshot, config, resume_from, out_dir,
                                    _connect={"yielded": self._on_report, "errored": self._on_error,
                                              "finished": self._on_finished},
                                    _start_thread=True)
        self.on_change()

    def _run_trainer(self, snapshot: dict, config: TrainConfig, resume_from, out_dir):
        """Builds the trainer and runs its generator, all in the worker thread.

        Building happens here, not in the click handler, because normalisation statistics and the
        network's construction stalled the viewer for 0.4 s. Errors are re-raised as
        :class:`TrainingFailed`: superqt's worker takes any RuntimeError (which torch's
        out-of-memory and CUDA errors are) for a deleted Qt object and only warns, so the user
        would never hear of the failure. ``_done`` lets the GUI thread wait when the viewer closes.
        """
        try:
            focus = snapshot.pop("focus")
            self.trainer = Trainer([Volume(**snapshot)], config, resume_from=resume_from, out_dir=out_dir)
            self.trainer.set_focus(focus)
            if self._stop_requested:
                self.trainer.stop()
            yield from self.trainer.run()
        except InputError as err:
            raise TrainingFailed(str(err)) from err
        except Exception as err:
            raise TrainingFailed(f"{type(err).__name__}: {err}".split("\n")[0]) from err
        finally:
            self._done.set()

    def _snapshot(self, labeled: set[int]) -> dict:
        """What the trainer gets: the image as is and a copy of the labels (it never sees half-painted edits)."""
        img = self.state.image_layer
        # the image as the layer holds it (numpy, memory map, dask, zarr): read a slice at a time, never copied
        return {"image": img.data, "labels": np.array(self.state.labels_layer.data, copy=True),
                "labeled": set(labeled), "axis": self.state.axis if self.is_3d else 0,
                "channels": bool(getattr(img, "rgb", False)), "name": img.name, "focus": self.current_slice()}

    def pause(self) -> None:
        if self.trainer is not None:
            self.trainer.pause()
            self.on_change()

    def resume(self) -> None:
        if self.trainer is not None:
            self.trainer.resume()
            self.on_change()

    @property
    def paused(self) -> bool:
        return self.trainer is not None and self.trainer.paused

    def stop(self) -> None:
        """Stop training; the trainer saves its model (autosave folder) before it ends."""
        self._stop_requested = True
        if self.trainer is not None:
            self.trainer.resume()
            self.trainer.stop()

    def _on_user_edit(self, event=None) -> None:
        if self.autosaver is not None:
            self.autosaver.mark_dirty()
        if self.running:
            self._send_labels()

    def _send_labels(self) -> None:
        if not self.running or self.state.labels_layer is None:
            return
        labeled = self.labeled_slices()
        if not labeled:
            return
        update = LabelUpdate(np.array(self.state.labels_layer.data, copy=True), labeled)
        self.worker.send(update)

    def _on_report(self, report: Report) -> None:
        self.state.last_report = report
        if "loss" in report.losses:
            self.state.loss_history.append(report.losses["loss"])
        if self.state.image_layer in self.viewer.layers:
            if report.slices is not None:
                self._show_slices(report.slices)
            if report.prediction is not None:
                self._show_prediction(report.prediction[0])
        if self._progress_bar is not None and report.progress is not None:
            self._progress_bar.n = int(report.progress * 100)
            self._progress_bar.refresh()
        if report.checkpoint:
            self.state.model_dir = Path(report.checkpoint)
            self.state.checkpoint_iteration = report.iteration
        self.on_change()

    def _on_error(self, err: Exception) -> None:
        msg = str(err).split("\n")[0] or type(err).__name__
        if is_out_of_memory(err.__cause__ or err):
            msg = out_of_memory_message("training") + " (Advanced: Batch size, Patch size, Working scale.)"
        kept = ""
        if self.state.model_dir is not None and self.state.checkpoint_iteration is not None:
            kept = (f" The last checkpoint (iteration {self.state.checkpoint_iteration}) is kept in "
                    f"{self.state.model_dir}: Train resumes from it.")
            self.state.resume_next = True
        show_error(f"Training stopped: {msg}{kept} Your labels are untouched.")
        self._cleanup_worker()

    def _on_finished(self) -> None:
        if self.state.model_dir is not None:
            show_info(f"Training finished; the model is saved in {self.state.model_dir}.")
        self._cleanup_worker()

    def _cleanup_worker(self) -> None:
        self.worker = None
        if self._gc_thresholds is not None:
            gc.set_threshold(*self._gc_thresholds)
            self._gc_thresholds = None
        if self._progress_bar is not None:
            self._progress_bar.close()
            self._progress_bar = None
        self.on_change()

    # ------------------------------------------------------------------ live layers
    def _live_kwargs(self) -> dict:
        """Live layers sit exactly on the image (an RGB layer's scale already omits the colour axis)."""
        img = self.state.image_layer
        return {"scale": tuple(img.scale), "translate": tuple(img.translate)}

    def _ensure_live_layers(self, arrange: bool = False) -> None:
        """Create missing live layers; with ``arrange`` (at Train) put the user's labels on top and select them."""
        shape = self._spatial_shape(self.state.image_layer)
        kw = self._live_kwargs()
        if PSEUDO not in self.viewer.layers:
            self.viewer.add_labels(np.zeros(shape, np.uint8), name=PSEUDO, opacity=0.45, **kw)
        if UNCERTAINTY not in self.viewer.layers:
            self.viewer.add_image(np.zeros(shape, np.float32), name=UNCERTAINTY, colormap=uncertainty_colormap(),
                                  contrast_limits=(0.0, 1.0), blending="translucent", opacity=0.8, **kw)
        if self.show_uncertain_regions and UNCERTAIN_REGIONS not in self.viewer.layers:
            self.viewer.add_labels(np.zeros(shape, np.uint8), name=UNCERTAIN_REGIONS, opacity=0.6, **kw)
        # keep the user's labels on top so painting stays visible
        lab = self.state.labels_layer
        if arrange and lab in self.viewer.layers:
            self.viewer.layers.move(self.viewer.layers.index(lab), len(self.viewer.layers))
            self.viewer.layers.selection.active = lab

    WRITE_SLICES_PER_TURN = 16

    def _show_prediction(self, pred) -> None:
        """The whole volume (the last report), written a few slices per event-loop turn: one write of
        a 300 MB CT froze the viewer for 0.4 s."""
        self.state.slice_scores = np.asarray(pred.slice_scores, float)
        if not self.is_3d:
            self._write_live(slice(None), pred.labels, pred.uncertainty)
            return
        n = pred.labels.shape[self.state.axis]
        self._pending_writes = [(pred, i) for i in range(0, n, self.WRITE_SLICES_PER_TURN)]
        self._write_next_chunk()

    def _write_next_chunk(self) -> None:
        if not self._pending_writes:
            return
        pred, start = self._pending_writes.pop(0)
        idx = [slice(None)] * 3
        idx[self.state.axis] = slice(start, start + self.WRITE_SLICES_PER_TURN)
        if self.state.image_layer in self.viewer.layers:
            self._write_live(idx[self.state.axis], pred.labels[tuple(idx)], pred.uncertainty[tuple(idx)])
        if self._pending_writes:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self._write_next_chunk)

    def flush_writes(self) -> None:
        """Finish writing a whole-volume result now (before Finish or Accept read the layer)."""
        while self._pending_writes:
            self._write_next_chunk()

    def _show_slices(self, part) -> None:
        """A few slices (a live refresh): written in place; each slice keeps its latest score."""
        n = self.state.labels_layer.data.shape[self.state.axis] if self.is_3d else 1
        if self.state.slice_scores is None or len(self.state.slice_scores) != n:
            self.state.slice_scores = np.full(n, np.nan)
        if not self.is_3d:
            self._write_live(slice(None), part.labels[0], part.uncertainty[0])
        else:
            self._write_live(np.asarray(part.slices), np.moveaxis(part.labels, 0, self.state.axis),
                             np.moveaxis(part.uncertainty, 0, self.state.axis))
        self.state.slice_scores[np.asarray(part.slices)] = part.scores

    def _write_live(self, where, labels: np.ndarray, uncertainty: np.ndarray) -> None:
        """In place (the layers are never re-created); ``where`` indexes the slice axis."""
        self._ensure_live_layers()
        idx = [slice(None)] * labels.ndim
        if self.is_3d:
            idx[self.state.axis] = where
        idx = tuple(idx)
        layers = self.viewer.layers
        layers[PSEUDO].data[idx] = labels
        layers[PSEUDO].refresh()
        layers[UNCERTAINTY].data[idx] = uncertainty
        layers[UNCERTAINTY].refresh()
        if self.show_uncertain_regions:
            layers[UNCERTAIN_REGIONS].data[idx] = (uncertainty > self.uncertainty_threshold).astype(np.uint8)
            layers[UNCERTAIN_REGIONS].refresh()

    def follow_view(self, event=None) -> None:
        """The slice on screen is the one the next live refresh predicts first."""
        if self.trainer is not None and self.state.labels_layer is not None and self.is_3d:
            self.trainer.set_focus(self.current_slice())

    def set_uncertain_regions(self, show: bool, threshold: float | None = None) -> None:
        self.show_uncertain_regions = show
        if threshold is not None:
            self.uncertainty_threshold = float(threshold)
        if show and UNCERTAINTY in self.viewer.layers:
            self._ensure_live_layers()
            unc = self.viewer.layers[UNCERTAINTY].data
            self.viewer.layers[UNCERTAIN_REGIONS].data[...] = (unc > self.uncertainty_threshold).astype(np.uint8)
            self.viewer.layers[UNCERTAIN_REGIONS].refresh()
        elif not show and UNCERTAIN_REGIONS in self.viewer.layers:
            self.viewer.layers.remove(UNCERTAIN_REGIONS)

    # ------------------------------------------------------------------ review
    def next_uncertain_slice(self) -> int:
        """Go to the slice whose label is expected to help most: uncertain, amid uncertain slices, far
        from the labeled ones (core.proposal). Slices the live sweep has not reached yet are skipped."""
        if self.state.slice_scores is None:
            raise InputError("No prediction yet: press Train and wait for the first pseudo-labels.")
        best = propose_slice(self.state.slice_scores, self.labeled_slices())
        self.go_to_slice(best)
        return best

    def accept_slice(self) -> int:
        """Copy the pseudo-label of the current slice into the user's labels (one undo step).

        Voxels the user already painted on that slice are kept.
        """
        if PSEUDO not in self.viewer.layers:
            raise InputError("No pseudo-labels yet: press Train and wait for the first refresh.")
        self.flush_writes()
        i = self.current_slice()
        lab = self.state.labels_layer
        sl = [slice(None)] * lab.ndim
        if self.is_3d:
            sl[self.state.axis] = i
        pseudo = np.asarray(self.viewer.layers[PSEUDO].data[tuple(sl)])
        user = np.asarray(lab.data[tuple(sl)])
        merged = np.where(user != 0, user, pseudo).astype(lab.data.dtype)
        idx2d = np.nonzero(merged != user)
        if idx2d[0].size:
            full = []
            it = iter(idx2d)
            for a in range(lab.ndim):
                full.append(np.full(idx2d[0].shape, i) if (self.is_3d and a == self.state.axis) else next(it))
            with lab.block_history():
                lab.data_setitem(tuple(full), merged[idx2d])
        self.state.marked_empty.add(i)  # accepted, even if the teacher saw only background
        self._send_labels()
        self.on_change()
        return i

    def finish(self):
        """A new Labels layer: the user's labels on labeled slices, the teacher's elsewhere."""
        if PSEUDO not in self.viewer.layers:
            raise InputError("No prediction yet: train first.")
        self.flush_writes()
        lab = self.state.labels_layer
        final = final_segmentation(self.viewer.layers[PSEUDO].data, np.asarray(lab.data), self.labeled_slices(),
                                   self.state.axis)
        meta = _source_meta(self.state.image_layer) or dict(lab.metadata)
        if SEGMENTATION in self.viewer.layers:
            self.viewer.layers[SEGMENTATION].data = final
            return self.viewer.layers[SEGMENTATION]
        return self.viewer.add_labels(final, name=SEGMENTATION, metadata=meta, **self._live_kwargs())

    # ------------------------------------------------------------------ models
    def save_model(self, path: str | os.PathLike) -> Path:
        if self.trainer is None:
            raise InputError("There is no model yet: train first.")
        if self.running and not self.paused:
            raise InputError("Pause or stop training before saving (Stop also saves automatically).")
        path = Path(path)
        if path.is_dir() and any(path.iterdir()) and not is_model_folder(path):
            path = path / "semiseg-model"  # a model folder is replaced whole: never the user's own folder
        out = self.trainer.save(path)
        self.state.model_dir = out
        return out

    def load_model(self, path: str | os.PathLike) -> dict:
        """Check a saved model; the next Train resumes from it."""
        _, meta = load_method(path)
        self.state.model_dir = model_dir(path)
        self.state.resume_next = True
        return meta

    def shutdown(self) -> None:
        """Viewer closing: save the labels now, stop the worker, keep the model (the trainer saves on stop)."""
        self._disconnect_labels()
        self._stop_autosave()
        self._pending_writes = []
        if self.worker is not None:
            self.stop()  # the generator ends its loop, saves the model and returns
            self._done.wait(timeout=120)
            self._cleanup_worker()


def uncertainty_colormap():
    """Inferno (perceptual) whose opacity grows with uncertainty: certain voxels leave the scan visible."""
    from napari.utils.colormaps import AVAILABLE_COLORMAPS, Colormap

    colors = np.array(AVAILABLE_COLORMAPS["inferno"].colors, float)
    colors[:, 3] = np.linspace(0.0, 1.0, len(colors)) ** 0.7
    return Colormap(colors, name="semiseg uncertainty")


def _source_meta(layer) -> dict:
    meta = getattr(layer, "metadata", {}) or {}
    return {SOURCE_KEY: meta[SOURCE_KEY]} if SOURCE_KEY in meta else {}


def _source_path(layer) -> str | None:
    meta = (getattr(layer, "metadata", {}) or {}).get(SOURCE_KEY) or {}
    return meta.get("path") or getattr(getattr(layer, "source", None), "path", None)

