"""`electra serve`: a fine-tuned model behind HTTP, loaded once, answering JSON requests.

    POST /predict  {"inputs": ["a text", ...]}                                classifier, tagger
                   {"inputs": [{"text": "...", "pair": "..."}, ...]}          sentence pairs
                   {"inputs": [{"question": "...", "context": "..."}, ...]}   question answerer
               ->  {"outputs": [record, ...], "truncated": n}, records as `electra predict` writes them
    GET  /health   ->  {"model": ..., "kind": "sequence" | "token" | "span", "labels": [...]}

Standard library only (http.server): requests run one at a time on the loaded model, each
batched and length-sorted as in `electra predict`. Bad requests get status 400 and
{"error": "what is wrong and what to send"}.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from electra.predict import Predictor
from electra.tasks import TaskError

MAX_BODY = 16 * 2**20  # bytes; a request above this is refused (send fewer texts at a time)


class RequestError(ValueError):
    """A request that cannot be answered as sent."""


def parse_inputs(body: bytes, kind: str) -> list[tuple[str, str | None]]:
    """(text, pair) for each input of a /predict body, or a RequestError that says what to send."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f'the body is not JSON ({e}); send {{"inputs": [...]}}') from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise RequestError('send a JSON object with a list "inputs"')
    first, second = ("question", "context") if kind == "span" else ("text", "pair")
    out = []
    for n, item in enumerate(request["inputs"], 1):
        if isinstance(item, str) and kind != "span":
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get(first), str):
            want = f'{{"{first}": "...", "{second}": "..."}}' if kind == "span" else f'a string or {{"{first}": "..."}}'
            raise RequestError(f"input {n} is not {want}")
        pair = item.get(second)
        if pair is not None and not isinstance(pair, str):
            raise RequestError(f'input {n}: "{second}" is not a string')
        if kind == "span" and pair is None:
            raise RequestError(f'input {n} has no "context": a question answerer needs the text to answer from')
        out.append((item[first], pair))
    return out


def make_server(predictor: Predictor, host: str = "127.0.0.1", port: int = 8000, batch_size: int = 64):
    """An HTTP server (not yet serving: call serve_forever) around a loaded Predictor."""
    lock = threading.Lock()  # one request at a time on the model: memory stays that of one batch
    info = {
        "model": str(predictor.folder),
        "kind": predictor.kind,
        "labels": [predictor.id2label[i] for i in sorted(predictor.id2label)],
    }

    class Handler(BaseHTTPRequestHandler):
        server_version = "electra-serve"

        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path != "/health":
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}; use GET /health or POST /predict"})
                return
            self._reply(HTTPStatus.OK, info)

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/predict":
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}; use POST /predict"})
                return
            size = int(self.headers.get("Content-Length") or 0)
            if size > MAX_BODY:
                error = f"the body has {size} bytes, above {MAX_BODY}; send fewer inputs at a time"
                self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": error})
                return
            try:
                texts = parse_inputs(self.rfile.read(size), predictor.kind)
                with lock:
                    outputs, truncated = predictor(texts, batch_size=batch_size, progress=False)
            except (RequestError, TaskError) as e:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": str(e)})
                return
            self._reply(HTTPStatus.OK, {"outputs": outputs, "truncated": truncated})

    return ThreadingHTTPServer((host, port), Handler)
