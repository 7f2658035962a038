"""Policy bundles: the on-disk format a trained policy is deployed from, and its loader.

A bundle directory holds:

- ``policy.onnx``  the deterministic actor, observation normalization baked in (ONNX Runtime)
- ``policy.pt``    the same as TorchScript
- ``manifest.yaml`` everything a deployment needs: robot name, spec checksum and where to
  find the robot again (``robot.source``: its name, or the absolute path of its robot.yaml
  for a robot the name does not find; `manifest_robot`), joint order, default pose, action
  mapping, PD gains, control period and decimation, each observation term in order (size,
  scale, clip, source), command/goal inputs, camera inputs (``images``), safety limits, the
  training run, versions, and the sha256 of each model file.

A policy that sees cameras takes ``policy(obs, *images)``: ``obs`` float32 (B, k), then one
uint8 (B, C, H, W) image per entry of the manifest's ``images`` list, in that order (ONNX
inputs ``obs`` and then the camera names). Each entry says what the camera must deliver:
``camera``, ``topic``, ``width``, ``height``, ``channels``, ``encoding`` (rgb8), ``dtype``
(uint8), ``layout`` (CHW), ``scale`` (1/255, applied inside the model: feed raw pixels),
``crop`` (none: the whole frame), ``depth`` (depth cameras: the 4th channel's topic, wire
encoding and range), and ``mount`` (where the training camera sat: body, pos, quat, fovy).

`load_bundle` verifies checksums and the format, optionally checks the bundle against
the robot it is pointed at, and returns a `BundlePolicy` whose single `act(obs)` every
deployment path (sim2sim, the ROS 2 policy node, a bundle used as DAgger's expert) uses.
Any mismatch is refused with a `BundleError` that names it: the commonest sim-to-real
failure is a policy run on a robot whose joint order, observation layout or spec differs
from the one it was trained on.

This module is shared by the layers (agents read bundles as experts, sim2real deploys
them); writing a bundle from a training run is `roboreal.sim2real.bundle.export_bundle`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import yaml

import roboreal
from roboreal.config import ConfigError, to_dict
from roboreal.robots.spec import RobotSpec, load_robot
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
def source_requirement(source: str, robot: RobotSpec) -> str | None:
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

    @property
    def image_inputs(self) -> list[dict]:
        """The manifest's ``images`` entries, in the order the model takes them ([]: none)."""
        return list(self.manifest.get("images") or [])

    def normalized_action(self, obs: np.ndarray, images=None) -> np.ndarray:
        """The action as the safety chain takes it: continuous, normalized, (A,) for one observation.

        Discrete policies map their index through the manifest's ``discrete_values``.
        """
        a = self.act(obs, images)
        if self.discrete:
            return np.asarray(self.manifest["action"]["discrete_values"], dtype=np.float64)[int(a)]
        return np.asarray(a, dtype=np.float64)

    def act(self, obs: np.ndarray, images=None) -> np.ndarray:
        """(k,) or (B, k) float observation -> (A,) / (B, A) action (discrete: int index).

        `images` (bundles with ``images`` only): ``{camera: uint8 (C, H, W) or (B, C, H, W)}`` or
        a sequence in the manifest's order; raw pixels, the model scales them itself."""
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        x = x.reshape(-1, self.obs_size)
        y = self._run(x, self._image_arrays(images, len(x)))
        return y[0] if single else y

    def _image_arrays(self, images, batch: int) -> list[np.ndarray]:
        """`images` checked against the manifest: uint8 (B, C, H, W) per camera, in order."""
        entries = self.image_inputs
        if not entries:
            if images:
                raise BundleError("this bundle's policy takes no images")
            return []
        names = [e["camera"] for e in entries]
        if images is None:
            raise BundleError(f"this bundle's policy needs images from {', '.join(names)}")
        if isinstance(images, dict):
            missing = [n for n in names if n not in images]
            if missing:
                raise BundleError(f"no image for camera {missing[0]!r} (the policy takes {', '.join(names)})")
            images = [images[n] for n in names]
        elif len(images) != len(entries):
            raise BundleError(f"{len(images)} images given, the policy takes {len(entries)} ({', '.join(names)})")
        out = []
        for e, img in zip(entries, images):
            a = np.asarray(img)
            if a.dtype != np.uint8:  # a float image in [0, 1] would be scaled twice: refuse, never guess
                raise BundleError(f"camera {e['camera']}: image dtype {a.dtype}, the policy takes raw uint8 pixels")
            shape = (int(e["channels"]), int(e["height"]), int(e["width"]))
            a = a.reshape(-1, *a.shape[-3:]) if a.ndim >= 3 else a
            if a.ndim != 4 or tuple(a.shape[1:]) != shape or a.shape[0] != batch:
                raise BundleError(f"camera {e['camera']}: image of shape {tuple(np.shape(img))}, the policy takes "
                                  f"{batch} x {shape} (C, H, W)")
            out.append(np.ascontiguousarray(a))
        return out


