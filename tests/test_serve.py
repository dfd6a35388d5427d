"""`electra serve`: HTTP answers equal `electra predict`'s, bad requests get a 400 that says why."""

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
import torch

from electra import hf
from electra.config import tiny
from electra.model import QuestionAnswerer, SequenceClassifier
from electra.predict import Predictor
from electra.serve import make_server
from tests.conftest import perturb


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer, tokenizer_dir):
    root = tmp_path_factory.mktemp("serve")
    cfg = tiny(vocab_size=tokenizer.get_vocab_size()).discriminator
    torch.manual_seed(0)
    hf.export_sequence_classifier(
        perturb(SequenceClassifier(cfg, 2)), root / "clf", ["NEGATIVE", "POSITIVE"], tokenizer_dir=tokenizer_dir
    )
    hf.export_question_answerer(perturb(QuestionAnswerer(cfg)), root / "qa", tokenizer_dir=tokenizer_dir)
    return root


def _call(url, body=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def serving():
    servers = []

    def start(predictor):
        server = make_server(predictor, port=0, batch_size=3)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_served_answers_equal_predict(folders, serving):
    clf = Predictor(folders / "clf", device="cpu")
    url = serving(clf)
    texts = ["the movie was great", "a terrible , boring film", "i loved the acting and the music"]
    status, got = _call(url + "/predict", {"inputs": [*texts[:2], {"text": texts[2], "pair": "the plot"}]})
    want, _ = clf([(texts[0], None), (texts[1], None), (texts[2], "the plot")])
    assert status == 200 and got == {"outputs": want, "truncated": 0}
    assert _call(url + "/health") == (
        200,
        {"model": str(folders / "clf"), "kind": "sequence", "labels": ["NEGATIVE", "POSITIVE"]},
    )

    answerer = Predictor(folders / "qa", device="cpu")
    url = serving(answerer)
    question = {"question": "what was great ?", "context": "the movie was great and a lot of fun"}
    status, got = _call(url + "/predict", {"inputs": [question]})
    want, _ = answerer([(question["question"], question["context"])])
    assert status == 200 and got["outputs"] == want and set(want[0]) == {"answer", "score", "start", "end"}
    status, got = _call(url + "/predict", {"inputs": ["a bare string"]})
    assert status == 400 and got["error"] == 'input 1 is not {"question": "...", "context": "..."}'


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "the body is not JSON"),
        ({"texts": ["a"]}, 'send a JSON object with a list "inputs"'),
        ({"inputs": ["a", 5]}, 'input 2 is not a string or {"text": "..."}'),
        ({"inputs": [{"text": "a", "pair": 3}]}, 'input 1: "pair" is not a string'),
    ],
)
def test_bad_requests_say_what_to_send(folders, serving, body, error):
    url = serving(Predictor(folders / "clf", device="cpu"))
    status, got = _call(url + "/predict", body)
    assert status == 400 and got["error"].startswith(error)
    assert _call(url + "/nothing", {"inputs": []})[0] == 404


def test_the_command_serves_until_interrupted(folders):
    cmd = [sys.executable, "-m", "electra", "serve", "--model", str(folders / "clf"), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving {folders / 'clf'} (sequence) on http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:")[1].split(":")[0])  # --port 0: the one it was given
        assert _call(f"http://127.0.0.1:{port}/predict", {"inputs": ["great fun"]})[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "electra serve: interrupted" in err
