"""`electra serve`: a fine-tuned model behind HTTP, loaded once, answering JSON requests.

    POST /predict  {"inputs": ["a text", ...]}                                classifier, tagger
                   {"inputs": [{"text": "...", "pair": "..."}, ...]}          sentence pairs ("pair"
                                                                              also as "text_pair")
                   {"inputs": [{"question": "...", "context": "..."}, ...]}   question answerer
               ->  {"outputs": [record, ...], "truncated": n}, records as `electra predict` writes them
    GET  /health   ->  {"model": ..., "kind": "sequence" | "token" | "span", "labels": [...],
                        "served": {"inputs": n, "model_runs": m}}  (a classifier: "multi_label", "all_scores";
                                                                    a multi-label one: "threshold")

Standard library only (http.server), HTTP/1.1: a client may keep its connection open for
more requests. One thread runs the model; requests that arrive while it is busy wait and then
share its next run (see `Batcher`), batched and length-sorted as in `electra predict`. Bad
requests get status 400 and {"error": "what is wrong and what to send"}. Given an API key,
every request must carry `Authorization: Bearer KEY` (else 401).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import queue
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from electra.corpus import LONE_SURROGATE
from electra.predict import NO_ID, Predictor, Text
from electra.tasks import TaskError

MAX_BODY = 16 * 2**20  # bytes; a request above this is refused (send fewer texts at a time)
# a refused body up to this size is still read (and dropped), so that a client that sends the
# whole body before it reads (urllib, requests) gets the 413 rather than a broken pipe
DRAIN_BODY = 4 * MAX_BODY
MAX_INPUTS = 1024  # inputs per request, by default: one request holds up every other while it runs
STOP_WAIT = 30  # seconds a stopping server waits for the answers already being computed


class RequestError(ValueError):
    """A request that cannot be answered as sent."""


def parse_inputs(body: bytes, kind: str, own: tuple[str, str | None] | None = None) -> list[Text]:
    """(text, pair) for each input of a /predict body, with its "id" if it has one (`Text`), or a
    RequestError that says what to send.
    `own`: the fields a csv-task model was fine-tuned on, read as "text" and "pair" (as predict
    reads a .jsonl file for it)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than Python's parser goes
        raise RequestError(f'the body is not JSON ({e}); send {{"inputs": [...]}}') from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise RequestError('send a JSON object with a list "inputs"')
    if other := [k for k in request if k != "inputs"]:  # e.g. "parameters": nothing here would read it
        raise RequestError(f'the body has {_names(other)} besides "inputs", which this server does not read')
    first, second = ("question", "context") if kind == "span" else ("text", "pair")
    # a pair also as "text_pair", transformers' pipeline's name for it (the model card's example)
    known = {first, second, "id"} | ({"text_pair"} if kind != "span" else set()) | {f for f in own or () if f}
    out = []
    for n, item in enumerate(request["inputs"], 1):
        if isinstance(item, str) and kind != "span":
            item = {"text": item}
        if isinstance(item, dict):  # a misspelt field would give another answer than asked: refused
            if unknown := [k for k in item if k not in known]:
                fields = [first, "id"] if kind == "token" else sorted(known)
                raise RequestError(
                    f"input {n} has {_names(unknown)}, which this model does not read: "
                    f"send {', '.join(map(json.dumps, fields))}"
                )
            if "text_pair" in item:
                if second in item:
                    raise RequestError(f'input {n} has both "pair" and "text_pair"; send one of them')
                item = {k: v for k, v in item.items() if k != "text_pair"} | {second: item["text_pair"]}
        if own and isinstance(item, dict):  # each of text and pair by the usual name, else by its own
            item = {
                first: item[first] if first in item else item.get(own[0]),
                second: item[second] if second in item else item.get(own[1]) if own[1] else None,
                **({"id": item["id"]} if "id" in item else {}),
            }
        if not isinstance(item, dict) or not isinstance(item.get(first), str):
            want = f'{{"{first}": "...", "{second}": "..."}}' if kind == "span" else f'a string or {{"{first}": "..."}}'
            if own:
                want += f' (or {{"{own[0]}": "..."' + (f', "{own[1]}": "..."' if own[1] else "") + "}, as fine-tuned)"
            raise RequestError(f"input {n} is not {want}")
        pair = item.get(second)
        if pair is not None and not isinstance(pair, str):
            raise RequestError(f'input {n}: "{second}" is not a string')
        if kind == "token" and pair is not None:
            raise RequestError(f'input {n} has a "pair": a token classifier tags single texts')
        if kind == "span" and pair is None:
            raise RequestError(f'input {n} has no "context": a question answerer needs the text to answer from')
        for value in (item[first], pair or ""):
            if m := LONE_SURROGATE.search(value):
                raise RequestError(f"input {n} holds a lone surrogate ({ascii(m.group())}), not Unicode text")
        out.append(Text(item[first], pair, item.get("id", NO_ID)))  # an "id" comes back with the answer
    return out


