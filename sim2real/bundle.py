"""Export a training run as a policy bundle (`roboreal.policy_bundle` is the format and loader).

`export_bundle` writes ``policy.onnx``, ``policy.pt`` (TorchScript) and ``manifest.yaml``;
`build_manifest` describes the observation layout, action mapping, control period, robot
spec, camera inputs and safety limits the policy was trained with, so a deployment can
refuse a mismatch. `write_bundle` is the part after loading the checkpoint: any module with
the deployable call convention (``policy(obs)``, or ``policy(obs, *images)`` for a policy
that sees cameras) and the env it acts in.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch
import yaml

import roboreal
from roboreal.config import to_dict
from roboreal.robots.spec import RobotSpec, robot_reference
from roboreal.control.action import ActionMapping
from roboreal.policy_bundle import FORMAT, MODEL_FILES, BundleError, sha256
from roboreal.robots.cameras import CameraSpec

IMAGE_SCALE = 1.0 / 255.0  # uint8 -> [0, 1], done inside the model (agents' image encoders)


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
    images = image_entries(env, list(policy_info.get("image_inputs") or []), policy_info.get("image_shapes") or {})
    manifest = {
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
                                                     "relative_to", "history")} for t in layout]},
        "inputs": inputs,
        **({"images": images} if images else {}),  # camera inputs, in the model's call order
        "safety": to_dict(robot.safety),
        "training": {"task": policy_info["task"], "algo": policy_info["algo"], "run_dir": str(run_dir),
                     "checkpoint": policy_info["checkpoint"], "step": policy_info["step"],
                     "env_overrides": policy_info.get("env") or {},
                     # the runner's deterministic evaluation of this policy during training, when it has one
                     **({"eval": _plain(policy_info["eval"])} if policy_info.get("eval") else {})},
        "versions": {"roboreal": roboreal.__version__, "torch": str(torch.__version__), "python": platform.python_version(),
                     **_optional_versions()},
    }
    return manifest


def image_entries(env, cameras: list[str], trained_shapes: dict | None = None) -> list[dict]:
    """The manifest's ``images``: one entry per camera the policy takes, in its call order,
    with what the camera must deliver and where the training camera sat (``mount``, read
    from the compiled model: body, pos and quat in that body's frame, fovy in degrees).
    `trained_shapes` ({camera: (C, H, W)}, from the checkpoint) must be what `env` renders."""
    if not cameras:
        return []
    import mujoco

    shapes = dict(getattr(env.spec, "image_shapes", {}) or {})
    declared: dict[str, CameraSpec] = {c.name: c for c in (*env.robot.cameras, *getattr(env.cfg, "cameras", ()))}
    model = env.model
    out = []
    for name in cameras:
        if name not in shapes or name not in declared:
            raise BundleError(f"the policy takes camera {name!r}; the task renders {sorted(shapes) or 'no images'}")
        if name == "obs":
            raise BundleError("a camera named 'obs' clashes with the observation input's name")
        cam = declared[name]
        c, h, w = shapes[name]
        trained = (trained_shapes or {}).get(name)
        if trained is not None and tuple(int(v) for v in trained) != (c, h, w):
            raise BundleError(f"camera {name}: the policy was trained on {tuple(trained)} (C, H, W) images, the task "
                              f"now renders {(c, h, w)} (export with the training run's env overrides)")
        cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        body = int(model.cam_bodyid[cid])
        entry = {"camera": name, "topic": cam.image_topic, "width": int(w), "height": int(h), "channels": int(c),
                 "encoding": "rgb8", "dtype": "uint8", "layout": "CHW", "scale": IMAGE_SCALE, "scaled_in_model": True,
                 "crop": None, "depth": None,
                 "mount": {"body": None if body == 0 else mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body),
                           "pos": [float(v) for v in model.cam_pos[cid]],
                           "quat": [float(v) for v in model.cam_quat[cid]],
                           "fovy": float(model.cam_fovy[cid])}}
        if cam.depth:  # REP 118 depth beside the colour image (`sim2real.nodes.images.camera_topics`)
            ns = cam.image_topic.rsplit("/", 1)[0]
            entry["depth"] = {"topic": f"{ns}/depth/image_raw", "encoding": "16UC1", "unit": "mm",
                              "range": [float(v) for v in cam.depth_range], "channel": 3}
        markers = image_markers(env)
        if markers:
            entry["markers"] = markers
        out.append(entry)
    return out


def image_markers(env) -> list[dict]:
    """The task markers the images show (``images[].markers``): mocap bodies the task's renderer
    draws (not in ``render.hide_bodies``), with the look the policy was trained on (sphere
    radius, rgba; `envs.sim.camera_renderer.style_marker` redraws it) and what places them:
    ``follows: goal`` for the goal marker (the sim bridge draws it at the goal it hears on
    ``topic``), null for a marker that stays where the model puts it."""
    import mujoco

    m = env.model
    render = getattr(env.cfg, "render", None)
    hidden = set(getattr(render, "hide_bodies", ()) or ())
    robot: RobotSpec = env.robot
    out = []
    for bid in range(m.nbody):
        name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, bid)
        geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] == bid]
        if m.body_mocapid[bid] < 0 or name in hidden or not geoms:
            continue
        g = geoms[0]
        rgba = m.mat_rgba[m.geom_matid[g]] if m.geom_matid[g] >= 0 else m.geom_rgba[g]
        follows = "goal" if name == "goal" and robot.ros.goal else None
        out.append({"body": name, "radius": round(float(m.geom_size[g, 0]), 6),
                    "rgba": [round(float(v), 6) for v in rgba], "follows": follows,
                    "topic": robot.ros.goal if follows else None})
    return out


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
    try:
        return write_bundle(module, env, info, Path(out) if out is not None else run_dir / "bundle", run_dir)
    finally:
        env.close()


def write_bundle(module: torch.nn.Module, env, info: dict, out: str | Path, run_dir: str | Path = "") -> Path:
    """Write `module` (``module(obs)``, or ``module(obs, *images)`` with ``info["image_inputs"]``
    naming the cameras in call order) as a bundle for `env`'s task into `out`. `info` is
    `agents.policy.load_policy`'s (obs_group, obs_size, action_size, action_type, task, algo,
    step, checkpoint, ...); without ``image_inputs`` the module's own ``image_inputs``
    attribute, if it has one, names the cameras."""
    import warnings

    info = dict(info)
    if not info.get("image_inputs"):
        info["image_inputs"] = list(getattr(module, "image_inputs", None) or [])
    manifest = build_manifest(env, info, run_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = manifest.get("images") or []
    example = (torch.zeros(1, info["obs_size"]),
               *[torch.zeros(1, e["channels"], e["height"], e["width"], dtype=torch.uint8) for e in images])
    names = ["obs", *[e["camera"] for e in images]]
    module = module.cpu().eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, example)
    traced.save(str(out / "policy.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based ONNX exporter warns it is legacy
        torch.onnx.export(module, example, str(out / "policy.onnx"), dynamo=False, input_names=names,
                          output_names=["action"],
                          dynamic_axes={**{n: {0: "batch"} for n in names}, "action": {0: "batch"}},
                          opset_version=17)
    manifest["files"] = {name: {"sha256": sha256(out / name)} for name in MODEL_FILES}
    with open(out / "manifest.yaml", "w") as f:
        yaml.safe_dump(manifest, f, sort_keys=False)
    return out
