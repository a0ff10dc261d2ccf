"""Teacher and student networks: CIFAR ResNets, Wide ResNets and ImageNet-style ResNets.

Three families, all exposing the same small interface (see :class:`StagedClassifier`):

* CIFAR ResNets ``resnet8 ... resnet110`` (He et al., "Deep Residual Learning for Image Recognition",
  arXiv:1512.03385, section 4.2) as used by the knowledge-distillation benchmarks of CRD (Tian et al.,
  arXiv:1910.10699) and mdistiller: a 3x3 stem, three stages of ``n`` basic blocks with 16/32/64 channels
  (depth = 6n + 2) and 1x1-conv + BN shortcuts where the shape changes ("option B").
* Wide ResNets ``wrn_<depth>_<k>`` (Zagoruyko & Komodakis, "Wide Residual Networks", arXiv:1605.07146):
  pre-activation blocks with 16k/32k/64k channels (depth = 6n + 4), dropout 0 by default.
* ImageNet-style ResNets ``resnet18/34/50/101`` built from torchvision's ``BasicBlock``/``Bottleneck``, with one of
  :data:`STEMS`: the standard 7x7/2 + max-pool stem (224 px), a 3x3 stride-1 stem (``small_input=True``: 32 px, or
  64 px at 16 times the standard stem's cost), or a 3x3 stride-2 stem for 64x64 images (``stem="64px"``:
  Tiny-ImageNet's maps go 32, 16, 8, 4 through the stages, the resolutions of a CIFAR ResNet).

Every family takes a ``width`` multiplier on all its channel counts. An ImageNet ResNet at full width may start from
torchvision's ImageNet weights (``create_model("resnet34", 1000, pretrained=True)``, downloaded once when online). Build models by name with
:func:`create_model`; later chapters add architectures with :func:`register_model`.
"""

from __future__ import annotations

import math
import numbers
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1, conv3x3

__all__ = [
    "StagedClassifier",
    "ResNet",
    "WideBasicBlock",
    "WideResNet",
    "scale_channels",
    "cifar_resnet",
    "wide_resnet",
    "imagenet_resnet",
    "register_model",
    "create_model",
    "list_models",
    "CIFAR_RESNET_DEPTHS",
    "WRN_NAMES",
    "IMAGENET_RESNET_LAYERS",
    "PretrainedWeightsError",
    "load_torchvision_weights",
]

CIFAR_STAGE_CHANNELS = (16, 32, 64)  # the stem has CIFAR_STAGE_CHANNELS[0] channels too
CIFAR_RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
WRN_STEM_CHANNELS = 16
WRN_STAGE_CHANNELS = (16, 32, 64)  # times the widening factor k
WRN_NAMES = ("wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "wrn_28_10")
IMAGENET_STAGE_CHANNELS = (64, 128, 256, 512)  # the stem has IMAGENET_STAGE_CHANNELS[0] channels too
IMAGENET_RESNET_LAYERS: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}
IN_CHANNELS = 3  # RGB input
#: The stems of an ImageNet-style ResNet, by name: (conv kernel, conv stride, max-pool after it).
STEMS = {"imagenet": (7, 2, True), "small": (3, 1, False), "64px": (3, 2, False)}
IMAGENET_CLASSES = 1000
TORCHVISION_WEIGHTS = "IMAGENET1K_V1"  # torchvision's original ImageNet weights of its ResNets
#: torchvision's names of the stem's layers -> ours (every other tensor has the same name in both)
TORCHVISION_STEM = {"conv1.": "stem.conv.", "bn1.": "stem.bn."}


class PretrainedWeightsError(RuntimeError):
    """torchvision's pretrained weights cannot be had (offline) or do not fit the model."""


# ----------------------------------------------------------------------------------------------- helpers
def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive integer, got {num_classes!r}; "
            "pass the number of labels of the data set, e.g. 10 for CIFAR-10 or 200 for Tiny-ImageNet"
        )
    return int(num_classes)


def _check_width(width: float) -> float:
    if (
        isinstance(width, bool)
        or not isinstance(width, numbers.Real)
        or not math.isfinite(width)
        or width <= 0
    ):
        raise ValueError(
            f"width must be a positive finite number, got {width!r}; "
            "use 1.0 for the standard network, 0.5 for half the channels, 2.0 for twice as many"
        )
    return float(width)


