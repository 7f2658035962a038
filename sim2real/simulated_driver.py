"""The simulated robot driver sim2sim runs a bundle through: what a real driver and the
network do to readings and commands (latency in milliseconds, jitter, drops, sensor period,
noise), and the held-out presets (`heavy`, or a YAML file with ``randomization:`` and
``driver:`` sections).

`DriverReadings` turns the simulation's substep results (and the task env's rendered camera
frames) into the messages a driver publishes; `deliver` hands one to the deployment code's
observation builder (a frame: to the policy's camera inputs).

Camera randomization (`camera_randomization`) is one of the perturbations: the ``heavy``
preset widens the task's own camera randomization (its training ranges) by
``HEAVY_CAMERA_SCALE``; a YAML preset may set ``randomization.camera`` (merged over the
task's) and ``randomization.camera_scale``; ``none`` renders without camera randomization.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from roboreal.config import ConfigError, from_dict, load_yaml
from roboreal.envs.randomization import PRESETS as RANDOMIZATION_PRESETS


@dataclass
class DriverCfg:
    """What the robot's driver and the network do to readings and commands."""

    sensor_latency_ms: tuple[float, float] = (0.0, 0.0)  # measurement -> the controller, per episode (uniform)
    command_latency_ms: tuple[float, float] = (0.0, 0.0)  # command sent -> applied by the actuators, per episode
    jitter_ms: float = 0.0  # extra delay per message, uniform [0, jitter]
    drop: float = 0.0  # probability that a sensor message is lost
    sensor_period_ms: float = 0.0  # how often the driver publishes; 0: every physics step
    # reading -> noise half-width (uniform): joint_pos (rad), joint_vel (rad/s), imu_gyro (rad/s),
    # imu_orientation (rad, per axis), object_pos (m)
    noise: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("sensor_latency_ms", "command_latency_ms"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi or not math.isfinite(hi):
                raise ConfigError(f"driver.{name}", f"expected 0 <= low <= high, got [{lo}, {hi}]")
        if not (0 <= self.jitter_ms < math.inf):
            raise ConfigError("driver.jitter_ms", f"must be >= 0, got {self.jitter_ms}")
        if not 0 <= self.drop < 1:
            raise ConfigError("driver.drop", f"must be in [0, 1), got {self.drop}")
        if not (0 <= self.sensor_period_ms < math.inf):
            raise ConfigError("driver.sensor_period_ms", f"must be >= 0, got {self.sensor_period_ms}")
        for k, v in self.noise.items():
            if k not in NOISE_READINGS:
                raise ConfigError(f"driver.noise.{k}", f"unknown reading (known: {', '.join(NOISE_READINGS)})")
            if not (0 <= v < math.inf):
                raise ConfigError(f"driver.noise.{k}", f"must be >= 0, got {v}")


NOISE_READINGS = ("joint_pos", "joint_vel", "imu_gyro", "imu_orientation", "object_pos")

# Held-out perturbations, beyond what training used: physics (`envs.randomization.PRESETS["heavy"]`)
# and the driver's latency, drops and noise.
HEAVY_DRIVER = {"sensor_latency_ms": [0.0, 10.0], "command_latency_ms": [0.0, 20.0], "jitter_ms": 2.0, "drop": 0.02,
                "noise": {"joint_pos": 0.02, "joint_vel": 2.0, "imu_gyro": 0.3, "imu_orientation": 0.08,
                          "object_pos": 0.01}}
PRESETS = ("none", "heavy")
HEAVY_CAMERA_SCALE = 1.5  # the heavy preset's camera randomization: the task's training ranges x 1.5


def preset_conditions(preset: str | Path) -> tuple[dict, DriverCfg]:
    """(task randomization overrides, driver conditions) of a preset name or YAML file."""
    if preset == "none":
        return {"enabled": False}, DriverCfg()
    if preset == "heavy":
        return ({"enabled": True, **RANDOMIZATION_PRESETS["heavy"], "camera_scale": HEAVY_CAMERA_SCALE},
                from_dict(DriverCfg, HEAVY_DRIVER, source="heavy preset"))
    path = Path(preset)
    if not path.is_file():
        raise ConfigError("randomize", f"{preset!r} is neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    data = load_yaml(path) or {}
    unknown = sorted(set(data) - {"randomization", "driver"})
    if unknown:
        raise ConfigError(unknown[0], "unknown section (known: randomization, driver)", str(path))
    return dict(data.get("randomization") or {"enabled": False}), from_dict(DriverCfg, data.get("driver") or {},
                                                                           source=str(path))


def camera_randomization(rand: dict, task: str, overrides: dict) -> dict:
    """The task env's randomization overrides `rand` (a preset's) with its camera section
    resolved: the task's camera randomization (with the run's `overrides` and any
    ``camera`` section of `rand`), every range widened by ``camera_scale`` when `rand` has
    one. Randomization off (``enabled: false``): no camera randomization either."""
    rand = dict(rand)
    scale = rand.pop("camera_scale", None)
    if scale is None or not rand.get("enabled", True):
        return rand
    scale = float(scale)
    if not (scale >= 0 and math.isfinite(scale)):
        raise ConfigError("randomization.camera_scale", f"must be a number >= 0, got {scale}")
    from roboreal.envs.registry import task_config

    cam = getattr(task_config(task, {**overrides, "randomization": rand}).randomization, "camera", None)
    if cam is None:
        return rand  # a task without cameras (or without camera randomization): nothing to widen
    lo, hi = cam.light
    widened = dataclasses.replace(
        cam, position=cam.position * scale, rotation=cam.rotation * scale, fovy=cam.fovy * scale,
        color=cam.color * scale, noise=cam.noise * scale,
        light=(max(0.0, 1.0 - (1.0 - lo) * scale), 1.0 + (hi - 1.0) * scale))
    rand["camera"] = {**dataclasses.asdict(widened), "light": list(widened.light), "colors": list(widened.colors)}
    return rand


class DriverReadings:
    """Turns the simulation's substep results into what a robot driver publishes."""

    def __init__(self, env, tracked: list[str], driver: DriverCfg, rng: np.random.Generator):
        from roboreal.sim2real.nodes.sim_robot import imu_sensor_slices

        m, spec = env.model, env.robot
        sim = env.sim
        jids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in tracked]
        self.names = list(tracked)
        self.qpos = np.array([sim.qpos_slice.start + m.jnt_qposadr[j] for j in jids])
        self.qvel = np.array([sim.qvel_slice.start + m.jnt_dofadr[j] for j in jids])
        self.imu = imu_sensor_slices(m, spec) if spec.sites.imu is not None else None
        self.object: slice | None = None
        if spec.ros.object_pose and "object_pos" in env._sensor_slices:
            self.object = env._sensor_slices["object_pos"]
        self.driver, self.rng = driver, rng
        self.physics_dt = env.physics_dt
        self.every = max(1, int(round(driver.sensor_period_ms / 1000.0 / env.physics_dt))) if driver.sensor_period_ms else 1
        self.substep_count = 0

    def _noisy(self, key: str, v: np.ndarray) -> np.ndarray:
        n = self.driver.noise.get(key, 0.0)
        return v + self.rng.uniform(-n, n, size=v.shape) if n > 0 else v

    def messages(self, states: np.ndarray, sensors: np.ndarray, t0: float) -> list[list[tuple]]:
        """Per world, the messages of one control period's substeps: (stamp, kind, payload).
        Joint states are measured after substep k (t0 + (k+1) dt); sensors at its start."""
        n, dec = states.shape[:2]
        out: list[list[tuple]] = [[] for _ in range(n)]
        for k in range(dec):
            self.substep_count += 1
            if self.substep_count % self.every:
                continue
            q = self._noisy("joint_pos", states[:, k, self.qpos])
            dq = self._noisy("joint_vel", states[:, k, self.qvel])
            t_joint, t_sensor = t0 + (k + 1) * self.physics_dt, t0 + k * self.physics_dt
            imu = None
            if self.imu is not None:
                quat = _rotate_small(sensors[:, k, self.imu["quat"]], self.driver.noise.get("imu_orientation", 0.0),
                                     self.rng)
                gyro = self._noisy("imu_gyro", sensors[:, k, self.imu["gyro"]])
                acc = sensors[:, k, self.imu["acc"]]
                imu = (quat, gyro, acc)
            obj = self._noisy("object_pos", sensors[:, k, self.object]) if self.object is not None else None
            for i in range(n):
                out[i].append((t_joint, "joints", (q[i], dq[i])))
                if imu is not None:
                    out[i].append((t_sensor, "imu", (imu[0][i], imu[1][i], imu[2][i])))
                if obj is not None:
                    out[i].append((t_sensor, "object", obj[i]))
        return out


    @staticmethod
    def frames(obs: dict, cameras: list[str], stamp: float) -> list[list[tuple]]:
        """Per world, the camera message of this control period: (stamp, "images",
        {camera: (C, H, W) uint8}) from the env's rendered image observations (none without
        `cameras`). Measured at `stamp`, the end of the period (the state they show)."""
        if not cameras:
            return [[] for _ in range(len(next(iter(obs.values()))))]
        arrays = {c: obs[c].cpu().numpy() for c in cameras}
        n = len(arrays[cameras[0]])
        return [[(stamp, "images", {c: arrays[c][i] for c in cameras})] for i in range(n)]


def _rotate_small(quat_wxyz: np.ndarray, half_width: float, rng: np.random.Generator) -> np.ndarray:
    """Each quaternion turned by a random rotation of up to `half_width` rad per axis."""
    if half_width <= 0:
        return quat_wxyz
    out = np.empty_like(quat_wxyz)
    for i, q in enumerate(quat_wxyz):
        rot = np.zeros(4)
        mujoco.mju_axisAngle2Quat(rot, *_axis_angle(rng.uniform(-half_width, half_width, size=3)))
        mujoco.mju_mulQuat(out[i], q, rot)
    return out


def _axis_angle(v: np.ndarray) -> tuple[np.ndarray, float]:
    angle = float(np.linalg.norm(v))
    return (v / angle if angle > 0 else np.array([1.0, 0.0, 0.0])), angle


def deliver(ctl, msg: tuple, cameras: list | tuple = ()) -> None:
    """Hand one driver message (stamp, kind, payload) to a `PolicyController`'s observation
    builder; camera frames to `cameras` (`images.CameraInput`, through the policy node's decoders)."""
    stamp, kind, payload = msg
    b = ctl.builder
    if kind == "images":
        from roboreal.sim2real.nodes.images import feed_rendered

        for cam in cameras:
            feed_rendered(cam, payload[cam.name], stamp)
    elif kind == "joints":
        b.set_joint_state(b.tracked, payload[0], payload[1], arrival=stamp, header_stamp=stamp)
    elif kind == "imu":
        w, x, y, z = payload[0]
        b.set_imu((x, y, z, w), payload[1], stamp, payload[2])
    else:
        b.set_object_pose(payload, stamp, stamp)


def camera_fed_controller(bundle, spec, controller_class) -> tuple[Any, list]:
    """(controller, camera inputs) of one simulated robot: `controller_class` (the deployment's
    `PolicyController`) over the bundle, fed for a policy that sees cameras with the latest
    frame of each `images.CameraInput` (as the policy node feeds it; [] without cameras)."""
    if not bundle.image_inputs:
        return controller_class(bundle, spec, gains="fixed"), []
    from roboreal.policy_bundle import ImageFedPolicy
    from roboreal.sim2real.nodes.images import CameraInput

    cameras = [CameraInput.from_manifest(e) for e in bundle.image_inputs]
    policy = ImageFedPolicy(bundle, lambda: {c.name: c.latest() for c in cameras})
    return controller_class(policy, spec, gains="fixed"), cameras


def check_rendered_cameras(bundle, env) -> None:
    """Every camera the bundle sees is rendered by the task env, at the manifest's shape."""
    rendered = dict(getattr(env.spec, "image_shapes", None) or {})
    for e in bundle.image_inputs:
        name, want = e["camera"], (int(e["channels"]), int(e["height"]), int(e["width"]))
        if name not in rendered:
            raise ConfigError("images", f"the bundle's camera {name!r} is not an image observation of task "
                              f"{env.spec.task} (it renders {sorted(rendered) or 'none'}): sim2sim cannot feed it")
        if tuple(rendered[name]) != want:
            raise ConfigError("images", f"the bundle's camera {name!r} is {want} (C, H, W), task {env.spec.task} "
                              f"renders {tuple(rendered[name])} (export with the training run's env overrides)")


def compare_observations(env, controllers: list, readings: DriverReadings, active: np.ndarray,
                         diff: dict[str, float], now: float) -> None:
    """The same states through both observation paths: the env's terms and the builder's,
    fed as a driver would from the current state (sensors recomputed at it)."""
    ids = np.nonzero(active)[0]
    if not len(ids):
        return
    env.sim.forward(ids)  # sensors at the current state (the rollout records them one substep earlier)
    env._refresh()
    sim_terms = {k: v.cpu().double().numpy() for k, v in env.observation_terms(noise=False).items()}
    state, sensordata = env.sim.state, env.sim.sensordata
    msgs = readings.messages(state[:, None, :], sensordata[:, None, :], now - env.physics_dt)  # joints stamped `now`
    for i in ids:
        ctl = controllers[i]
        for msg in msgs[i]:
            deliver(ctl, msg)
        if hasattr(env, "commands"):
            ctl.set_cmd_vel(*env.commands[i].tolist(), arrival=now)
        if hasattr(env, "goal"):
            ctl.builder.set_goal(env.goal[i].cpu().numpy(), now)
        ctl.builder.set_last_action(env.actions[i].cpu().numpy())
        for name, value in ctl.builder.term_values().items():
            d = float(np.max(np.abs(np.asarray(value) - sim_terms[name][i]))) if name in sim_terms else math.nan
            diff[name] = max(diff.get(name, 0.0), d)
