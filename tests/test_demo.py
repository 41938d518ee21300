"""`make demo`, the README's main command, end to end in a few steps: sample data, records, the imported
pretrained checkpoint, config, training with the backbone partly frozen, eval, and export with the parity check.

The commands are the ones `make demo` runs, read with `make -n`, so the test follows the Makefile; each runs in
this process through `cli.main` (no install, no interpreter start per stage). The pretrained import is the
session's (`objectron_import`): the Makefile skips that stage when the import is there, as on a second run."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from conftest import REPO

from tfod_wrap import cli


def demo_commands(**variables: str | Path) -> list[str]:
    """The shell lines of `make demo` with these variables, without its `install` prerequisite."""
    listed = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", "-n", "-o", "install", "demo"]
        + [f"{name}={value}" for name, value in variables.items()],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.replace("\\\n", " ").splitlines()


def run_line(line: str, echoed: list[str]) -> None:
    """One line of the recipe: `test -f FILE || COMMAND`, `echo TEXT` or `.../tfod-wrap ARGS` (in-process)."""
    words = shlex.split(line)
    if words[:2] == ["test", "-f"] and words[3] == "||":
        if Path(words[2]).is_file():
            return
        words = words[4:]
    if words[0] == "echo":
        echoed.append(" ".join(words[1:]))
        return
    assert Path(words[0]).name == "tfod-wrap", f"make demo runs {line!r}, which this test does not know how to run"
    assert cli.main(words[1:]) == 0, line


def test_make_demo_runs_the_whole_path(tmp_path, objectron_import):
    run = tmp_path / "run"
    echoed: list[str] = []
    commands = demo_commands(
        DEMO=run, DEMO_DATA=tmp_path / "sample", PRETRAINED=objectron_import, DEMO_COUNT=20, DEMO_STEPS=2, DEMO_BATCH=2
    )
    for line in commands:
        run_line(line, echoed)
    assert len(commands) >= 7  # sample, tfrecords, import, config, train, eval, export, the closing hint
    assert (tmp_path / "sample-records" / "label_map.pbtxt").read_text().count("item") == 3
    assert json.loads((objectron_import / "report.json").read_text())["fine_tune_checkpoint_type"] == "detection"
    assert 'fine_tune_checkpoint_type: "detection"' in (run / "pipeline.config").read_text()
    assert (run / "ckpt-2.index").is_file() and (run / "eval" / "ckpt-2" / "metrics.json").is_file()
    verified = json.loads((run / "export" / "export.json").read_text())["verify"]["formats"]
    assert all(result["passed"] for result in verified.values()), verified
    assert (run / "export" / "tfjs" / "model.json").is_file()
    assert echoed == [
        f"the detector on your webcam: make serve TFJS={run}/export/tfjs  (then open http://127.0.0.1:8000/)"
    ]
