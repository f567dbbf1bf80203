"""Uni-modal image encoders: E_I (main and reference, one set of weights) and E_R (residual).

Each encoder maps a grayscale image (P, 1, S, S) to a spatial feature map (P, C, S/r, S/r); the
projection module (models/projection.py) turns that map into tokens. Backbones are random-init
torchvision ResNets with a 1-channel stem, or `tiny` (four convs) for tests and the smoke profile.
Pretrained ResNet weights load from a local torchvision state_dict: nothing is downloaded."""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision

# ImageNet's RGB statistics averaged to one channel: what a pretrained ResNet expects of a gray image.
GRAY_MEAN, GRAY_STD = 0.449, 0.226


class TinyBackbone(nn.Module):
    """Four stride-2 convs. GroupNorm, not BatchNorm, so train and eval mode compute the same
    function: the overfitting test trains in train mode and generates in eval mode."""

    def __init__(self, width: int = 32):
        super().__init__()
        chans = [1, width // 2, width, width, width]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(4, cout), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out_channels = width

    def forward(self, x):
        return self.body(x)  # (P, width, S/16, S/16)

    def load_pretrained(self, path: str) -> None:
        """A state_dict of this module (what encoder pretraining saves for the smoke profile)."""
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier, with a 1-channel stem."""

    def __init__(self, name: str):
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity()  # unused; Identity keeps the state_dict names torchvision's
        self.net = net
        self.out_channels = 2048 if name == "resnet50" else 512

    def forward(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return x  # (P, C, S/32, S/32)

    def load_pretrained(self, path: str) -> None:
        """Load a torchvision RGB state_dict. The stem's three input channels are summed into
        one, which gives a gray image the response the RGB net gives that image repeated x3."""
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        if sd["conv1.weight"].shape[1] == 3:
            sd["conv1.weight"] = sd["conv1.weight"].sum(dim=1, keepdim=True)
        missing, unexpected = self.net.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: not a torchvision state_dict for this ResNet "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


class ImageEncoder(nn.Module):
    """Normalise, then run the backbone. `centered` inputs (the residual, in [-1, 1]) are only
    scaled: their zero already means 'no change'."""

    def __init__(self, backbone: str, centered: bool, pretrained: str | None = None):
        super().__init__()
        self.backbone = TinyBackbone() if backbone == "tiny" else ResNetBackbone(backbone)
        if pretrained:
            self.backbone.load_pretrained(pretrained)
        self.mean = 0.0 if centered else GRAY_MEAN
        self.out_channels = self.backbone.out_channels

    def forward(self, x):  # (P, 1, S, S)
        return self.backbone((x - self.mean) / GRAY_STD)  # (P, C, h, w)
