"""Domain randomization: per-env, seeded, inspectable, configured in YAML.

Each parameter is a `RangeTerm`: a range to sample from uniformly, when to sample
(`startup`, `reset` or every `interval_s` seconds) and which model elements it targets
(geom/body/joint/actuator names; empty = all that apply). The sampled values live in
`Randomizer.values[name]` as ``(num_envs, k)`` tensors so a user can see what env 17
got (`Randomizer.describe(17)`).

Backend support (a parameter a backend cannot randomize is an error, not a no-op). The
same config (YAML or keywords) drives both backends, and the same seed samples the same
values on both: only where they are written differs (per-world `MjModel` copies on the
C engine; per-world model arrays, written in place on the device, on MuJoCo Warp).

| parameter            | what it changes                                   | mujoco (C, CPU) | warp (MuJoCo Warp) |
|----------------------|---------------------------------------------------|-----------------|--------------------|
| friction             | sliding friction of the target geoms' contacts (absolute; see `give_friction_to_targets`) | yes | yes (`geom_friction`) |
| mass_scale           | body mass and inertia scale                       | yes | yes (`body_mass`, `body_inertia`) |
| added_mass           | kg added to target bodies (inertia scaled along)  | yes | yes (`body_mass`, `body_inertia`) |
| com_offset           | body centre-of-mass shift, m, per axis            | yes | yes (`body_ipos`) |
| kp_scale / kd_scale  | PD gains of position actuators                    | yes | yes (`actuator_gainprm/biasprm`) |
| motor_strength       | scale of actuator force (gain, bias, force range) | yes | yes (+ `actuator_forcerange`) |
| joint_damping_scale  | dof damping scale                                 | yes | yes (`dof_damping`) |
| armature_scale       | dof armature scale                                | yes | yes (`dof_armature`) |
| gravity_tilt         | gravity direction tilted by up to this angle, rad | yes | yes (`opt.gravity`) |
| action_latency       | whole control steps of action delay (integer)     | yes (env layer) | yes (env layer) |
| push                 | random base velocity kicks every interval_s       | yes (env layer) | yes (env layer) |
| observation noise    | per-term uniform noise, set in `observation_noise`| yes (env layer) | yes (env layer) |
| camera               | camera pose/fov, lights, colours, pixel noise     | yes (renderer)  | yes (renderer) |

Which model parameters a backend can randomize is the backend's own declaration
(`sim.randomizable`); anything outside it is refused with an error naming the parameter.
Derived model constants (`body_invweight0`, subtree masses) are not recomputed after
randomization on either backend, so both simulate the same randomized worlds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import mujoco
import numpy as np
import torch

from roboreal.envs.sim.backend import RANDOMIZED_FIELDS


@dataclass
class RangeTerm:
    range: tuple[float, float]
    mode: Literal["startup", "reset", "interval"] = "startup"
    interval_s: float = 10.0
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        lo, hi = self.range
        if not lo <= hi:
            raise ValueError(f"range: lower {lo} must not exceed upper {hi}")
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")


@dataclass
class PushTerm:
    interval_s: float = 8.0
    max_velocity: tuple[float, float] = (0.5, 0.5)  # m/s kick of the base in x, y


@dataclass
class CameraRandomizationCfg:
    """What a camera sees, drawn per world at every reset (envs/sim/camera_renderer.py applies it):
    each camera's mounting and lens, the lighting, colours of named geoms, pixel noise."""

    position: float = 0.0  # m: uniform half-width of the camera's offset, per axis
    rotation: float = 0.0  # rad: uniform half-width of a rotation about a random axis
    fovy: float = 0.0  # deg: uniform half-width of the field-of-view change
    light: tuple[float, float] = (1.0, 1.0)  # scale range of every light's diffuse intensity
    colors: tuple[str, ...] = ()  # geoms whose colour is jittered (the table, the object)
    color: float = 0.0  # uniform half-width added to each RGB component (0..1 units)
    noise: float = 0.0  # std of Gaussian pixel noise, in 0..255 units, drawn every frame

    def __post_init__(self) -> None:
        for f in ("position", "rotation", "fovy", "color", "noise"):
            if not getattr(self, f) >= 0:
                raise ValueError(f"{f}: must be >= 0, got {getattr(self, f)!r}")
        lo, hi = self.light
        if not 0 <= lo <= hi:
            raise ValueError(f"light: must be [low, high] with 0 <= low <= high, got {self.light!r}")


