"""The served model: MLflow's own scoring app (mlflow.pyfunc.scoring_server.init, what
`mlflow models serve` runs under uvicorn) behind two guards that app does not have.

- Body bound: the request is refused with 413 once its declared Content-Length, or the bytes
  actually received, pass MAX_BODY_BYTES; nothing past the bound is read, so a 200 MB body
  costs the server at most the bound (MLflow itself reads any body whole, then parses it).
- Columns: MLflow's schema enforcement drops an input column its signature does not name (a
  warning in the server log, the request answered as if it were not there); a scoring
  request (JSON, or CSV by its header row) naming such a column is refused with 400 and the
  column named, as `spotdiff ask` refuses it.
- Error bodies: MLflow answers a bad request with its generic message plus the server-side
  stack trace (paths, line numbers) and the real reason on the last line; clients get
  {"error_code", "message"} with that one reason, the trace goes to the server log only.

`spotdiff serve` runs `uvicorn models.serving_app:app` with SPOTDIFF_MODEL_FOLDER set to a
folder models/model_folder.py has checked."""

from __future__ import annotations

import csv
import json
import logging
import os
import re

from models.answer import MAX_IMAGE_BYTES

MODEL_FOLDER_ENV = "SPOTDIFF_MODEL_FOLDER"
# one pair at the image bound, base64 (4/3), plus JSON framing: a request of several pairs must
# carry smaller images (a MIMIC JPEG is 1-3 MB, so 16 real pairs still fit)
MAX_BODY_BYTES = 2 * (MAX_IMAGE_BYTES * 4 // 3) + 64 * 1024
MAX_ERROR_BYTES = 1024 * 1024
log = logging.getLogger("spotdiff.serve")


def _json(status: int, error_code: str, message: str):
    body = json.dumps({"error_code": error_code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


_EXCEPTION_PREFIX = re.compile(r"^[\w.]+(Error|Exception): ")


def reason_of(err: dict) -> str:
    """What went wrong, in one line: the last line of MLflow's stack trace is the exception
    ("models.answer.InputError: main_image: not valid base64"), its text is the reason; without a
    trace, the last line of the message."""
    text = err.get("stack_trace") or err.get("message") or ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return _EXCEPTION_PREFIX.sub("", lines[-1]) if lines else "bad request"


# MLflow answers every exception raised in predict as 400 BAD_REQUEST. Only these say what is
# wrong with the request (the model's InputError is a ValueError; MLflow's own parsing and schema
# errors are MlflowException); anything else is the server's fault, answered 500 without its text.
_USER_ERRORS = re.compile(r"^(?:[\w.]+\.)?(?:ValueError|InputError|MlflowException)(?::|$)")


def is_user_error(err: dict) -> bool:
    """Whether an MLflow error body is about the request: no stack trace (MLflow refused the
    request itself), or a trace that ends in one of the request errors above."""
    lines = [line.strip() for line in str(err.get("stack_trace") or "").splitlines() if line.strip()]
    return not lines or bool(_USER_ERRORS.match(lines[-1]))


def sent_columns(body: bytes, content_type: str = "application/json") -> set[str] | None:
    """The input columns a scoring request names: a CSV body's header row, or a JSON body's
    dataframe_split / dataframe_records / inputs / instances; None when it is neither (MLflow
    then answers it)."""
    if content_type.split(";")[0].strip().lower() == "text/csv":
        header = next(csv.reader([body.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")]), None)
        return {c.strip() for c in header} if header else None
    try:
        req = json.loads(body)
    except ValueError:
        return None
    if not isinstance(req, dict):
        return None
    split = req.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("columns"), list):
        return {str(c) for c in split["columns"]}
    rows = req.get("dataframe_records", req.get("inputs", req.get("instances")))
    if isinstance(rows, dict):
        return {str(c) for c in rows}
    if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
        return {str(c) for r in rows for c in r}
    return None


class Guarded:
    """ASGI wrapper: body bound and known columns on the way in, one-line error bodies on the
    way out. columns: the signature's input names (None: no column check)."""

    def __init__(self, app, max_body: int = MAX_BODY_BYTES, columns: tuple[str, ...] | None = None):
        self.app, self.max_body, self.columns = app, max_body, columns

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            for msg in _json(413, "REQUEST_TOO_LARGE", f"request body of {int(declared)} bytes exceeds "
                                                       f"the bound of {self.max_body} bytes"):
                await send(msg)
            return
        # read the body here, up to the bound, then hand it to the app in one piece: past the
        # bound nothing more is read (a chunked body need not declare its length)
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # client went away
                return
            body += msg.get("body", b"")
            if len(body) > self.max_body:
                for out in _json(413, "REQUEST_TOO_LARGE", f"request body exceeds the bound of {self.max_body} bytes"):
                    await send(out)
                return
            if not msg.get("more_body"):
                break
        if self.columns and scope.get("path") == "/invocations":
            content_type = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
            extra = sorted((sent_columns(bytes(body), content_type) or set()) - set(self.columns))
            if extra:
                for out in _json(400, "BAD_REQUEST", f"unknown column(s) {extra}; the model reads "
                                                     f"{list(self.columns)}"):
                    await send(out)
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        start, chunks = None, []

        async def rewriting_send(msg):
            nonlocal start
            if msg["type"] == "http.response.start" and msg["status"] >= 400:
                start = msg  # held until the body is known
                return
            if start is None:
                return await send(msg)
            chunks.append(msg.get("body", b"")[:MAX_ERROR_BYTES])
            if msg.get("more_body"):
                return
            for out in self._clean(start, b"".join(chunks)):
                await send(out)

        await self.app(scope, replay, rewriting_send)

    @staticmethod
    def _clean(start: dict, body: bytes):
        try:
            err = json.loads(body)
        except ValueError:
            err = {"message": body.decode("utf-8", "replace")}
        if not isinstance(err, dict):
            err = {"message": str(err)}
        if err.get("stack_trace"):
            log.error("request failed (%s):\n%s", start["status"], err["stack_trace"])
        if start["status"] >= 500 or not is_user_error(err):
            return _json(500, "INTERNAL_ERROR", "internal error; see the server log")
        return _json(start["status"], str(err.get("error_code", "BAD_REQUEST")), reason_of(err))


def build_app(folder: str):
    from mlflow.pyfunc import load_model
    from mlflow.pyfunc.scoring_server import init

    model = load_model(folder)
    schema = model.metadata.get_input_schema()
    return Guarded(init(model), columns=tuple(schema.input_names()) if schema is not None else None)


def __getattr__(name: str):
    # uvicorn imports `models.serving_app:app`: the model loads then, from the checked folder
    if name == "app":
        folder = os.environ.get(MODEL_FOLDER_ENV)
        if not folder:
            raise RuntimeError(f"{MODEL_FOLDER_ENV} is not set; start the server with `spotdiff serve`")
        globals()["app"] = build_app(folder)
        return globals()["app"]
    raise AttributeError(name)
