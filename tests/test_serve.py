"""`electra serve`: HTTP answers equal `electra predict`'s, bad requests get a 400 that says why."""

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

from electra import hf
from electra.config import tiny
from electra.model import QuestionAnswerer, SequenceClassifier
from electra.predict import Predictor
from electra.serve import Batcher, RequestError, make_server, parse_inputs
from electra.tasks import TaskError
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
    three = perturb(SequenceClassifier(cfg, 3), scale=2.0)  # scores far from 1/2: some labels above it, some below
    hf.export_sequence_classifier(three, root / "tags", ["a", "b", "c"], tokenizer_dir=tokenizer_dir, multi_label=True)
    return root


def _call(url, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def serving():
    servers = []

    def start(predictor, api_key=None, host="127.0.0.1", max_inputs=1024):
        server = make_server(predictor, host, port=0, batch_size=3, api_key=api_key, max_inputs=max_inputs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.url

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
        {
            "model": str(folders / "clf"),
            "kind": "sequence",
            "labels": ["NEGATIVE", "POSITIVE"],
            "multi_label": False,
            "all_scores": False,
            "served": {"inputs": 3, "model_runs": 1},
        },
    )
    piped = {"inputs": [*texts[:2], {"text": texts[2], "text_pair": "the plot"}]}  # transformers' name for a pair
    assert _call(url + "/predict", piped) == (200, got)
    named = {"inputs": [{"text": texts[0], "id": "r-7"}, {"text": texts[1], "id": None}, texts[2]]}
    status, echoed = _call(url + "/predict", named)  # an id comes back first in its record, as predict writes it
    assert status == 200 and [list(r)[0] for r in echoed["outputs"]] == ["id", "id", "label"]
    assert [r.pop("id", "none") for r in echoed["outputs"]] == ["r-7", None, "none"]
    assert echoed["outputs"][:2] == got["outputs"][:2]

    tagger = Predictor(folders / "tags", device="cpu")  # multi-label: every label above 1/2 as well
    url = serving(tagger)
    status, got = _call(url + "/predict", {"inputs": texts})
    want, _ = tagger([(t, None) for t in texts])
    assert status == 200 and got == {"outputs": want, "truncated": 0}
    assert {len(r["labels"]) for r in want} != {0} and _call(url + "/health")[1]["multi_label"] is True
    assert _call(url + "/health")[1]["threshold"] == 0.5
    assert _call(serving(Predictor(folders / "tags", device="cpu", threshold=0.25)) + "/health")[1]["threshold"] == 0.25
    with pytest.raises(ValueError, match="--threshold is for multi-label classifiers; .* of one label per input"):
        Predictor(folders / "clf", device="cpu", threshold=0.3)
    with pytest.raises(ValueError, match="--threshold is a probability between 0 and 1 \\(not either\\), got 1.0"):
        Predictor(folders / "tags", device="cpu", threshold=1.0)

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
        # a misspelt field would answer another question than was asked: refused, as is what nothing reads
        ({"inputs": ["a", {"text": "a", "pairr": "b"}]}, 'input 2 has the field "pairr", which this model does not '),
        ({"inputs": [{"text": "a", "pair": "b", "text_pair": "c"}]}, 'input 1 has both "pair" and "text_pair"'),
        ({"inputs": ["a"], "parameters": {}}, 'the body has the field "parameters" besides "inputs"'),
    ],
)
def test_bad_requests_say_what_to_send(folders, serving, body, error):
    url = serving(Predictor(folders / "clf", device="cpu"))
    status, got = _call(url + "/predict", body)
    assert status == 400 and got["error"].startswith(error)
    assert _call(url + "/nothing", {"inputs": []})[0] == 404
    assert _call(url + "/predict") == (405, {"error": "send the inputs with POST /predict"})


def test_a_port_that_cannot_be_listened_on_is_refused_with_a_message(folders, serving, capsys):
    from electra.cli import main

    url = serving(Predictor(folders / "clf", device="cpu"))
    taken = url.rsplit(":", 1)[1]
    for port, error in [(taken, f"cannot listen on 127.0.0.1:{taken} (Address already in use)"), ("70000", "port")]:
        assert main(["serve", "--model", str(folders / "clf"), "--port", port]) == 2
        assert f"electra serve: error: {error}" in capsys.readouterr().err
    assert _call(url + "/health")[0] == 200  # the server holding the port is untouched


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


