"""Build a tiny ELECTRA with a WordPiece vocabulary, checkpoint it, export it, and load the
export back with transformers. Usage: python examples/export_tiny.py OUT_DIR"""

import subprocess
import sys
from pathlib import Path

import torch

from electra.checkpoint import save_checkpoint, step_dir
from electra.config import tiny
from electra.model import Electra
from electra.tokenizer import save_tokenizer, train_wordpiece

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny")
text = [
    "ELECTRA trains a discriminator to tell original tokens from replaced ones.",
    "A small generator, trained with masked language modelling, proposes the replacements.",
    "Every token gives the discriminator a learning signal, so pre-training is cheap.",
] * 50
tok = train_wordpiece(text, vocab_size=200, show_progress=False)
save_tokenizer(tok, out / "tokenizer")
torch.manual_seed(0)
model = Electra(tiny(vocab_size=tok.get_vocab_size()))
save_checkpoint(step_dir(out, 0), model, tokenizer_dir=out / "tokenizer", overwrite=True)
subprocess.run(
    [
        sys.executable,
        "-m",
        "electra",
        "export",
        str(out),
        "--out",
        str(out / "hf-discriminator"),
        "--generator-out",
        str(out / "hf-generator"),
        "--force",
    ],
    check=True,
)

from transformers import AutoModelForPreTraining, AutoTokenizer  # noqa: E402  (the `hf` extra)

hf_tok = AutoTokenizer.from_pretrained(out / "hf-discriminator")
disc = AutoModelForPreTraining.from_pretrained(out / "hf-discriminator").eval()
inputs = hf_tok("the generator proposes replacements", return_tensors="pt")
with torch.no_grad():
    theirs = disc(**inputs).logits
    ours = model.eval().discriminator_logits(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
print(f"transformers loaded {type(disc).__name__} from {out / 'hf-discriminator'}")
print(f"max |ours - transformers| on {inputs['input_ids'].shape[1]} tokens: {(ours - theirs).abs().max():.2e}")
