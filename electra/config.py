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
    "positive": (lambda v: _number(v) and v > 0, "a number above 0"),
    "non-negative": (lambda v: _number(v) and v >= 0, "a number of at least 0"),
    "fraction": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "open fraction": (lambda v: _number(v) and 0 < v < 1, "a number between 0 and 1"),
    "share": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
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


def generator_config(disc: EncoderConfig, fraction: float) -> EncoderConfig:
    """The paper's generator: same depth, hidden, FFN and heads scaled by `fraction`."""
    if not 0 < fraction <= 1:
        raise ValueError(f"generator fraction must be in (0, 1], got {fraction}")
    return disc.replace(
        hidden_size=max(1, round(disc.hidden_size * fraction)),
        ffn_size=max(1, round(disc.ffn_size * fraction)),
        num_heads=max(1, round(disc.num_heads * fraction)),
    )


def _preset(disc: EncoderConfig, fraction: float) -> ModelConfig:
    return ModelConfig(discriminator=disc, generator=generator_config(disc, fraction))


def tiny(vocab_size: int = 100, generator_fraction: float = 0.5) -> ModelConfig:
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


def small(vocab_size: int = 30522, generator_fraction: float = 0.25) -> ModelConfig:
    """ELECTRA-Small: 12 layers x 256 hidden, 4 heads, FFN 1024, embedding 128 (paper, Table 6)."""
    disc = EncoderConfig(
        vocab_size=vocab_size, embedding_size=128, hidden_size=256, num_layers=12, num_heads=4, ffn_size=1024
    )
    return _preset(disc, generator_fraction)


def base(vocab_size: int = 30522, generator_fraction: float = 1 / 3) -> ModelConfig:
    """ELECTRA-Base: 12 layers x 768 hidden, 12 heads, FFN 3072, embedding 768."""
    disc = EncoderConfig(
        vocab_size=vocab_size, embedding_size=768, hidden_size=768, num_layers=12, num_heads=12, ffn_size=3072
    )
    return _preset(disc, generator_fraction)


def large(vocab_size: int = 30522, generator_fraction: float = 0.25) -> ModelConfig:
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