def test_with_an_api_key_only_requests_that_carry_it_are_answered(folders, serving):
    url = serving(Predictor(folders / "clf", device="cpu"), api_key="s3cret-key")
    body = {"inputs": ["great fun"]}
    status, reply = _call(f"{url}/predict", body)
    assert status == 401 and "Authorization: Bearer KEY" in reply["error"]
    assert _call(f"{url}/predict", body, {"Authorization": "Bearer s3cret-keY"}) == (401, {"error": "wrong API key"})
    assert _call(f"{url}/health")[0] == 401
    status, reply = _call(f"{url}/predict", body, {"Authorization": "Bearer s3cret-key"})
    assert status == 200 and reply["outputs"][0]["label"] in ("NEGATIVE", "POSITIVE")
    assert _call(f"{url}/health", headers={"Authorization": "Bearer s3cret-key"})[0] == 200
    assert _call(f"{url}/health", headers={"Authorization": "bearer s3cret-key"})[0] == 200  # schemes ignore case
    assert _call(f"{url}/health", headers={"Authorization": "Basic s3cret-key"})[0] == 401
    # a refused request's body is never read, so its connection closes rather than mis-reading the next request
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    conn.request("POST", "/predict", json.dumps(body))
    refused = conn.getresponse()
    assert refused.status == 401 and refused.getheader("WWW-Authenticate") == 'Bearer realm="electra"'
    assert refused.getheader("Connection") == "close"
    conn.close()
    with pytest.raises(ValueError, match="the API key is empty"):
        make_server(Predictor(folders / "clf", device="cpu"), port=0, api_key="")
    with pytest.raises(ValueError, match="characters other than printable ASCII"):  # could never match a header
        make_server(Predictor(folders / "clf", device="cpu"), port=0, api_key="schlüssel")


def test_a_client_that_leaves_before_its_answer_is_one_line_in_the_log(folders, capsys):
    server = make_server(Predictor(folders / "clf", device="cpu"), port=0)
    try:
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except BrokenPipeError:
            server.handle_error(None, ("127.0.0.1", 5555))
    finally:
        server.server_close()
    assert capsys.readouterr().err == "127.0.0.1 closed the connection before its answer ([Errno 32] Broken pipe)\n"


def test_serves_on_an_ipv6_address(folders, serving):
    try:
        url = serving(Predictor(folders / "clf", device="cpu"), host="::1")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback here ({e})")
    assert url.startswith("http://[::1]:")
    status, got = _call(url + "/predict", {"inputs": ["the movie was great"]})
    assert status == 200 and got["outputs"][0]["label"] in ("NEGATIVE", "POSITIVE")


def test_the_command_reads_its_api_key_from_a_file(folders, tmp_path, capsys):
    from electra.cli import main

    (tmp_path / "empty").write_text("\n")
    args = ["serve", "--model", str(folders / "clf"), "--port", "0", "--api-key-file"]
    assert main([*args, str(tmp_path / "empty")]) == 2
    assert "is empty; write the API key into it" in capsys.readouterr().err
    (tmp_path / "two").write_text("first-key\nsecond-key\n")  # no header could carry both: every request a 401
    assert main([*args, str(tmp_path / "two")]) == 2
    assert "holds more than one word; write only the API key" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "nope")]) == 2
    assert "cannot read the API key from" in capsys.readouterr().err
    cmd = [sys.executable, "-m", "electra", *args[:-1]]
    (tmp_path / "key").write_text("k3y\n")
    proc = subprocess.Popen([*cmd, "--api-key-file", str(tmp_path / "key")], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.rstrip().endswith("(with the API key)"), line
        url = "http://127.0.0.1:" + line.split("http://127.0.0.1:")[1].split(":")[0]
        assert _call(f"{url}/health")[0] == 401
        assert _call(f"{url}/health", headers={"Authorization": "Bearer k3y"})[0] == 200  # the line, stripped
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


class Gated(Predictor):
    """A Predictor whose first run waits at a gate, so that requests can queue behind it."""

    def __init__(self, folder, **settings):
        super().__init__(folder, device="cpu", **settings)
        self.busy, self.gate, self.runs = threading.Event(), threading.Event(), []

    def stream(self, texts, *args, **kwargs):
        self.runs.append(len(texts))
        self.busy.set()
        self.gate.wait(timeout=60)
        return super().stream(texts, *args, **kwargs)


def _submit(batcher, texts, answers, key):
    def ask():
        try:
            answers[key] = batcher(texts)
        except TaskError as e:
            answers[key] = e

    thread = threading.Thread(target=ask)
    thread.start()
    return thread


def _close_enough(got, want):
    assert [r["label"] for r in got] == [r["label"] for r in want]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5)


