"""The main job at CI size (`./dev demo --quick`): every stage of the loop runs (train,
export, sim2sim, deploy on the perturbed robot with the scripted operator taking over and
the recorder writing the session, DAgger on the takeovers, redeploy) and the summary has
what a user reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from roboreal.data import DatasetReader
from ros_helpers import domain_id, ros_env

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_.*' is deprecated:DeprecationWarning")


def test_quick_demo_runs_the_whole_loop(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "roboreal.demo", "--quick", "--out", str(tmp_path)],
                          env=ros_env(domain_id(125)), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1 and str(folders[0]) in out  # the one output folder, printed at the end
    folder = folders[0]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stages"] == ["train", "deploy", "takeover+record", "dagger", "redeploy"], out
    for heading in ("== 1.", "== 2.", "== 3.", "== 4.", "== 5.", "before / after"):
        assert heading in out
    for session in ("before", "after"):
        s = summary[session]
        assert s["goals_total"] == 3 and len(s["goals"]) == 3
        assert 0 <= s["reached_by_policy"] <= 3 and s["takeovers"] == 3 - s["reached_by_policy"]
        assert s["commands"] > 0 and 0 <= s["changed_by_chain"] <= s["commands"]
        for g in s["goals"]:  # the operator brought every goal it took over closer than the policy left it
            assert g["final_error"] >= 0 and (g["reached_by_policy"] or g["takeover_s"] > 0)
    # the first session's takeovers were recorded as labels, and DAgger trained on them
    with DatasetReader(folder / "session_before.hdf5") as r:
        recorded = r.summary()
    assert recorded["episodes"] >= 3 and recorded["labels"] > 0
    assert summary["dagger"]["robot_labels"] == recorded["labels"] < summary["dagger"]["labels"]
    assert (folder / "session_before.mcap").stat().st_size > 0
    assert (folder / "dagger" / "bundle" / "manifest.yaml").is_file()
    assert (folder / "before_after.png").stat().st_size > 0
    for s2s in (summary["sim2sim_before"], summary["sim2sim_after"], summary["dagger"]["sim_only_sim2sim"]):
        assert set(s2s) == {"nominal_success", "heavy_success"} and all(0 <= v <= 1 for v in s2s.values())
    assert (folder / "dagger_sim_only" / "bundle" / "manifest.yaml").is_file()  # the comparison without takeovers
    assert isinstance(summary["improved"], bool)
