"""The main job's stage journal: each pipeline command notes when it ran, how long it took and
whether it succeeded (runs/journal/<command>.json), so the end of `bash scripts/main.sh` can
print one summary table (`spotdiff summary`) instead of leaving a reader to dig the stages out
of the log. A stage DVC found up to date has no new note, and the table says so."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from assets.params import repo_root

# the DVC stages' commands (dvc.yaml), in pipeline order: what the summary lists
STAGES = ("synth", "ingest", "pairs", "residuals", "pretrain", "train", "evaluate", "register", "promote")


JOURNAL_ENV = "SPOTDIFF_JOURNAL_DIR"  # tests keep their notes out of the checkout's runs/


def journal_dir() -> Path:
    return Path(os.environ.get(JOURNAL_ENV) or repo_root() / "runs" / "journal")


def note(command: str, started: float, ok: bool) -> None:
    """Written at the command's end, success or not; a note that cannot be written (a read-only
    checkout) is not worth failing the command for."""
    if command not in STAGES:
        return
    try:
        folder = journal_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{command}.json.{os.getpid()}"
        tmp.write_text(json.dumps({"command": command, "started": started,
                                   "wall_s": round(time.time() - started, 1), "ok": ok}))
        tmp.replace(folder / f"{command}.json")
    except OSError:
        pass


def read_notes() -> dict[str, dict]:
    """{command: note} for every stage with a readable, well-formed note."""
    out = {}
    for stage in STAGES:
        path = journal_dir() / f"{stage}.json"
        try:
            if path.is_file() and path.stat().st_size < 4096:
                n = json.loads(path.read_text())
                if (isinstance(n, dict) and isinstance(n.get("started"), (int, float))
                        and isinstance(n.get("wall_s"), (int, float)) and isinstance(n.get("ok"), bool)):
                    out[stage] = n  # anything else (a hand-edited or truncated note) is no note
        except (OSError, ValueError):
            continue
    return out