def _behind_a_busy_model(model: Gated, batcher: Batcher, requests: dict) -> dict:
    """Answers (or errors) by key: the first request holds the model while the others queue."""
    answers, (first, *rest) = {}, requests.items()
    threads = [_submit(batcher, first[1], answers, first[0])]
    assert model.busy.wait(timeout=60)
    threads += [_submit(batcher, texts, answers, key) for key, texts in rest]
    while batcher.queue.qsize() < len(rest):
        threading.Event().wait(0.01)
    model.gate.set()
    for thread in threads:
        thread.join(timeout=60)
    batcher.close()
    return answers


def test_requests_that_queue_while_the_model_runs_share_its_next_run(folders):
    model = Gated(folders / "clf")
    batcher = Batcher(model, batch_size=4)
    texts = [[(t, None)] for t in ("great fun", "dull and long", "a fine cast", "the worst", "so so", "moving")]
    answers = _behind_a_busy_model(model, batcher, dict(enumerate(texts)))
    # the five that waited: four fill the next run (batch size 4), the fifth runs after them
    assert model.runs == [1, 4, 1] and (batcher.inputs, batcher.runs) == (6, 3)
    alone = Predictor(folders / "clf", device="cpu")
    for i, t in enumerate(texts):
        _close_enough(answers[i][0], alone(t)[0])


def test_a_failing_request_does_not_fail_the_requests_it_shared_a_run_with(folders):
    model = Gated(folders / "qa")
    batcher = Batcher(model)
    good = [("what was great ?", "the movie was great and a lot of fun")]
    answers = _behind_a_busy_model(model, batcher, {"first": good, "bad": [("no context ?", None)], "good": good})
    assert model.runs == [1, 2, 1, 1]  # the shared run failed and was repeated request by request
    assert (batcher.inputs, batcher.runs) == (2, 4)  # inputs answered, each once; every model run
    fresh = Batcher(model)
    assert fresh([]) == ([], 0) and fresh.runs == 0 and len(model.runs) == 4  # nothing to run
    fresh.close()
    assert isinstance(answers["bad"], TaskError) and "needs a question and its context" in str(answers["bad"])
    assert answers["good"] == answers["first"] == Predictor(folders / "qa", device="cpu")(good)


