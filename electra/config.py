"""Model configuration: frozen dataclasses and the paper's presets as functions."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


def _number(v) -> bool:
    """A finite int or float: an infinite learning rate or loss weight would turn the weights to NaN."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_RULES = {
    "count": (lambda v: _whole(v) and v >= 1, "a whole number of at least 1"),
    "count0": (lambda v: _whole(v) and v >= 0, "a whole number of at least 0"),
    "positive": (lambda v: _number(v) and v > 0, "a finite number above 0"),
    "non-negative": (lambda v: _number(v) and v >= 0, "a finite number of at least 0"),
    "fraction": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "open fraction": (lambda v: _number(v) and 0 < v < 1, "a number between 0 and 1"),
    "share": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "seed": (lambda v: _whole(v) and 0 <= v < 2**32, "a whole number from 0 to 4294967295"),
    # fine-tuning seeds: each keeps a model on disk until the best is chosen (the paper takes 10)
    "seeds": (lambda v: _whole(v) and 1 <= v <= 1000, "a whole number from 1 to 1000"),
}


def check_flags(obj) -> None:
    """Refuse anything but true or false in a dataclass's bool fields: from a JSON file, the
    string "false" would otherwise switch the option on."""
    for f in dataclasses.fields(obj):
        if f.type in ("bool", "bool | None"):
            value = getattr(obj, f.name)
            if not isinstance(value, bool) and not (value is None and f.type == "bool | None"):
                raise ValueError(f"{f.name.replace('_', '-')} must be true or false, got {value!r}")


def check_options(obj, **rules: str) -> None:
    """Refuse a setting outside its range (or of the wrong type, from a JSON file) before any work.

    `rules` maps a field to a key of `_RULES`; None, where a field allows it, means its default.
    A zero never stands for "the default": `--max-steps 0` is an error, not a million steps.
    """
    for name, rule in rules.items():
        value = getattr(obj, name)
        ok, what = _RULES[rule]
        if value is not None and not ok(value):
            raise ValueError(f"{name.replace('_', '-')} must be {what}, got {value!r}")


