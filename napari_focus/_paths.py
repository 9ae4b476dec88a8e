"""Where the files shipped beside the code live.

An installed wheel carries the repository's `resources/` and `ops/` folders
under `napari_focus/_bundled/` (see `hatch_build.py`); a source checkout
(editable install or `PYTHONPATH`) uses them at the repository root, so edits
to them take effect without reinstalling.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path:
    """Return the folder `name` (``"resources"`` or ``"ops"``) shipped with the package."""
    checkout = _PACKAGE.parent
    # In a source checkout (editable install) the repository copy is the live one.
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    if (_PACKAGE / "_bundled" / name).is_dir():
        return _PACKAGE / "_bundled" / name
    raise FileNotFoundError(
        f"napari-focus cannot find its '{name}' folder (looked in {_PACKAGE / '_bundled'} and "
        f"{_PACKAGE.parent}); reinstall napari-focus: `pip install .` in its checkout "
        "(`pip install -e .` for an editable install, which copies these folders there)."
    )