def test_concurrent_clients_get_their_own_answers(folders, serving):
    clf = Predictor(folders / "clf", device="cpu")
    url = serving(clf)
    texts = [f"the film number {i} was {'great' if i % 2 else 'boring'} and {'long ' * i}" for i in range(24)]
    answers = {}

    def client(i):
        answers[i] = _call(url + "/predict", {"inputs": [texts[i]]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for i, text in enumerate(texts):
        status, got = answers[i]
        assert status == 200 and got["truncated"] == 0
        _close_enough(got["outputs"], clf([(text, None)])[0])
    assert _call(url + "/health")[1]["served"]["inputs"] == len(texts)


def test_a_tagger_refuses_pairs_before_running():
    with pytest.raises(RequestError, match='input 2 has a "pair": a token classifier tags single texts'):
        parse_inputs(json.dumps({"inputs": ["a", {"text": "b", "pair": "c"}]}).encode(), "token")
    assert parse_inputs(json.dumps({"inputs": ["a", {"text": "b"}]}).encode(), "token") == [("a", None), ("b", None)]
    with pytest.raises(RequestError, match="the body is not JSON"):  # deeper than the parser goes: still the client's
        parse_inputs(b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "token")
    with pytest.raises(RequestError, match="input 2 holds a lone surrogate"):  # a 400, not the model's 500
        parse_inputs(b'{"inputs": ["a", {"text": "b", "pair": "\\udc00"}]}', "sequence")


def test_a_client_keeps_its_connection_for_many_requests(folders, serving):
    url = serving(Predictor(folders / "clf", device="cpu"))
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sockets = set()
    for text in ("great fun", "a dull film", "so so"):
        conn.request("POST", "/predict", json.dumps({"inputs": [text]}), {"Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.status == 200 and len(json.loads(reply.read())["outputs"]) == 1
        sockets.add(id(conn.sock))
    assert len(sockets) == 1  # one connection served all three
    conn.request("POST", "/elsewhere", b"{}")  # an unread body: answered, then the connection closes
    reply = conn.getresponse()
    assert reply.status == 404 and reply.getheader("Connection") == "close"
    reply.read()
    conn.close()
    for length in ("-5", "ten", "\u00b2"):  # a size that is not one (a superscript two is a digit to str.isdigit)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Length", length.encode("latin-1"))
        conn.endheaders()
        reply = conn.getresponse()
        assert reply.status == 400 and "is not a size" in json.loads(reply.read())["error"]
        conn.close()
    for method, path, status in [("POST", "/health", 405), ("GET", "/health?probe=1", 200)]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request(method, path, b"{}" if method == "POST" else None)
        assert conn.getresponse().status == status, path
        conn.close()
    for method, path, status, allow in [
        ("PUT", "/predict", 405, "POST"),
        ("DELETE", "/health", 405, "GET, HEAD"),
        ("OPTIONS", "/predict", 405, "POST"),
        ("PATCH", "/elsewhere", 404, None),
        ("POST", "/health", 405, "GET, HEAD"),
    ]:  # every error in JSON, as the others are
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request(method, path, b"{}")
        reply = conn.getresponse()
        error = json.loads(reply.read())["error"]
        assert (reply.status, reply.getheader("Allow")) == (status, allow), (method, path)
        assert error.startswith(f"{method} is not served; use " if status == 405 else "no /elsewhere"), error
        conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("TRACE", "/health")  # a method http.server has no handler for: its 501, in JSON too
    reply = conn.getresponse()
    assert reply.status == 501 and json.loads(reply.read()) == {"error": "Unsupported method ('TRACE')"}
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("HEAD", "/health")  # a GET's headers, no body
    reply = conn.getresponse()
    assert reply.status == 200 and int(reply.getheader("Content-Length")) > 0 and reply.read() == b""
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", "/predict")  # no length: where the body ends is unknown
    conn.endheaders()
    reply = conn.getresponse()
    assert reply.status == 411 and "Content-Length" in json.loads(reply.read())["error"]
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", "/predict")  # a chunked body is refused: a length is needed
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"0\r\n\r\n")
    reply = conn.getresponse()
    assert reply.status == 411 and "Content-Length" in json.loads(reply.read())["error"]


def _raw(port: int, request: bytes) -> bytes:
    """Everything the server sends back for `request`, written as is, until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_requests_whose_framing_is_unclear_get_full_http_replies(folders, serving):
    port = int(serving(Predictor(folders / "clf", device="cpu")).rsplit(":", 1)[1])
    body = b'{"inputs": ["a"]}'
    two = b"POST /predict HTTP/1.1\r\nContent-Length: 17\r\nContent-Length: 5\r\nConnection: close\r\n\r\n" + body
    reply = _raw(port, two)  # which length is meant is unclear: a proxy may have read the other one
    assert reply.startswith(b"HTTP/1.1 400 ") and b"Content-Lengths 17, 5; send one" in reply
    same = b"POST /predict HTTP/1.1\r\nContent-Length: 17 \r\nContent-Length: 17\r\nConnection: close\r\n\r\n"
    assert _raw(port, same + body).startswith(b"HTTP/1.1 200 ")  # the same length twice, spaces around it: one
    for line in (b"\x00\xff\xfe garbage\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\n"):  # not a request line
        reply = _raw(port, line)
        head, _, rest = reply.partition(b"\r\n\r\n")
        assert head.split(b" ")[0] == b"HTTP/1.1" and b"Content-Type: application/json" in head, reply
        assert "error" in json.loads(rest)


def test_too_many_inputs_or_too_large_a_body_get_a_413_the_client_can_read(folders, serving, monkeypatch):
    from electra import serve

    url = serving(Predictor(folders / "clf", device="cpu"), max_inputs=2)
    assert _call(url + "/predict", {"inputs": ["a", "b"]})[0] == 200
    status, said = _call(url + "/predict", {"inputs": ["a", "b", "c"]})
    assert status == 413 and said["error"].startswith("the request has 3 inputs, above the server's 2 (--max-inputs)")
    # a client that writes the whole body before it reads (urllib) got a broken pipe, not the 413
    monkeypatch.setattr(serve, "MAX_BODY", 2**20)
    monkeypatch.setattr(serve, "DRAIN_BODY", 16 * 2**20)
    status, said = _call(url + "/predict", {"inputs": ["a" * 8 * 2**20]})
    assert status == 413 and said["error"].startswith(f"the body has {8 * 2**20 + 16} bytes, above {2**20}")


def _wait_until(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "waited a minute"
        time.sleep(0.01)


def test_a_stop_delivers_the_answers_it_computed_and_refuses_later_requests(folders):
    model = Gated(folders / "clf")
    server = make_server(model, port=0)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    port = int(server.url.rsplit(":", 1)[1])
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    model.gate.set()
    kept.request("POST", "/predict", json.dumps({"inputs": ["warm"]}))
    assert kept.getresponse().read()  # a kept connection, idle when the stop begins
    model.gate.clear()
    model.busy.clear()
    answers = {}

    def ask(key, text):
        answers[key] = _call(server.url + "/predict", {"inputs": [text]})

    asking = [threading.Thread(target=ask, args=(0, "great fun"), daemon=True)]
    try:  # a failed check never leaves the model (and so pytest) waiting at its gate
        asking[0].start()
        assert model.busy.wait(timeout=60)
        later = enumerate(("a dull one", "so so"), 1)
        asking += [threading.Thread(target=ask, args=(i, t), daemon=True) for i, t in later]
        for thread in asking[1:]:
            thread.start()
        _wait_until(lambda: server.batcher.queue.qsize() == 2)  # both wait behind the busy model
        server.shutdown()
        stopping = threading.Thread(target=server.server_close, daemon=True)
        stopping.start()  # the model is still busy: the stop waits for it
        _wait_until(lambda: server.batcher.closed)
        kept.request("POST", "/predict", json.dumps({"inputs": ["late"]}))  # after the stop began
        late = kept.getresponse()
        assert late.status == 503 and json.loads(late.read()) == {"error": "the server is stopping"}
    finally:
        model.gate.set()
    stopping.join(timeout=60)
    assert not stopping.is_alive() and not server.batcher.thread.is_alive()  # the stop ended, the model thread too
    assert server.answering == 0  # every reply was written before server_close returned (then the process may end)
    for thread in asking:
        thread.join(timeout=60)
    alone = Predictor(folders / "clf", device="cpu")
    for i, text in enumerate(("great fun", "a dull one", "so so")):
        status, got = answers[i]
        assert status == 200
        _close_enough(got["outputs"], alone([(text, None)])[0])


def test_a_model_fine_tuned_on_its_own_columns_is_served_by_them_too(folders, serving, tmp_path):
    import shutil

    shutil.copytree(folders / "clf", tmp_path / "reviews")  # as `--task csv --text-field review --pair-field title`
    results = {"task": "csv", "config": {"text_field": "review", "pair_field": "title"}}
    (tmp_path / "reviews" / "results.json").write_text(json.dumps(results))
    predictor = Predictor(tmp_path / "reviews", device="cpu")
    url = serving(predictor)
    want, _ = predictor([("a great film", "my view"), ("a dull one", None)])
    own = {"inputs": [{"review": "a great film", "title": "my view"}, {"review": "a dull one"}]}
    status, named = _call(url + "/predict", {"inputs": [{"review": "a dull one", "id": 3}, {"text": "a", "id": "b"}]})
    assert status == 200 and [r["id"] for r in named["outputs"]] == [3, "b"]  # ids come back by either name
    usual = {"inputs": [{"text": "a great film", "pair": "my view"}, "a dull one"]}
    mixed = {"inputs": [{"text": "a great film", "title": "my view"}, {"text": "a dull one"}]}  # each field either way
    answers = [_call(url + "/predict", body) for body in (own, usual, mixed)]
    assert answers == [(200, {"outputs": want, "truncated": 0})] * 3
    assert _call(url + "/health")[1]["fields"] == {"text": "review", "pair": "title"}
    status, said = _call(url + "/predict", {"inputs": [{"title": "x"}]})
    assert status == 400 and said["error"] == (
        'input 1 is not a string or {"text": "..."} (or {"review": "...", "title": "..."}, as fine-tuned)'
    )
    status, said = _call(url + "/predict", {"inputs": [{"body": "x"}]})
    assert status == 400 and said["error"] == (
        'input 1 has the field "body", which this model does not read: '
        'send "id", "pair", "review", "text", "text_pair", "title"'
    )
    assert "fields" not in _call(serving(Predictor(folders / "clf", device="cpu")) + "/health")[1]


def test_a_head_reply_has_no_body_so_a_kept_connection_reads_the_next_reply_whole(folders, serving):
    """HEAD /health: a GET's headers and no body bytes on the wire; http.client never reads a HEAD
    reply's body, so only the raw bytes (or the next reply on the same connection) show one."""
    port = int(serving(Predictor(folders / "clf", device="cpu")).rsplit(":", 1)[1])
    two = b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = _raw(port, two)
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: " in head
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:80]  # the next reply follows the headers at once
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["kind"] == "sequence"


def test_a_chunked_body_is_refused_even_with_a_content_length(folders, serving):
    """Transfer-Encoding overrides Content-Length (RFC 9112 6.1): a server that reads by the length
    while a proxy reads the chunks sees another request (smuggling); both present is refused."""
    port = int(serving(Predictor(folders / "clf", device="cpu")).rsplit(":", 1)[1])
    body = b'{"inputs": ["a"]}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(chunked)
    ) + chunked
    reply = _raw(port, request)
    assert reply.startswith(b"HTTP/1.1 411 ") and b"not chunked" in reply


def test_a_model_fine_tuned_with_only_its_own_pair_column_is_served_by_it(folders, serving, tmp_path):
    """`--task csv --pair-field hypothesis` (the text column keeps its default name): the pair
    is read by that name too, as predict reads a .jsonl file for it."""
    shutil.copytree(folders / "clf", tmp_path / "nli")
    fine_tuned = {"task": "csv", "config": {"pair_field": "hypothesis"}}
    (tmp_path / "nli" / "results.json").write_text(json.dumps(fine_tuned))
    predictor = Predictor(tmp_path / "nli", device="cpu")
    url = serving(predictor)
    want, _ = predictor([("a great film", "it is good")])
    status, got = _call(url + "/predict", {"inputs": [{"text": "a great film", "hypothesis": "it is good"}]})
    assert status == 200 and got == {"outputs": want, "truncated": 0}
    assert _call(url + "/health")[1]["fields"] == {"text": "text", "pair": "hypothesis"}


def test_a_single_logit_classifier_not_marked_regression_is_scored_as_the_pipeline_scores_it(
    tmp_path, tokenizer, tokenizer_dir
):
    """One logit and no problem_type (a folder from elsewhere): transformers' pipeline takes it for a
    yes/no and gives its sigmoid with the label; marked regression, the logit itself is the score."""
    transformers = pytest.importorskip("transformers")
    cfg = tiny(vocab_size=tokenizer.get_vocab_size()).discriminator
    torch.manual_seed(0)
    one = perturb(SequenceClassifier(cfg, 1))
    hf.export_sequence_classifier(one, tmp_path / "one", ["yes"], tokenizer_dir=tokenizer_dir)
    text = "the movie was great"
    ((scored,), _) = Predictor(tmp_path / "one", device="cpu")([(text, None)])
    assert list(scored) == ["score"]  # regression: the score alone
    config = json.loads((tmp_path / "one" / "config.json").read_text())
    del config["problem_type"]
    (tmp_path / "one" / "config.json").write_text(json.dumps(config))
    ((record,), _) = Predictor(tmp_path / "one", device="cpu")([(text, None)])
    (theirs,) = transformers.pipeline("text-classification", model=str(tmp_path / "one"))(text)
    assert record == {"label": theirs["label"], "score": pytest.approx(theirs["score"], abs=1e-6)}
    assert record["score"] == pytest.approx(float(torch.sigmoid(torch.tensor(scored["score"]))), abs=1e-6)


def test_a_multi_label_probability_of_exactly_the_threshold_is_not_a_label(tmp_path, tokenizer, tokenizer_dir):
    """Predict gives the labels above the threshold, as fine-tuning scores them: a logit of 0
    (probability 1/2) is not above the default 1/2."""
    cfg = tiny(vocab_size=tokenizer.get_vocab_size()).discriminator
    model = SequenceClassifier(cfg, 3)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))  # probabilities 1/2, 0.73, 0.27 whatever the text
    hf.export_sequence_classifier(model, tmp_path / "m", ["a", "b", "c"], tokenizer_dir=tokenizer_dir, multi_label=True)
    ((record,), _) = Predictor(tmp_path / "m", device="cpu")([("the movie was great", None)])
    assert record["labels"] == ["b"]
    ((record,), _) = Predictor(tmp_path / "m", device="cpu", threshold=0.3)([("the movie was great", None)])
    assert record["labels"] == ["b", "a"]  # above 0.3, likeliest first