def scale_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest integer, at least 1."""
    return max(1, round(channels * _check_width(width)))


def _init_weights(model: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan-out) convs, BatchNorm weight 1 and bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------- common interface
class StagedClassifier(nn.Module):
    """A classifier made of stages, then global average pooling and a linear layer ``fc``.

    Subclasses implement :meth:`forward_features`; ``model(x) == model.head(model.forward_features(x)[-1])``.

    Attributes:
        num_classes: number of logits.
        feature_channels: channels of each feature map returned by :meth:`forward_features`.
    """

    num_classes: int
    feature_channels: list[int]
    pool: nn.Module
    fc: nn.Linear

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The feature map after each stage, shallowest first."""
        raise NotImplementedError

    def head(self, feature_map: Tensor) -> Tensor:
        """Logits from the last feature map: global average pool, flatten, ``fc``."""
        return self.fc(torch.flatten(self.pool(feature_map), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x)[-1])


# ----------------------------------------------------------------------------------------------- ResNet
def _make_stage(
    block: type[nn.Module], in_channels: int, planes: int, num_blocks: int, stride: int
) -> nn.Sequential:
    """``num_blocks`` torchvision blocks; the first one changes resolution/channels via a 1x1-conv + BN shortcut."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    blocks = [block(in_channels, planes, stride, downsample)]
    blocks += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


class ResNet(StagedClassifier):
    """A ResNet built from torchvision's ``BasicBlock``/``Bottleneck`` with free stage widths.

    Structure: ``stem``, ``layer1 .. layerN`` (the first at stride 1, the others at stride 2), ``pool``, ``fc``.
    The stem has ``stage_channels[0]`` channels: conv + BN + ReLU (+ max-pool), one of :data:`STEMS`.

    Args:
        block: ``BasicBlock`` or ``Bottleneck`` (from ``torchvision.models.resnet``).
        layers: number of blocks per stage.
        stage_channels: ``planes`` of each stage (the output has ``planes * block.expansion`` channels).
        num_classes: number of logits.
        small_input: use the 3x3 stride-1 stem without max-pool (``stem="small"``).
        stem: a name of :data:`STEMS`; default ``"small"`` with ``small_input``, else ``"imagenet"``.
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: Sequence[int],
        stage_channels: Sequence[int],
        num_classes: int,
        *,
        small_input: bool = False,
        stem: str | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != len(stage_channels) or not layers:
            raise ValueError(
                f"layers {list(layers)} and stage_channels {list(stage_channels)} must be non-empty and "
                "of the same length (one entry per stage)"
            )
        if any(n < 1 for n in layers):
            raise ValueError(f"every stage needs at least one block, got layers={list(layers)}")
        self.num_classes = _check_num_classes(num_classes)
        stem = stem or ("small" if small_input else "imagenet")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}.")
        self.stem_name, self.small_input = stem, stem != "imagenet"
        stem_channels = stage_channels[0]
        kernel, stride, pool = STEMS[stem]
        layers_ = OrderedDict(conv=nn.Conv2d(IN_CHANNELS, stem_channels, kernel_size=kernel, stride=stride,
                                             padding=kernel // 2, bias=False),
                              bn=nn.BatchNorm2d(stem_channels), relu=nn.ReLU(inplace=True))
        if pool:
            layers_["maxpool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stem = nn.Sequential(layers_)
        self.stage_names = [f"layer{i + 1}" for i in range(len(layers))]
        in_channels = stem_channels
        for i, (name, planes, num_blocks) in enumerate(zip(self.stage_names, stage_channels, layers)):
            self.add_module(name, _make_stage(block, in_channels, planes, num_blocks, stride=1 if i == 0 else 2))
            in_channels = planes * block.expansion
        self.feature_channels = [planes * block.expansion for planes in stage_channels]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, self.num_classes)
        _init_weights(self)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        features = []
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            features.append(x)
        return features


def cifar_resnet(depth: int, num_classes: int, width: float = 1.0) -> ResNet:
    """CIFAR ResNet-``depth`` (depth = 6n + 2: 8, 14, 20, 32, 44, 56, 110, ...) with 1x1-conv shortcuts."""
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"a CIFAR ResNet needs depth = 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}; "
            "for the ImageNet-style ResNet-18/34/50/101 use create_model('resnet18', ...) etc."
        )
    n = (depth - 2) // 6
    channels = [scale_channels(c, width) for c in CIFAR_STAGE_CHANNELS]
    return ResNet(BasicBlock, [n] * len(channels), channels, num_classes, small_input=True)


