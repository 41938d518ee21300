"""`make demo`, the README's main command, end to end in a few steps: sample data, records, the imported
pretrained checkpoint, config, training with the backbone frozen, eval, and export with the parity check."""

from __future__ import annotations

import json
import subprocess

from conftest import REPO


def test_make_demo_runs_the_whole_path(tmp_path):
    done = subprocess.run(
        [
            "make",
            "-C",
            str(REPO),
            "demo",
            f"DEMO={tmp_path / 'run'}",
            f"DEMO_DATA={tmp_path / 'sample'}",
            f"PRETRAINED={tmp_path / 'pretrained'}",
            "DEMO_COUNT=20",
            "DEMO_STEPS=2",
            "DEMO_BATCH=2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "run"
    assert (tmp_path / "sample-records" / "label_map.pbtxt").read_text().count("item") == 3
    assert json.loads((tmp_path / "pretrained" / "report.json").read_text())["fine_tune_checkpoint_type"] == "detection"
    assert 'fine_tune_checkpoint_type: "detection"' in (run / "pipeline.config").read_text()
    assert (run / "ckpt-2.index").is_file() and (run / "eval" / "ckpt-2" / "metrics.json").is_file()
    verified = json.loads((run / "export" / "export.json").read_text())["verify"]["formats"]
    assert all(result["passed"] for result in verified.values()), verified
    assert f"make serve TFJS={run}/export/tfjs" in done.stdout
