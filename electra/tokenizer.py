"""WordPiece tokenizers: train one BERT-style, load an existing one, save it for transformers.

A saved folder holds `tokenizer.json` (the exact pipeline), `vocab.txt` and
`tokenizer_config.json`, so that `AutoTokenizer.from_pretrained(folder)` encodes as we do:
the five specials are registered as special tokens, so the text "[MASK]" is the mask token
for both (transformers registers them from tokenizer_config.json whatever tokenizer.json says).
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100  # BERT's: a longer word (after pre-tokenizing) is one [UNK], here and in transformers
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def _bert_pipeline(
    tok: Tokenizer, lowercase: bool, strip_accents: bool | None = None, chinese: bool = True
) -> Tokenizer:
    """BERT's normalizer and pre-tokenizer. `strip_accents` None strips accents exactly when
    lowercasing (BERT's uncased models); False keeps them while lowercasing. `chinese`: CJK
    ideographs stand alone (BERT's tokenize_chinese_chars)."""
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese, strip_accents=strip_accents, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _add_post_processor(tok: Tokenizer) -> Tokenizer:
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def _batched(texts: Iterable) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        if isinstance(t, str):
            batch.append(t)
            if len(batch) == 1024:
                yield batch
                batch = []
        else:
            yield list(t)
    if batch:
        yield batch


def train_wordpiece(
    texts: Iterable | Callable[[], Iterable],
    vocab_size: int = 30522,
    lowercase: bool = True,
    min_frequency: int = 2,
    show_progress: bool = True,
    limit_alphabet: int | None = None,
    strip_accents: bool | None = None,
) -> Tokenizer:
    """Train a BERT-style WordPiece vocabulary (`##` continuations, specials first: [PAD]=0).

    `texts` (strings, or lists of strings) is read twice, so pass a list or a function that
    returns a fresh iterable. The result is deterministic: the `##x` continuation of every
    character that can sit inside a word gets its id up front, in sorted order, because the
    trainer otherwise numbers them in hash-map order and breaks ties in merge counts by id
    (tokenizers issue #1794). Every character of the corpus is kept, or with `limit_alphabet`
    the most frequent that many (ties in character order); a word holding any other one
    encodes as [UNK], as in BERT.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: the {len(SPECIAL_TOKENS)} special tokens alone take "
            f"{len(SPECIAL_TOKENS)} entries, and each character of the corpus one or two more; pass thousands "
            "(30522 is BERT's and ELECTRA's)"
        )
    if limit_alphabet is not None and limit_alphabet < 1:
        raise ValueError(f"limit_alphabet must be at least 1, got {limit_alphabet}")
    fresh = texts if callable(texts) else lambda: texts
    model = models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS)
    tok = _bert_pipeline(Tokenizer(model), lowercase, strip_accents)
    chars: collections.Counter[str] | set[str] = set() if limit_alphabet is None else collections.Counter()
    for batch in _batched(fresh()):
        chars.update(tok.normalizer.normalize_str("\n".join(batch)))
    alphabet = sorted(c for c in chars if not c.isspace())
    if limit_alphabet is not None:  # the most frequent characters; the rare rest become [UNK]
        alphabet = sorted(sorted(alphabet, key=lambda c: (-chars[c], c))[:limit_alphabet])
    # only a character that can sit inside a word continues one: punctuation and CJK characters
    # stand alone (the pre-tokenizer splits them off), so their ## pieces would be dead entries
    continuations = [f"##{c}" for c in alphabet if _inside_words(tok, c)]
    need = len(SPECIAL_TOKENS) + len(alphabet) + len(continuations)  # fewer: characters are cut, words [UNK]
    if vocab_size < need:
        raise ValueError(
            f"a vocabulary of {vocab_size} cannot spell this corpus: its {len(alphabet)} characters (alone, and "
            f"{len(continuations)} of them as ## continuations) and the {len(SPECIAL_TOKENS)} special tokens take "
            f"{need} entries before any word piece; pass --vocab-size well above {need}"
            + (
                f", or keep fewer characters (--limit-alphabet below {len(alphabet)})"
                if limit_alphabet is not None
                else ", or keep only the most frequent characters with --limit-alphabet"
                if len(alphabet) > 1000
                else ""
            )
        )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size + len(continuations),
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *continuations],
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),  # the trainer adds no character of its own beyond these
        continuing_subword_prefix="##",
        show_progress=show_progress,
    )
    tok.train_from_iterator(_batched(fresh()), trainer=trainer)
    # Rebuild from the vocabulary so that only the five real specials are "special" tokens;
    # the ## pieces were registered as specials only to fix their ids.
    vocab = vocab_in_order(tok)
    kept = set(vocab[:vocab_size])
    return from_vocab([t for t in vocab if t in kept], lowercase=lowercase, strip_accents=strip_accents)


def _inside_words(tok: Tokenizer, char: str) -> bool:
    """Whether `char` (normalised) can continue a word: the pre-tokenizer keeps it inside one."""
    return len(tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(f"a{char}a"))) == 1


def from_vocab(
    vocab: list[str] | dict[str, int], lowercase: bool = True, strip_accents: bool | None = None, chinese: bool = True
) -> Tokenizer:
    """A BERT tokenizer over a fixed vocabulary (a list in id order, or token -> id)."""
    if not isinstance(vocab, dict):
        vocab = {t: i for i, t in enumerate(vocab)}
    model = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS)
    tok = _bert_pipeline(Tokenizer(model), lowercase, strip_accents, chinese)
    check_special_tokens(tok, "the vocabulary")
    return _add_post_processor(register_specials(tok))


def register_specials(tok: Tokenizer) -> Tokenizer:
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # keeps their vocabulary ids; a no-op when registered
    return tok


def check_special_tokens(tok: Tokenizer, where: str) -> None:
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise ValueError(
            f"{where} lacks the special tokens {', '.join(missing)}; ELECTRA needs all of "
            f"{', '.join(SPECIAL_TOKENS)}. Add them to the vocabulary or train a new tokenizer"
        )


def _read_vocab_txt(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:  # a model's weights, a corpus file: named rather than a bare decode error
        raise ValueError(
            f"{path} is not a vocab.txt (not UTF-8 text: {e.reason} at byte {e.start}); pass an HF tokenizer "
            "folder, a tokenizer.json or vocab.txt"
        ) from None
    return [line.rstrip("\n") for line in text.splitlines() if line.strip()]


def guess_casing(vocab: list[str]) -> tuple[bool, bool | None, str]:
    """How a bare vocabulary (no tokenizer_config.json beside it) was made, from its entries:
    (lowercase, strip_accents, why). Over 1% of entries (specials aside) holding capitals, which
    lowercased text never reaches, make it cased; over 1% holding accents or other combining
    marks (é, ё, が, أ), which accent stripping never leaves, make it keep accents."""
    words = [t.removeprefix("##") for t in vocab if not (t.startswith("[") and t.endswith("]"))]
    capitals = sum(any(c.isupper() for c in t) for t in words)
    if capitals > 0.01 * len(vocab):
        return False, None, f"{capitals:,} of its entries hold capitals"
    strip = normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False
    )
    accented = sum(strip.normalize_str(t) != t for t in words)
    if accented > 0.01 * len(vocab):
        return True, False, f"{accented:,} of its entries hold accents or other marks, and few capitals"
    return True, None, "few of its entries hold capitals or accents"


def _config_beside(path: Path) -> dict | None:
    config = path / "tokenizer_config.json" if path.is_dir() else path.with_name("tokenizer_config.json")
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config} is damaged ({e}); fix or remove it") from e


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load `tokenizer.json`, a `vocab.txt`, or a folder holding either (HF tokenizer folders).
    A vocab.txt lowercases and strips accents as the tokenizer_config.json beside it says
    (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars`, as transformers reads them);
    without one, as its entries show (`guess_casing`). Every tokenizer gets ELECTRA's
    `[CLS] A [SEP] B [SEP]` template, the layout pre-training rows have."""
    path = Path(path)
    if path.is_dir():
        if (path / "tokenizer.json").exists():
            path = path / "tokenizer.json"
        elif (path / "vocab.txt").exists():
            path = path / "vocab.txt"
        else:
            where = ""
            if (path / "checkpoints").is_dir():
                where = f" (a pre-training run keeps its tokenizer in each checkpoint, {path}/checkpoints/step-*)"
            raise FileNotFoundError(f"{path} holds neither tokenizer.json nor vocab.txt; point at a tokenizer{where}")
    if not path.exists():
        raise FileNotFoundError(f"tokenizer {path} does not exist")
    if path.suffix == ".json":
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{path} is not a valid tokenizer.json: {e}") from e
        check_special_tokens(tok, str(path))
        return _add_post_processor(register_specials(tok))
    vocab = _read_vocab_txt(path)
    config = _config_beside(path)
    if config is None:
        lowercase, strip_accents, _ = guess_casing(vocab)
        return from_vocab(vocab, lowercase=lowercase, strip_accents=strip_accents)
    lowercase, strip_accents = bool(config.get("do_lower_case", True)), config.get("strip_accents")
    return from_vocab(vocab, lowercase, strip_accents, chinese=config.get("tokenize_chinese_chars") is not False)


def guessed_reading(path: str | Path) -> str | None:
    """How `load_tokenizer(path)` reads a vocab.txt with no tokenizer_config.json beside it to say
    how it was made ("lowercases but keeps accents, since ..."); None for any other tokenizer."""
    path = Path(path)
    if path.is_dir():
        if (path / "tokenizer.json").exists() or not (path / "vocab.txt").exists():
            return None
        path = path / "vocab.txt"
    if path.suffix == ".json" or not path.is_file() or _config_beside(path) is not None:
        return None
    lowercase, strip_accents, why = guess_casing(_read_vocab_txt(path))
    return f"{_case_words(lowercase, lowercase if strip_accents is None else strip_accents)}, since {why}"


def load_model_tokenizer(path: str | Path, vocab_size: int) -> Tokenizer:
    """A model's tokenizer, refused if its ids would overrun the model's `vocab_size` embeddings."""
    tok = load_tokenizer(path)
    if (n := tok.get_vocab_size(with_added_tokens=True)) > vocab_size:
        raise ValueError(
            f"the tokenizer {path} has {n} tokens but the model's embeddings {vocab_size}: its ids would overrun "
            "them. Use the tokenizer the model was trained with"
        )
    return tok


def _bert_normalizer(tok: Tokenizer) -> dict | None:
    normalizer = json.loads(tok.to_str()).get("normalizer") or {}
    return normalizer if normalizer.get("type") == "BertNormalizer" else None


def _strips(bert: dict) -> bool:
    """A BertNormalizer's accent stripping: its strip_accents, or BERT's default (when it lowercases)."""
    return bert["lowercase"] if bert.get("strip_accents") is None else bert["strip_accents"]


def strips_accents(tok: Tokenizer) -> bool | None:
    """Whether the normalizer strips accents; None when it is not BERT's normalizer."""
    bert = _bert_normalizer(tok)
    return None if bert is None else _strips(bert)


def _case_words(lower: bool, strip: bool | None) -> str:
    if strip is None:
        return ("lowercases" if lower else "keeps case") + " (a normalizer of its own)"
    return {
        (True, True): "lowercases and strips accents",
        (True, False): "lowercases but keeps accents",
        (False, False): "keeps case and accents",
        (False, True): "keeps case but strips accents",
    }[lower, strip]


def describe(tok: Tokenizer) -> str:
    """The tokenizer's treatment of case and accents, in words."""
    return _case_words(is_lowercase(tok), strips_accents(tok))


def bert_departures(tok: Tokenizer) -> list[str]:
    """How the pipeline differs from the BERT one that transformers' ElectraTokenizer rebuilds from
    tokenizer_config.json and vocab.txt (BertNormalizer with clean_text, BertPreTokenizer,
    WordPiece with `##` and 100-character words); empty when it is that one."""
    spec = json.loads(tok.to_str())
    normalizer, pre, model = (spec.get(k) or {} for k in ("normalizer", "pre_tokenizer", "model"))
    out = []
    if normalizer.get("type") != "BertNormalizer":
        out.append(f"normalizer {normalizer.get('type')}")
    elif not normalizer.get("clean_text", True):
        out.append("BertNormalizer without clean_text")
    if pre.get("type") != "BertPreTokenizer":
        out.append(f"pre-tokenizer {pre.get('type')}")
    if model.get("type") != "WordPiece":
        out.append(f"model {model.get('type')}")
    else:
        if model.get("continuing_subword_prefix") != "##":
            out.append(f"continuing prefix {model.get('continuing_subword_prefix')!r}")
        if model.get("max_input_chars_per_word") != MAX_WORD_CHARS:
            out.append(f"words of up to {model.get('max_input_chars_per_word')} characters")
        if model.get("unk_token") != "[UNK]":
            out.append(f"unknown token {model.get('unk_token')!r}")
    return out


def reading_difference(a: Tokenizer, b: Tokenizer) -> tuple[str, str] | None:
    """None when two tokenizers cut text into the same pieces (normalizer, pre-tokenizer and model
    settings; their vocabularies are compared apart), else how each reads text, in words."""

    def pipeline(tok: Tokenizer) -> list:
        spec = json.loads(tok.to_str())
        model = {k: v for k, v in (spec.get("model") or {}).items() if k != "vocab"}
        normalizer = spec.get("normalizer")
        if normalizer and normalizer.get("type") == "BertNormalizer":  # strip_accents None: BERT's default
            normalizer = {**normalizer, "strip_accents": _strips(normalizer)}
        return [normalizer, spec.get("pre_tokenizer"), model]

    if pipeline(a) == pipeline(b):
        return None
    said = describe(a), describe(b)
    return said if said[0] != said[1] else ("cuts text one way", "another")


def is_lowercase(tok: Tokenizer) -> bool:
    normalizer = json.loads(tok.to_str()).get("normalizer") or {}
    if normalizer.get("type") == "Sequence":
        return any(n.get("lowercase") or n.get("type") == "Lowercase" for n in normalizer["normalizers"])
    return bool(normalizer.get("lowercase")) or normalizer.get("type") == "Lowercase"


def vocab_in_order(tok: Tokenizer) -> list[str]:
    vocab = tok.get_vocab(with_added_tokens=True)
    ordered = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in ordered] != list(range(len(ordered))):
        raise ValueError("the tokenizer's ids are not contiguous from 0; it cannot be written as vocab.txt")
    return ordered


def save_tokenizer(tok: Tokenizer, folder: str | Path, model_max_length: int = 512) -> None:
    """Write tokenizer.json, vocab.txt and tokenizer_config.json into `folder`."""
    folder = Path(folder)
    ordered = vocab_in_order(tok)  # refused before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "vocab.txt").write_text("\n".join(ordered) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "ElectraTokenizer",
        "do_lower_case": is_lowercase(tok),
        "model_max_length": model_max_length,
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    bert = _bert_normalizer(tok)
    if bert is not None:  # transformers rebuilds BERT's normalizer from these, not from tokenizer.json
        config["strip_accents"] = bert.get("strip_accents")
        config["tokenize_chinese_chars"] = bert.get("handle_chinese_chars", True)
    if bert_departures(tok):
        # not BERT's pipeline: transformers must take tokenizer.json as it is, not rebuild BERT's
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    extra = [a.content for _, a in sorted(tok.get_added_tokens_decoder().items()) if a.special]
    extra = [t for t in extra if t not in SPECIAL_TOKENS]
    if extra:  # a domain's own specials stay special for transformers too
        config["additional_special_tokens"] = extra
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# BERT's Chinese-character ranges (its normalizer's handle_chinese_chars puts spaces around them)
_CJK = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\U0002f800-\U0002fa1f"
)
# where BERT's pipeline starts a word whatever comes before: at a space, tab or line break (its
# normalizer turns them into spaces; other characters it deletes, joining words) and, where it
# reads Chinese characters apart, before each of them
_WORD_STARTS = re.compile(r"[ \t\n\r]")
_WORD_STARTS_CJK = re.compile(f"[ \\t\\n\\r]|(?=[{_CJK}])")