def test_a_question_without_its_context_is_refused_by_its_number_before_running():
    body = {"inputs": [{"question": "what ?", "context": "this"}, {"question": "why ?"}]}
    with pytest.raises(RequestError, match='^input 2 has no "context": a question answerer needs the text to answer'):
        parse_inputs(json.dumps(body).encode(), "span")
    assert parse_inputs(json.dumps({"inputs": body["inputs"][:1]}).encode(), "span") == [("what ?", "this")]


def test_each_request_counts_its_own_truncated_inputs(folders):
    """Requests that share a model run each get the count of their own inputs cut at the length limit."""
    model = Gated(folders / "clf", max_length=8)
    batcher = Batcher(model, batch_size=8)
    long = "the movie was great and a lot of fun and i loved the acting"
    requests = {"first": [("great", None)], "two": [(long, None), ("dull", None), (long, None)], "none": [("ok", None)]}
    answers = _behind_a_busy_model(model, batcher, requests)
    assert model.runs == [1, 4]  # the two waiting requests shared a run
    assert {key: truncated for key, (_, truncated) in answers.items()} == {"first": 0, "two": 2, "none": 0}


def test_a_model_that_fails_gets_a_500_that_names_the_error_and_the_server_goes_on(folders, serving):
    """A failure of the model, not of the request, is the server's (500), not a 400 blaming the client."""

    class Failing(Predictor):
        def stream(self, texts, *args, **kwargs):
            if any(text == "boom" for text, _ in texts):
                raise RuntimeError("out of memory")
            return super().stream(texts, *args, **kwargs)

    url = serving(Failing(folders / "clf", device="cpu"))
    assert _call(url + "/predict", {"inputs": ["boom"]}) == (500, {"error": "the model failed: out of memory"})
    assert _call(url + "/predict", {"inputs": ["great fun"]})[0] == 200