@dataclass
class RandomizationCfg:
    enabled: bool = True
    friction: RangeTerm | None = None
    mass_scale: RangeTerm | None = None
    added_mass: RangeTerm | None = None
    com_offset: RangeTerm | None = None
    kp_scale: RangeTerm | None = None
    kd_scale: RangeTerm | None = None
    motor_strength: RangeTerm | None = None
    joint_damping_scale: RangeTerm | None = None
    armature_scale: RangeTerm | None = None
    gravity_tilt: RangeTerm | None = None
    action_latency: RangeTerm | None = None
    push: PushTerm | None = None
    camera: CameraRandomizationCfg | None = None  # images only (tasks with image observations)

    def active(self) -> dict[str, RangeTerm]:
        if not self.enabled:
            return {}
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("enabled", "push", "camera") and getattr(self, f.name) is not None}


# Named physical randomizations for a simulated robot outside training (the sim bridge,
# sim2sim): "heavy" goes beyond every training preset in roboreal's task configs.
PRESETS: dict[str, dict] = {
    "none": {"enabled": False},
    "mild": {"friction": {"range": [0.6, 1.1]}, "mass_scale": {"range": [0.9, 1.1]}},
    "heavy": {
        "friction": {"range": [0.3, 1.6], "mode": "reset"},
        "mass_scale": {"range": [0.75, 1.3], "mode": "reset"},
        "com_offset": {"range": [-0.03, 0.03], "mode": "reset"},
        "kp_scale": {"range": [0.8, 1.2], "mode": "reset"},
        "kd_scale": {"range": [0.7, 1.3], "mode": "reset"},
        "motor_strength": {"range": [0.8, 1.2], "mode": "reset"},
        "push": {"interval_s": 4.0, "max_velocity": [0.8, 0.8]},
    },
}


