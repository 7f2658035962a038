"""Policy bundles: a trained policy as self-describing files a deployment can trust.

A bundle directory holds:

- ``policy.onnx``  the deterministic actor, observation normalization baked in (ONNX Runtime)
- ``policy.pt``    the same as TorchScript
- ``manifest.yaml`` everything a deployment needs: robot name, spec checksum and where to
  find the robot again (``robot.source``: its name, or the absolute path of its robot.yaml
  for a robot the name does not find; `manifest_robot`), joint order, default pose, action
  mapping, PD gains, control period and decimation, each observation term in order (size,
  scale, clip, source), command/goal inputs, safety limits, the training run, versions, and
  the sha256 of each model file.

`load_bundle` verifies checksums and the format, optionally checks the bundle against
the robot it is pointed at, and returns a `BundlePolicy` whose single `act(obs)` every
deployment path (sim2sim, the ROS 2 policy node) uses. Any mismatch is refused with a
`BundleError` that names it: the commonest sim-to-real failure is a policy run on a
robot whose joint order, observation layout or spec differs from the one it was trained on.
"""

from __future__ import annotations

import hashlib
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml

import roboreal
from roboreal.config import ConfigError, to_dict
from roboreal.robots.spec import RobotSpec, load_robot, robot_reference
from roboreal.control.action import ActionMapping

FORMAT = "roboreal-bundle/1"
MODEL_FILES = ("policy.onnx", "policy.pt")