def head_chars(tok: Tokenizer, limit: int) -> int | None:
    """Characters past which `encode_cut` reads a text from its head, for a tokenizer that cuts
    at `limit` tokens; None (whole texts) for pipelines other than BERT's, whose word boundaries
    this does not know."""
    # an added token is matched in the raw text before words are split: one holding a space (or a
    # Chinese character) could span a cut
    spans = any(re.search(f"[\\s{_CJK}]", a.content) for a in tok.get_added_tokens_decoder().values())
    return None if bert_departures(tok) or spans else 64 * limit


def _head(text: str, chars: int | None, starts: re.Pattern = _WORD_STARTS) -> str:
    """`text`, or where it is longer than `chars`, its words up to the last word start (`starts`)
    before that."""
    if chars is None or len(text) <= chars:
        return text
    end = 0
    for m in starts.finditer(text, 0, chars):
        end = m.start()
    return text[:end] if end > 0 else text


def _count(tok: Tokenizer, text: str) -> int:
    """Tokens of `text` alone, specials not counted, for a tokenizer that truncates without a stride."""
    enc = tok.encode(text)
    return sum(len(e.ids) - sum(e.special_tokens_mask) for e in (enc, *enc.overflowing))


def encode_cut(tok: Tokenizer, texts: list[tuple[str, str | None]], chars: int | None, limit: int) -> list:
    """`tok.encode_batch` of (text, pair or None) for a tokenizer that truncates at `limit` tokens
    without a stride, reading a text far longer than a window from its head (`chars`, see
    `head_chars`): the tokenizer would build every window of it, all thrown away (an 8 MB text
    took a minute and 1.9 GB).

    The BERT pipeline reads words apart (a space, or a Chinese character, stays a word boundary
    through its normalizer, the rest of which acts on single characters), so a head's tokens are
    the first tokens of the whole text. A head of at least `limit` tokens then gives the whole
    text's window. In a pair, cut longest first, what each side keeps depends on which is the
    longer: a head is used only where it is longer than the other, uncut side. Anything else is
    encoded whole.
    """
    # with `chars`, the normalizer is BERT's (head_chars): its own setting, not a serialisation of the tokenizer
    starts = _WORD_STARTS_CJK if getattr(tok.normalizer, "handle_chinese_chars", False) else _WORD_STARTS
    heads = [(_head(t, chars, starts), None if p is None else _head(p, chars, starts)) for t, p in texts]
    encodings = tok.encode_batch([t if p is None else (t, p) for t, p in heads])
    for i, ((t, p), (head, pair_head)) in enumerate(zip(texts, heads, strict=True)):
        cut = [len(head) < len(t), p is not None and len(pair_head) < len(p)]
        if not any(cut):
            continue
        if all(cut):  # which whole side is the longer is unknown
            encodings[i] = tok.encode(t, p)
            continue
        shortened, other = (head, p) if cut[0] else (pair_head, t)
        tokens = _count(tok, shortened)
        if tokens < limit or (other is not None and tokens <= _count(tok, other)):
            encodings[i] = tok.encode(t, p)
    return encodings


def tokenizer_hash(tok: Tokenizer) -> str:
    """sha256 of the canonical serialisation: equal hashes mean identical encodings."""
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()