def _names(keys: list[str]) -> str:
    quoted = ", ".join(json.dumps(k) for k in keys)
    return f"the field {quoted}" if len(keys) == 1 else f"the fields {quoted}"


class Stopping(RuntimeError):
    """A request that came after the server began to stop."""


class _Request:
    def __init__(self, texts: list[tuple[str, str | None]]):
        self.texts = texts
        self.outputs: list[dict] = []
        self.truncated = 0
        self.error: Exception | None = None
        self.done = threading.Event()


class Batcher:
    """Requests from many threads answered on one loaded Predictor, in shared batches.

    One thread runs the model. Requests that arrive while it runs queue up, and its next run
    takes all of them, whole requests, until they hold `batch_size` inputs: under load a batch
    fills with many clients' texts, and an idle server answers at once, with no wait added.
    A run that fails is repeated request by request, so that an error reaches only the request
    that caused it. Memory stays that of one run: at most `batch_size` inputs plus one request.
    """

    def __init__(self, predictor: Predictor, batch_size: int = 64):
        self.predictor, self.batch_size = predictor, batch_size
        self.queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self.inputs = self.runs = 0  # served so far: inputs / runs is the mean batch
        self.lock, self.closed = threading.Lock(), False
        self.thread = threading.Thread(target=self._serve, name="electra-serve-model", daemon=True)
        self.thread.start()

    def __call__(self, texts: list[tuple[str, str | None]]) -> tuple[list[dict], int]:
        """The records of `texts` in order, and how many were truncated, as Predictor gives them;
        Stopping once `close` has begun."""
        request = _Request(texts)
        with self.lock:  # every request queued before close's end mark is answered
            if self.closed:
                raise Stopping("the server is stopping")
            self.queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.outputs, request.truncated

    def close(self) -> None:
        """Answer what is queued, refuse what comes later, then stop the model thread."""
        with self.lock:
            self.closed = True
            self.queue.put(None)
        self.thread.join()

    def _serve(self) -> None:
        closing = False
        while not closing and (first := self.queue.get()) is not None:
            requests, inputs = [first], len(first.texts)
            while inputs < self.batch_size:
                try:
                    request = self.queue.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    closing = True
                    break
                requests.append(request)
                inputs += len(request.texts)
            self._run(requests)

    def _run(self, requests: list[_Request]) -> None:
        texts = [t for r in requests for t in r.texts]
        try:
            results = list(self.predictor.stream(texts, self.batch_size, progress=False)) if texts else []
        except Exception as e:  # noqa: BLE001 (handed to the request's own thread, which reports it)
            self.runs += 1
            if len(requests) > 1:
                for request in requests:
                    self._run([request])
                return
            requests[0].error = e
            requests[0].done.set()
            return
        self.inputs, self.runs = self.inputs + len(texts), self.runs + bool(texts)  # inputs answered, runs made
        start = 0
        for request in requests:
            mine = results[start : start + len(request.texts)]
            start += len(request.texts)
            request.outputs = [record for _, record, _ in mine]
            request.truncated = sum(cut for *_, cut in mine)
            request.done.set()