def randomization_preset(name: str) -> RandomizationCfg:
    """A preset by name (`PRESETS`), or a YAML file whose ``randomization:`` section (or whole
    content) is a RandomizationCfg."""
    from pathlib import Path

    from roboreal.config import ConfigError, from_dict, load_yaml

    if name in PRESETS:
        data, source = {"enabled": True, **PRESETS[name]}, f"preset {name!r}"
    elif Path(name).is_file():
        data, source = load_yaml(name) or {}, name
        data = data.get("randomization", data)
    else:
        raise ConfigError("randomization", f"{name!r} is neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    return from_dict(RandomizationCfg, data, source=source)


MODEL_PARAMS = ("friction", "mass_scale", "added_mass", "com_offset", "kp_scale", "kd_scale", "motor_strength",
                "joint_damping_scale", "armature_scale", "gravity_tilt")
ENV_LAYER_PARAMS = ("action_latency",)  # applied by the env itself, whatever the backend
FEATURE_PARAMS = MODEL_PARAMS + ENV_LAYER_PARAMS  # the columns of `Randomizer.features`, in order
FEATURE_WIDTHS = {"com_offset": 3, "gravity_tilt": 2}
FEATURE_WIDTH = sum(FEATURE_WIDTHS.get(name, 1) for name in FEATURE_PARAMS)


def supported_parameters(sim) -> set[str]:
    """Randomization parameters that `sim` (a backend) can apply."""
    return set(getattr(sim, "randomizable", MODEL_PARAMS)) | set(ENV_LAYER_PARAMS)


def _ids(model: mujoco.MjModel, obj: mujoco.mjtObj, names: tuple[str, ...], count: int, what: str,
         default: list[int] | None = None, aliases: dict[str, str] | None = None) -> np.ndarray:
    if not names:
        return np.array(default if default is not None else range(count), dtype=int)
    out = []
    for n in names:
        if n.startswith("@"):  # a robot's part by role (roboreal.robots.model.target_aliases)
            if n not in (aliases or {}):
                raise ValueError(f"randomization targets: {n!r} names no part of this robot "
                                 f"(known: {', '.join(sorted(aliases or {})) or 'none'})")
            n = aliases[n]
        i = mujoco.mj_name2id(model, obj, n)
        if i < 0:
            raise ValueError(f"randomization targets: {n!r} is not a {what} of the model")
        out.append(i)
    return np.array(out, dtype=int)


def give_friction_to_targets(cfg: RandomizationCfg, model: mujoco.MjModel,
                             aliases: dict[str, str] | None = None) -> None:
    """Make a friction range on some geoms (e.g. ``@floor``) the friction of their contacts.

    MuJoCo gives a contact between two geoms of equal priority the larger of their two
    frictions: a floor drawn at 0.4 under go1's feet (1.0) still gripped at 1.0, so a range
    below what the targets touch was a no-op. The target geoms get a priority above every
    other geom, so a contact with one of them takes its friction (and its other contact
    parameters). Call before the simulation is built from `model` (both backends read
    ``geom_priority`` from it); nothing changes without targets (every geom then gets the
    same draw)."""
    if not cfg.enabled or cfg.friction is None or not cfg.friction.targets:
        return
    ids = _ids(model, mujoco.mjtObj.mjOBJ_GEOM, cfg.friction.targets, model.ngeom, "geom", None, aliases)
    model.geom_priority[ids] = int(model.geom_priority.max()) + 1


class Randomizer:
    """Samples and applies the randomization of a `MujocoBatchSim`'s worlds."""

    def __init__(self, cfg: RandomizationCfg, sim, num_envs: int, seed: int, device: torch.device,
                 backend: str | None = None, actuator_joint_ids: np.ndarray | None = None,
                 aliases: dict[str, str] | None = None):
        """`aliases`: the robot's parts by role for ``targets`` (``@floor``, ``@base``)."""
        self.cfg = cfg
        self.sim = sim
        self.num_envs = num_envs
        self.device = device
        self.backend = backend or getattr(sim, "backend", "mujoco")
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD0A1]))
        self.terms = cfg.active()
        supported = supported_parameters(sim)
        unsupported = [k for k in self.terms if k not in supported]
        if unsupported:
            raise ValueError(f"randomization.{unsupported[0]}: the {self.backend!r} backend cannot randomize "
                             f"{unsupported[0]!r} (it can: {', '.join(sorted(supported))})")
        m = sim.model
        body_default = [i for i in range(1, m.nbody) if m.body_mass[i] > 0]
        self.targets = {
            "friction": _ids(m, mujoco.mjtObj.mjOBJ_GEOM, self._names("friction"), m.ngeom, "geom", None, aliases),
            "mass_scale": _ids(m, mujoco.mjtObj.mjOBJ_BODY, self._names("mass_scale"), m.nbody, "body", body_default,
                              aliases),
            "added_mass": _ids(m, mujoco.mjtObj.mjOBJ_BODY, self._names("added_mass"), m.nbody, "body", body_default[:1],
                              aliases),
            "com_offset": _ids(m, mujoco.mjtObj.mjOBJ_BODY, self._names("com_offset"), m.nbody, "body", body_default[:1],
                              aliases),
            "actuators": np.arange(m.nu),
            "dofs": (np.asarray(actuator_joint_ids) if actuator_joint_ids is not None else np.arange(m.nv)),
        }
        # Nominal values, so scales are applied to the original model, not compounded.
        self.nominal = {
            "geom_friction": m.geom_friction.copy(), "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(), "body_ipos": m.body_ipos.copy(),
            "gainprm": m.actuator_gainprm.copy(), "biasprm": m.actuator_biasprm.copy(),
            "forcerange": m.actuator_forcerange.copy(), "dof_damping": m.dof_damping.copy(),
            "dof_armature": m.dof_armature.copy(), "gravity": m.opt.gravity.copy(),
        }
        self.values: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            width = FEATURE_WIDTHS.get(name, 1)
            self.values[name] = torch.zeros(num_envs, width, device=device)
        fields = {f for k in self.terms if k in MODEL_PARAMS for f in RANDOMIZED_FIELDS[k]}
        if fields:
            sim.ensure_per_world_fields(fields)
        if self.backend != "mujoco":
            self._device_nominal = self._nominal_tensors()
        self._next_interval = {k: t.interval_s for k, t in self.terms.items() if t.mode == "interval"}

    def _names(self, key: str) -> tuple[str, ...]:
        term = getattr(self.cfg, key)
        return term.targets if term is not None else ()

    # ----- sampling -----
    def _sample(self, name: str, env_ids: np.ndarray) -> None:
        term = self.terms[name]
        lo, hi = term.range
        n = len(env_ids)
        if name == "action_latency":
            v = self.rng.integers(int(lo), int(hi) + 1, size=(n, 1)).astype(np.float32)
        elif name == "com_offset":
            v = self.rng.uniform(lo, hi, size=(n, 3))
        elif name == "gravity_tilt":
            angle = self.rng.uniform(lo, hi, size=n)
            azimuth = self.rng.uniform(-np.pi, np.pi, size=n)
            v = np.stack([angle, azimuth], axis=1)
        else:
            v = self.rng.uniform(lo, hi, size=(n, 1))
        self.values[name][torch.as_tensor(env_ids, device=self.device)] = torch.as_tensor(
            v, dtype=torch.float32, device=self.device)

    def _apply(self, env_ids: np.ndarray) -> None:
        """Write the sampled model parameters of `env_ids` into their world models."""
        model_terms = [k for k in self.terms if k in MODEL_PARAMS]
        if not model_terms:
            return
        if self.backend != "mujoco":
            self._apply_fields(env_ids, model_terms)
            return
        vals = {k: self.values[k][torch.as_tensor(env_ids, device=self.device)].cpu().numpy().astype(np.float64)
                for k in model_terms}
        nom = self.nominal
        t = self.targets
        for row, i in enumerate(env_ids):
            m = self.sim.models[int(i)]
            if "friction" in vals:
                m.geom_friction[t["friction"], 0] = vals["friction"][row, 0]
            if "mass_scale" in vals or "added_mass" in vals:
                mass = nom["body_mass"].copy()
                inertia = nom["body_inertia"].copy()
                if "mass_scale" in vals:
                    s = vals["mass_scale"][row, 0]
                    mass[t["mass_scale"]] *= s
                    inertia[t["mass_scale"]] *= s
                if "added_mass" in vals:
                    b = t["added_mass"]
                    ratio = (mass[b] + vals["added_mass"][row, 0]) / np.maximum(mass[b], 1e-9)
                    ratio = np.maximum(ratio, 0.05)
                    mass[b] *= ratio
                    inertia[b] *= ratio[:, None]
                m.body_mass[:] = mass
                m.body_inertia[:] = inertia
            if "com_offset" in vals:
                m.body_ipos[:] = nom["body_ipos"]
                m.body_ipos[t["com_offset"]] += vals["com_offset"][row]
                # The compiler flags bodies whose inertial frame coincides with the body frame
                # (body_sameframe) and mj_kinematics then ignores body_ipos for them: without
                # this the offset was silently dropped for such bodies (the Go1 trunk, for one).
                m.body_sameframe[t["com_offset"]] = mujoco.mjtSameFrame.mjSAMEFRAME_NONE
            if {"kp_scale", "kd_scale", "motor_strength"} & vals.keys():
                kp = vals["kp_scale"][row, 0] if "kp_scale" in vals else 1.0
                kd = vals["kd_scale"][row, 0] if "kd_scale" in vals else 1.0
                strength = vals["motor_strength"][row, 0] if "motor_strength" in vals else 1.0
                a = t["actuators"]
                m.actuator_gainprm[a, 0] = nom["gainprm"][a, 0] * kp * strength
                m.actuator_biasprm[a, 1] = nom["biasprm"][a, 1] * kp * strength
                m.actuator_biasprm[a, 2] = nom["biasprm"][a, 2] * kd * strength
                m.actuator_forcerange[a] = nom["forcerange"][a] * strength
            if "joint_damping_scale" in vals:
                d = t["dofs"]
                m.dof_damping[d] = nom["dof_damping"][d] * vals["joint_damping_scale"][row, 0]
            if "armature_scale" in vals:
                d = t["dofs"]
                m.dof_armature[d] = nom["dof_armature"][d] * vals["armature_scale"][row, 0]
            if "gravity_tilt" in vals:
                angle, azimuth = vals["gravity_tilt"][row]
                g = np.linalg.norm(nom["gravity"])
                m.opt.gravity[:] = g * np.array([np.sin(angle) * np.cos(azimuth), np.sin(angle) * np.sin(azimuth),
                                                 -np.cos(angle)])

    def _nominal_tensors(self) -> dict[str, torch.Tensor]:
        """Nominal values and targets as tensors on the simulation device (batched writes)."""
        dev = self.sim.device
        out = {k: torch.as_tensor(v, dtype=torch.float32, device=dev) for k, v in self.nominal.items()}
        for k, v in self.targets.items():
            out["ids_" + k] = torch.as_tensor(v, dtype=torch.long, device=dev)
        return out

    def _apply_fields(self, env_ids: np.ndarray, model_terms: list[str]) -> None:
        """Batched backend: the same formulas as the per-model loop, one tensor write per field.

        `sim.model_field(name)` is a torch view of a per-world model array, shape
        ``(num_envs, ...)``; writing rows `env_ids` changes exactly those worlds.
        """
        dev = self.sim.device
        ids = torch.as_tensor(np.asarray(env_ids), dtype=torch.long, device=dev)
        n = len(ids)
        vals = {k: self.values[k][torch.as_tensor(env_ids, device=self.device)].to(dev) for k in model_terms}
        nom = self._device_nominal
        field = self.sim.model_field
        rows = ids[:, None]
        if "friction" in vals:
            g = nom["ids_friction"]
            field("geom_friction")[rows, g[None, :], 0] = vals["friction"][:, :1].expand(n, len(g))
        if "mass_scale" in vals or "added_mass" in vals:
            mass = nom["body_mass"].repeat(n, 1)
            inertia = nom["body_inertia"].repeat(n, 1, 1)
            if "mass_scale" in vals:
                b = nom["ids_mass_scale"]
                s = vals["mass_scale"][:, :1]
                mass[:, b] *= s
                inertia[:, b] *= s[:, :, None]
            if "added_mass" in vals:
                b = nom["ids_added_mass"]
                ratio = (mass[:, b] + vals["added_mass"][:, :1]) / mass[:, b].clamp(min=1e-9)
                ratio = ratio.clamp(min=0.05)
                mass[:, b] *= ratio
                inertia[:, b] *= ratio[:, :, None]
            field("body_mass")[ids] = mass
            field("body_inertia")[ids] = inertia
        if "com_offset" in vals:
            ipos = nom["body_ipos"].repeat(n, 1, 1)
            ipos[:, nom["ids_com_offset"]] += vals["com_offset"][:, None, :]
            field("body_ipos")[ids] = ipos
        if {"kp_scale", "kd_scale", "motor_strength"} & vals.keys():
            one = torch.ones(n, 1, device=dev)
            kp = vals.get("kp_scale", one)[:, :1]
            kd = vals.get("kd_scale", one)[:, :1]
            strength = vals.get("motor_strength", one)[:, :1]
            a = nom["ids_actuators"]
            gain, bias, frange = field("actuator_gainprm"), field("actuator_biasprm"), field("actuator_forcerange")
            gain[rows, a[None, :], 0] = nom["gainprm"][a, 0] * kp * strength
            bias[rows, a[None, :], 1] = nom["biasprm"][a, 1] * kp * strength
            bias[rows, a[None, :], 2] = nom["biasprm"][a, 2] * kd * strength
            frange[rows, a[None, :]] = nom["forcerange"][a][None] * strength[:, :, None]
        if "joint_damping_scale" in vals:
            d = nom["ids_dofs"]
            field("dof_damping")[rows, d[None, :]] = nom["dof_damping"][d] * vals["joint_damping_scale"][:, :1]
        if "armature_scale" in vals:
            d = nom["ids_dofs"]
            field("dof_armature")[rows, d[None, :]] = nom["dof_armature"][d] * vals["armature_scale"][:, :1]
        if "gravity_tilt" in vals:
            angle, azimuth = vals["gravity_tilt"][:, 0], vals["gravity_tilt"][:, 1]
            g = nom["gravity"].norm()
            field("gravity")[ids] = g * torch.stack([angle.sin() * azimuth.cos(), angle.sin() * azimuth.sin(),
                                                     -angle.cos()], dim=1)

    # ----- events -----
    def on_startup(self) -> None:
        ids = np.arange(self.num_envs)
        for name in self.terms:
            self._sample(name, ids)  # every term gets an initial value
        self._apply(ids)

    def on_reset(self, env_ids: np.ndarray) -> None:
        names = [k for k, t in self.terms.items() if t.mode == "reset"]
        for name in names:
            self._sample(name, env_ids)
        if names:
            self._apply(env_ids)

    def on_time(self, sim_time: float) -> None:
        """Interval terms: resample for all envs when their interval elapses (global clock)."""
        due = [k for k, t in self._next_interval.items() if sim_time >= t]
        if not due:
            return
        ids = np.arange(self.num_envs)
        for name in due:
            self._sample(name, ids)
            self._next_interval[name] += self.terms[name].interval_s
        self._apply(ids)

    def features(self) -> torch.Tensor:
        """(N, `FEATURE_WIDTH`) what every env drew, each parameter scaled to [-1, 1] over its
        range (beyond 1 outside it; 0 for a parameter not randomized), in the fixed order of
        `FEATURE_PARAMS`, so the width is the same whatever this config randomizes: a privileged
        critic observation (legged_gym-style: the critic knows the friction, masses and gains
        that the policy must infer)."""
        columns = []
        for name in FEATURE_PARAMS:
            width = FEATURE_WIDTHS.get(name, 1)
            term = self.terms.get(name)
            if term is None:
                columns.append(torch.zeros(self.num_envs, width, device=self.device))
                continue
            lo, hi = term.range
            scaled = (self.values[name] - (lo + hi) / 2) / max((hi - lo) / 2, 1e-9)
            if name == "gravity_tilt":  # (angle, azimuth): the azimuth is drawn in [-pi, pi], not in the range
                scaled[:, 1] = self.values[name][:, 1] / np.pi
            columns.append(scaled)
        return torch.cat(columns, dim=1)

    def describe(self, env_id: int) -> dict[str, list[float]]:
        """What env `env_id` got, e.g. ``{"friction": [0.83], "action_latency": [1.0]}``."""
        return {k: [float(x) for x in v[env_id].tolist()] for k, v in self.values.items()}
