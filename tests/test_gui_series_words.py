"""The Series tab's fields are named as the widget labels them, wherever the user is
told to set them: the README, docs/distributed.md and `predict --engine ray --series`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from napari_focus.distributed.cli import series_hint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def series_labels(make_napari_viewer) -> set[str]:
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-focus", "FOCUS")
    series = widget.series
    labels = {series.folder.label, series.output.label, series.references.label}
    assert labels == {w.label for w in (series.folder, series.output, series.references)}
    return labels


def test_the_ray_series_hint_names_the_fields_the_series_tab_has(series_labels, tmp_path):
    hint = series_hint(tmp_path / "images", tmp_path / "series", tmp_path / "masks", 3)
    named = set(re.findall(r"'([a-z ]+)'", hint))
    assert named == series_labels, hint
    assert str(tmp_path / "series") in hint and str(tmp_path / "masks") in hint


@pytest.mark.parametrize("document", ["README.md", "docs/distributed.md"])
def test_the_docs_name_the_series_fields_as_the_widget_labels_them(series_labels, document):
    path = REPO / document
    if not path.is_file():
        pytest.skip("needs the source checkout")
    text = " ".join(path.read_text(encoding="utf-8").split())
    assert "**existing masks**" not in text
    for label in series_labels - {"image folder"}:
        assert f"**{label}**" in text, (document, label)