def test_a_get_of_an_unknown_path_is_a_404_not_the_health_reply(folders, serving):
    url = serving(Predictor(folders / "clf", device="cpu"))
    assert _call(url + "/healthz") == (404, {"error": "no /healthz; use GET /health or POST /predict"})
    assert _call(url + "/health")[0] == 200


def test_predict_reads_a_csv_task_models_own_columns_without_flags(folders, tmp_path, cli):
    """`electra predict` on a folder fine-tuned with --text-field review --pair-field title reads
    those columns (and JSON fields) by default, as serve does."""
    shutil.copytree(folders / "clf", tmp_path / "reviews")
    results = {"task": "csv", "config": {"text_field": "review", "pair_field": "title"}}
    (tmp_path / "reviews" / "results.json").write_text(json.dumps(results))
    want, _ = Predictor(tmp_path / "reviews", device="cpu")([("a great film", "my view"), ("a dull one", "meh")])
    table = "review,title\na great film,my view\na dull one,meh\n"
    records = '{"review": "a great film", "title": "my view"}\n{"review": "a dull one", "title": "meh"}\n'
    for fmt, given in (("csv", table), ("jsonl", records)):
        done = cli("predict", "--model", tmp_path / "reviews", "--format", fmt, "--device", "cpu", input=given)
        assert done.returncode == 0, done.stderr
        got = [json.loads(line) for line in done.stdout.splitlines()]
        assert [g["text"] for g in got] == [["a great film", "my view"], ["a dull one", "meh"]]
        assert [{k: v for k, v in g.items() if k != "text"} for g in got] == want


