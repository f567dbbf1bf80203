"""What every model step derives from params the same way: the tracking store, run names, the
question types the decoder trains on."""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timezone

from assets.params import resolve_path


def training_question_types(params: dict) -> tuple[str, ...]:
    """What the decoder trains on: train.question_types, else the types the pairs were built with."""
    return tuple(params["train"].get("question_types") or params["pairs"]["question_types"])


def tracking_uri(params: dict) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params["tracking"]["uri"]
    # sqlite:///file:PATH?mode=ro&uri=true is SQLite's URI form (a read-only store): left as is
    if uri.startswith("sqlite:///") and not uri.startswith(("sqlite:////", "sqlite:///file:")):
        uri = "sqlite:///" + resolve_path(uri[len("sqlite:///"):])
    return uri


def new_run_name(profile: str, kind: str = "real") -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{kind}-{profile}-{stamp}-{secrets.token_hex(3)}"
