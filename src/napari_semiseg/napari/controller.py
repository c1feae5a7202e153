"""Session state <-> napari layers; no layout code.

Data flows one way: the user's layers are snapshotted into a ``Volume``, a training session
(``core.session``, the only control path to the trainer) yields reports in a napari generator
worker, and they come back in the ``yielded`` slot, where the live layers are updated in place.
The user's labels layer is only ever written by the user and by "Accept slice", as one undo step.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from napari.utils import notifications

from ..core.autosave import Autosaver, Slot, default_root
from ..core.checkpoint import is_model_folder, load_method, model_dir
from ..core.classes import (CLASSES_KEY, PAINTED_BACKGROUND, PAINTED_BACKGROUND_CLASS, UNPAINTED, complete,
                            default_class, engine_labels)
from ..core.errors import InputError, is_out_of_memory, out_of_memory_message
from ..core.proposal import propose_slice, propose_tile
from ..core.process_session import ProcessSession
from ..core.remote_session import RemoteSession
from ..core.session import LocalSession
from ..core.trainer import LabelUpdate, Report, TrainConfig
from ..core.io import SourceInfo, stem_of, write_labels
from ..core.volume import Volume, final_segmentation, labeled_slices_from_labels, painting_axis
from ..samples import sample_root
from .edits import LabelEditWatcher
from .layers import SOURCE_KEY, label_colormap, source_from_meta

PSEUDO = "pseudo-labels"
UNCERTAINTY = "uncertainty"
SEGMENTATION = "segmentation"
SURFACE = "segmentation surface"
TILE = "proposed tile"
LIVE_LAYERS = (PSEUDO, UNCERTAINTY, SEGMENTATION, SURFACE, TILE)
OVERLAYS = ("pseudo-labels", "uncertainty", "none")  # what lies over the scan while training
# Where the trainer runs: a child process (a crash or an out-of-memory kill there leaves the viewer
# and the labels alone), a thread of the viewer's process (the trainer can be inspected in place), or
# a training server (`napari-semiseg serve`, e.g. on a machine with a GPU).
TRAINING_PLACES = ("process", "thread", "server")


TRAINING_GC_THRESHOLDS = (20000, 50, 50)
TRAINER_NICENESS = 19
REPORTS_PER_SECOND = 4  # progress-only reports shown; pseudo-labels, checkpoints and the end always are  # Python's defaults are (700, 10, 10)


class Proposal(NamedTuple):
    """A whole-volume proposal to show: labels, and the uncertainty when there is one."""

    labels: np.ndarray
    uncertainty: np.ndarray | None


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
    loss_history: list[tuple[int, float]] = field(default_factory=list)  # (iteration, loss)
    proposal_source: str | None = None  # what the pseudo-labels layer shows: "interpolation" or "teacher"
    volumes_ml: dict[int, float] | None = None  # per class, from the last Finish (None: not finished)
    slice_scores: np.ndarray | None = None
    model_dir: Path | None = None
    checkpoint_iteration: int | None = None
    resume_next: bool = False  # the next Train continues model_dir (after Load, a restore or a crash)
    unpainted: str = "background"  # what unpainted pixels of a labeled slice mean (core.classes.UNPAINTED)
    tile: tuple[int, int, int, int] | None = None  # 2D: the tile Next proposed (top, left, bottom, right)


class SessionController:
    """Everything the widget's buttons do, testable without the widget."""

    def __init__(self, viewer, on_change=None):
        self.viewer = viewer
        self.state = SessionState()
        self.session: LocalSession | ProcessSession | RemoteSession | None = None  # the only way to the training run
        self.training_place = TRAINING_PLACES[0]
        self.server_url, self.server_token = "", ""
        self.worker = None
        self.on_change = on_change or (lambda: None)
        self.uncertainty_threshold = 0.5
        self.overlay = OVERLAYS[0]
        self._progress_bar = None
        self._done = threading.Event()
        self._gc_thresholds = None
        self.autosave_dir = default_root()
        self.autosaver: Autosaver | None = None
        self.slot: Slot | None = None
        self.autosave_offer: str | None = None  # what "Restore autosaved labels" would bring back
        self._pending_writes: list = []  # chunks of a whole-volume result still to write into the layers
        self.edits: LabelEditWatcher | None = None
        self.last_message: tuple[str, str] | None = None  # (severity, text) of the last notification
        self._interpolation_timer = None
        self._interpolating = self._interpolate_again = False
        self._labeled_cache: tuple | None = None  # (key, labeled slices): a CT takes 50 ms to scan

    def notify(self, severity: str, message: str) -> None:
        """A napari notification (its toast shows one line until expanded), and the whole message in
        the widget, where it stays until the next one."""
        getattr(notifications, f"show_{severity}")(message)  # napari's are safe from any thread
        self.last_message = (severity, message)
        if threading.current_thread() is threading.main_thread():  # the autosaver reports from its own
            self.on_change()

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
        self.edits = LabelEditWatcher(labels_layer, self._labels_edited)
        self._labeled_cache = None  # its key holds the new watcher's count, which starts again at 0
        if changed or self.autosaver is None:
            self._start_autosave()
        self._show_axis()
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
            self.notify("info", f"Labels of this image autosaved {self.autosave_offer} were found: 'Restore labels' "
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
                "axis": self.state.axis, "marked_empty": sorted(self.state.marked_empty),
                "unpainted": self.state.unpainted}

    def _autosave_failed(self, err: Exception) -> None:
        self.notify("warning", f"Autosave of your labels failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
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
        self.state.unpainted = found.get("unpainted", "background")
        if found["model"] is not None:
            meta = self.load_model(found["model"])
            self.state.checkpoint_iteration = int(meta.get("iteration", 0))
        self.autosave_offer = None
        self.on_change()
        return layer

    def _disconnect_labels(self) -> None:
        if self.edits is not None:
            self.edits.close()
            self.edits = None

    @staticmethod
    def _spatial_shape(image_layer) -> tuple[int, ...]:
        shape = tuple(image_layer.data.shape)
        return shape[:-1] if getattr(image_layer, "rgb", False) else shape

    def _labels_for(self, image_layer, create: bool):
        """The labels layer to annotate: an existing one on the image's grid, else (``create``) a new one."""
        spatial = self._spatial_shape(image_layer)
        for layer in self.viewer.layers:
            if layer._type_string == "labels" and tuple(layer.data.shape) == spatial \
                    and layer.name not in LIVE_LAYERS:
                return layer
        return self._add_labels_layer(image_layer) if create else None

    def _add_labels_layer(self, image_layer):
        return self.viewer.add_labels(np.zeros(self._spatial_shape(image_layer), np.uint8), name="annotations",
                                      scale=image_layer.scale, translate=image_layer.translate,
                                      metadata=_source_meta(image_layer))

    def new_labels_layer(self):
        """An empty labels layer on the chosen image's grid, chosen for annotation."""
        if self.state.image_layer is None:
            raise InputError("Open an image first.")
        layer = self._add_labels_layer(self.state.image_layer)
        self.set_layers(self.state.image_layer, layer, self.state.axis)
        return layer

    def default_axis(self) -> int:
        """The axis napari is slicing (for 3D), else 0."""
        img = self.state.image_layer
        if img is None or len(self._spatial_shape(img)) < 3:
            return 0
        not_displayed = [d - (self.viewer.dims.ndim - 3) for d in self.viewer.dims.not_displayed]
        candidates = [d for d in not_displayed if 0 <= d < 3]
        return candidates[0] if candidates else 0

    def axis_words(self, axis: int | None = None) -> str:
        """'sagittal' for a NIfTI (where the file says how it lies in the body), else 'axis 2'."""
        axis = self.state.axis if axis is None else axis
        src = self._image_source()
        names = src.axis_names() if src is not None else None
        return names[axis] if names else f"axis {axis}"

    def _image_source(self) -> SourceInfo | None:
        """The file the chosen image came from (format, spacing, orientation), if the reader said."""
        return source_from_meta(getattr(self.state.image_layer, "metadata", None))

    def set_axis(self, axis: int) -> None:
        """Label and train on slices along ``axis``; napari's view turns to show those slices."""
        if self.running:
            raise InputError("Stop training to change the slice axis.")
        self.state.axis = int(axis)
        self._show_axis()
        self.warn_if_painted_across()
        self.on_change()

    def _show_axis(self) -> None:
        """Roll napari's 2D view so that it slices along the session's axis."""
        if not self.is_3d or self.viewer.dims.ndisplay != 2:
            return
        target = self.viewer.dims.ndim - 3 + self.state.axis
        order = [d for d in self.viewer.dims.order if d != target]
        order = order[:-2] + [target] + order[-2:]
        if tuple(order) != tuple(self.viewer.dims.order):
            self.viewer.dims.order = tuple(order)

    def view_changed(self, event=None) -> None:
        """napari's sliced axis changed (its roll or transpose buttons): the session follows it. While
        training, painting is switched off on other axes: a stroke there would cross many training
        slices, each of which would then be taught as complete."""
        if not self.is_3d:
            return
        seen = self.default_axis() if self.viewer.dims.ndisplay == 2 else None
        if self.running:  # the trainer's axis stays; painting follows whether the view shows it
            lab = self.state.labels_layer
            along = seen == self.state.axis
            if lab is not None and lab.editable != along:
                lab.editable = along
                if not along:
                    self.notify("warning", f"Painting is off while you look at other than {self.axis_words()} slices: "
                                 "training learns from those. Stop training to label along another axis.")
            return
        if seen is not None and seen != self.state.axis:
            self.state.axis = seen
            self.warn_if_painted_across()
            self.on_change()

    def warn_if_painted_across(self) -> bool:
        """Say so when the labels look painted along another axis than the session's."""
        lab = self.state.labels_layer
        if lab is None or not self.is_3d:
            return False
        other = painting_axis(np.asarray(lab.data), self.state.axis)
        if other is None:
            return False
        n = len(self.labeled_slices())
        self.notify("warning", f"Your labels look painted on {self.axis_words(other)} slices, but the slice axis is "
                     f"{self.axis_words()}: each of its {n} slices crossed by paint would be taught as fully "
                     f"labeled. Turn the view to {self.axis_words(other)} slices, or label whole slices here.")
        return True

    def warn_if_scribbled(self) -> bool:
        """Painted background while unpainted pixels are taught as background: the user is marking
        what is known, so the slices are probably partly painted, and their unpainted structure would
        be taught as background."""
        lab = self.state.labels_layer
        if lab is None or self.state.unpainted != "background" or not (np.asarray(lab.data) == PAINTED_BACKGROUND).any():
            return False
        self.notify("warning", f"You painted background ({PAINTED_BACKGROUND}), and unpainted pixels of a labeled "
                    "slice are taught as background too. If your slices are only partly painted, set Unpainted "
                    "pixels to 'unknown'.")
        return True

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
        key = (id(lab), self.state.axis, self.edits.version if self.edits is not None else None)
        if self._labeled_cache is None or self._labeled_cache[0] != key or key[2] is None:
            painted = labeled_slices_from_labels(np.asarray(lab.data), self.state.axis) if self.is_3d else (
                {0} if np.asarray(lab.data).any() else set())
            self._labeled_cache = (key, painted)
        return self._labeled_cache[1] | self.state.marked_empty

    def toggle_mark_labeled(self) -> bool:
        """Mark the current slice as labeled even if all background ("nothing here"), or unmark it."""
        i = self.current_slice()
        if i in self.state.marked_empty:
            self.state.marked_empty.discard(i)
            marked = False
            if i in self.labeled_slices():
                self.notify("info", f"Slice {i} still counts as labeled: it has painted labels.")
        else:
            self.state.marked_empty.add(i)
            marked = True
        self._labels_edited()
        return marked

    def unavailable(self) -> dict[str, str | None]:
        """For each action, why it cannot run now (None: it can). The widget disables the button
        and shows the reason as its tooltip."""
        st = self.state
        no_labels = "Open an image first." if st.image_layer is None else (
            "Choose your labels layer above, or '(new labels layer)' to make one." if st.labels_layer is None
            else None)
        no_proposal = no_labels or (None if PSEUDO in self.viewer.layers else
                                    "There is no proposal yet: label two slices, or press Train.")
        no_scores = no_labels or (None if st.slice_scores is not None else
                                  "Available once training has shown its first pseudo-labels.")
        running = "Training is running." if self.running else None
        idle = None if self.running else "Not training."
        return {
            "train": running or no_labels or (None if self.labeled_slices() else
                                              "Paint a few slices (or mark empty ones), then Train."),
            "pause": idle, "stop": idle, "next": no_scores, "accept": no_proposal,
            "accept_next": no_proposal or no_scores, "finish": no_proposal, "mark": no_labels,
            "export": no_labels,
            "save": "There is no model yet: train first." if self.session is None or not self.session.has_model else (
                "Pause or stop training first." if self.running and not self.paused else None),
            "load": running,
        }

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
        if self.training_place == "server" and not (self.server_url.strip() and self.server_token.strip()):
            raise InputError("Give the training server's URL and token (Advanced), as `napari-semiseg serve` "
                             "printed them.")
        if self.training_place == "server" and resume_from is not None:
            self.notify("warning", "The server starts a new model: one on this machine cannot be continued there "
                                   "yet (Train in: process or thread continues it).")
            resume_from = None
        config.check()  # a wrong setting is one sentence now, not a failure in the training thread
        if self.state.image_layer is None:
            raise InputError("Choose an image layer first.")
        if self.state.labels_layer is None:
            self.set_layers(self.state.image_layer, None, self.state.axis, create_labels=True)
        labeled = self.labeled_slices()
        if not labeled:
            raise InputError("No slice is labeled yet: paint a few slices (or mark empty ones with "
                             "'Mark slice as labeled'), then press Train.")
        if self.state.unpainted == "unknown" and not (np.asarray(self.state.labels_layer.data)
                                                      == PAINTED_BACKGROUND).any():
            raise InputError(f"Unpainted pixels are unknown, and no background is painted: paint some with class "
                             f"{PAINTED_BACKGROUND} ('background (painted)'), or the model learns that everything "
                             "is structure.")
        self.warn_if_painted_across()
        self.warn_if_scribbled()
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
        self._pending_writes = []  # an interpolated proposal still being written: the teacher's replaces it
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
        focus = snapshot.pop("focus")
        self._close_session()
        # the volume's intensity statistics are computed in the worker thread (or the child), not in this click
        if self.training_place == "server":
            self.session = RemoteSession(self.server_url, self.server_token, lambda: [snapshot], config,
                                         focus=(0, focus))
        elif self.training_place == "process":
            # the trainer at the lowest CPU priority: the viewer (and its X server) first. On 2 cores the
            # viewer's p99 stall went from 22 to 19.5 ms and its worst from 41 to 31 ms (RESULTS §13)
            self.session = ProcessSession(lambda: [snapshot], config, resume_from=resume_from, out_dir=out_dir,
                                          focus=(0, focus), nice=TRAINER_NICENESS)
        else:
            self.session = LocalSession(lambda: [Volume(**snapshot)], config, resume_from=resume_from,
                                        out_dir=out_dir, focus=(0, focus))
        self.worker = create_worker(self._run_session, self.session,
                                    _connect={"yielded": self._on_report, "errored": self._on_error,
                                              "finished": self._on_finished},
                                    _start_thread=True)
        self.on_change()

    def _close_session(self) -> None:
        """A child process or server session kept after its run (for Save model) ends when the next run starts."""
        if self.session is not None:
            self.session.close()
        self.session = None

    def _run_session(self, session: LocalSession | ProcessSession | RemoteSession):
        """The session's reports, in the worker thread (where its trainer is built).

        Errors are re-raised as :class:`TrainingFailed`: superqt's worker takes any RuntimeError
        (which torch's out-of-memory and CUDA errors are) for a deleted Qt object and only warns, so
        the user would never hear of the failure. ``_done`` lets the GUI thread wait when the viewer
        closes.
        """
        try:
            shown = 0.0
            for report in session.reports():
                # progress alone at most REPORTS_PER_SECOND: each costs the GUI thread a repaint, and a
                # trainer in its own process reports 1.5x as often (benchmarks/RESULTS.md §13)
                now = time.perf_counter()
                if (report.slices is None and report.prediction is None and not report.checkpoint
                        and not report.finished and now - shown < 1.0 / REPORTS_PER_SECOND):
                    continue
                shown = now
                yield report
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
        return {"image": img.data, "labels": self.engine_labels(),
                "labeled": set(labeled), "axis": self.state.axis if self.is_3d else 0,
                "channels": bool(getattr(img, "rgb", False)), "name": img.name, "focus": self.current_slice()}

    def engine_labels(self) -> np.ndarray:
        """A copy of the user's labels as the trainer learns from them (see core.classes.engine_labels)."""
        return engine_labels(np.asarray(self.state.labels_layer.data), self.state.unpainted)

    def set_unpainted(self, meaning: str) -> None:
        """Whether unpainted pixels of a labeled slice are background (slices painted whole) or unknown
        (paint some structure and some background, with the 'background (painted)' class)."""
        if meaning not in UNPAINTED:
            raise InputError(f"Unpainted pixels mean one of {', '.join(UNPAINTED)}, not '{meaning}'.")
        if self.running and meaning != self.state.unpainted:
            raise InputError("Stop training to change what unpainted pixels mean.")
        self.state.unpainted = meaning
        if self.state.labels_layer is not None:
            self._apply_class_colours()
            if meaning == "unknown":
                self.notify("info", f"Unpainted pixels are now unknown: paint background with class {PAINTED_BACKGROUND} "
                          "('background (painted)') where you are sure there is no structure.")
        self.on_change()

    def pause(self) -> None:
        if self.session is not None:
            self.session.pause()
            self.on_change()

    def resume(self) -> None:
        if self.session is not None:
            self.session.resume()
            self.on_change()

    @property
    def paused(self) -> bool:
        return self.running and self.session.paused

    def stop(self) -> None:
        """Stop training; the session saves its model (autosave folder) before it ends."""
        if self.session is not None:
            self.session.stop()

    def _labels_edited(self) -> None:
        """After any change to the user's labels (stroke, fill, undo, redo, Accept): autosave, tell
        the trainer, and show the new labeled slices."""
        if self.state.labels_layer is None:
            return
        if self.autosaver is not None:
            self.autosaver.mark_dirty()
        if self.running:
            self._send_labels()
        else:
            self.propose_by_interpolation()
        self.on_change()

    INTERPOLATION_DELAY_MS = 500  # after the last edit: not on every dab of a stroke

    def propose_by_interpolation(self) -> None:
        """Before any training, the first proposal: the shape interpolated between the labeled slices
        (two at least) appears in the pseudo-labels layer, ready to be accepted or corrected. It is
        computed off the GUI thread (a second on a 300-slice CT) half a second after the last edit."""
        if not self.is_3d or self.state.proposal_source == "teacher" or len(self.labeled_slices()) < 2:
            return
        if self._interpolation_timer is None:
            from qtpy.QtCore import QTimer

            self._interpolation_timer = QTimer()
            self._interpolation_timer.setSingleShot(True)
            self._interpolation_timer.timeout.connect(self._interpolate)
        self._interpolation_timer.start(self.INTERPOLATION_DELAY_MS)

    def _interpolate(self) -> None:
        if self._interpolating:  # one at a time; the latest labels are taken when it returns
            self._interpolate_again = True
            return
        if self.running or self.state.labels_layer is None or self.state.proposal_source == "teacher":
            return
        labeled = sorted(self.labeled_slices())
        if len(labeled) < 2:
            return
        from napari.qt.threading import create_worker

        from ..core.interpolation import interpolate_labels

        self._interpolating, self._interpolate_again = True, False
        create_worker(interpolate_labels, np.array(self.state.labels_layer.data, copy=True), labeled,
                      self.state.axis, _connect={"returned": self._show_interpolation,
                                                 "finished": self._interpolation_done}, _start_thread=True)

    def _show_interpolation(self, guess: np.ndarray) -> None:
        if self.running or self.state.proposal_source == "teacher" or self.state.image_layer not in self.viewer.layers:
            return
        self.state.proposal_source = "interpolation"
        self._write_whole(Proposal(guess, None))
        self.on_change()

    def _interpolation_done(self) -> None:
        self._interpolating = False
        if self._interpolate_again:
            self._interpolate()

    def _send_labels(self) -> None:
        if not self.running or self.state.labels_layer is None:
            return
        labeled = self.labeled_slices()
        if not labeled:
            return
        self.session.send(LabelUpdate(self.engine_labels(), labeled))

    def _on_report(self, report: Report) -> None:
        self.state.last_report = report
        if report.slices is not None or report.prediction is not None:
            self.state.proposal_source = "teacher"
        if "loss" in report.losses:
            self.state.loss_history.append((report.iteration, report.losses["loss"]))
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
        self.notify("error", f"Training stopped: {msg}{kept} Your labels are untouched.")
        self._cleanup_worker()

    def _on_finished(self) -> None:
        if self.state.model_dir is not None:
            self.notify("info", f"Training finished; the model is saved in {self.state.model_dir}.")
        self._cleanup_worker()

    def _cleanup_worker(self) -> None:
        self.worker = None
        lab = self.state.labels_layer
        if lab is not None and not lab.editable:
            lab.editable = True  # switched off while training and viewing another axis
            self.view_changed()
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
            # outlines, where the user's labels are filled; the machine's layers take no paint (a stroke
            # there would vanish at the next refresh)
            layer = self.viewer.add_labels(np.zeros(shape, np.uint8), name=PSEUDO, opacity=0.9, **kw)
            layer.contour = 1
            layer.editable = False
            self._apply_class_colours()
        if UNCERTAINTY not in self.viewer.layers:
            self.viewer.add_image(np.zeros(shape, np.float32), name=UNCERTAINTY,
                                  colormap=uncertainty_colormap(self.uncertainty_threshold),
                                  contrast_limits=(0.0, 1.0), blending="translucent", opacity=0.8, **kw)
            self.set_overlay(self.overlay)
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
        self._write_whole(pred)

    def _write_whole(self, pred) -> None:
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
            self._write_live(idx[self.state.axis], pred.labels[tuple(idx)],
                             None if pred.uncertainty is None else pred.uncertainty[tuple(idx)])
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

    def _write_live(self, where, labels: np.ndarray, uncertainty: np.ndarray | None) -> None:
        """In place (the layers are never re-created); ``where`` indexes the slice axis. No uncertainty
        (an interpolated proposal) leaves that layer as it is."""
        self._ensure_live_layers()
        idx = [slice(None)] * labels.ndim
        if self.is_3d:
            idx[self.state.axis] = where
        idx = tuple(idx)
        layers = self.viewer.layers
        layers[PSEUDO].data[idx] = labels
        layers[PSEUDO].refresh()
        if uncertainty is not None:
            layers[UNCERTAINTY].data[idx] = uncertainty
            layers[UNCERTAINTY].refresh()

    def follow_view(self, event=None) -> None:
        """The slice on screen is the one the next live refresh predicts first."""
        if self.session is not None and self.state.labels_layer is not None and self.is_3d:
            self.session.focus(self.current_slice())

    def set_overlay(self, overlay: str, threshold: float | None = None) -> None:
        """What lies over the scan: the pseudo-labels (outlines), the uncertainty above ``threshold``
        (below it the scan shows through), or nothing."""
        if overlay not in OVERLAYS:
            raise InputError(f"Unknown overlay '{overlay}': choose one of {', '.join(OVERLAYS)}.")
        self.overlay = overlay
        layers = self.viewer.layers
        if threshold is not None and float(threshold) != self.uncertainty_threshold:
            self.uncertainty_threshold = float(threshold)
            if UNCERTAINTY in layers:
                layers[UNCERTAINTY].colormap = uncertainty_colormap(self.uncertainty_threshold)
        for name, kind in ((PSEUDO, "pseudo-labels"), (UNCERTAINTY, "uncertainty")):
            if name in layers:
                layers[name].visible = overlay == kind

    # ------------------------------------------------------------------ review
    def next_uncertain_slice(self) -> int:
        """Go to the slice whose label is expected to help most: uncertain, amid uncertain slices, far
        from the labeled ones (core.proposal). Slices the live sweep has not reached yet are skipped."""
        if self.state.slice_scores is None:
            raise InputError("No prediction yet: press Train and wait for the first pseudo-labels.")
        if not self.is_3d:
            return self._next_tile()
        best = propose_slice(self.state.slice_scores, self.labeled_slices())
        self.go_to_slice(best)
        return best

    def _next_tile(self) -> int:
        """2D: centre the view on the tile most uncertain where nothing is painted yet; Accept takes it."""
        self.flush_writes()
        known = np.asarray(self.state.labels_layer.data) != 0
        tile = propose_tile(self.viewer.layers[UNCERTAINTY].data, known)
        self.state.tile = tile
        top, left, bottom, right = tile
        layer = self.state.labels_layer
        centre = layer.data_to_world(((top + bottom) / 2, (left + right) / 2))
        self.viewer.camera.center = tuple(float(v) for v in centre)
        canvas = self.viewer.canvas.size  # (height, width) in screen pixels
        if min(canvas) > 0:
            extent = max(bottom - top, right - left) * float(max(layer.scale[-2:]))
            self.viewer.camera.zoom = 0.8 * min(canvas) / extent
        self._outline_tile(tile)
        return 0

    def _outline_tile(self, tile: tuple[int, int, int, int] | None) -> None:
        """A frame round the tile Accept will take (none once it is taken); the labels stay selected."""
        if TILE in self.viewer.layers:
            self.viewer.layers.remove(TILE)
        if tile is None:
            return
        top, left, bottom, right = (v - 0.5 for v in tile)  # pixel edges, not centres
        corners = np.array([[top, left], [top, right], [bottom, right], [bottom, left]])
        self.viewer.add_shapes([corners], shape_type="rectangle", name=TILE, edge_color="#ffffff",
                               face_color="transparent", edge_width=max(1.0, (right - left) / 100),
                               **self._live_kwargs())
        self.viewer.layers.selection.active = self.state.labels_layer

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
        if self.state.unpainted == "unknown":  # what the teacher calls background becomes known background
            pseudo = np.where(pseudo == 0, PAINTED_BACKGROUND, pseudo)
        merged = np.where(user != 0, user, pseudo).astype(lab.data.dtype)
        if not self.is_3d and self.state.tile is not None and self.state.unpainted == "unknown":
            top, left, bottom, right = self.state.tile  # a 2D image is accepted a tile at a time
            inside = np.zeros(merged.shape, bool)
            inside[top:bottom, left:right] = True
            merged = np.where(inside, merged, user)
            self._outline_tile(None)  # taken: the frame goes, a second Accept changes nothing
        idx2d = np.nonzero(merged != user)
        if idx2d[0].size:
            full = []
            it = iter(idx2d)
            for a in range(lab.ndim):
                full.append(np.full(idx2d[0].shape, i) if (self.is_3d and a == self.state.axis) else next(it))
            with lab.block_history():  # one undo step; its paint event reaches the trainer
                lab.data_setitem(tuple(full), merged[idx2d])
        if not merged.any():
            # nothing to paint, hence nothing to undo: the slice is marked, and 'Unmark' takes it back
            self.state.marked_empty.add(i)
            self.notify("info", f"Slice {i} accepted as empty; 'Unmark slice {i}' takes it back.")
            self._labels_edited()
        return i

    def accept_and_next(self) -> int:
        """Accept the slice on screen, then go to the next proposed one."""
        self.accept_slice()
        return self.next_uncertain_slice()

    def finish(self):
        """A new Labels layer: the user's labels on labeled slices, the proposal elsewhere; for a
        volume, each class's volume (mL where the image has a spacing) and a 3D surface of it."""
        if PSEUDO not in self.viewer.layers:
            raise InputError("No prediction yet: train first.")
        self.flush_writes()
        lab = self.state.labels_layer
        pseudo, painted = np.asarray(self.viewer.layers[PSEUDO].data), np.asarray(lab.data)
        if self.state.unpainted == "unknown":  # every painted pixel is kept, the proposal fills the rest
            final = np.where(painted == 0, pseudo, np.where(painted == PAINTED_BACKGROUND, 0, painted))
            final = final.astype(painted.dtype)
        else:
            final = final_segmentation(pseudo, engine_labels(painted), self.labeled_slices(), self.state.axis)
        meta = _source_meta(self.state.image_layer) or dict(lab.metadata)
        if SEGMENTATION in self.viewer.layers:
            layer = self.viewer.layers[SEGMENTATION]
            layer.data = final
        else:
            layer = self.viewer.add_labels(final, name=SEGMENTATION, metadata=meta, **self._live_kwargs())
        self._apply_class_colours()
        if self.is_3d:
            self._show_in_3d(final)
        return layer

    def _show_in_3d(self, final: np.ndarray) -> None:
        from ..core.measures import class_surfaces, class_volumes

        spacing = self._spacing_mm()
        volumes = class_volumes(final, spacing or (1.0, 1.0, 1.0))
        self.state.volumes_ml = {c: v / 1000.0 for c, v in volumes.items()} if spacing else None
        verts, faces, values = class_surfaces(final)
        if len(faces):
            if SURFACE in self.viewer.layers:
                self.viewer.layers.remove(SURFACE)
            vertex_colours = label_colormap(self.class_table()).map(values.astype(np.int64))  # the classes' own
            self.viewer.add_surface((verts, faces, values), name=SURFACE, vertex_colors=vertex_colours,
                                    **self._live_kwargs())
            if PSEUDO in self.viewer.layers:  # outlines are not drawn in 3D: the surface shows the result
                self.viewer.layers[PSEUDO].visible = False
            self.viewer.dims.ndisplay = 3
        names = self.class_names()
        if spacing:
            parts = [f"{names.get(c, f'class {c}')} {v / 1000.0:.2f} mL" for c, v in volumes.items()]
        else:
            parts = [f"{names.get(c, f'class {c}')} {int(v)} voxels" for c, v in volumes.items()]
        self.notify("info", "Segmentation: " + (", ".join(parts) if parts else "no structure found") +
                  ("." if spacing else " (the image carries no voxel size, so no mL)."))

    def _spacing_mm(self) -> tuple[float, ...] | None:
        """The voxel size in mm, when the file gave one (NIfTI); None for a plain image."""
        src = self._image_source()
        if src is None or src.format != "nifti" or len(src.spacing) != 3:
            return None
        return tuple(float(v) for v in src.spacing)

    # ------------------------------------------------------------------ export
    def export_layer(self):
        """What Export writes: the segmentation once Finish has built it, else the user's own labels."""
        if SEGMENTATION in self.viewer.layers:
            return self.viewer.layers[SEGMENTATION]
        return self.state.labels_layer

    def default_export_path(self) -> Path:
        """Beside the scan and named after it (<scan>_segmentation.nii.gz, .tif, or .png for a
        photograph); in the home folder when the scan's folder is not the user's (the bundled sample)."""
        layer, src = self.export_layer(), self._image_source()
        what = "segmentation" if layer is not None and layer.name == SEGMENTATION else "labels"
        folder = Path(src.path).parent if src is not None and src.path else Path.home()
        if not os.access(folder, os.W_OK) or folder.resolve().is_relative_to(sample_root().resolve()):
            folder = Path.home()
        stem = stem_of(src.path) if src is not None and src.path else (
            self.state.image_layer.name if self.state.image_layer is not None else "image")
        suffix = {"nifti": ".nii.gz", "photo": ".png"}.get(src.format if src is not None else "", ".tif")
        return folder / f"{stem}_{what}{suffix}"

    def export(self, path: str | os.PathLike) -> Path:
        """Write the segmentation (or, before Finish, the user's labels) with the classes' names and
        colours, on the scan's grid for a NIfTI; never over the scan itself."""
        layer = self.export_layer()
        if layer is None:
            raise InputError("Nothing to export yet: choose or create a labels layer first.")
        self.flush_writes()
        classes = self.class_table()
        if layer is not self.state.labels_layer:  # painted background is 0 in the segmentation
            classes.pop(PAINTED_BACKGROUND, None)
        return write_labels(path, np.asarray(layer.data), self._image_source(),
                            spacing=tuple(float(s) for s in layer.scale), classes=classes)

    # ------------------------------------------------------------------ classes
    def class_table(self) -> dict[int, dict[str, str]]:
        """Names and colours of the classes: those the labels layer carries, and at least two."""
        lab = self.state.labels_layer
        if lab is None:
            return {}
        table = complete((lab.metadata or {}).get(CLASSES_KEY), range(1, 3))
        table.pop(PAINTED_BACKGROUND, None)
        if self.state.unpainted == "unknown":
            table[PAINTED_BACKGROUND] = dict(PAINTED_BACKGROUND_CLASS)
        return table

    def class_names(self) -> dict[int, str]:
        return {k: v["name"] for k, v in self.class_table().items()}

    def set_class(self, value: int, name: str | None = None, colour: str | None = None) -> dict:
        """Name or colour a class (adding it if new): kept with the labels layer, written into exports,
        and the same colour on the machine's layers (where the class is drawn as an outline)."""
        lab = self.state.labels_layer
        if lab is None:
            raise InputError("Choose or create a labels layer first.")
        if not 1 <= int(value) < PAINTED_BACKGROUND:
            raise InputError(f"Class values go from 1 to {PAINTED_BACKGROUND - 1} (0 is unpainted, "
                             f"{PAINTED_BACKGROUND} painted background).")
        table = self.class_table()
        entry = table.setdefault(int(value), default_class(int(value)))
        if name is not None:
            entry["name"] = name.strip() or f"class {value}"
        if colour is not None:
            entry["colour"] = colour
        lab.metadata = {**(lab.metadata or {}), CLASSES_KEY: table}
        self._apply_class_colours()
        return table

    def _apply_class_colours(self) -> None:
        table = self.class_table()
        if not table:
            return
        cmap = label_colormap(table)
        for layer in (self.state.labels_layer, *(self.viewer.layers[n] for n in (PSEUDO, SEGMENTATION)
                                                 if n in self.viewer.layers)):
            layer.colormap = cmap
        if SEGMENTATION in self.viewer.layers:
            seg = self.viewer.layers[SEGMENTATION]
            seg.metadata = {**(seg.metadata or {}), CLASSES_KEY: table}

    # ------------------------------------------------------------------ models
    def save_model(self, path: str | os.PathLike) -> Path:
        if self.session is None or not self.session.has_model:
            raise InputError("There is no model yet: train first.")
        if self.running and not self.paused:
            raise InputError("Pause or stop training before saving (Stop also saves automatically).")
        path = Path(path)
        if path.is_dir() and any(path.iterdir()) and not is_model_folder(path):
            path = path / "semiseg-model"  # a model folder is replaced whole: never the user's own folder
        out = self.session.save(path)
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
        if self._interpolation_timer is not None:
            self._interpolation_timer.stop()
        if self.worker is not None:
            self.stop()  # the generator ends its loop, saves the model and returns
            self._done.wait(timeout=120)
            self._cleanup_worker()
        self._close_session()


def uncertainty_colormap(threshold: float = 0.5):
    """Transparent below ``threshold``, then inferno (perceptual) growing opaque: early in training
    most voxels are somewhat uncertain, and a colour on all of them would hide the scan."""
    from napari.utils.colormaps import AVAILABLE_COLORMAPS, Colormap

    t = float(np.clip(threshold, 0.0, 0.99))
    inferno = np.array(AVAILABLE_COLORMAPS["inferno"].colors, float)
    above = inferno[np.linspace(len(inferno) // 3, len(inferno) - 1, 16).astype(int)]
    above[:, 3] = np.linspace(0.35, 1.0, len(above))
    colors = np.vstack([[0, 0, 0, 0], [0, 0, 0, 0], above])
    controls = np.concatenate([[0.0, t], np.linspace(t + 1e-3, 1.0, len(above))])
    return Colormap(colors, controls=controls, name=f"semiseg uncertainty above {t:.2f}")


def _source_meta(layer) -> dict:
    meta = getattr(layer, "metadata", {}) or {}
    return {SOURCE_KEY: meta[SOURCE_KEY]} if SOURCE_KEY in meta else {}


def _source_path(layer) -> str | None:
    meta = (getattr(layer, "metadata", {}) or {}).get(SOURCE_KEY) or {}
    return meta.get("path") or getattr(getattr(layer, "source", None), "path", None)