def test_a_server_that_would_refuse_every_request_is_refused(folders):
    with pytest.raises(ValueError, match="^max inputs per request must be at least 1, got 0$"):
        make_server(Predictor(folders / "clf", device="cpu"), port=0, max_inputs=0)


def test_the_serve_commands_flags_reach_the_model_and_the_server(cli, monkeypatch, tmp_path):
    """Every flag of `electra serve` reaches Predictor or make_server (both replaced: the server
    stops at once, as Ctrl-C stops it, exit 130), and the defaults are those its help names."""
    seen = {}

    class FakePredictor:
        folder, kind = "m", "sequence"

        def __init__(self, *args):
            seen["predictor"] = args

    class FakeServer:
        url = "http://127.0.0.1:1"

        def serve_forever(self):
            raise KeyboardInterrupt

        def server_close(self):
            seen["closed"] = True

    def fake_make_server(predictor, *args):
        seen["server"] = args
        return FakeServer()

    monkeypatch.setattr("electra.predict.Predictor", FakePredictor)
    monkeypatch.setattr("electra.serve.make_server", fake_make_server)
    result = cli("serve", "--model", "m")
    assert result.returncode == 130 and "electra serve: interrupted" in result.stderr and seen.pop("closed")
    assert seen == {
        "predictor": ("m", None, "auto", None, None, None, "fp32", False, None),
        "server": ("127.0.0.1", 8000, 64, None, 1024),
    }
    (tmp_path / "key").write_text("s3cret\n")
    flags = ["--max-length", "16", "--device", "cpu", "--stride", "4", "--no-allow-no-answer", "--null-threshold", "2"]
    flags += ["--precision", "bf16", "--all-scores", "--threshold", "0.25", "--host", "::1", "--port", "0"]
    flags += ["--batch-size", "5", "--max-inputs", "9", "--api-key-file", tmp_path / "key"]
    result = cli("serve", "--model", "m", *flags)
    assert result.returncode == 130 and "(with the API key)" in result.stdout
    assert seen["predictor"] == ("m", 16, "cpu", 4, False, 2.0, "bf16", True, 0.25)
    assert seen["server"] == ("::1", 0, 5, "s3cret", 9)
    for bad in (["--batch-size", "0"], ["--max-inputs", "0"]):
        result = cli("serve", "--model", "m", *bad)
        assert result.returncode == 2 and "--batch-size and --max-inputs must be at least 1" in result.stderr


