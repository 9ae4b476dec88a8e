"""Architecture description of a FOCUS model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..presets import architecture_preset

# keys a user-supplied architecture mapping must provide
REQUIRED_KEYS = (
    "embed_dim",
    "num_heads",
    "depth",
    "ffn_type",
    "deform_heads",
    "interaction_indexes",
    "conv_dim",
    "mask_dim",
    "hidden_dim",
    "nheads",
    "dim_feedforward",
    "dec_layers",
    "enc_layers",
)


@dataclass(frozen=True)
class FocusArchitecture:
    """Hyper-parameters of the FOCUS inference model.

    The first block is what differs between model sizes (and the tiny test
    models); the rest is shared by every published checkpoint.
    """

    embed_dim: int
    num_heads: int
    depth: int
    ffn_type: str  # "mlp" (DINOv2-L) or "swiglu" (DINOv2-G)
    deform_heads: int
    interaction_indexes: tuple[tuple[int, int], ...]
    conv_dim: int
    mask_dim: int
    hidden_dim: int
    nheads: int
    dim_feedforward: int
    dec_layers: int  # real decoder layers (9 for the official models)
    enc_layers: int

    patch_size: int = 14
    pretrain_size: int = 518
    n_points: int = 4
    deform_ratio: float = 0.5
    cffn_ratio: float = 0.25
    mlp_ratio: float = 4.0
    enc_dim_feedforward: int = 1024
    enc_n_points: int = 4
    num_queries: int = 2
    num_classes: int = 2

    def __post_init__(self) -> None:
        _check_ranges(self)
        if self.ffn_type not in ("mlp", "swiglu"):
            raise ValueError(f"ffn_type must be 'mlp' or 'swiglu', got {self.ffn_type!r}")
        if self.embed_dim % self.num_heads or self.embed_dim % self.deform_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads} "
                f"and deform_heads {self.deform_heads}"
            )
        if len(self.interaction_indexes) != 4:
            raise ValueError("interaction_indexes must list four [first, last] block ranges")
        last = self.interaction_indexes[-1][1]
        if last != self.depth - 1:
            raise ValueError(
                f"interaction_indexes end at block {last}, but the ViT has {self.depth} blocks"
            )

    @property
    def size_name(self) -> str:
        """``"large"`` or ``"giant"`` for the official architectures, else ``"custom"``."""
        for size in ("large", "giant"):
            if self == resolve_architecture(size):
                return size
        return "custom"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["interaction_indexes"] = [list(pair) for pair in self.interaction_indexes]
        return data

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FocusArchitecture:
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"architecture mapping lacks keys: {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"architecture mapping has unknown keys: {', '.join(unknown)}")
        values = dict(data)
        indexes = values["interaction_indexes"]
        if not isinstance(indexes, list | tuple) or not all(
            isinstance(pair, list | tuple) and len(pair) == 2 and all(_is_int(i) for i in pair)
            for pair in indexes
        ):
            raise ValueError(
                "interaction_indexes must be a list of [first, last] block numbers, "
                f"got {_short(indexes)}"
            )
        values["interaction_indexes"] = tuple((int(a), int(b)) for a, b in indexes)
        return cls(**values)


# Inclusive bounds of every number: generous for any FOCUS-like model, yet a
# model within them builds in seconds, so absurd metadata fails before building.
_INT_RANGES = {
    "embed_dim": (1, 8192),
    "num_heads": (1, 256),
    "depth": (1, 128),
    "deform_heads": (1, 256),
    "conv_dim": (1, 4096),
    "mask_dim": (1, 4096),
    "hidden_dim": (1, 4096),
    "nheads": (1, 256),
    "dim_feedforward": (1, 65536),
    "dec_layers": (1, 64),
    "enc_layers": (1, 64),
    "patch_size": (1, 64),
    "pretrain_size": (1, 4096),
    "n_points": (1, 64),
    "enc_dim_feedforward": (1, 65536),
    "enc_n_points": (1, 64),
    "num_queries": (1, 1000),
    "num_classes": (1, 1000),
}
_FLOAT_RANGES = {"deform_ratio": (0.0, 16.0), "cffn_ratio": (0.0, 16.0), "mlp_ratio": (0.0, 64.0)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_ranges(arch: FocusArchitecture) -> None:
    """Types and bounds of every field, before anything is built from them."""
    for name, (low, high) in _INT_RANGES.items():
        value = getattr(arch, name)
        if not _is_int(value):
            raise ValueError(f"{name} must be an integer, got {_short(value)}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    for name, (low, high) in _FLOAT_RANGES.items():
        value = getattr(arch, name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"{name} must be a number, got {_short(value)}")
        if not low < value <= high:  # also refuses NaN
            raise ValueError(f"{name} must be above {low} and at most {high}, got {value}")
    if not isinstance(arch.ffn_type, str):
        raise ValueError(f"ffn_type must be 'mlp' or 'swiglu', got {_short(arch.ffn_type)}")
    for first, last in arch.interaction_indexes:
        if not 0 <= first <= last < arch.depth:
            raise ValueError(
                f"interaction_indexes [{first}, {last}] must lie within the {arch.depth} ViT blocks"
            )


def resolve_architecture(
    architecture: str | Mapping[str, Any] | FocusArchitecture,
) -> FocusArchitecture:
    """Accept ``"large"``, ``"giant"``, a mapping of hyper-parameters, or an instance."""
    if isinstance(architecture, FocusArchitecture):
        return architecture
    if isinstance(architecture, str):
        return FocusArchitecture.from_mapping(architecture_preset(architecture.lower()))
    if isinstance(architecture, Mapping):
        return FocusArchitecture.from_mapping(architecture)
    raise TypeError(
        f"architecture must be 'large', 'giant' or a mapping, got {type(architecture).__name__}"
    )