class ImageFedPolicy:
    """A bundle that takes its camera images from `images()` (``{camera: uint8 (C, H, W)}``,
    the latest frame of each): what `PolicyController` calls, ``normalized_action(obs)`` /
    ``act(obs)``, for a policy that sees cameras; everything else is the bundle's. The
    policy node feeds it its cameras' latest images; a simulated deployment, rendered ones."""

    def __init__(self, bundle: BundlePolicy, images: Callable[[], dict[str, np.ndarray]]):
        self.bundle, self.images = bundle, images

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bundle, name)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.bundle.act(obs, self.images())

    def normalized_action(self, obs: np.ndarray) -> np.ndarray:
        return self.bundle.normalized_action(obs, self.images())


def _onnx_runner(path: Path, images: list[dict]):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # one control loop, latency over throughput
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    have = [(i.name, i.type) for i in session.get_inputs()]
    want = [("obs", "tensor(float)")] + [(e["camera"], "tensor(uint8)") for e in images]
    _check_inputs(path.name, [n for n, _ in have], [n for n, _ in want])
    for (name, typ), (_, wanted) in zip(have, want):
        if typ != wanted:
            raise BundleError(f"policy.onnx input {name!r} is {typ}, the manifest says {wanted}")
    names = [n for n, _ in want]

    def run(x: np.ndarray, imgs: list[np.ndarray]) -> np.ndarray:
        return session.run(None, dict(zip(names, [x, *imgs])))[0]

    return run


def _torchscript_runner(path: Path, images: list[dict]):
    module = torch.jit.load(str(path), map_location="cpu").eval()
    # a traced module's inputs carry the Python argument names, not the cameras': count them
    args = [a.name for a in module.forward.schema.arguments[1:]]  # [0] is self
    _check_inputs(path.name, args, ["obs"] + [e["camera"] for e in images], names=False)

    def run(x: np.ndarray, imgs: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x), *[torch.from_numpy(i) for i in imgs]).numpy()

    return run


def _check_inputs(model: str, have: list[str], want: list[str], names: bool = True) -> None:
    """Refuse a model whose inputs are not `want` (``obs``, then the manifest's cameras),
    naming the first input that differs (`names`: by name, else by count)."""
    for i, name in enumerate(want):
        what = "the observation 'obs'" if i == 0 else f"camera {name!r}"
        if i >= len(have):
            raise BundleError(f"{model} has no input for {what} (the manifest's input {i}; the model takes "
                              f"{len(have)}: {have})")
        if names and have[i] != name:
            raise BundleError(f"{model} input {i} is {have[i]!r}, the manifest says {what}")
    if len(have) > len(want):
        raise BundleError(f"{model} takes {len(have)} inputs {have}, the manifest describes {len(want)} {want}: "
                          f"no camera for input {len(want)} ({have[len(want)]!r})")


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
        missing = source_requirement(term["source"], robot)
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
        # wrap / relative_to / history: absent in manifests written before they were recorded (false / none / 1)
        for key, absent in (("scale", None), ("clip", None), ("offset", None), ("wrap", False), ("relative_to", None),
                            ("history", 1)):
            if a.get(key, absent) != b.get(key, absent):
                raise BundleError(f"observation term {i} ({a['name']}) {key} differs: bundle {a.get(key, absent)}, "
                                  f"expected {b.get(key, absent)}")
    if len(terms) != len(expected):
        raise BundleError(f"observation has {len(terms)} terms in the bundle, {len(expected)} expected")


