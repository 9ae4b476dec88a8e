"""Sample images for trying FOCUS: scikit-image's bundled photographs (no download)."""

from __future__ import annotations

from typing import Any

from skimage import data

LayerData = list[tuple[Any, dict[str, Any], str]]


def coffee() -> LayerData:
    """A cup of coffee on a plate: a clear salient object."""
    return [(data.coffee(), {"name": "coffee"}, "image")]


def chelsea() -> LayerData:
    """Chelsea the cat."""
    return [(data.chelsea(), {"name": "chelsea"}, "image")]


def astronaut() -> LayerData:
    """Astronaut Eileen Collins, with a flag and a shuttle model."""
    return [(data.astronaut(), {"name": "astronaut"}, "image")]
