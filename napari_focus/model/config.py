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
        values["interaction_indexes"] = tuple(
            (int(a), int(b)) for a, b in values["interaction_indexes"]
        )
        return cls(**values)


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
