"""Ray's and MLflow's chatter to a log file, the training's own lines to the terminal.

A Ray Train run prints worker-group start-up, placement and actor warnings (some from C++, on the
process's file descriptors, which no Python logging setting reaches), and MLflow its monitor
notices; the training's progress lines were lost among them. Inside `chatter_to_log`, file
descriptors 1 and 2 feed a pipe; every line lands in the log, and the lines the training prints
on purpose (progress and validation, "[epoch ..."; Ray prefixes forwarded worker lines with
"(RayTrainWorker pid=...)", which is cut) are also passed to the terminal — on a terminal the
step lines as one progress bar. Ray's own processes,
started inside, keep writing into the log after the block ends, until they exit."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from pathlib import Path
from typing import Iterator

# what the training loop prints for people (models/train_loop.py)
KEEP = re.compile(rb"\[epoch \d+/\d+\].*")
MAX_LINE = 64 * 1024  # a longer line is passed on in pieces, never read whole


STEP = re.compile(r"\[epoch (\d+)/(\d+)\] step (\d+)/(\d+) ?(.*)")


class _Terminal:
    """Where the kept lines go. On a terminal, the step lines move one progress bar and the rest
    (validation) print above it; elsewhere (a log file, Dagster's captured output) every kept
    line is printed as it comes, so nothing depends on redrawing."""

    def __init__(self, fd: int):
        from rich.console import Console

        self.fd = fd
        self.console = Console(file=os.fdopen(os.dup(fd), "w", buffering=1), soft_wrap=True)
        self.bar = self.task = None
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # redirect_*: rich would otherwise swap sys.stdout/sys.stderr for its own proxies
            # while the bar runs, and Ray's forwarded output would bypass the log
            self.bar = Progress(TextColumn("training {task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=self.console, redirect_stdout=False,
                                redirect_stderr=False)

    def line(self, text: str) -> None:
        m = STEP.match(text)
        if self.bar is None or m is None:
            self.console.print(text, markup=False, highlight=False)
            return
        epoch, epochs, step, steps, rest = m.groups()
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("", total=int(steps))
        loss = rest.split(" (")[0]  # "loss 2.8575"; the parts of the loss are in the log and MLflow
        self.bar.update(self.task, completed=int(step), total=int(steps), description=f"epoch {epoch}/{epochs} {loss}")

    def stop_bar(self) -> None:
        """The bar ends with the training (later lines, if any, print plainly)."""
        if self.task is not None:
            self.bar.stop()
        self.bar = self.task = None

    def close(self) -> None:
        self.stop_bar()
        self.console.file.close()


def _pump(src: int, log, terminal: "_Terminal", keep: re.Pattern) -> None:
    with os.fdopen(src, "rb") as pipe:
        while True:
            try:
                line = pipe.readline(MAX_LINE)  # bounded: no line is read whole without a limit
            except OSError:
                return
            if not line:
                return
            try:
                log.write(line)
                log.flush()
            except (OSError, ValueError):  # log closed or disk full: the terminal still gets its lines
                pass
            m = keep.search(line)
            if m:
                terminal.line(m.group(0).rstrip(b"\r\n").decode("utf-8", "replace"))


@contextlib.contextmanager
def chatter_to_log(log_path: str | Path | None, keep: re.Pattern = KEEP) -> Iterator[Path | None]:
    """Yields the log's path (None: no redirection, e.g. when the caller has no log folder)."""
    if log_path is None:
        yield None
        return
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    read_end, write_end = os.pipe()
    log = open(path, "ab")
    terminal = _Terminal(saved_out)
    pump = threading.Thread(target=_pump, args=(read_end, log, terminal, keep), daemon=True,
                            name="chatter-to-log")
    pump.start()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    # Python-level writes too, whatever sys.stdout was (a test's capture, a notebook's stream)
    streams = sys.stdout, sys.stderr
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    failed = False
    try:
        yield path
    except BaseException:
        failed = True
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        # Ray's processes hold the pipe's write end while they live; the pump follows them
        pump.join(timeout=2)
        terminal.stop_bar()
        os.close(saved_err)
        if failed:
            print(f"the run's full output (Ray, MLflow, worker tracebacks): {path}", file=sys.stderr)
        if not pump.is_alive():
            terminal.close()
            log.close()
            os.close(saved_out)
