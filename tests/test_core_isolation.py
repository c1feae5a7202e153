"""The engine must import with Qt and napari absent."""

import subprocess
import sys

BLOCKER = """
import sys, importlib, pkgutil
class Block:
    def find_spec(self, name, path=None, target=None):
        root = name.split('.')[0]
        if root in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'superqt', 'vispy'):
            raise ImportError('blocked: ' + name)
        return None
sys.meta_path.insert(0, Block())
import napari_semiseg.core as core
for m in pkgutil.walk_packages(core.__path__, 'napari_semiseg.core.'):
    importlib.import_module(m.name)
import napari_semiseg.cli, napari_semiseg.demo
print('ok', sorted(k for k in sys.modules if k.startswith('napari_semiseg')))
"""


def test_core_imports_without_qt_or_napari():
    r = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "napari_semiseg.core.io" in r.stdout and "napari_semiseg.core.metrics" in r.stdout
