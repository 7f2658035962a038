"""What a run shows a person: progress.csv, learning_curve.png and the live progress bar
(metrics.json, the summary, is written by the runner, which holds its figures)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def write_progress_csv(rows: list[dict], path: Path) -> None:
    """One row per iteration (no rows: no file); the columns are every key any row has, in
    first-seen order (``eval/*`` columns are filled on evaluation iterations only)."""
    if not rows:
        return
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def plot_learning_curve(history: list[dict], path: Path, title: str, stats_window: int, eval_episodes: int) -> None:
    """Return (and success rate, where the task reports it) against env steps, with the
    evaluations as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in history if "train/return" in r]
    has_success = any("train/success_rate" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if has_success else 1, figsize=(10 if has_success else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot([r["step"] for r in rows], [r["train/return"] for r in rows], label="training episodes")
    evals = [r for r in history if "eval/return" in r]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval/return"] for r in evals], "o-", ms=3, color="tab:orange",
                label=f"deterministic evaluation ({eval_episodes} episodes)")
        ax.legend(fontsize=8)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"mean return (last {stats_window} episodes)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if has_success:
        srows = [r for r in rows if "train/success_rate" in r]
        ax = axes[0][1]
        ax.plot([r["step"] for r in srows], [r["train/success_rate"] for r in srows], color="tab:green")
        erows = [r for r in evals if "eval/success_rate" in r]
        if erows:
            ax.plot([r["step"] for r in erows], [r["eval/success_rate"] for r in erows], "o-", ms=3,
                    color="tab:orange")
        ax.set_xlabel("env steps")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def progress_bar(task: str, algo: str) -> Any:
    """A `rich` progress bar over env steps; its task fields ``ret``, ``succ`` and ``sps``
    show the running mean return, success rate and steps/s."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"[bold]{task}[/] {algo}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("steps  return [cyan]{task.fields[ret]}[/]  success [green]{task.fields[succ]}[/]  "
                   "[magenta]{task.fields[sps]}[/] steps/s"),
        TimeElapsedColumn(), transient=False)
