"""Default ROS parameters of the nodes, for any robot (by name or path).

Each node does one job and takes its parameters from YAML, as ros2_controllers do. A node's
defaults, lowest precedence first (params files and -p overrides passed at launch win over
all of them):

1. its code (``PARAMETERS`` in the node's module; the policy node's: ``policy_params.py``);
2. ``config/<node>_<kind>.yaml``: the generic values for the robot's kind (quadruped,
   manipulator, cartpole), shipped next to this module;
3. values derived from the robot itself (`derived_parameters`): its robot.yaml and model
   (the sim bridge publishes at the physics rate, ``1 / physics_dt``, and starts at the
   ``home`` keyframe) and, given a bundle, the bundle's manifest (teleop's action size and
   velocity ranges);
4. ``config/<node>_<robot>.yaml``: only for roboreal's own robots (``roboreal/robots/<name>/``)
   that ship one. A robot anywhere else (a path, ``$ROBOREAL_ROBOT_PATH``, an entry point)
   never picks up these files, whatever its folder is called.

So no robot needs a YAML file of its own: a third-party robot.yaml + MJCF gets working
defaults for every node. Nodes without a robot (the recorder) read ``config/<node>.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from roboreal.config import ConfigError
from roboreal.robots.spec import ROBOTS_DIR, RobotSpec, load_robot

CONFIG_DIR = Path(__file__).resolve().parent / "config"


def _spec(robot: str | Path | RobotSpec) -> RobotSpec:
    return robot if isinstance(robot, RobotSpec) else load_robot(str(robot))


def package_robot(robot: str | Path | RobotSpec) -> str | None:
    """The name of roboreal's own robot (``roboreal/robots/<name>/``) that `robot` (a name,
    a path to a robot.yaml or its folder, or a loaded spec) is; None for any other robot."""
    spec = _spec(robot)
    spec_file = (Path(spec.directory) / "robot.yaml").resolve()
    return spec_file.parent.name if spec_file.parent.parent == ROBOTS_DIR.resolve() else None


def _layers(node: str, robot: str | Path | RobotSpec) -> tuple[Path | None, Path | None]:
    """(the kind file, the package robot's own file) of `node`, each None where there is none.
    The cartpole robot's file is its own, not its kind's (the name and the kind coincide)."""
    spec = _spec(robot)
    name = package_robot(spec)
    own = CONFIG_DIR / f"{node}_{name}.yaml" if name is not None else None
    kind = CONFIG_DIR / f"{node}_{spec.kind}.yaml"
    return (kind if kind.exists() and kind != own else None), (own if own is not None and own.exists() else None)


def config_files(node: str, robot: str | Path | RobotSpec | None = None) -> list[Path]:
    """The shipped params files holding `node`'s defaults for `robot`, lowest precedence
    first: ``config/<node>_<kind>.yaml`` and, for roboreal's own robots,
    ``config/<node>_<name>.yaml`` (those that exist); ``config/<node>.yaml`` without a robot."""
    if robot is None:
        f = CONFIG_DIR / f"{node}.yaml"
        return [f] if f.exists() else []
    return [f for f in _layers(node, robot) if f is not None]


def config_file(node: str, robot: str | Path | RobotSpec | None = None) -> Path | None:
    """The most specific of `config_files` (``config/<node>.yaml`` without a robot), or None."""
    if robot is None:
        return CONFIG_DIR / f"{node}.yaml"
    files = config_files(node, robot)
    return files[-1] if files else None


def read_params_file(path: str | Path) -> dict[str, Any]:
    """The ``ros__parameters`` of a ROS 2 params file's first node entry, nested keys
    flattened to dotted names (``safety: {watchdog: {imu: 0.05}}`` -> ``safety.watchdog.imu``)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    for entry in data.values():
        if isinstance(entry, dict) and "ros__parameters" in entry:
            return _flatten(entry["ros__parameters"] or {})
    return {}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_manifest(bundle: str | Path) -> dict:
    """A bundle's manifest.yaml, read without loading (or verifying) its models."""
    path = Path(bundle) / "manifest.yaml"
    if not path.is_file():
        raise ConfigError("bundle", f"{bundle}: not a bundle (no manifest.yaml)")
    manifest = yaml.safe_load(path.read_text())
    if not isinstance(manifest, dict) or not isinstance(manifest.get("robot"), dict):
        raise ConfigError("bundle", f"{path}: not a bundle manifest")
    return manifest


def physics_dt(spec: RobotSpec) -> float:
    """s, the robot's simulation step: robot.yaml's ``physics_dt``, else the model's timestep."""
    dt = getattr(spec, "physics_dt", None)
    if dt is None:
        from roboreal.robots.model import build_model

        dt = float(build_model(spec).opt.timestep)
    return float(dt)


def derived_parameters(node: str, robot: str | Path | RobotSpec, manifest: dict | None = None) -> dict[str, Any]:
    """Defaults of `node` that follow from the robot (robot.yaml, its model) and, given
    one, a bundle's manifest. Topics are not here: a node's "" topic means robot.yaml's
    ``ros:`` name, resolved by the node itself."""
    spec = _spec(robot)
    out: dict[str, Any] = {}
    if node == "sim_bridge":
        import mujoco

        from roboreal.robots.model import build_model

        model = build_model(spec)
        keys = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_KEY, k) for k in range(model.nkey)}
        out["publish_rate"] = 1.0 / physics_dt(spec)  # one JointState per physics step
        # `home`: the MJCF's keyframe (build_model derives one from robot.yaml's default
        # pose when the MJCF has none); `default`: robot.yaml's default pose.
        out["initial_pose"] = "home" if "home" in keys else "default"
    elif node == "teleop" and manifest is not None:
        action = manifest.get("action") or {}
        if action.get("size"):
            out["action_size"] = int(action["size"])
        ranges = ((manifest.get("inputs") or {}).get("command") or {}).get("ranges")
        if ranges:  # full stick = the largest velocity the policy was trained on, each way
            for key, lo, hi in zip(("max_vx", "max_vy", "max_wz"), ranges["min"], ranges["max"]):
                out[key] = float(max(abs(lo), abs(hi)))
    return out


def default_parameters(node: str, robot: str | Path | RobotSpec | None = None, manifest: dict | None = None,
                       known: set[str] | None = None) -> dict[str, Any]:
    """`node`'s defaults for `robot` (module docstring: kind file < derived < the package
    robot's own file), dotted names. With `known`, a name in a shipped file that is not
    in it is a `ConfigError` naming the file."""

    def read(f: Path | None) -> dict[str, Any]:
        values = read_params_file(f) if f is not None else {}
        unknown = sorted(k for k in values if known is not None and k not in known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown {node} parameter in {f}")
        return values

    if robot is None:
        layers = [read(f) for f in config_files(node)]
    else:
        spec = _spec(robot)
        kind, own = _layers(node, spec)
        layers = [read(kind), derived_parameters(node, spec, manifest), read(own)]
    out: dict[str, Any] = {}
    for values in layers:
        out.update(values)
    return out