def imagenet_resnet(depth: int, num_classes: int, width: float = 1.0, *, small_input: bool = False,
                    stem: str | None = None, pretrained: bool = False) -> ResNet:
    """ImageNet-style ResNet-``depth`` (18, 34, 50 or 101), torchvision's layout times ``width``.

    With ``width=1.0`` and ``small_input=False`` it has exactly the layers (and parameter count) of
    ``torchvision.models.resnet<depth>``; ``small_input=True`` swaps in a 3x3 stride-1 stem, ``stem="64px"`` a 3x3
    stride-2 one (:data:`STEMS`).
    ``pretrained=True`` starts from torchvision's ImageNet weights (:func:`load_torchvision_weights`).
    """
    if depth not in IMAGENET_RESNET_LAYERS:
        raise ValueError(
            f"no ImageNet-style ResNet of depth {depth!r}; choose one of {sorted(IMAGENET_RESNET_LAYERS)} "
            "(for CIFAR ResNets of depth 6n + 2 use cifar_resnet)"
        )
    block, layers = IMAGENET_RESNET_LAYERS[depth]
    channels = [scale_channels(c, width) for c in IMAGENET_STAGE_CHANNELS]
    model = ResNet(block, layers, channels, num_classes, small_input=small_input, stem=stem)
    if pretrained:
        if width != 1.0 or model.small_input or num_classes != IMAGENET_CLASSES:
            raise PretrainedWeightsError(
                f"torchvision's ImageNet weights fit resnet{depth} at width 1.0 with the standard stem and "
                f"{IMAGENET_CLASSES} classes, not width={width}, stem={model.stem_name!r}, num_classes={num_classes}; "
                f"build it that way or drop pretrained=True.")
        load_torchvision_weights(model, depth)
    return model


