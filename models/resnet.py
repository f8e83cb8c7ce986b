"""The ResNet backbone family (resnet18-152) in the torchvision / ``paddle.vision.models.ResNet`` layout.

This module registers the family and its five models (``models.family``): the specs carry
depth, block kind, output width, the attention kinds their blocks host and Paddle's ImageNet
weights (URL + md5); the family carries how to build them (``ResNetCSRA``) and how ResNet
checkpoints look (torchvision key names, the ImageNet ``fc`` to drop, where attention blocks
sit: ``layer{stage}.{i}.<slot>``, mixers in ``conv2``).

Parameter names are those of ``paddle.vision``'s ResNet (``conv1``, ``bn1``,
``layer{1..4}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.0,downsample.1}``), so
Paddle's ImageNet ``.pdparams`` load without renaming. The stride of a bottleneck sits on
its 3x3 conv ("v1.5"), output stride is 32 and there is no dilation.

Blocks have two hooks for attention blocks:
- a *recalibrator* acting on the residual branch after the last BN, before the add;
- a *mixer* replacing the bottleneck's 3x3 ``conv2`` (keeping the name).
In eval mode a bottleneck evaluates recalibrators that define ``inference_affine`` from
conv3's input (``_inference_tail``): same function, fewer passes over the feature map.
"""
from __future__ import annotations

from typing import Any, Callable, Collection, Protocol

import paddle
import paddle.nn.functional as F
from paddle import nn

from models.norm import BatchNorm2D
from models.attention.base import MIXER, RECALIBRATOR, fold_batch_norm
from models.csra import CSRAModel
from models.family import BackboneFamily, ModelSpec, WeightsSource, register_family

# A factory building a recalibrator for a block: (channels, stage 1..4) -> Layer or None.
RecalibratorFactory = Callable[[int, int], nn.Layer | None]


class MixerFactory(Protocol):
    """Builds a layer replacing a bottleneck's 3x3 conv, or None to keep the conv."""

    def __call__(self, in_channels: int, out_channels: int, stride: int, stage: int) -> nn.Layer | None: ...


def _conv_init() -> paddle.ParamAttr:
    # torchvision's ResNet init: kaiming-normal, fan_out, relu gain.
    return paddle.ParamAttr(initializer=nn.initializer.KaimingNormal(mode="fan_out", nonlinearity="relu"))


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2D:
    """3x3 convolution with padding 1 and no bias."""
    return nn.Conv2D(in_ch, out_ch, 3, stride=stride, padding=1, bias_attr=False, weight_attr=_conv_init())


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2D:
    """1x1 convolution without bias."""
    return nn.Conv2D(in_ch, out_ch, 1, stride=stride, bias_attr=False, weight_attr=_conv_init())


