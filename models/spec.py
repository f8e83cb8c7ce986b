"""What a CSRA model is, without Paddle: the registered names, the defaults and ``ModelSettings``.

This module imports nothing heavy, so the command line can build ``--help`` (model and
attention choices, default sizes) without importing Paddle, and engine/deploy can describe
the model they build. The static name lists are kept equal to the registries
(``models.MODELS``, ``models.attention.ATTENTIONS``) by ``tests/cli/test_help.py``.

Every model default has its one home here: ``build_model`` and the scripts both use
``DEFAULT_IMG_SIZE`` (448, the reference input side; GE's kernels are sized from it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: ``models.MODELS.names()``, in registration order.
MODEL_NAMES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vit_b16", "vit_l16",
                                 "efficientmod_xxs", "efficientmod_xs", "efficientmod_s", "efficientmod_s_conv")
#: ``models.MODELS.aliases()``: alias (lower case) -> registered model name (the reference's ViT names).
MODEL_ALIASES: dict[str, str] = {"vit_b16_224": "vit_b16", "vit_l16_224": "vit_l16"}
#: ``models.attention.ATTENTIONS.names()``, in registration order (aliases below).
ATTENTION_NAMES: tuple[str, ...] = ("se", "srm", "ge", "ab", "multise", "eca", "prm", "at", "emod")
#: alias -> registered attention name.
ATTENTION_ALIASES: dict[str, str] = {"meanrew": "ab"}

DEFAULT_MODEL = "resnet101"
DEFAULT_NUM_HEADS = 1
DEFAULT_LAM = 0.1
DEFAULT_IMG_SIZE = 448  # the reference input side; sizes GE's global kernels unless img_size is given

#: backbone family -> the module that registers it (``models.family.load_families`` imports
#: these). A new family = its module + one line here + its names in ``MODEL_NAMES``.
BACKBONE_FAMILIES: dict[str, str] = {"resnet": "models.resnet", "vit": "models.vit",
                                      "efficientmod": "models.efficientmod"}

#: CSRA temperature of a max-pooling head (the reference's T = 99).
MAX_POOL_TEMPERATURE = 99
#: number of CSRA heads -> the reference's temperatures (``models.csra`` uses this table).
HEAD_TEMPERATURES: dict[int, tuple[int, ...]] = {
    1: (1,),
    2: (1, 99),
    4: (1, 2, 4, 99),
    6: (1, 2, 3, 4, 5, 99),
    8: (1, 2, 3, 4, 5, 6, 7, 99),
}
#: the accepted ``--num_heads`` values.
SUPPORTED_HEADS: tuple[int, ...] = tuple(HEAD_TEMPERATURES)

#: stages an attention block can go into (output strides 4, 8, 16, 32).
ATTENTION_STAGES: tuple[int, ...] = (1, 2, 3, 4)


def parse_stages(value: Any) -> list[int] | None:
    """The one parser of attention stages (``--attention_stages``, config.json, ``build_model``).

    Args:
        value: None; text of comma-separated stage numbers (``"3,4"``, ``"3, 4"``); an int;
            or a list/tuple of ints.
    Returns:
        the stages as a sorted list of distinct ints in 1..4, or None for None.
    Raises:
        UserError: anything else (unknown stage, repeated stage, no stage, not a number),
            with one message naming the value, the cause and the fix.
    """
    from utils.errors import UserError

    def error(cause: str) -> UserError:
        return UserError(f"--attention_stages {value!r}: {cause}; give distinct stages from "
                         f"{', '.join(map(str, ATTENTION_STAGES))} separated by commas, e.g. 3,4 "
                         "(or leave them unset for the block's default)")

    if value is None:
        return None
    if isinstance(value, str):
        items: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise error(f"expected text such as '3,4' or a list of ints, got a {type(value).__name__}")
    stages: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise error(f"{item!r} is not a stage number")
        try:
            number = float(item) if isinstance(item, float) else int(item)
        except ValueError:
            raise error(f"{item!r} is not a stage number") from None
        if number != int(number):
            raise error(f"{item!r} is not a stage number")
        stage = int(number)
        if stage not in ATTENTION_STAGES:
            raise error(f"stage {stage} does not exist")
        if stage in stages:
            raise error(f"stage {stage} is given twice")
        stages.append(stage)
    if not stages:
        raise error("no stage is given")
    return sorted(stages)


def canonical_model(name: str) -> str:
    """The registered model name for ``name`` (case and aliases resolved, e.g. ``vit_B16_224`` -> ``vit_b16``).

    Args:
        name: a model name or alias.
    Returns:
        the registered name, or the lower-cased input when it is unknown (callers report it).
    """
    key = str(name).strip().lower()
    return MODEL_ALIASES.get(key, key)


def canonical_attention(name: str | None) -> str | None:
    """The registered attention name for ``name`` (case and aliases resolved); None for none/null/empty.

    Args:
        name: a block name, an alias, ``none``, or None.
    Returns:
        the canonical name, None for no block, or the lower-cased input when it is unknown
        (``build_model`` reports unknown names with the list of choices).
    """
    if name is None or str(name).strip().lower() in ("", "none", "null"):
        return None
    key = str(name).strip().lower()
    return ATTENTION_ALIASES.get(key, key)


@dataclass(frozen=True)
class ModelSettings:
    """The arguments of ``models.build_model`` for one model, resolved (no None left but the attention).

    Attributes:
        name: registered model name, e.g. ``resnet101``.
        num_classes: number of labels C.
        num_heads: CSRA heads.
        lam: weight of the attention logit (> 0).
        attention: attention block name, or None.
        attention_stages: ResNet stages receiving the block (sorted), or None for the block's default.
        img_size: square input side S in pixels (input [B, 3, S, S]); sizes GE's kernels and
            ViT's position-embedding grid.
        drop_rate, drop_path_rate: training regularisation of the families that take them
            (ViT: dropout and stochastic depth; the reference uses 0). Not in eval or export.
    """

    name: str
    num_classes: int
    num_heads: int = DEFAULT_NUM_HEADS
    lam: float = DEFAULT_LAM
    attention: str | None = None
    attention_stages: tuple[int, ...] | None = None
    img_size: int = DEFAULT_IMG_SIZE
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``models.build_model`` (``attention_stages`` as a list or None; the
        drop rates only when non-zero, so that families without them build as before)."""
        out = {
            "name": self.name, "num_classes": self.num_classes, "num_heads": self.num_heads, "lam": self.lam,
            "attention": self.attention, "attention_stages": list(self.attention_stages) if self.attention_stages else None,
            "img_size": self.img_size,
        }
        out.update({key: value for key, value in (("drop_rate", self.drop_rate), ("drop_path_rate", self.drop_path_rate))
                    if value})
        return out

    def build(self, pretrained: str | None = None) -> Any:
        """``models.build_model(**self.build_kwargs(), pretrained=pretrained)`` (imports Paddle).

        Returns:
            the model (a ``paddle.nn.Layer``: ``forward(x [B,3,S,S]) -> logits [B, C]``).
        """
        from models.model import build_model

        return build_model(**self.build_kwargs(), pretrained=pretrained)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields (``attention_stages`` as a list or None)."""
        out = asdict(self)
        out["attention_stages"] = list(self.attention_stages) if self.attention_stages else None
        return out