def test_the_predict_commands_flags_reach_the_model(folders, cli, monkeypatch, tmp_path):
    """Every model flag of `electra predict` reaches Predictor, and --batch-size and --no-truncate
    its stream (seen through a subclass); the defaults are those its help names."""
    import electra.predict

    seen = {}

    class Spy(Predictor):
        def __init__(self, *args):
            seen["init"] = args
            super().__init__(*args)

        def stream(self, texts, batch_size, truncate):
            seen["stream"] = (batch_size, truncate)
            return super().stream(texts, batch_size, truncate)

    monkeypatch.setattr(electra.predict, "Predictor", Spy)
    clf = str(folders / "clf")
    result = cli("predict", "--model", clf, input="great fun\n")
    assert result.returncode == 0, result.stderr
    assert seen == {"init": (clf, None, "auto", None, None, None, "fp32", False, None), "stream": (64, True)}
    out = tmp_path / "out.jsonl"
    flags = ["--max-length", "16", "--device", "cpu", "--precision", "bf16", "--all-scores", "--batch-size", "3"]
    result = cli("predict", "--model", clf, *flags, "--no-truncate", "--output", out, input="great fun\n")
    assert result.returncode == 0, result.stderr
    assert seen == {"init": (clf, 16, "cpu", None, None, None, "bf16", True, None), "stream": (3, False)}
    assert "scores" in json.loads(out.read_text())  # --all-scores, written to --output
    tags = str(folders / "tags")
    assert cli("predict", "--model", tags, "--threshold", "0.25", "--device", "cpu", input="fun\n").returncode == 0
    assert seen["init"] == (tags, None, "cpu", None, None, None, "fp32", False, 0.25)
    qa = ["--stride", "8", "--allow-no-answer", "--null-threshold", "1.5", "--max-length", "64", "--device", "cpu"]
    given = json.dumps({"key": "q1", "question": "what was great", "context": "the movie was great"}) + "\n"
    result = cli("predict", "--model", folders / "qa", *qa, "--format", "jsonl", "--id-field", "key", input=given)
    assert result.returncode == 0, result.stderr
    assert seen["init"] == (str(folders / "qa"), 64, "cpu", 8, True, 1.5, "fp32", False, None)
    assert json.loads(result.stdout)["id"] == "q1"  # --id-field
