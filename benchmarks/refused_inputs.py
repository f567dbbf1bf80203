"""Peak memory of refusing hostile inputs: each case runs in a fresh process that imports what
the refusing code path imports, does the refusal, and reports its peak RSS; a baseline process
imports the same and does nothing. The difference is what the refusal itself costs — a bound
checked before reading keeps it near zero whatever the input's size.

    python -m benchmarks.refused_inputs [--out benchmarks/results/refused_inputs.json]

Cases: an image path that is a symlink to /dev/zero; a sparse 1 GiB "JPEG" (its size says 1 GiB);
a predictions file whose one line is 256 MB; a 512 MB request body streamed over HTTP to the served
model's guard under uvicorn (declared length, and chunked), the server's peak RSS (VmHWM) read
before and after the request."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEAK = ("import resource, sys; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)")

CASES = {
    "image: symlink to /dev/zero": (
        "from assets.residuals import ImageError, ResidualConfig, load_preprocessed",
        "try:\n    load_preprocessed({path!r}, ResidualConfig(image_size=64))\nexcept ImageError as e:\n"
        "    print(e.reason)"),
    "image: sparse 1 GiB file": (
        "from assets.residuals import ImageError, ResidualConfig, load_preprocessed",
        "try:\n    load_preprocessed({path!r}, ResidualConfig(image_size=64))\nexcept ImageError as e:\n"
        "    print(e.reason)"),
    "predictions: one 256 MB line": (
        "from pathlib import Path\nfrom assets.params import UserError\n"
        "from models.lifecycle.evaluate import read_predictions",
        "try:\n    read_predictions(Path({path!r}))\nexcept UserError as e:\n    print('refused')"),
}


def _peak_mb(code: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-c", code + "\n" + PEAK], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return int(r.stderr.strip().splitlines()[-1]), r.stdout.strip()


SERVER = """
import uvicorn
from models.serving_app import Guarded

async def app(scope, receive, send):
    raise AssertionError("reached the model")

uvicorn.run(Guarded(app), host="127.0.0.1", port={port}, log_level="error")
"""


def _vm_hwm_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no VmHWM")


def _post_big(port: int, declared: bool, mb: int = 512) -> str:
    """POST mb MB of body over a raw socket (a declared Content-Length, or chunked transfer
    encoding), stop sending once the server answers or closes; returns the status line."""
    head = (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + (f"Content-Length: {mb << 20}\r\n" if declared else "Transfer-Encoding: chunked\r\n") + "\r\n")
    chunk = b"x" * (1 << 20)
    piece = chunk if declared else f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(head.encode())
        try:
            for _ in range(mb):
                s.sendall(piece)
            if not declared:
                s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed mid-upload: what the bound is for
        try:
            return s.recv(200).split(b"\r\n", 1)[0].decode() or "closed"
        except (ConnectionResetError, socket.timeout):
            return "closed"


def serve_cases() -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER.format(port=port)],
                            cwd=Path(__file__).resolve().parents[1])
    rows = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # listening yet? (a TCP connect, no request)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        for name, declared in (("serve: 512 MB body, declared", True), ("serve: 512 MB body, chunked", False)):
            base = _vm_hwm_mb(proc.pid)
            t0 = time.perf_counter()
            said = _post_big(port, declared)
            peak = _vm_hwm_mb(proc.pid)
            rows.append({"case": name, "baseline_mb": base, "peak_mb": peak, "refusal_mb": peak - base,
                         "outcome": said, "seconds": round(time.perf_counter() - t0, 1)})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/refused_inputs.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        os.symlink("/dev/zero", d / "zero.jpg")
        with open(d / "sparse.jpg", "wb") as f:
            f.truncate(1 << 30)
        with open(d / "preds.jsonl", "wb") as f:  # one line, written in 1 MB pieces
            f.write(b'{"answer": "x", "prediction": "')
            for _ in range(256):
                f.write(b"a" * (1 << 20))
            f.write(b'"}\n')
        paths = {"image: symlink to /dev/zero": d / "zero.jpg", "image: sparse 1 GiB file": d / "sparse.jpg",
                 "predictions: one 256 MB line": d / "preds.jsonl"}
        rows = []
        for name, (imports, action) in CASES.items():
            base, _ = _peak_mb(imports)
            t0 = time.perf_counter()
            peak, said = _peak_mb(imports + "\n" + action.format(path=str(paths.get(name, ""))))
            rows.append({"case": name, "baseline_mb": base, "peak_mb": peak, "refusal_mb": peak - base,
                         "outcome": said, "seconds": round(time.perf_counter() - t0, 1)})
        rows += serve_cases()
    for r in rows:
        print(f"{r['case']:32s} baseline {r['baseline_mb']:5d} MB  peak {r['peak_mb']:5d} MB  "
              f"refusal +{r['refusal_mb']} MB  ({r['outcome']})")
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cases": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
