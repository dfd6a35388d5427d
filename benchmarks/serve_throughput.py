"""`electra serve` under concurrent clients: requests that share model runs against one request per run.

    python benchmarks/serve_throughput.py [--preset small] [--requests 600] [--clients 1,8,32]

A classifier of the preset's size (random weights) is served by `electra serve` in its own
process, once per variant: "one per run" (`--batch-size 1`: every request runs alone, as a
server that locks the model per request does), "shared runs" (`--batch-size 64`: requests
that wait while the model runs share its next run), each with a new connection per request,
and "shared runs, kept connections": each client keeps one HTTP/1.1 connection. For each
number of clients, that many threads each send one SST-2 sentence per POST /predict, the next
as soon as the answer comes, until `--requests` are answered. The table gives requests/s,
latency percentiles and the mean inputs per model run (from GET /health).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from predict_throughput import sst2_classifier

# name: (--batch-size, whether a client keeps its connection)
VARIANTS = {"one per run": (1, False), "shared runs": (64, False), "shared runs, kept connections": (64, True)}


def _post(url: str, text: str, conn: http.client.HTTPConnection | None) -> dict:
    body = json.dumps({"inputs": [text]}).encode()
    if conn is None:  # a new connection, closed after the answer
        with urllib.request.urlopen(urllib.request.Request(url + "/predict", data=body), timeout=300) as r:
            return json.loads(r.read())
    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
    return json.loads(conn.getresponse().read())


def _served(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=60) as r:
        return json.loads(r.read())["served"]


def load(url: str, texts: list[str], clients: int, requests: int, keep: bool = False) -> dict:
    """`clients` threads send the texts one per request until `requests` are answered; with
    `keep`, each over one connection it keeps."""
    todo = iter(itertools.islice(itertools.cycle(texts), requests))
    lock = threading.Lock()
    latencies: list[float] = []
    labels: dict[str, str] = {}

    def client() -> None:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=300) if keep else None
        while True:
            with lock:
                text = next(todo, None)
            if text is None:
                if conn is not None:
                    conn.close()
                return
            start = time.perf_counter()
            out = _post(url, text, conn)["outputs"][0]
            with lock:
                latencies.append(time.perf_counter() - start)
                labels[text] = out["label"]

    before = _served(url)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    after = _served(url)
    q = statistics.quantiles(latencies, n=100)
    return {
        "per_s": requests / seconds,
        "p50": q[49] * 1000,
        "p99": q[98] * 1000,
        "batch": (after["inputs"] - before["inputs"]) / max(1, after["model_runs"] - before["model_runs"]),
        "labels": labels,
    }


def serve(model: Path, batch_size: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "electra", "serve", "--model", str(model), "--port", "0", "--device", "cpu"]
    log = open(model.parent / f"serve-{batch_size}.log", "w")  # noqa: SIM115 (the access log, while it serves)
    proc = subprocess.Popen([*cmd, "--batch-size", str(batch_size)], stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    if " on http://" not in line:
        proc.kill()
        raise SystemExit(f"electra serve did not start; its log: {log.name}")
    return proc, line.split(" on ")[1].split(": ")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--requests", type=int, default=600, help="answered requests per row")
    ap.add_argument("--clients", default="1,8,32", help="comma-separated numbers of concurrent clients")
    ap.add_argument("--work", type=Path, default=Path("/tmp/electra-serve-bench"))
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]

    import torch

    texts = sst2_classifier(args.preset, args.work)[: args.requests]
    rows = []
    for variant, (batch_size, keep) in VARIANTS.items():
        proc, url = serve(args.work / "model", batch_size)
        try:
            load(url, texts, 4, 64)  # warm-up
            rows += [(variant, c, load(url, texts, c, args.requests, keep)) for c in clients]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    same = all(r["labels"] == rows[0][2]["labels"] for *_, r in rows)
    print(
        f"\n{args.preset} classifier behind electra serve, {args.requests:,} requests of one SST-2 sentence per row, "
        f"CPU, {os.cpu_count()} cores (clients and server share them), torch {torch.__version__}; "
        f"identical labels: {same}\n"
    )
    base = {c: r["per_s"] for variant, c, r in rows if variant == "one per run"}
    head = ("variant", "clients", "requests/s", "p50 ms", "p99 ms", "inputs per run", "vs one per run")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in head) + "|")
    for variant, c, r in rows:
        print(
            f"| {variant} | {c} | {r['per_s']:,.1f} | {r['p50']:,.1f} | {r['p99']:,.1f} | {r['batch']:.1f} | "
            f"{r['per_s'] / base[c]:.2f}x |"
        )


if __name__ == "__main__":
    main()