class BundleError(ValueError):
    """A bundle is damaged, from an incompatible version, or does not match the robot."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# What each observation source needs from the robot (a missing sensor refuses the bundle).
def _source_requirement(source: str, robot: RobotSpec) -> str | None:
    """None if `robot` provides `source`, else a description of what is missing."""
    kind = source.split(".")[0].split("[")[0]
    if kind in ("joint_states", "policy"):
        return None
    if kind == "imu":
        return None if (robot.ros.imu and robot.sites.imu) else "an IMU (ros.imu topic and sites.imu)"
    if kind == "cmd_vel":
        return None if robot.ros.cmd_vel else "a velocity command topic (ros.cmd_vel)"
    if kind == "goal_pose":
        return None if robot.ros.goal else "a goal topic (ros.goal)"
    if kind == "forward_kinematics":
        return None if robot.sites.end_effector else "an end-effector site (sites.end_effector)"
    if kind == "object_pose":
        return None if robot.ros.object_pose else "an object pose topic (ros.object_pose)"
    if kind == "privileged":
        return "privileged simulator state, which no real robot provides"
    return f"an unknown source {source!r}"


def build_manifest(env, policy_info: dict, run_dir: str | Path) -> dict:
    """The manifest of a policy trained on `env` (a MujocoTaskEnv)."""
    robot: RobotSpec = env.robot
    layout = env.observation_layout(policy_info["obs_group"])
    mapping: ActionMapping = env.action_mapping
    action = {**mapping.to_dict(), "size": int(policy_info["action_size"]),
              "space": policy_info["action_type"]}
    if policy_info["action_type"] == "discrete":
        # the normalized continuous action each discrete index stands for
        action["discrete_values"] = env.discrete_action_values().tolist()
    elif policy_info["action_size"] > mapping.size:
        action["extra"] = ["gripper"] if robot.gripper else [f"extra_{i}" for i in
                                                              range(policy_info["action_size"] - mapping.size)]
    # What a deployment feeds the policy besides the robot's sensors, with the frames and
    # ranges the task trained on (the policy node reads them from here, not from its YAML).
    inputs = {}
    sources = {t["source"].split(".")[0] for t in layout}
    task_inputs = env.deployment_inputs() if hasattr(env, "deployment_inputs") else {}
    if "cmd_vel" in sources:
        inputs["command"] = {"type": "geometry_msgs/Twist", "topic": robot.ros.cmd_vel,
                             **task_inputs.get("command", {})}
    if "goal_pose" in sources:
        inputs["goal"] = {"type": "geometry_msgs/PoseStamped", "topic": robot.ros.goal, **task_inputs.get("goal", {})}
    if "object_pose" in sources:
        goal = task_inputs.get("goal", {})
        inputs["object"] = {"type": "geometry_msgs/PoseStamped", "topic": robot.ros.object_pose,
                            **{k: goal[k] for k in ("frame", "frame_ids") if k in goal}}
    act = robot.actuated_joints
    return {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "robot": {"name": robot.name, "spec_checksum": robot.checksum, "kind": robot.kind,
                  "control_mode": robot.control_mode, "source": robot_reference(robot)},
        "joints": [j.name for j in act],
        "default_pose": [float(j.default) for j in act],
        "pd_gains": {"kp": [j.kp for j in act], "kd": [j.kd for j in act]},
        "action": action,
        "control": {"dt": float(env.control_dt), "physics_dt": float(env.physics_dt),
                    "decimation": int(env.cfg.decimation)},
        "observation": {"group": policy_info["obs_group"], "size": int(policy_info["obs_size"]),
                        "terms": [{k: t[k] for k in ("name", "size", "scale", "clip", "source", "offset", "wrap",
                                                     "relative_to")} for t in layout]},
        "inputs": inputs,
        "safety": to_dict(robot.safety),
        "training": {"task": policy_info["task"], "algo": policy_info["algo"], "run_dir": str(run_dir),
                     "checkpoint": policy_info["checkpoint"], "step": policy_info["step"],
                     "env_overrides": policy_info.get("env") or {},
                     # the runner's deterministic evaluation of this policy during training, when it has one
                     **({"eval": _plain(policy_info["eval"])} if policy_info.get("eval") else {})},
        "versions": {"roboreal": roboreal.__version__, "torch": str(torch.__version__), "python": platform.python_version(),
                     **_optional_versions()},
    }


def _plain(figures: dict) -> dict:
    """Evaluation figures as YAML-safe plain numbers."""
    return {k: (float(v) if isinstance(v, float) else v) for k, v in figures.items()}


def _optional_versions() -> dict:
    out = {}
    for mod in ("onnx", "onnxruntime", "mujoco"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except ImportError:
            pass
    return out


def export_bundle(run_dir: str | Path, out: str | Path | None = None, which: str = "best") -> Path:
    """Write the bundle of a training run (best checkpoint by default: the best evaluated policy,
    else last.pt); returns its directory. The manifest's ``training`` records the checkpoint
    file, its step and (``training.eval``) its evaluated figures when it has them."""
    from roboreal.agents.policy import load_policy
    from roboreal.envs import make

    run_dir = Path(run_dir)
    module, info = load_policy(run_dir, which)
    if not info.get("task") or info["task"].startswith("gym:"):
        raise BundleError(f"{run_dir}: only roboreal robot tasks export to a deployable bundle (task {info['task']!r})")
    env = make(info["task"], num_envs=1, **(info.get("env") or {}))
    manifest = build_manifest(env, info, run_dir)
    env.close()
    out = Path(out) if out is not None else run_dir / "bundle"
    out.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, info["obs_size"])
    module = module.cpu().eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, example)
    traced.save(str(out / "policy.pt"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based ONNX exporter warns it is legacy
        torch.onnx.export(module, (example,), str(out / "policy.onnx"), dynamo=False, input_names=["obs"],
                          output_names=["action"], dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
                          opset_version=17)
    manifest["files"] = {name: {"sha256": sha256(out / name)} for name in MODEL_FILES}
    with open(out / "manifest.yaml", "w") as f:
        yaml.safe_dump(manifest, f, sort_keys=False)
    return out


@dataclass
class BundlePolicy:
    """A loaded bundle: `act(obs)` maps a raw observation vector to the policy's action."""

    path: Path
    manifest: dict
    runtime: Literal["onnx", "torchscript"]
    _run: Any

    @property
    def obs_size(self) -> int:
        return int(self.manifest["observation"]["size"])

    @property
    def action_size(self) -> int:
        return int(self.manifest["action"]["size"])

    @property
    def discrete(self) -> bool:
        return self.manifest["action"]["space"] == "discrete"

    @property
    def action_mapping(self) -> ActionMapping:
        return ActionMapping.from_dict(self.manifest["action"])

    def normalized_action(self, obs: np.ndarray) -> np.ndarray:
        """The action as the safety chain takes it: continuous, normalized, (A,) for one observation.

        Discrete policies map their index through the manifest's ``discrete_values``.
        """
        a = self.act(obs)
        if self.discrete:
            return np.asarray(self.manifest["action"]["discrete_values"], dtype=np.float64)[int(a)]
        return np.asarray(a, dtype=np.float64)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """(k,) or (B, k) float observation -> (A,) / (B, A) action (discrete: int index)."""
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        x = x.reshape(-1, self.obs_size)
        y = self._run(x)
        return y[0] if single else y