IMAGE_FIELDS = ("camera", "topic", "width", "height", "channels", "encoding", "dtype", "layout")


def check_images(manifest: dict) -> list[dict]:
    """The manifest's ``images`` entries, refused unless each describes what this loader and
    the policy node can feed (rgb8, uint8, CHW; 3 channels, 4 with a depth channel)."""
    images = manifest.get("images") or []
    if not isinstance(images, list):
        raise BundleError(f"manifest images must be a list, got {type(images).__name__}")
    seen = {"obs"}
    for i, e in enumerate(images):
        missing = [k for k in IMAGE_FIELDS if not isinstance(e, dict) or k not in e]
        if missing:
            raise BundleError(f"manifest images[{i}] has no {missing[0]}")
        name = str(e["camera"])
        if name in seen:
            raise BundleError(f"manifest images[{i}]: camera {name!r} is an input name already taken")
        seen.add(name)
        want_channels = 3 + int(bool(e.get("depth")))
        for key, want in (("encoding", "rgb8"), ("dtype", "uint8"), ("layout", "CHW"), ("channels", want_channels)):
            if e[key] != want:
                raise BundleError(f"manifest images[{i}] ({name}): {key} {e[key]!r}, this roboreal feeds {want!r}")
        if not (int(e["width"]) > 0 and int(e["height"]) > 0):
            raise BundleError(f"manifest images[{i}] ({name}): size {e['width']}x{e['height']}")
        _check_markers(f"manifest images[{i}] ({name}).markers", e.get("markers") or [])
    return images


def _check_markers(where: str, markers) -> None:
    """``images[].markers`` (optional; bundles before it show none): the task markers the images
    show, each a body with a sphere radius, an rgba and what places it (``follows``: goal or null)."""
    if not isinstance(markers, list):
        raise BundleError(f"{where} must be a list, got {type(markers).__name__}")
    for k, mk in enumerate(markers):
        if not isinstance(mk, dict) or not isinstance(mk.get("body"), str):
            raise BundleError(f"{where}[{k}] has no body")
        try:
            radius, rgba = float(mk["radius"]), [float(v) for v in mk["rgba"]]
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{where}[{k}] ({mk['body']}) needs a radius and 4 rgba values") from None
        if not (math.isfinite(radius) and radius > 0) or len(rgba) != 4 or not all(0 <= v <= 1 for v in rgba):
            raise BundleError(f"{where}[{k}] ({mk['body']}): radius {radius}, rgba {rgba}")
        if mk.get("follows") not in (None, "goal"):
            raise BundleError(f"{where}[{k}] ({mk['body']}): follows {mk.get('follows')!r}, this roboreal places "
                              "markers at the goal or nowhere")


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
    images = check_images(manifest)
    if robot is not None:
        check_robot(manifest, load_robot(robot) if isinstance(robot, str) else robot)
    if expected_layout is not None:
        check_layout(manifest, expected_layout)
    if runtime == "onnx":
        run = _onnx_runner(path / "policy.onnx", images)
    elif runtime == "torchscript":
        run = _torchscript_runner(path / "policy.pt", images)
    else:
        raise BundleError(f"runtime must be 'onnx' or 'torchscript', not {runtime!r}")
    return BundlePolicy(path, manifest, runtime, run)
