"""Inference-only folded copies of the backbone's convolutional parts (CPU fast path).

At inference every BatchNorm is an affine map, so it can be folded into the
convolution or matrix product in front of it. :func:`fold_backbone` builds:

- a copy of the edge prior with each BatchNorm folded into its convolution, kept
  in channels-last memory (oneDNN convolutions then need no layout reorders), whose
  ``fc1`` also carries the stride-4 output norm and the transposed convolution's
  bias;
- :class:`FoldedTail`, the stride-4..32 outputs built in channels-last layout with
  the output BatchNorms folded in: one matrix product, one in-place add and one
  interpolation per level instead of seven passes over the 1024-channel stride-4 map.

The copies are not registered as submodules: ``state_dict()`` keeps the official
keys, and training (which needs the BatchNorms) uses the plain modules. A fold
remembers which weights it was built from and is rebuilt when they change (an
optimizer step, ``load_state_dict``, ``.to()``), so validation during
fine-tuning sees the current weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .edge_prior import Bottleneck, EdgePriorModule


def bn_scale_shift(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale, shift`` with ``norm(x) == x * scale + shift`` (inference statistics)."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return scale.detach(), (norm.bias - norm.running_mean * scale).detach()


def _fold_conv(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """A copy of ``conv`` computing ``conv(x) * scale + shift`` per output channel."""
    folded = nn.utils.skip_init(  # no random initialisation: every value is set below
        nn.Conv2d,
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(shift)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        folded.bias.copy_(bias * scale + shift)
    return folded.requires_grad_(False)


def _fold_bottleneck(block: Bottleneck) -> Bottleneck:
    folded = copy.copy(block)  # same class, so stage hooks and forward stay the same
    folded._modules = dict(block._modules)
    for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
        conv, bn = getattr(block, conv_name), getattr(block, bn_name)
        folded._modules[conv_name] = _fold_conv(conv, *bn_scale_shift(bn))
        folded._modules[bn_name] = nn.Identity()
    if len(block.downsample):
        conv, bn = block.downsample
        folded._modules["downsample"] = nn.Sequential(_fold_conv(conv, *bn_scale_shift(bn)))
    return folded


def fold_edge_prior(
    edge: EdgePriorModule, c1_scale: torch.Tensor, c1_shift: torch.Tensor
) -> EdgePriorModule:
    """Channels-last copy of ``edge`` with BatchNorms folded; its ``c1`` output is
    ``fc1(...) * c1_scale + c1_shift``."""
    folded = copy.copy(edge)
    folded._modules = dict(edge._modules)
    folded._modules["conv1"] = _fold_conv(edge.conv1, *bn_scale_shift(edge.bn1))
    folded._modules["bn1"] = nn.Identity()
    for name in ("layer1", "layer2", "layer3", "layer4"):
        folded._modules[name] = nn.Sequential(*map(_fold_bottleneck, getattr(edge, name)))
    folded._modules["fc1"] = _fold_conv(edge.fc1, c1_scale, c1_shift)
    for name in ("fc2", "fc3", "fc4"):
        folded._modules[name] = copy.deepcopy(edge._modules[name]).requires_grad_(False)
    return folded.to(memory_format=torch.channels_last)


class TailInputs(NamedTuple):
    """What the backbone's last stage combines into ``res2..res5``."""

    c1: torch.Tensor  # stride-4 map from the edge prior's fc1
    edge_tokens: list[torch.Tensor]  # (B, h*w, C) at strides 8, 16, 32
    vit_tokens: list[torch.Tensor]  # the four (B, th*tw, C) ViT outputs
    token_hw: tuple[int, int]
    edge_sizes: list[tuple[int, int]]