def load_torchvision_weights(model: ResNet, depth: int) -> ResNet:
    """Load torchvision's ImageNet weights of ``resnet<depth>`` into ``model`` (downloaded into torch.hub's cache
    the first time: that needs the internet; offline, a cached copy is used, else the error says what to do)."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(f"resnet{depth}")[TORCHVISION_WEIGHTS]
    try:
        state = torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except OSError as err:  # urllib's URLError and socket errors are OSErrors
        name = weights.url.rsplit("/", 1)[-1]
        raise PretrainedWeightsError(
            f"cannot download torchvision's ImageNet weights of resnet{depth} ({err}): this machine seems to be "
            f"offline. Connect to the internet, or copy {name} from {weights.url} into "
            f"{torch.hub.get_dir()}/checkpoints, or drop pretrained=True to train the teacher from scratch.") from None
    renamed = {}
    for key, value in state.items():
        for theirs, ours in TORCHVISION_STEM.items():
            if key.startswith(theirs):
                key = ours + key[len(theirs):]
        renamed[key] = value
    model.load_state_dict(renamed)
    return model


# ----------------------------------------------------------------------------------------------- Wide ResNet
class WideBasicBlock(nn.Module):
    """Pre-activation block of WRN: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus a shortcut.

    When the shape changes the shortcut is a 1x1 conv applied to the pre-activated input (as in the
    reference implementation); otherwise it is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut = (
            conv1x1(in_channels, out_channels, stride) if stride != 1 or in_channels != out_channels else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        return out + identity


class WideResNet(StagedClassifier):
    """WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis, arXiv:1605.07146) for 32x32 inputs.

    Structure: ``stem`` (3x3 conv), ``layer1..layer3`` of n = (depth - 4) / 6 :class:`WideBasicBlock` each with
    16k/32k/64k channels (times ``width``), ``final_act`` (BN + ReLU), ``pool``, ``fc``. The last feature map of
    :meth:`forward_features` is taken after ``final_act``.
    """

    def __init__(
        self, depth: int, widen_factor: int, num_classes: int, *, width: float = 1.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"a Wide ResNet needs depth = 6n + 4 with n >= 1 (10, 16, 28, 40, ...), got {depth!r}")
        if isinstance(widen_factor, bool) or not isinstance(widen_factor, numbers.Integral) or widen_factor < 1:
            raise ValueError(f"widen_factor k must be a positive integer (1, 2, 4, 10, ...), got {widen_factor!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.num_classes = _check_num_classes(num_classes)
        n = (depth - 4) // 6
        stem_channels = scale_channels(WRN_STEM_CHANNELS, width)
        self.feature_channels = [scale_channels(c * widen_factor, width) for c in WRN_STAGE_CHANNELS]
        self.stem = conv3x3(IN_CHANNELS, stem_channels)
        in_channels = stem_channels
        for i, out_channels in enumerate(self.feature_channels):
            stride = 1 if i == 0 else 2
            blocks = [WideBasicBlock(in_channels, out_channels, stride, dropout)]
            blocks += [WideBasicBlock(out_channels, out_channels, 1, dropout) for _ in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_channels = out_channels
        self.final_act = nn.Sequential(
            OrderedDict(bn=nn.BatchNorm2d(in_channels), relu=nn.ReLU(inplace=True))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, self.num_classes)
        _init_weights(self)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        f1 = self.layer1(self.stem(x))
        f2 = self.layer2(f1)
        f3 = self.final_act(self.layer3(f2))
        return [f1, f2, f3]


def wide_resnet(
    depth: int, widen_factor: int, num_classes: int, width: float = 1.0, *, dropout: float = 0.0
) -> WideResNet:
    """WRN-``depth``-``widen_factor``, e.g. ``wide_resnet(40, 2, 100)`` for WRN-40-2 on CIFAR-100."""
    return WideResNet(depth, widen_factor, num_classes, width=width, dropout=dropout)


_WRN_NAME = re.compile(r"wrn_(\d+)_(\d+)")


def _parse_wrn_name(name: str) -> tuple[int, int] | None:
    """``"wrn_40_2"`` -> ``(40, 2)``; ``None`` if ``name`` is not of that form."""
    match = _WRN_NAME.fullmatch(name)
    return (int(match[1]), int(match[2])) if match else None


# ----------------------------------------------------------------------------------------------- registry
ModelBuilder = Callable[..., nn.Module]
_MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator adding ``builder(num_classes, *, width=1.0, **kwargs) -> nn.Module`` to the registry as ``name``."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered; choose another name")
        _MODELS[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` (besides any ``wrn_<depth>_<k>``)."""
    return list(_MODELS)


def create_model(name: str, num_classes: int, *, width: float = 1.0, **kwargs) -> nn.Module:
    """Build a registered model, e.g. ``create_model("resnet56", 100)`` or ``create_model("wrn_40_2", 10)``.

    Args:
        name: one of :func:`list_models`, or ``wrn_<depth>_<k>`` for any Wide ResNet.
        num_classes: number of logits.
        width: multiplier on every channel count (rounded, at least 1 channel).
        **kwargs: family options: ``small_input`` or ``stem`` (ImageNet-style ResNets), ``dropout`` (Wide ResNets).
    """
    _check_num_classes(num_classes)
    _check_width(width)
    if name in _MODELS:
        return _MODELS[name](num_classes, width=width, **kwargs)
    wrn = _parse_wrn_name(name)
    if wrn is not None:
        return wide_resnet(*wrn, num_classes, width, **kwargs)
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(_MODELS)} (or any wrn_<depth>_<k>)")


for _depth in CIFAR_RESNET_DEPTHS:
    register_model(f"resnet{_depth}")(partial(cifar_resnet, _depth))
for _name in WRN_NAMES:
    register_model(_name)(partial(wide_resnet, *_parse_wrn_name(_name)))
for _depth in IMAGENET_RESNET_LAYERS:
    register_model(f"resnet{_depth}")(partial(imagenet_resnet, _depth))
