"""Hatch build hook: ship the repository-root `napari.yaml`, `resources/` and `ops/`
inside the `napari_focus` package.

npe2 only finds a manifest that lives inside the installed package, and the
deformable-attention sources must travel with the wheel to be compiled on first
use. A regular wheel gets them through `force_include`; an editable install
imports the package from the source tree, so the files are copied there
(the copies are git-ignored).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# repository path -> path inside the package
BUNDLE = {
    "napari.yaml": "napari_focus/napari.yaml",
    "resources": "napari_focus/_bundled/resources",
    "ops": "napari_focus/_bundled/ops",
}


class BundleHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        for source, target in BUNDLE.items():
            src = root / source
            if not src.exists():
                continue
            if version == "editable":
                dst = root / target
                if src.is_dir():
                    shutil.copytree(src, dst, dirs_exist_ok=True)
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
            else:
                build_data["force_include"][str(src)] = target
