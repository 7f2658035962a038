"""`benchmarks/standard_tasks.py --merge`: seeds trained on different days (whose run
directories are gone) make one table, and a results file that cannot be merged is refused
with the file named."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def standard_tasks():
    spec = importlib.util.spec_from_file_location("standard_tasks", ROOT / "benchmarks" / "standard_tasks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("standard_tasks", module)
    spec.loader.exec_module(module)
    return module


def row(env: str, seed: int, final: float, *, algo: str = "sac", steps: int = 300_000) -> dict:
    return {"env": env, "algo": algo, "seed": seed, "steps": steps, "final_return": final, "best_eval_return": final + 1,
            "global_step": steps, "wall_time_s": 3600.0 + seed, "steps_per_s": 80.0, "config": "sac.yaml",
            "rates": {}}


def results(path: Path, rows: list[dict], **extra) -> Path:
    path.write_text(json.dumps({"rows": rows, **extra}))
    return path


def test_seeds_from_two_files_make_one_row_with_their_spread(standard_tasks, tmp_path):
    first = results(tmp_path / "seed0.json", [row("Hopper-v5", 0, 3401.2), row("Ant-v5", 0, 1284.6)],
                    commands=["python benchmarks/standard_tasks.py --seeds 1"], note="seed 0, in pairs")
    second = results(tmp_path / "seed1.json", [row("Hopper-v5", 1, 3314.4),
                                               row("Hopper-v5", 2, 1.0, steps=1_000_000),  # another budget
                                               row("Hopper-v5", 3, 2.0, algo="ppo")],  # another algorithm
                     command="python benchmarks/standard_tasks.py --first-seed 1 --seeds 2")
    rows, sources = standard_tasks.merged_rows([first, second], ["Hopper-v5", "Ant-v5"], ["sac"],
                                               {"ppo": 1_000_000, "sac": 300_000})
    assert sorted((r["env"], r["seed"]) for r in rows) == [("Ant-v5", 0), ("Hopper-v5", 0), ("Hopper-v5", 1)]
    assert {r["merged_from"] for r in rows if r["env"] == "Hopper-v5"} == {str(first), str(second)}
    assert sources == [{"file": str(first), "commands": ["python benchmarks/standard_tasks.py --seeds 1"],
                        "note": "seed 0, in pairs"},
                       {"file": str(second), "commands": ["python benchmarks/standard_tasks.py --first-seed 1 --seeds 2"],
                        "note": None}]
    table = standard_tasks.table(rows, ["Hopper-v5", "Ant-v5"], ["sac"])
    hopper = next(line for line in table.splitlines() if line.startswith("| Hopper-v5 | sac |"))
    expected = f"{statistics.fmean([3401.2, 3314.4]):.1f} ± {statistics.stdev([3401.2, 3314.4]):.1f} (n=2)"
    assert expected in hopper
    ant = next(line for line in table.splitlines() if line.startswith("| Ant-v5 | sac |"))
    assert "1284.6 (n=1)" in ant


def test_the_same_run_in_two_files_is_refused_naming_both(standard_tasks, tmp_path):
    a = results(tmp_path / "a.json", [row("Hopper-v5", 1, 3314.4)])
    b = results(tmp_path / "b.json", [row("Hopper-v5", 1, 3000.0)])
    with pytest.raises(SystemExit, match=r"Hopper-v5 sac seed 1 at 300,000 steps is in both .*a\.json and .*b\.json"):
        standard_tasks.merged_rows([a, b], ["Hopper-v5"], ["sac"], {"ppo": 1_000_000, "sac": 300_000})


def test_a_file_that_is_not_a_results_file_is_refused_by_name(standard_tasks, tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"runs": []}))
    with pytest.raises(SystemExit, match=r"--merge .*notes\.json: not a standard_tasks results file"):
        standard_tasks.merged_rows([bad], ["Hopper-v5"], ["sac"], {"ppo": 1_000_000, "sac": 300_000})


def test_merging_a_merged_file_keeps_where_each_row_came_from(standard_tasks, tmp_path):
    budgets = {"ppo": 1_000_000, "sac": 300_000}
    seed0 = results(tmp_path / "seed0.json", [row("Hopper-v5", 0, 3401.2)], note="seed 0")
    seed1 = results(tmp_path / "seed1.json", [row("Hopper-v5", 1, 3314.4)], note="seed 1")
    rows, sources = standard_tasks.merged_rows([seed0, seed1], ["Hopper-v5"], ["sac"], budgets)
    table_file = results(tmp_path / "table.json", rows, command="python benchmarks/standard_tasks.py --merge ...",
                         merged=sources)  # what main writes
    seed2 = results(tmp_path / "seed2.json", [row("Hopper-v5", 2, 3100.0)], note="seed 2")
    rows, sources = standard_tasks.merged_rows([table_file, seed2], ["Hopper-v5"], ["sac"], budgets)
    assert {r["seed"]: r["merged_from"] for r in rows} == {0: str(seed0), 1: str(seed1), 2: str(seed2)}
    assert [(s["file"], s["note"]) for s in sources] == [(str(seed0), "seed 0"), (str(seed1), "seed 1"),
                                                         (str(table_file), None), (str(seed2), "seed 2")]