class FoldedTail:
    """The backbone outputs ``res2..res5`` with the output BatchNorms folded in.

    ``res2 = norm1(up(t2) + c1 + interp(v1))`` becomes ``up'(t2) + c1' + interp(v1 * s1)``
    where ``up'`` has the scale folded into its weight (columns reordered so that the
    product lands in channels-last order) and ``c1'`` comes from the folded ``fc1``;
    ``res_k = (c_k + interp(v_k)) * s_k + t_k`` for the others. All outputs are
    channels-last ``(B, C, H, W)`` tensors.
    """

    def __init__(self, up: nn.ConvTranspose2d, norms: list[nn.BatchNorm2d]) -> None:
        scales, shifts = zip(*map(bn_scale_shift, norms), strict=True)
        self.scales, self.shifts = list(scales), list(shifts)
        weight = up.weight.detach()  # (C_in, C_out, 2, 2)
        c_in, c_out = weight.shape[:2]
        scaled = weight * self.scales[0].view(1, -1, 1, 1)
        self.up_weight = scaled.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out).contiguous()

    def __call__(self, inputs: TailInputs) -> dict[str, torch.Tensor]:
        """``inputs.c1`` comes from the folded edge prior (channels-last)."""
        c1, edge_tokens, vit_tokens, token_hw, edge_sizes = inputs
        b, c = c1.shape[:2]
        h, w = edge_sizes[0]
        up = torch.matmul(edge_tokens[0], self.up_weight).view(b, h, w, 2, 2, c)
        res2 = c1.permute(0, 2, 3, 1)  # NHWC view of the channels-last map
        res2.view(b, h, 2, w, 2, c).add_(up.permute(0, 1, 3, 2, 4, 5))
        maps = [res2]
        for tokens, scale, shift, (hh, ww) in zip(
            edge_tokens, self.scales[1:], self.shifts[1:], edge_sizes, strict=True
        ):
            maps.append(torch.addcmul(shift, tokens, scale).view(b, hh, ww, c))
        outputs = {}
        for name, target, tokens, scale in zip(
            ("res2", "res3", "res4", "res5"), maps, vit_tokens, self.scales, strict=True
        ):
            grid = (tokens * scale).view(b, *token_hw, c).permute(0, 3, 1, 2)
            size = target.shape[1:3]
            resized = grid if tuple(size) == token_hw else _bilinear(grid, size)
            outputs[name] = target.permute(0, 3, 1, 2).add_(resized)
        return outputs


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _version(tensor: torch.Tensor) -> int:
    try:
        return tensor._version
    except RuntimeError:  # inference tensors keep no version counter
        return -1


def fingerprint(backbone: nn.Module) -> tuple | None:
    """Identity and in-place version of every tensor a fold reads; None while a
    BatchNorm uses batch statistics (training mode), when no fold applies."""
    sources = [backbone.edge, backbone.up, backbone.norm1, backbone.norm2, backbone.norm3,
               backbone.norm4]  # fmt: skip
    modules = [m for source in sources for m in source.modules()]
    if any(m.training for m in modules if isinstance(m, nn.BatchNorm2d)):
        return None
    tensors = [t for m in modules for t in (*m._parameters.values(), *m._buffers.values())]
    return tuple((t.data_ptr(), t.device, _version(t)) for t in tensors if t is not None)


@dataclass
class FoldedBackbone:
    """What :class:`~napari_focus.model.backbone.FocusBackbone` runs instead at inference."""

    edge: EdgePriorModule
    tail: FoldedTail
    fingerprint: tuple | None


@torch.no_grad()
def fold_backbone(backbone: nn.Module) -> FoldedBackbone:
    """Folded edge prior and tail of ``backbone`` (a ``FocusBackbone`` in eval mode)."""
    scale1, shift1 = bn_scale_shift(backbone.norm1)
    c1_shift = backbone.up.bias.detach() * scale1 + shift1
    edge = fold_edge_prior(backbone.edge, scale1, c1_shift)
    norms = [backbone.norm1, backbone.norm2, backbone.norm3, backbone.norm4]
    return FoldedBackbone(edge, FoldedTail(backbone.up, norms), fingerprint(backbone))


def current_fold(backbone: nn.Module, folded: FoldedBackbone | None) -> FoldedBackbone | None:
    """``folded`` if it was built from the weights ``backbone`` holds now, a new fold
    if they changed (in place, replaced or moved) or none was built yet, None in
    training mode.

    Changes are seen through tensor version counters, which every in-place PyTorch
    operation and the default optimizers bump; writes that bypass them (through
    ``.data``, fused optimizers) need ``backbone.folded = None`` to refold."""
    now = fingerprint(backbone)
    if now is None:
        return None
    if folded is not None and now == folded.fingerprint:
        return folded
    return fold_backbone(backbone)
