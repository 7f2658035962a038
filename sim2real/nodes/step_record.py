"""The policy node's per-step record (``~/step``) and session description (``~/info``).

The recorder must store the *exact* observation the policy saw, paired with the actions
of the same control step. Separate topics (observation, policy action, executed action,
intervention) cannot be paired exactly by a subscriber: each arrives on its own reader,
and one lost or late message shifts every pairing after it. So the policy node publishes
one message per control step in which the policy ran, holding everything about that step:

``~/step``: ``std_msgs/Float64MultiArray`` (a standard message, recordable and plottable by
any ROS 2 tool). ``layout.dim`` lists the fields as **labelled consecutive segments of**
``data`` (label = field name, size = its length, stride = its offset in ``data``), not
as the shape of a multi-dimensional array. The fields, in order (`step_fields`):

    step              the node's control step counter (consecutive steps differ by 1; a
                      step where the policy did not run, e.g. no goal yet, is not published)
    stamp             the node's clock (ROS time, s) at the step
    reset_count       how often ``~/reset`` was called (0 at start): a change starts a new episode
    mode              the safety chain's mode, index into `MODES`
    intervention      1 while the human has control (``/intervention`` true)
    human_action      1 when the human's (fresh) teleop action was fed to the chain this step;
                      0 while intervening with a stale teleop stream (the chain holds)
    observation       (obs size) the observation vector the policy ran on
    policy_action     (A) the policy's normalized action
    commanded_action  (A) the action fed to the safety chain (the human's while intervening)
    applied_action    (A) the chain's output mapped back to the normalized action space
                      (what the robot was actually told to do); extra dims (gripper) are
                      the commanded ones

``~/audit``: ``std_msgs/Float64MultiArray`` (reliable, depth 100), the same labelled-segment
layout, one message right after every command the node publishes (every mode, including the
safe command on shutdown), for whoever must check or reconstruct what reached the robot (the
DDS fuzz test, a post-mortem). The fields (`audit_fields`):

    seq               1 for the node's first command, +1 per command: the k-th message on the
                      command topic pairs with seq k
    stamp             the node's clock (ROS time, s) when the command was published
    mode              the safety chain's mode, index into `MODES`
    state_age         s between the joint reading the command was computed from being
                      measured (its header stamp) and the step
    gains_commanded   1 if the gains travel with the command (``position_gains``), 0 if the
                      robot applies its fixed robot.yaml gains
    interventions     bitmask over ``~/info``'s ``audit_interventions`` (filter names): which
                      filters changed this command
    command           (N) the positions (or efforts) sent, actuated joints in spec order
    kp, kd            (N) the gains the robot applies with it
    q, dq             (N) the measured state the safety chain used (NaN where a reading was
                      missing, not finite or rejected as implausible)

``~/info``: ``std_msgs/String`` (transient local: a late subscriber gets it), JSON of the
session's provenance: robot and its spec checksum, bundle path and checksums, training
task/algo, control period, observation layout, action size, the step layout and the
resolved names of every topic the node uses (the recorder records these into MCAP).

Nothing here imports rclpy at module level (the layout is plain data; tests and the
recorder share it).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from roboreal.sim2real.safety.types import MODES

__all__ = ["MODES", "SegmentPacker", "StepPacker", "StepFormatError", "step_fields", "unpack_step", "step_from_msg",
           "audit_fields", "audit_from_msg", "info_json", "parse_info"]

# ``mode`` is an index into the safety chain's MODES ("waiting" never appears in a step: the
# policy does not run before the first complete state); ~/info carries the list too.
SCALAR_FIELDS: tuple[str, ...] = ("step", "stamp", "reset_count", "mode", "intervention", "human_action")
INFO_FORMAT = "roboreal-policy-node-info/1"


def step_fields(obs_size: int, action_size: int) -> list[tuple[str, int]]:
    """(name, size) of every segment of a ``~/step`` message, in order."""
    return [(f, 1) for f in SCALAR_FIELDS] + [("observation", int(obs_size)), ("policy_action", int(action_size)),
                                               ("commanded_action", int(action_size)),
                                               ("applied_action", int(action_size))]


AUDIT_SCALARS: tuple[str, ...] = ("seq", "stamp", "mode", "state_age", "gains_commanded", "interventions")


def audit_fields(n_joints: int) -> list[tuple[str, int]]:
    """(name, size) of every segment of an ``~/audit`` message, in order."""
    return [(f, 1) for f in AUDIT_SCALARS] + [(f, int(n_joints)) for f in ("command", "kp", "kd", "q", "dq")]


def audit_from_msg(msg) -> dict[str, Any]:
    """``{field: float | ndarray}`` of an ``~/audit`` std_msgs/Float64MultiArray."""
    dims = msg.layout.dim
    return unpack_segments([d.label for d in dims], [d.size for d in dims], msg.data, AUDIT_SCALARS,
                           [f for f, _ in audit_fields(0)])


class SegmentPacker:
    """Builds Float64MultiArray messages of labelled segments (``fields``: (name, size)) for a
    fixed layout (the dims are made once)."""

    def __init__(self, fields: list[tuple[str, int]]):
        from std_msgs.msg import MultiArrayDimension

        self.fields = list(fields)
        self.size = sum(n for _, n in self.fields)
        self.dims = []
        offset = 0
        for name, n in self.fields:
            self.dims.append(MultiArrayDimension(label=name, size=n, stride=offset))
            offset += n

    def pack(self, values: dict[str, Any]):
        """A Float64MultiArray from ``{field: value}`` (every field of the layout)."""
        from std_msgs.msg import Float64MultiArray, MultiArrayLayout

        data = np.empty(self.size, dtype=np.float64)
        offset = 0
        for name, n in self.fields:
            data[offset:offset + n] = np.asarray(values[name], dtype=np.float64).reshape(-1)[:n] if n > 1 \
                else float(np.asarray(values[name], dtype=np.float64).reshape(-1)[0])
            offset += n
        return Float64MultiArray(layout=MultiArrayLayout(dim=self.dims, data_offset=0), data=data.tolist())


class StepPacker(SegmentPacker):
    """Builds ``~/step`` messages."""

    def __init__(self, obs_size: int, action_size: int):
        super().__init__(step_fields(obs_size, action_size))


class StepFormatError(ValueError):
    """A ``~/step`` message whose layout is not the one the recorder expects (names the cause)."""


def unpack_step(labels: Sequence[str], sizes: Sequence[int], data: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """``{field: float | ndarray}`` from a step message's dim labels/sizes and data."""
    return unpack_segments(labels, sizes, data, SCALAR_FIELDS, list(SCALAR_FIELDS) + [
        "observation", "policy_action", "commanded_action", "applied_action"])