@dataclass(frozen=True)
class EncoderConfig:
    """One Transformer encoder, laid out exactly like transformers' `ElectraModel`."""

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 256
    num_layers: int = 12
    num_heads: int = 4
    ffn_size: int = 1024
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "embedding_size", "hidden_size", "num_layers", "num_heads", "ffn_size")
        check_options(
            self,
            **dict.fromkeys((*sizes, "max_positions", "type_vocab_size"), "count"),
            dropout="fraction",
            attention_dropout="fraction",
        )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "choose a head count that divides the hidden size"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary of {self.vocab_size}")

    def replace(self, **changes) -> EncoderConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelConfig:
    """A generator and a discriminator that share their embeddings."""

    discriminator: EncoderConfig
    generator: EncoderConfig
    # DeBERTa-v3's gradient-disentangled embedding sharing: the discriminator sees
    # stop_grad(word embeddings) + a zero-initialised delta, so RTD cannot pull on the
    # embeddings the generator learns; exports carry the sum.
    disentangled_embeddings: bool = False
    # the discriminator network also gets a masked-LM head (tied to its word embeddings), for the
    # paper's Replace MLM and All-Tokens MLM comparisons
    discriminator_lm_head: bool = False

    def __post_init__(self) -> None:
        shared = ("vocab_size", "embedding_size", "max_positions", "type_vocab_size", "pad_token_id", "layer_norm_eps")
        for name in shared:
            d, g = getattr(self.discriminator, name), getattr(self.generator, name)
            if d != g:
                raise ValueError(
                    f"generator and discriminator share their embeddings, so {name} must match "
                    f"(discriminator {d}, generator {g})"
                )

    def with_dropout(self, p: float) -> ModelConfig:
        """Both networks with hidden and attention dropout `p`."""
        drop = {"dropout": p, "attention_dropout": p}
        return dataclasses.replace(
            self, discriminator=self.discriminator.replace(**drop), generator=self.generator.replace(**drop)
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(
            EncoderConfig(**d["discriminator"]),
            EncoderConfig(**d["generator"]),
            d.get("disentangled_embeddings", False),
            d.get("discriminator_lm_head", False),
        )


# What a run may size beyond its preset ("architecture" in a --config file): the vocabulary and
# padding id come from the data's tokenizer, dropout from --dropout.
ARCHITECTURE_KEYS = (
    "embedding_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "ffn_size",
    "max_positions",
    "type_vocab_size",
    "layer_norm_eps",
    "initializer_range",
)
# the generator takes these from the discriminator: they size the embeddings the two share
SHARED_KEYS = ("embedding_size", "max_positions", "type_vocab_size", "layer_norm_eps")


def check_architecture(arch) -> None:
    """Refuse an "architecture" setting that is not {"discriminator": {...}, "generator": {...}}
    of known sizes (either network may be left out); the values are checked when the model is built."""
    if arch is None:
        return
    form = '{"discriminator": {"num_layers": 6, ...}, "generator": {...}}'
    if not isinstance(arch, dict) or not arch or set(arch) - {"discriminator", "generator"}:
        raise ValueError(f"architecture must look like {form} (either network may be left out), got {arch!r}")
    for network, sizes in arch.items():
        if not isinstance(sizes, dict):
            raise ValueError(f'architecture.{network} must be an object of sizes, like {{"num_layers": 6}}')
        for key in sizes:
            if key in ("vocab_size", "pad_token_id"):
                raise ValueError(f"architecture.{network} sets {key}, which the data's tokenizer decides; drop it")
            if key in ("dropout", "attention_dropout"):
                raise ValueError(f"architecture.{network} sets {key}; use --dropout (both networks) instead")
            if key not in ARCHITECTURE_KEYS:
                raise ValueError(
                    f"architecture.{network} sets unknown size {key!r}; choose from {', '.join(ARCHITECTURE_KEYS)}"
                )
            if network == "generator" and key in SHARED_KEYS:
                raise ValueError(
                    f"the generator shares its embeddings with the discriminator, so it takes {key} from it: "
                    f"set {key} under architecture.discriminator"
                )


def sized(disc: EncoderConfig, fraction: float, arch: dict | None) -> tuple[EncoderConfig, EncoderConfig]:
    """The discriminator with `arch`'s sizes, and the paper's generator for it (`fraction` of its
    width) with `arch`'s generator sizes; a size that does not fit names its network."""
    arch = arch or {}

    def refused(network: str, e: ValueError) -> ValueError:
        name, rest = str(e).split(" ", 1)  # "num-layers must be ...": the size as the JSON key spells it
        return ValueError(f"architecture: the {network}'s {name.replace('-', '_')} {rest}")

    try:
        disc = disc.replace(**arch.get("discriminator", {}))
    except ValueError as e:
        raise refused("discriminator", e) from None
    try:
        gen = generator_config(disc, fraction).replace(**arch.get("generator", {}))
    except ValueError as e:
        raise refused("generator", e) from None
    return disc, gen


def generator_config(disc: EncoderConfig, fraction: float) -> EncoderConfig:
    """The paper's generator: same depth, hidden, FFN and heads scaled by `fraction`."""
    if not 0 < fraction <= 1:
        raise ValueError(f"generator fraction must be in (0, 1], got {fraction}")
    return disc.replace(
        hidden_size=max(1, round(disc.hidden_size * fraction)),
        ffn_size=max(1, round(disc.ffn_size * fraction)),
        num_heads=max(1, round(disc.num_heads * fraction)),
    )


# the generator's share of the discriminator's width, per preset (the paper's)
GENERATOR_FRACTION = {"tiny": 0.5, "small": 0.25, "base": 1 / 3, "large": 0.25}


def _preset(disc: EncoderConfig, fraction: float) -> ModelConfig:
    return ModelConfig(discriminator=disc, generator=generator_config(disc, fraction))


def tiny(vocab_size: int = 100, generator_fraction: float = GENERATOR_FRACTION["tiny"]) -> ModelConfig:
    """A few thousand parameters, for tests."""
    disc = EncoderConfig(
        vocab_size=vocab_size,
        embedding_size=16,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        ffn_size=64,
        max_positions=128,
    )
    return _preset(disc, generator_fraction)


def small(vocab_size: int = 30522, generator_fraction: float = GENERATOR_FRACTION["small"]) -> ModelConfig:
    """ELECTRA-Small: 12 layers x 256 hidden, 4 heads, FFN 1024, embedding 128 (paper, Table 6)."""
    disc = EncoderConfig(
        vocab_size=vocab_size, embedding_size=128, hidden_size=256, num_layers=12, num_heads=4, ffn_size=1024
    )
    return _preset(disc, generator_fraction)


def base(vocab_size: int = 30522, generator_fraction: float = GENERATOR_FRACTION["base"]) -> ModelConfig:
    """ELECTRA-Base: 12 layers x 768 hidden, 12 heads, FFN 3072, embedding 768."""
    disc = EncoderConfig(
        vocab_size=vocab_size, embedding_size=768, hidden_size=768, num_layers=12, num_heads=12, ffn_size=3072
    )
    return _preset(disc, generator_fraction)


def large(vocab_size: int = 30522, generator_fraction: float = GENERATOR_FRACTION["large"]) -> ModelConfig:
    """ELECTRA-Large: 24 layers x 1024 hidden, 16 heads, FFN 4096, embedding 1024."""
    disc = EncoderConfig(
        vocab_size=vocab_size, embedding_size=1024, hidden_size=1024, num_layers=24, num_heads=16, ffn_size=4096
    )
    return _preset(disc, generator_fraction)


PRESETS = {"tiny": tiny, "small": small, "base": base, "large": large}


def preset(name: str, **kwargs) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name](**kwargs)