def _onnx_runner(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # one control loop, latency over throughput
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"obs": x})[0]

    return run


def _torchscript_runner(path: Path):
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


def manifest_robot(manifest: dict, override: str | None = None) -> str:
    """The robot reference to load a bundle's robot with: `override` if given (a bundle moved
    to another machine), else the manifest's ``robot.source``, else (older manifests) its name.
    Whatever it finds is still checked against the manifest (`check_robot`)."""
    robot = manifest.get("robot") or {}
    return str(override or robot.get("source") or robot["name"])


def load_manifest_robot(manifest: dict, override: str | None = None) -> RobotSpec:
    """The bundle's robot, loaded from `manifest_robot(manifest, override)`; not found where
    the manifest says (a bundle moved to another machine), the error says to pass its place.
    Check it with `check_robot` (or `load_bundle(..., robot=spec)`)."""
    ref = manifest_robot(manifest, override)
    try:
        return load_robot(ref)
    except ConfigError as e:
        if override:
            raise
        raise ConfigError("robot", f"the bundle's robot {manifest['robot']['name']!r} is not found by its "
                          f"manifest's robot.source {ref!r} ({e}); pass --robot NAME|PATH: where it is on this "
                          f"machine") from None


def check_robot(manifest: dict, robot: RobotSpec) -> None:
    """Refuse a bundle that does not match `robot`, naming the mismatch."""
    name = manifest["robot"]["name"]
    if name != robot.name:
        source = manifest["robot"].get("source")
        where = f" (the bundle's robot: {source})" if source and source != name else ""
        raise BundleError(f"bundle is for robot {name!r}, not {robot.name!r}{where}")
    want, have = manifest["joints"], robot.actuated_names
    if want != have:
        for i, (a, b) in enumerate(zip(want, have)):
            if a != b:
                raise BundleError(f"joint order differs at index {i}: bundle has {a!r}, robot {robot.name} has {b!r}")
        raise BundleError(f"joint count differs: bundle has {len(want)} joints, robot {robot.name} has {len(have)}")
    for term in manifest["observation"]["terms"]:
        missing = _source_requirement(term["source"], robot)
        if missing:
            raise BundleError(f"observation term {term['name']!r} needs {missing}; robot {robot.name} has none")
    _check_values(manifest, robot)
    if manifest["robot"]["spec_checksum"] != robot.checksum:
        raise BundleError(f"robot spec checksum changed: the bundle was trained against "
                          f"{manifest['robot']['spec_checksum'][:12]}, robot {robot.name}'s robot.yaml/model is now "
                          f"{robot.checksum[:12]} (re-export or re-train after changing the robot spec)")


