"""The simulated robot driver sim2sim runs a bundle through: what a real driver and the
network do to readings and commands (latency in milliseconds, jitter, drops, sensor period,
noise), and the held-out presets (`heavy`, or a YAML file with ``randomization:`` and
``driver:`` sections).

`DriverReadings` turns the simulation's substep results into the messages a driver
publishes; `deliver` hands one to the deployment code's observation builder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

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


def preset_conditions(preset: str | Path) -> tuple[dict, DriverCfg]:
    """(task randomization overrides, driver conditions) of a preset name or YAML file."""
    if preset == "none":
        return {"enabled": False}, DriverCfg()
    if preset == "heavy":
        return {"enabled": True, **RANDOMIZATION_PRESETS["heavy"]}, from_dict(DriverCfg, HEAVY_DRIVER, source="heavy preset")
    path = Path(preset)
    if not path.is_file():
        raise ConfigError("randomize", f"{preset!r} is neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    data = load_yaml(path) or {}
    unknown = sorted(set(data) - {"randomization", "driver"})
    if unknown:
        raise ConfigError(unknown[0], "unknown section (known: randomization, driver)", str(path))
    return dict(data.get("randomization") or {"enabled": False}), from_dict(DriverCfg, data.get("driver") or {},
                                                                           source=str(path))


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


def deliver(ctl, msg: tuple) -> None:
    """Hand one driver message (stamp, kind, payload) to a `PolicyController`'s observation builder."""
    stamp, kind, payload = msg
    b = ctl.builder
    if kind == "joints":
        b.set_joint_state(b.tracked, payload[0], payload[1], arrival=stamp, header_stamp=stamp)
    elif kind == "imu":
        w, x, y, z = payload[0]
        b.set_imu((x, y, z, w), payload[1], stamp, payload[2])
    else:
        b.set_object_pose(payload, stamp, stamp)