class Server(ThreadingHTTPServer):
    # connections waiting to be accepted: at http.server's 5, a burst of 32 clients saw 1 s SYN
    # retries (p99 latency 1.1 s in benchmarks/serve_throughput.py, 0.3 s at 128)
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler, batcher: Batcher):
        self.batcher = batcher  # first: a failed bind calls server_close from inside __init__
        self.answering, self.idle = 0, threading.Condition()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET  # "::1", "::": IPv6
        super().__init__(address, handler)

    @contextlib.contextmanager
    def answer(self):
        """Around each request to the model, so that a stop waits for its reply to be written."""
        with self.idle:
            self.answering += 1
        try:
            yield
        finally:
            with self.idle:
                self.answering -= 1
                self.idle.notify_all()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def handle_error(self, request, client_address) -> None:
        """A client that went away before its answer is one line in the log, not a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            print(f"{client_address[0]} closed the connection before its answer ({error})", file=sys.stderr)
        else:
            super().handle_error(request, client_address)

    def server_close(self) -> None:
        """Stop listening, answer the requests already received, then stop the model thread. The
        handler threads die with the process, so the stop waits (up to STOP_WAIT) for their replies."""
        super().server_close()
        with self.idle:
            if self.answering:
                print(
                    f"stopping: answering the {self.answering} request{'s' * (self.answering > 1)} "
                    "received (Ctrl-C again to stop at once)",
                    file=sys.stderr,
                    flush=True,
                )
        self.batcher.close()
        with self.idle:
            self.idle.wait_for(lambda: not self.answering, timeout=STOP_WAIT)


def _own_fields(folder) -> tuple[str, str | None] | None:
    """The text and pair fields a csv-task folder was fine-tuned on, where they are not text/pair."""
    from electra import hf

    text, pair = hf.csv_fields(hf.read_results(folder))
    own = (text or "text", pair)
    return own if own[0] != "text" or own[1] not in (None, "pair") else None


def make_server(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    batch_size: int = 64,
    api_key: str | None = None,
    max_inputs: int = MAX_INPUTS,
) -> Server:
    """An HTTP server (not yet serving: call serve_forever) around a loaded Predictor; with
    `api_key`, only requests that carry it as a bearer token are answered; a request of more
    than `max_inputs` inputs is refused (413)."""
    if api_key is not None and not api_key:
        raise ValueError("the API key is empty; give one with at least one character, or none")
    if api_key is not None and not (api_key.isascii() and api_key.isprintable()):
        raise ValueError(
            "the API key holds characters other than printable ASCII, which no header carries as is; choose another"
        )
    if max_inputs < 1:
        raise ValueError(f"max inputs per request must be at least 1, got {max_inputs}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is not a TCP port; choose one from 1 to 65535 (0: any free one)")
    expected = None if api_key is None else api_key.encode()
    batcher = Batcher(predictor, batch_size)
    info = {
        "model": str(predictor.folder),
        "kind": predictor.kind,
        "labels": [predictor.id2label[i] for i in sorted(predictor.id2label)],
    }
    if predictor.kind == "sequence":  # a multi-label model's records list every label above 0.5
        info |= {"multi_label": predictor.multi_label, "all_scores": predictor.all_scores}
        if predictor.multi_label:
            info["threshold"] = predictor.threshold
    own = _own_fields(predictor.folder)
    if own:
        info["fields"] = {"text": own[0], "pair": own[1]}

    class Handler(BaseHTTPRequestHandler):
        server_version = "electra-serve"
        protocol_version = "HTTP/1.1"  # a client may keep its connection for the next request
        timeout = 60  # seconds an idle kept connection waits for one before it is closed
        # headers and body go out in two writes: with Nagle's algorithm, a kept connection waited
        # for the client's delayed ACK before the body (56 ms a request in serve_throughput.py)
        disable_nagle_algorithm = True

        def _reply(self, status: int, payload: dict, close: bool = False, headers: dict | None = None) -> None:
            body = json.dumps(payload).encode()
            length = len(body)
            if getattr(self, "command", None) == "HEAD":  # the headers a GET would get, no body
                body = b""
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(length))
            if close:  # the request's body was not read: the connection cannot carry another request
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self, body_unread: bool) -> bool:
            """Whether the request carries the key; answers 401 when it does not."""
            if expected is None:
                return True
            given = self.headers.get("Authorization", "")
            scheme, _, key = given.strip().partition(" ")
            # the scheme is case-insensitive (RFC 9110); the key compared in constant time: no timing hints
            if scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), expected):
                return True
            error = "wrong API key" if given else "send the server's API key as the header 'Authorization: Bearer KEY'"
            challenge = {"WWW-Authenticate": 'Bearer realm="electra"'}
            self._reply(HTTPStatus.UNAUTHORIZED, {"error": error}, close=body_unread, headers=challenge)
            return False

        def _route(self) -> str:
            return urlsplit(self.path).path  # /health?x=1 is /health

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if not self._authorized(body_unread=False):
                return
            if self._route() == "/predict":
                error = "send the inputs with POST /predict"
                self._reply(HTTPStatus.METHOD_NOT_ALLOWED, {"error": error}, headers={"Allow": "POST"})
                return
            if self._route() != "/health":
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no {self._route()}; use GET /health or POST /predict"})
                return
            self._reply(HTTPStatus.OK, {**info, "served": {"inputs": batcher.inputs, "model_runs": batcher.runs}})

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def _not_allowed(self) -> None:
            """PUT, DELETE, PATCH, OPTIONS: the methods each route takes, in JSON as every other error."""
            allow = {"/health": "GET, HEAD", "/predict": "POST"}.get(self._route())
            if allow is None:
                error = f"no {self._route()}; use GET /health or POST /predict"
                self._reply(HTTPStatus.NOT_FOUND, {"error": error}, close=True)  # a body may be left unread
            else:
                error = f"{self.command} is not served; use {allow.replace(', ', ' or ')} {self._route()}"
                self._reply(HTTPStatus.METHOD_NOT_ALLOWED, {"error": error}, close=True, headers={"Allow": allow})

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own refusals (a method it has no handler for, a malformed request line)
            in JSON, as every other error."""
            if self.request_version == "HTTP/0.9":  # the request line was not understood: still a full reply,
                self.request_version = "HTTP/1.1"  # with a status line and headers, not a bare body
            self._reply(code, {"error": message or HTTPStatus(code).phrase}, close=True)

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized(body_unread=True):
                return
            if self._route() != "/predict":
                if self._route() == "/health":
                    self._not_allowed()
                else:
                    self._reply(HTTPStatus.NOT_FOUND, {"error": f"no {self._route()}; use POST /predict"}, close=True)
                return
            lengths = {v.strip() for v in self.headers.get_all("Content-Length", [])}
            if self.headers.get("Transfer-Encoding") or not lengths:  # where the body ends is unknown
                error = "send the body with a Content-Length, not chunked"
                self._reply(HTTPStatus.LENGTH_REQUIRED, {"error": error}, close=True)
                return
            if len(lengths) > 1:  # a proxy that reads the other one would see another request (RFC 9112 6.3)
                error = f"the request has Content-Lengths {', '.join(sorted(lengths))}; send one"
                self._reply(HTTPStatus.BAD_REQUEST, {"error": error}, close=True)
                return
            (length,) = lengths
            if not (length.isascii() and length.isdigit()):  # read(-1) would wait for a kept connection to close
                self._reply(HTTPStatus.BAD_REQUEST, {"error": f"Content-Length {length!r} is not a size"}, close=True)
                return
            size = int(length)
            if size > MAX_BODY:
                error = f"the body has {size} bytes, above {MAX_BODY}; send fewer inputs at a time"
                if size <= DRAIN_BODY:
                    self._drain(size)
                self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": error}, close=True)
                return
            try:
                body = self.rfile.read(size)
            except OSError:  # the connection's timeout passed with the body still short of its length
                error = f"the body did not arrive: fewer than its Content-Length of {size} bytes"
                self._reply(HTTPStatus.REQUEST_TIMEOUT, {"error": error}, close=True)
                return
            with self.server.answer():
                self._predict(body)

        def _predict(self, body: bytes) -> None:
            try:
                texts = parse_inputs(body, predictor.kind, own)
                if len(texts) > max_inputs:
                    error = (
                        f"the request has {len(texts)} inputs, above the server's {max_inputs} (--max-inputs); "
                        "send fewer at a time (electra predict labels whole files)"
                    )
                    self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": error})
                    return
                outputs, truncated = batcher(texts)
                outputs = [
                    {**({} if t.id is NO_ID else {"id": t.id}), **r} for t, r in zip(texts, outputs, strict=True)
                ]
            except (RequestError, TaskError) as e:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": str(e)})
                return
            except Stopping as e:  # a kept connection's request after the stop began
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(e)}, close=True)
                return
            except Exception as e:  # noqa: BLE001 (the client gets a reply that names it, the log too)
                self.log_error("the model failed: %r", e)
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"the model failed: {e}"})
                return
            self._reply(HTTPStatus.OK, {"outputs": outputs, "truncated": truncated})

        def _drain(self, size: int) -> None:
            """Read and drop `size` bytes of body (or what arrives before the connection's timeout)."""
            try:
                while size > 0 and (chunk := self.rfile.read(min(size, 2**20))):
                    size -= len(chunk)
            except OSError:
                pass

    try:
        return Server((host, port), Handler, batcher)
    except OSError as e:
        raise OSError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port or --host (0: any free port)"
        ) from e