def unpack_segments(labels: Sequence[str], sizes: Sequence[int], data: Sequence[float] | np.ndarray,
                    scalars: Sequence[str], required: Sequence[str]) -> dict[str, Any]:
    """``{field: float | ndarray}`` from labelled segments; `scalars` come out as floats."""
    data = np.asarray(data, dtype=np.float64)
    total = int(sum(sizes))
    if total != data.size:
        raise StepFormatError(f"step message: the segments add up to {total} values, data has {data.size}")
    out: dict[str, Any] = {}
    offset = 0
    for name, n in zip(labels, sizes):
        seg = data[offset:offset + int(n)]
        out[str(name)] = float(seg[0]) if str(name) in scalars else seg.copy()
        offset += int(n)
    missing = [f for f in required if f not in out]
    if missing:
        raise StepFormatError(f"step message: field {missing[0]!r} missing (fields: {list(out)})")
    return out


def step_from_msg(msg) -> dict[str, Any]:
    """`unpack_step` of a std_msgs/Float64MultiArray."""
    dims = msg.layout.dim
    return unpack_step([d.label for d in dims], [d.size for d in dims], msg.data)


def info_json(info: dict) -> str:
    return json.dumps({"format": INFO_FORMAT, **info}, sort_keys=True,
                      default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def parse_info(text: str) -> dict:
    """The ``~/info`` JSON; raises StepFormatError for anything else."""
    try:
        info = json.loads(text)
    except ValueError as e:
        raise StepFormatError(f"~/info is not JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != INFO_FORMAT:
        raise StepFormatError(f"~/info format {info.get('format') if isinstance(info, dict) else None!r} "
                              f"is not {INFO_FORMAT!r}")
    for key in ("robot", "obs_size", "action_size", "control_dt", "step_fields", "modes"):
        if key not in info:
            raise StepFormatError(f"~/info: {key!r} missing")
    return info
