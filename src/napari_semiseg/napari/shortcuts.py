"""The loop's keyboard shortcuts, registered as napari actions so that users can remap them
(Preferences > Shortcuts > Viewer key bindings), like napari's own."""

from __future__ import annotations

import weakref

# action name -> (what it does, default key); keys napari's viewer does not already use
SHORTCUTS = {
    "napari-semiseg:train_or_stop": ("Semi-supervised: train, or stop training", "Shift-T"),
    "napari-semiseg:next_uncertain": ("Semi-supervised: go to the next uncertain slice", "Shift-N"),
    "napari-semiseg:accept": ("Semi-supervised: accept the proposal on this slice", "Shift-A"),
    "napari-semiseg:accept_and_next": ("Semi-supervised: accept, then go to the next uncertain slice",
                                       "Shift-Enter"),
}

_widgets: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # id(viewer) -> its widget


def register(widget) -> None:
    """Make ``widget`` the one the shortcuts drive in its viewer; register the actions once."""
    from napari.components import ViewerModel
    from napari.settings import get_settings
    from napari.utils.action_manager import action_manager

    _widgets[id(widget.viewer)] = widget
    remapped = get_settings().shortcuts.shortcuts
    for name, (description, key) in SHORTCUTS.items():
        if name in action_manager._actions:
            continue
        action = name.split(":", 1)[1]
        action_manager.register_action(name, lambda viewer, action=action: _dispatch(viewer, action),
                                       description, ViewerModel)
        if name not in remapped:  # napari has already bound a key the user chose
            action_manager.bind_shortcut(name, key)


def _dispatch(viewer, action: str) -> None:
    widget = _widgets.get(id(getattr(viewer, "__wrapped__", viewer)))
    if widget is not None:
        widget.shortcut(action)
