"""Labels: which steps of a dataset an imitation learner may learn from.

Which steps train a policy (`label_source`, decided once per *file*, so both splits and
``roboreal data info`` use the same rule; `step_labels` applies it to an episode):

* ``"expert"``: the steps with a finite ``expert_actions`` row (a demonstration's every
  step, a DAgger rollout's every visited state, an HG-DAgger session's takeover steps).
  What `labels="auto"` picks whenever the file holds any such row.
* ``"demonstrated"``: `labels="auto"` in a file without a single expert label (e.g. a
  teleoperation dataset made elsewhere, which stores only ``actions``): the executed
  action at the steps where *no policy ran* (``policy_actions`` NaN), i.e. the
  demonstrator's own. A step a policy drove is never a label: a robot session without
  takeovers has none, and is refused by `load_transitions`, not trained on.
* ``"executed"`` (only when asked for): the executed action at every step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from roboreal.data.hdf5_format import DatasetError

LABEL_MODES = ("auto", "expert", "executed")  # what a user asks for (BCConfig.labels)
LABEL_SOURCES = ("expert", "demonstrated", "executed")  # what a file's labels are, once decided

_LABEL_SOURCE_TEXT = {
    "expert": "finite expert_actions rows (an expert's or human's label, e.g. at an HG-DAgger takeover)",
    "demonstrated": "executed actions of steps no policy ran (the file has no expert_actions label at all)",
    "executed": "the executed action of every step",
}


def describe_label_source(source: str) -> str:
    """One line saying which steps count as labels under `source` (for CLI output and errors)."""
    return _LABEL_SOURCE_TEXT[source]


def label_source(expert_actions: Iterable[np.ndarray], labels: str = "auto") -> str:
    """Decide, once for a whole file, where its labels come from (one of `LABEL_SOURCES`).

    `expert_actions`: the file's episodes' ``expert_actions`` arrays (all of them: deciding
    per split is how a validation split without takeovers once turned the policy's own
    actions into "expert" labels). ``labels="auto"`` gives ``"expert"`` when any row is
    finite, else ``"demonstrated"``; ``"expert"``/``"executed"`` are taken as asked.
    """
    if labels not in LABEL_MODES and labels not in LABEL_SOURCES:
        raise DatasetError(f"labels must be one of {', '.join(repr(m) for m in LABEL_MODES)}, not {labels!r}")
    if labels != "auto":
        return labels
    any_expert = any(np.isfinite(np.asarray(e)).all(axis=-1).any() for e in expert_actions)
    return "expert" if any_expert else "demonstrated"


def step_labels(actions: np.ndarray, expert_actions: np.ndarray, policy_actions: np.ndarray,
                source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (T, A), labelled (T,) bool)`` of one episode under a decided `source`.

    Unlabelled rows of ``labels`` are NaN, so a label can never be read by mistake.
    ``"demonstrated"`` labels a step only where no policy proposed an action: an executed
    action a policy chose is the policy's own, never an expert's.
    """
    actions = np.asarray(actions, dtype=np.float32)
    if source == "expert":
        labels = np.asarray(expert_actions, dtype=np.float32)
        labelled = np.isfinite(labels).all(axis=-1)
    elif source == "demonstrated":
        no_policy = ~np.isfinite(np.asarray(policy_actions, dtype=np.float32)).any(axis=-1)
        labelled = no_policy & np.isfinite(actions).all(axis=-1)
        labels = actions
    elif source == "executed":
        labels, labelled = actions, np.isfinite(actions).all(axis=-1)
    else:
        raise DatasetError(f"label source must be one of {LABEL_SOURCES}, not {source!r}")
    labels = np.where(labelled[:, None], labels, np.nan).astype(np.float32)
    return labels, labelled


def no_labels_reason(path: str | Path, source: str, episodes: int, steps: int) -> str:
    """Why a file gives no labelled step (what was looked for, where), for a `DatasetError`."""
    where = f"{path}: no labelled step in its {episodes} episodes ({steps} steps)"
    if source == "demonstrated":
        return (f"{where}: no finite expert_actions row (no expert or human labelled a step: a session without "
                f"takeovers), and a policy proposed the action at every step (policy_actions recorded), so the "
                f"executed actions are the policy's own, which are never labels; record a session in which a human "
                f"takes over, or add demonstrations")
    if source == "expert":
        return f"{where}: looked for finite expert_actions rows (an expert's or human's label), every one is NaN"
    return f"{where}: looked for {describe_label_source(source)}"