def _differs(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return not math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a != b


def _check_values(manifest: dict, robot: RobotSpec) -> None:
    """Refuse a bundle whose recorded gains, default pose or safety limits differ from
    `robot`'s robot.yaml, naming the field, the joint and both values."""
    act = robot.actuated_joints
    gains = manifest.get("pd_gains") or {}
    for key in ("kp", "kd"):
        recorded = gains.get(key)
        if recorded is None:
            continue
        for j, trained in zip(act, recorded):
            have = getattr(j, key)
            if (trained is None) != (have is None) or (have is not None and _differs(trained, have)):
                raise BundleError(f"pd_gains.{key} of {j.name}: the bundle was trained with {trained}, robot "
                                  f"{robot.name}'s robot.yaml has {have} (re-train, or export against this robot.yaml)")
    for j, trained in zip(act, manifest.get("default_pose") or []):
        if _differs(trained, j.default):
            raise BundleError(f"default_pose of {j.name}: the bundle has {trained}, robot {robot.name}'s robot.yaml "
                              f"has {j.default}")
    recorded = manifest.get("safety")
    if recorded is not None:
        have = to_dict(robot.safety)

        def walk(a: dict, b: dict, prefix: str) -> None:
            for k in sorted(set(a) | set(b)):
                x, y = a.get(k), b.get(k)
                if isinstance(x, dict) and isinstance(y, dict):
                    walk(x, y, f"{prefix}{k}.")
                elif _differs(x, y):
                    raise BundleError(f"safety.{prefix}{k}: the bundle was exported with {x}, robot {robot.name}'s "
                                      f"robot.yaml has {y} (re-export against this robot.yaml)")

        walk(recorded, have, "")


def check_layout(manifest: dict, expected: list[dict]) -> None:
    """Refuse a bundle whose observation layout differs from `expected` (name, size, order)."""
    terms = manifest["observation"]["terms"]
    for i, (a, b) in enumerate(zip(terms, expected)):
        if a["name"] != b["name"] or int(a["size"]) != int(b["size"]):
            raise BundleError(f"observation term {i} differs: bundle has {a['name']} ({a['size']}), "
                              f"expected {b['name']} ({b['size']})")
        # wrap / relative_to: absent in manifests written before they were recorded (false / none)
        for key, absent in (("scale", None), ("clip", None), ("offset", None), ("wrap", False), ("relative_to", None)):
            if a.get(key, absent) != b.get(key, absent):
                raise BundleError(f"observation term {i} ({a['name']}) {key} differs: bundle {a.get(key, absent)}, "
                                  f"expected {b.get(key, absent)}")
    if len(terms) != len(expected):
        raise BundleError(f"observation has {len(terms)} terms in the bundle, {len(expected)} expected")


def load_bundle(path: str | Path, robot: str | RobotSpec | None = None,
                runtime: Literal["onnx", "torchscript"] = "onnx",
                expected_layout: list[dict] | None = None) -> BundlePolicy:
    """Load and verify a bundle; with `robot`, also refuse it unless it matches that robot."""
    path = Path(path)
    manifest_file = path / "manifest.yaml"
    if not manifest_file.is_file():
        raise BundleError(f"{path}: not a bundle (no manifest.yaml)")
    with open(manifest_file) as f:
        manifest = yaml.safe_load(f)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_file}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}"
                          f" is not {FORMAT!r}")
    files = manifest.get("files") or {}
    for name in MODEL_FILES:
        if name not in files:
            raise BundleError(f"{manifest_file}: files.{name} missing")
        f = path / name
        if not f.is_file():
            raise BundleError(f"{path}: {name} missing")
        if sha256(f) != files[name]["sha256"]:
            raise BundleError(f"{name}: sha256 does not match the manifest (the file was modified or damaged)")
    major = str(manifest["versions"]["roboreal"]).split(".")[0]
    if major != roboreal.__version__.split(".")[0]:
        raise BundleError(f"bundle made by roboreal {manifest['versions']['roboreal']}, this is {roboreal.__version__}")
    terms_size = sum(int(t["size"]) for t in manifest["observation"]["terms"])
    if terms_size != int(manifest["observation"]["size"]):
        raise BundleError(f"observation terms add up to {terms_size}, the model reads {manifest['observation']['size']}")
    if robot is not None:
        check_robot(manifest, load_robot(robot) if isinstance(robot, str) else robot)
    if expected_layout is not None:
        check_layout(manifest, expected_layout)
    if runtime == "onnx":
        run = _onnx_runner(path / "policy.onnx")
    elif runtime == "torchscript":
        run = _torchscript_runner(path / "policy.pt")
    else:
        raise BundleError(f"runtime must be 'onnx' or 'torchscript', not {runtime!r}")
    return BundlePolicy(path, manifest, runtime, run)
