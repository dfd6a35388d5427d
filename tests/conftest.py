import contextlib
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from electra.tokenizer import save_tokenizer, train_wordpiece

# Started in the background (`nohup ... &`), a shell leaves Ctrl-C ignored, and every process the
# tests start would inherit that: the tests that press Ctrl-C would find it ignored
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

SENTENCES = [
    "the movie was great and a lot of fun",
    "a terrible , boring film with a weak plot",
    "i loved the acting and the music",
    "the worst plot i have ever seen",
    "an honest and moving story about a family",
    "nothing works here , not even the jokes",
]


@pytest.fixture(scope="session")
def tokenizer():
    return train_wordpiece(SENTENCES * 20, vocab_size=120, show_progress=False)


@pytest.fixture(autouse=True)
def _session_tokenizer_untouched(request):
    """The session's tokenizer is shared: a test that sets its truncation or padding (as encode
    does) changes what later tests read. Such a test must work on a copy."""
    yield
    if "tokenizer" in request.fixturenames:
        tok = request.getfixturevalue("tokenizer")
        assert tok.truncation is None and tok.padding is None, "this test changed the session's tokenizer: copy it"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(tokenizer, folder)
    return folder


@pytest.fixture
def cli(capsys, monkeypatch):
    """`electra ARGS` run in this process (`input` its stdin): a CompletedProcess with its exit
    status, stdout and stderr, as from a subprocess, without the seconds an interpreter takes to
    import torch."""
    import io

    from electra.cli import main

    def run(*args, input: str | bytes = ""):
        raw = io.BytesIO(input if isinstance(input, bytes) else input.encode())  # stdin has bytes below its text
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape"))
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["electra", *args], code, out, err)

    return run


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Move every tensor off its initial value (zero biases, unit LayerNorms) so parity
    tests exercise every weight, not just the ones initialised randomly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module.eval()


def batch(vocab_size: int, B: int = 3, T: int = 12, seed: int = 0):
    """Random ids with [CLS]=2 / [SEP]=3, two segments, and right padding in some rows."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (B, T), generator=g)
    ids[:, 0] = 2
    types = torch.zeros_like(ids)
    types[:, T // 2 :] = 1
    mask = torch.ones_like(ids)
    for row, length in enumerate([T, T - 4, T // 2 + 1][:B]):
        ids[row, length - 1] = 3
        ids[row, length:] = 0
        types[row, length:] = 0
        mask[row, length:] = 0
    return ids, types, mask


def assert_inverse_cdf(logits, seed, rows, tokens, tol: float = 1e-4) -> None:
    """Each token is where its slot's uniform falls in the softmax's CDF, computed in fp64: the
    property inverse-CDF sampling has whatever the summation order (fp32 sums may move a pick
    to a neighbour with positive probability, never further)."""
    from electra.objective import uniform

    logits, tokens = logits.double().cpu(), tokens.cpu()
    probs = torch.softmax(logits, -1)
    cdf = probs.cumsum(-1)
    u = uniform(seed, rows.cpu(), logits.shape[1], stream=4).double()
    p = probs.gather(-1, tokens[..., None]).squeeze(-1)
    hi = cdf.gather(-1, tokens[..., None]).squeeze(-1)
    lo = hi - p
    assert (p > 0).all(), "a zero-probability or padded token"
    assert ((lo - tol <= u) & (u <= hi + tol)).all(), "a token away from where its uniform falls in the CDF"


# What torch.use_deterministic_algorithms refuses on CUDA (RuntimeError: no deterministic kernel),
# from its documented list, by aten name: always, or with the arguments that make a call refused
_REFUSED_ON_CUDA = {
    "histc", "kthvalue", "put", "avg_pool3d_backward", "_adaptive_avg_pool2d_backward",
    "_adaptive_avg_pool3d_backward", "adaptive_max_pool2d_backward", "fractional_max_pool2d_backward",
    "fractional_max_pool3d_backward", "max_unpool2d", "max_unpool3d", "upsample_linear1d_backward",
    "upsample_bilinear2d_backward", "upsample_bicubic2d_backward", "upsample_trilinear3d_backward",
    "reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward",
    "_ctc_loss_backward", "_embedding_bag_backward", "grid_sampler_2d_backward", "grid_sampler_3d_backward",
}  # fmt: skip
_REFUSED_ON_CUDA_WHEN = {
    "cumsum": lambda a, k: a[0].is_floating_point() or a[0].is_complex(),
    "nll_loss2d_forward": lambda a, k: a[3] != 0,  # reduced (mean or sum)
    "bincount": lambda a, k: (a[1] if len(a) > 1 else k.get("weights")) is not None,
    "median": lambda a, k: len(a) > 1,  # the overloads with a dim return indices
    "nanmedian": lambda a, k: len(a) > 1,
    "scatter_reduce": lambda a, k: a[4] == "prod",
}


@contextlib.contextmanager
def refused_on_cuda_when_deterministic():
    """Yields a list of the operations this thread runs (forward and backward) that a CUDA
    device would refuse under torch's deterministic algorithms: `--deterministic` on a GPU must
    find none, and on a CPU (whose kernels all run in that mode) only this can tell."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name, kwargs = func.overloadpacket.__name__.rstrip("_"), kwargs or {}
            when = _REFUSED_ON_CUDA_WHEN.get(name)
            if name in _REFUSED_ON_CUDA or (when is not None and when(args, kwargs)):
                refused.append(str(func))
            return func(*args, **kwargs)

    refused = []
    with Watch():
        yield refused


def synthetic_corpus(path, documents: int = 120, seed: int = 0):
    """Deterministic English-like text: documents of sentences over a small vocabulary."""
    import random

    rng = random.Random(seed)
    words = (
        "the a of to and in is was for on that with as it his her they at by from this be had not river "
        "house light small great old young king city road water night day stone green quiet"
    ).split()
    docs = []
    for _ in range(documents):
        sentences = [
            " ".join(rng.choice(words) for _ in range(rng.randint(4, 14))).capitalize() + "."
            for _ in range(rng.randint(3, 12))
        ]
        docs.append(" ".join(sentences))
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A prepared folder: 32-token rows, a 200-entry vocabulary, 10% validation."""
    from electra.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("data")
    src = synthetic_corpus(root / "corpus.txt")
    prepare([src], root / "data", PrepareConfig(seq_len=32, vocab_size=200, validation_fraction=0.1), quiet=True)
    return root / "data"
