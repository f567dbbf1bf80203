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

    def __init__(self, width: int = 32, in_channels: int = 1):
        super().__init__()
        chans = [in_channels, width // 2, width, width, width]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(4, cout), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out_channels = width

    def forward(self, x):
        return self.body(x)  # (P, width, S/16, S/16)

    def load_pretrained(self, path: str) -> None:
        """A state_dict of this module (what encoder pretraining saves for the smoke profile)."""
        sd = torch.load(path, map_location="cpu", weights_only=True)
        stem, want = sd["body.0.weight"], self.body[0].weight.shape[1]
        if stem.shape[1] != want:  # a gray stem spread over a stacked input
            sd["body.0.weight"] = stem.sum(dim=1, keepdim=True).repeat(1, want, 1, 1) / want
        self.load_state_dict(sd)


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier, with a 1-channel stem."""

    def __init__(self, name: str, in_channels: int = 1):
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
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
        want = self.net.conv1.weight.shape[1]
        have = sd["conv1.weight"].shape[1]
        if have != want:  # RGB -> gray: sum; gray -> a stacked input: each channel a third
            gray = sd["conv1.weight"].sum(dim=1, keepdim=True)
            sd["conv1.weight"] = gray if want == 1 else gray.repeat(1, want, 1, 1) / want
        missing, unexpected = self.net.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: not a torchvision state_dict for this ResNet "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


class ImageEncoder(nn.Module):
    """Normalise, then run the backbone. `centered` inputs (the residual, in [-1, 1]) are only
    scaled: their zero already means 'no change'. `centered` may be one flag per input channel
    (a stacked [main, ref, residual] input: (False, False, True))."""

    def __init__(self, backbone: str, centered: bool | tuple[bool, ...], pretrained: str | None = None):
        super().__init__()
        flags = centered if isinstance(centered, tuple) else (centered,)
        c = len(flags)
        self.backbone = TinyBackbone(in_channels=c) if backbone == "tiny" else ResNetBackbone(backbone, c)
        if pretrained:
            self.backbone.load_pretrained(pretrained)
        self.register_buffer("mean", torch.tensor([0.0 if f else GRAY_MEAN for f in flags]).view(1, c, 1, 1),
                             persistent=False)
        self.out_channels = self.backbone.out_channels

    def forward(self, x):  # (P, channels, S, S)
        return self.backbone((x - self.mean) / GRAY_STD)  # (P, C, h, w)
