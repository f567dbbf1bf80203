"""Ray's and MLflow's chatter to the run's log file, the training's progress lines to the terminal
(models/chatter.py), at the file-descriptor level where C++ logging writes too."""

import os
import subprocess
import sys

import pytest

from models.chatter import chatter_to_log


def test_progress_reaches_the_terminal_and_everything_the_log(tmp_path, capfd):
    log = tmp_path / "logs" / "run.log"
    with chatter_to_log(log) as path:
        assert path == log
        os.write(2, b"[2026-12-04 02:52:46 E 27523] core_worker.cc:2465: Actor ... max_restarts > 0\n")
        print("Requesting resources: {'CPU': 1} * 2", flush=True)
        print("(RayTrainWorker pid=27630) [epoch 1/8] step 20/912 loss 5.6372", flush=True)
        # a child process writes to the same descriptors (as Ray's processes do)
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('INFO mlflow: monitoring\\n')"],
                       check=True, timeout=60)
    out, err = capfd.readouterr()
    assert out == "[epoch 1/8] step 20/912 loss 5.6372\n" and err == ""
    text = log.read_text()
    for line in ("core_worker.cc", "Requesting resources", "(RayTrainWorker pid=27630) [epoch 1/8]",
                 "INFO mlflow: monitoring"):
        assert line in text, line
    # the descriptors are back: output after the block reaches the terminal again
    os.write(1, b"after\n")
    assert capfd.readouterr().out == "after\n"


def test_a_failure_names_the_log_and_restores_the_descriptors(tmp_path, capfd):
    log = tmp_path / "run.log"
    with pytest.raises(RuntimeError, match="worker died"):
        with chatter_to_log(log):
            os.write(2, b"Traceback (most recent call last): ...\n")
            raise RuntimeError("worker died")
    err = capfd.readouterr().err
    assert str(log) in err and "Traceback" not in err
    assert "Traceback" in log.read_text()


def test_no_log_file_changes_nothing(capfd):
    with chatter_to_log(None) as path:
        assert path is None
        print("Requesting resources", flush=True)
    assert capfd.readouterr().out == "Requesting resources\n"


def test_on_a_terminal_the_step_lines_move_one_bar():
    """Under a pseudo-terminal the step lines become a progress bar, validation lines print."""
    import pty

    from models.chatter import _Terminal

    master, slave = pty.openpty()
    term = _Terminal(slave)
    assert term.bar is not None
    streams = sys.stdout, sys.stderr
    term.line("[epoch 1/2] step 3/6 loss 14.2789")
    assert (sys.stdout, sys.stderr) == streams  # the bar leaves the process's streams alone
    term.line("[epoch 1/2] validation: val_change_f1 0.1234")
    term.line("[epoch 2/2] step 6/6 loss 13.0000 (l_gen 5.7535, l_con 0.1400, l_find 8.1921)")
    term.close()
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    text = out.decode("utf-8", "replace")
    assert "training epoch 2/2 loss 13.0000" in text and "6/6" in text and "l_gen" not in text
    assert "[epoch 1/2] validation: val_change_f1 0.1234" in text
    assert "[epoch 1/2] step 3/6" not in text  # a step line is the bar, not a printed line
