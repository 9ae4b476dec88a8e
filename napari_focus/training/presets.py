"""Hardware presets: which parts train, batch size, canvas, precision, checkpointing.

The model's parameters fall into three parts:

* ``vit``: the DINOv2 ViT (patch embedding, position embedding, cls token, blocks);
* ``adapter``: everything else in the backbone (edge prior, interaction blocks, level
  embedding, the stride-4 upsampling, the output norms);
* ``head``: the pixel decoder and the transformer decoder.

The official recipe trains all three (8 images of 512 x 512 per step, mixed precision,
ViT blocks checkpointed). On a CPU or a GPU below 16 GB the ViT stays frozen; gradients
still flow *through* its blocks (the adapter's injectors feed them), which is why block
checkpointing matters even then.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PARTS = ("vit", "adapter", "head")
VIT_PREFIXES = ("backbone.patch_embed.", "backbone.pos_embed", "backbone.cls_token",
                "backbone.blocks.")  # fmt: skip


@dataclass(frozen=True)
class HardwarePreset:
    name: str
    description: str
    parts: tuple[str, ...]
    batch_size: int
    canvas: int
    amp: bool
    checkpointing: bool


PRESETS: dict[str, HardwarePreset] = {
    p.name: p
    for p in (
        HardwarePreset("cpu", "CPU: decoder + adapter, ViT frozen, 1 x 384 px",
                       ("adapter", "head"), 1, 384, False, True),
        HardwarePreset("gpu-small", "GPU < 16 GB: decoder + adapter, ViT frozen, 2 x 512 px",
                       ("adapter", "head"), 2, 512, True, True),
        HardwarePreset("gpu-medium", "GPU 16-24 GB: decoder + adapter, ViT frozen, 4 x 512 px",
                       ("adapter", "head"), 4, 512, True, True),
        HardwarePreset("gpu-large", "GPU >= 24 GB: everything incl. the ViT, 4 x 512 px",
                       PARTS, 4, 512, True, True),
        HardwarePreset("gpu-xl", "GPU >= 60 GB: everything, 8 x 512 px (official batch)",
                       PARTS, 8, 512, True, True),
    )
}  # fmt: skip


def auto_preset(device: torch.device) -> HardwarePreset:
    """The preset for a device: by GPU memory on CUDA, ``cpu`` anywhere else."""
    if device.type != "cuda":
        return PRESETS["cpu"]
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    if gib >= 60:
        return PRESETS["gpu-xl"]
    if gib >= 24:
        return PRESETS["gpu-large"]
    if gib >= 16:
        return PRESETS["gpu-medium"]
    return PRESETS["gpu-small"]


def resolve_preset(name: str, device: torch.device) -> HardwarePreset:
    if name == "auto":
        return auto_preset(device)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected auto or one of {', '.join(PRESETS)}")
    return PRESETS[name]


def part_of(parameter_name: str) -> str:
    if parameter_name.startswith(VIT_PREFIXES):
        return "vit"
    if parameter_name.startswith("backbone."):
        return "adapter"
    return "head"