class _ResidualBlock(nn.Layer):
    """Shared plumbing: the optional recalibrator stored under its own checkpoint key."""

    expansion = 1

    def _attach_recalibrator(self, recalibrator: nn.Layer | None) -> None:
        # Recalibrators declare the attribute name used by their original checkpoints
        # (e.g. "rclb" or "prm"), so converted weights keep the original key names.
        self._recalibrator_key: str | None = None
        if recalibrator is not None:
            key = getattr(recalibrator, "checkpoint_key", "attn")
            setattr(self, key, recalibrator)
            self._recalibrator_key = key

    def _recalibrate(self, out: paddle.Tensor) -> paddle.Tensor:
        if self._recalibrator_key is None:
            return out
        return getattr(self, self._recalibrator_key)(out)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convs (ResNet-18/34). Input [B, inplanes, H, W] -> [B, planes, H/s, W/s].

    Hosts recalibrators only (no ``mixer`` argument): which attention kinds a model hosts is
    its ``ModelSpec.attention_kinds``, checked once by ``build_model``.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Layer | None = None,
        recalibrator: nn.Layer | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = BatchNorm2D(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = BatchNorm2D(planes)
        self.downsample = downsample
        self._attach_recalibrator(recalibrator)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self._recalibrate(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class BottleneckBlock(_ResidualBlock):
    """1x1 -> 3x3 (stride here) -> 1x1 (ResNet-50/101/152). Output has 4 x planes channels."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Layer | None = None,
        recalibrator: nn.Layer | None = None,
        mixer: nn.Layer | None = None,
    ) -> None:
        super().__init__()
        width = planes
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = BatchNorm2D(width)
        self.conv2 = mixer if mixer is not None else conv3x3(width, width, stride)
        self.bn2 = BatchNorm2D(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = BatchNorm2D(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self._attach_recalibrator(recalibrator)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        recalibrator = getattr(self, self._recalibrator_key) if self._recalibrator_key else None
        if recalibrator is not None and not self.training and hasattr(recalibrator, "inference_affine"):
            return self._inference_tail(recalibrator, out, identity)
        out = self._recalibrate(self.bn3(self.conv3(out)))
        return self.relu(out + identity)

    def _inference_tail(self, recalibrator: nn.Layer, h: paddle.Tensor, identity: paddle.Tensor) -> paddle.Tensor:
        """Eval-mode tail for recalibrators that are ``x * scale + shift`` with ``x = bn3(conv3(h))``
        (SE, ECA, MultiSE, AB, SRM; see ``Recalibrator``).

        In eval mode bn3 and the 1x1 conv3 are affine, so ``mean_HW(x) = conv2d(mean_HW(h),
        weight, bias)`` with bn3 folded into conv3's weight: the mean is taken on the 4x narrower
        ``h``. An additive ``shift`` goes into the identity branch so that conv3 + bn3 + the
        residual add + ReLU stay one fused op in Paddle Inference. Same function as the
        training path up to float rounding.
        """
        weight, bias = fold_batch_norm(self.conv3.weight, self.bn3)
        out = self.bn3(self.conv3(h))
        scale, shift = recalibrator.inference_affine(F.adaptive_avg_pool2d(h, 1), weight, bias, out)
        if shift is not None:
            identity = identity + shift
        if scale is not None:
            out = out * scale
        return self.relu(out + identity)


RESNET_SPECS: dict[int, tuple[type[_ResidualBlock], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (BottleneckBlock, [3, 4, 6, 3]),
    101: (BottleneckBlock, [3, 4, 23, 3]),
    152: (BottleneckBlock, [3, 8, 36, 3]),
}


class ResNet(nn.Layer):
    """ResNet trunk without avgpool/fc.

    Args:
        depth: 18, 34, 50, 101 or 152.
        recalibrator_factory: optional ``(channels, stage) -> Layer | None`` called for every
            block; the layer acts on the residual branch after its last BN.
        mixer_factory: optional ``(in_ch, out_ch, stride, stage) -> Layer | None`` replacing a
            bottleneck's 3x3 conv (bottleneck depths only; ``build_model`` checks that).
    ``forward_features(x [B,3,H,W]) -> [B, feature_channels, H/32, W/32]``.
    """

    def __init__(
        self,
        depth: int,
        recalibrator_factory: RecalibratorFactory | None = None,
        mixer_factory: MixerFactory | None = None,
    ) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose from {sorted(RESNET_SPECS)}")
        block, layers = RESNET_SPECS[depth]
        self.depth = depth
        self.inplanes = 64
        self.conv1 = nn.Conv2D(3, 64, 7, stride=2, padding=3, bias_attr=False, weight_attr=_conv_init())
        self.bn1 = BatchNorm2D(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        stages = []
        for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stride = 1 if stage == 1 else 2
            stages.append(self._make_layer(block, planes, blocks, stride, stage, recalibrator_factory, mixer_factory))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_channels = 512 * block.expansion

    def _make_layer(
        self,
        block: type[_ResidualBlock],
        planes: int,
        blocks: int,
        stride: int,
        stage: int,
        recalibrator_factory: RecalibratorFactory | None,
        mixer_factory: MixerFactory | None,
    ) -> nn.Sequential:
        out_channels = planes * block.expansion
        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            downsample = None
            if i == 0 and (s != 1 or self.inplanes != out_channels):
                downsample = nn.Sequential(conv1x1(self.inplanes, out_channels, s), BatchNorm2D(out_channels))
            recal = recalibrator_factory(out_channels, stage) if recalibrator_factory else None
            mixer = mixer_factory(planes, planes, s, stage) if mixer_factory else None
            hooks: dict[str, nn.Layer] = {"mixer": mixer} if mixer is not None else {}
            layers.append(block(self.inplanes, planes, s, downsample, recalibrator=recal, **hooks))
            self.inplanes = out_channels
        return nn.Sequential(*layers)

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """x [B, 3, H, W] float32 -> last feature map [B, feature_channels, H/32, W/32]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.forward_features(x)


class ResNetCSRA(CSRAModel, ResNet):
    """ResNet trunk + CSRA classifier: ``ResNetCSRA(depth, num_classes=, num_heads=, lam=, **hooks)``.

    Backbone parameters sit at the top level (``conv1``, ``layer1`` ...) and the classifier
    under ``classifier.multi_head.{h}.head.weight``: the key names of both Paddle's ImageNet
    ResNets and the reference CSRA checkpoints.

    ``forward(x [B,3,H,W]) -> logits [B, num_classes]``;
    ``forward_features(x) -> [B, feature_channels, H/32, W/32]``.
    """


# ----------------------------------------------------------------------------- the family and its specs
FAMILY = "resnet"
FORMAT_TORCHVISION_RESNET = "torchvision-resnet"
_HAPI = "https://paddle-hapi.bj.bcebos.com/models/"  # Paddle's official ImageNet ResNets (paddle.vision.models)
_BASIC_HOSTS = frozenset({RECALIBRATOR})
_BOTTLENECK_HOSTS = frozenset({RECALIBRATOR, MIXER})


def _resnet(depth: int, md5: str) -> ModelSpec:
    block, _ = RESNET_SPECS[depth]
    bottleneck = block is BottleneckBlock
    return ModelSpec(
        name=f"resnet{depth}", family=FAMILY, preset=depth, block="bottleneck" if bottleneck else "basic",
        feature_channels=512 * block.expansion, attention_kinds=_BOTTLENECK_HOSTS if bottleneck else _BASIC_HOSTS,
        weights={"imagenet": WeightsSource(f"{_HAPI}resnet{depth}.pdparams", md5)}, summary=f"ResNet-{depth} + CSRA",
    )


RESNET_MODELS: tuple[ModelSpec, ...] = (
    _resnet(18, "cf548f46534aa3560945be4b95cd11c4"),
    _resnet(34, "8d2275cf8706028345f78ac0e1d31969"),
    _resnet(50, "ca6f485ee1ab0492d38f323885b0ad80"),
    _resnet(101, "02f35f034ca3858e1e54d4036443c92d"),
    _resnet(152, "7ad16a2f1e7333859ff986138630fd7a"),
)


def build_resnet(spec: ModelSpec, **kwargs: Any) -> ResNetCSRA:
    """``BackboneFamily.build``: ``ResNetCSRA(spec.preset, **kwargs)`` (num_classes, num_heads, lam, attention hooks)."""
    return ResNetCSRA(spec.preset, **kwargs)


def looks_like_resnet(keys: Collection[str]) -> bool:
    """``BackboneFamily.signature``: a ResNet stem ``conv1.weight`` and ``layer1.*`` blocks."""
    return "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys)


register_family(
    BackboneFamily(
        name=FAMILY,
        build=build_resnet,
        signature=looks_like_resnet,
        key_hint="'conv1.weight' and 'layer1.*'",
        torch_format=FORMAT_TORCHVISION_RESNET,
        head_keys=("fc.weight", "fc.bias"),  # torchvision's / Paddle's ImageNet classifier
        rename=None,  # torchvision names = Paddle names (BatchNorm statistics aside)
        block_pattern=r"layer(?P<stage>[1-4])\.\d+\.",
        mixer_slot="conv2",
    ),
    RESNET_MODELS,
)
