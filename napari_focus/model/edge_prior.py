"""Edge injection and the ResNet-50-shaped edge prior module of FOCUS."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BLUR_KERNEL = (5, 5)
BLUR_SIGMA = 1.4
CANNY_THRESHOLDS = (100, 200)
IMAGE_WEIGHT, EDGE_WEIGHT = 0.7, 0.3


def quantise_normalised(image: torch.Tensor) -> torch.Tensor:
    """FOCUS quantises the normalised tensor as if it were in [0, 1]; we keep that
    behaviour because the published weights were trained on it. Returns uint8."""
    return image.detach().float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def blend_canny_edges(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> blurred BGR with its per-channel Canny edges blended in."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    blurred = cv2.GaussianBlur(bgr, BLUR_KERNEL, BLUR_SIGMA)
    edges = np.stack(
        [cv2.Canny(np.ascontiguousarray(blurred[:, :, c]), *CANNY_THRESHOLDS) for c in range(3)],
        axis=-1,
    )
    return cv2.addWeighted(blurred, IMAGE_WEIGHT, edges, EDGE_WEIGHT, 0)


def edge_injected_u8(image: torch.Tensor) -> np.ndarray:
    """Blend Canny edges into one image, as FOCUS does before its edge prior.

    Args:
        image: ``(3, H, W)`` normalised, padded RGB tensor.

    Returns:
        ``(H, W, 3)`` uint8 image in BGR order.
    """
    rgb = quantise_normalised(image).permute(1, 2, 0).cpu().numpy()
    return blend_canny_edges(rgb)


def edges_to_float(edges: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 edge-injected images -> ``(B, 3, H, W)`` float32 in [0, 1].

    ``v / 255`` in float32 equals the official float64 division rounded to
    float32 for all 256 values, so this runs on the device without a float64 copy.
    """
    return edges.permute(0, 3, 1, 2).float().div_(255.0)


def inject_edges(images: torch.Tensor) -> torch.Tensor:
    """Edge-injected copies of a batch: ``(B, 3, H, W)`` float in [0, 1], BGR channel order.

    This copies the batch to the host; the predictor computes the edges from the
    uint8 image on the host instead and passes them to the model.
    """
    blended = np.stack([edge_injected_u8(image) for image in images])
    return edges_to_float(torch.from_numpy(blended).to(images.device))


class Bottleneck(nn.Module):
    """ResNet bottleneck with the stride on the 3x3 convolution."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.downsample = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.downsample(x))


class EdgePriorModule(nn.Module):
    """ResNet-50 layout over the edge-injected image, projected to the ViT width.

    Returns ``c1`` as a stride-4 map and ``c2..c4`` (strides 8, 16, 32) as
    token sequences ``(B, h*w, embed_dim)``.
    """

    def __init__(self, embed_dim: int, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        stages = []
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            stride = 1 if index == 0 else 2
            layers = []
            for block in range(count):
                layers.append(Bottleneck(in_planes, planes, stride if block == 0 else 1))
                in_planes = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc1 = nn.Conv2d(256, embed_dim, kernel_size=1)
        self.fc2 = nn.Conv2d(512, embed_dim, kernel_size=1)
        self.fc3 = nn.Conv2d(1024, embed_dim, kernel_size=1)
        self.fc4 = nn.Conv2d(2048, embed_dim, kernel_size=1)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        s1 = self.layer1(x)
        s2 = self.layer2(s1)
        s3 = self.layer3(s2)
        s4 = self.layer4(s3)
        c1 = self.fc1(s1)
        c2, c3, c4 = (
            fc(s).flatten(2).transpose(1, 2)
            for fc, s in ((self.fc2, s2), (self.fc3, s3), (self.fc4, s4))
        )
        return c1, c2, c3, c4
