"""GPU simulation backend: N MuJoCo worlds stepped by MuJoCo Warp (``backend="warp"``).

The same MJCF as the C backend is put on a Warp device (``cuda:N``, or, slowly, the
Warp ``cpu`` device) with `mujoco_warp.put_model` / `put_data`. The torch tensors the
env reads (`qpos`, `qvel`, `sensordata`) and writes (`ctrl`) are the Warp arrays
themselves (``wp.to_torch`` shares memory), so a control step copies nothing to the
host: the controls are written in place, `decimation` physics steps run (one CUDA
graph launch when captured), and the observations are computed from the same memory.

Differences from the C backend a user should know about:

- **float32.** MuJoCo Warp computes in single precision; trajectories match the C
  engine (float64) closely over a short horizon and then drift apart like any two
  chaotic simulations (the parity tests state the tolerances they use and why).
- **Sensor semantics are the same**: `mujoco_warp.step` evaluates sensors inside the
  step before integration, like `mj_step`, so sensors are one physics substep older
  than the state; after `reset_worlds` the reset worlds' sensors are recomputed at the
  reset state (`mujoco_warp.forward`, which runs over every world; the other worlds'
  sensor values are put back so they keep the step-time semantics).
- **Per-world parameters**: a randomized field (friction, masses, gains...) gets a
  world dimension (``(num_envs, ...)``) before any graph is captured; the randomizer
  writes each world's values into it in place, so captured graphs see new values
  without re-capture. Derived constants (``body_invweight0``, subtree masses...) are
  not recomputed after randomization, exactly like the C backend's per-world models.
- **Fixed-size contact and constraint buffers.** They are sized from the model and
  `num_envs` (contacts: the upper bound over every geom pair that can collide, capped at
  `DEFAULT_NCONMAX_CAP` per world and pooled over worlds; constraint rows: the model's
  equality/friction/limit rows plus the rows of that many contacts; see
  `contact_capacity` / `constraint_capacity`) unless `WarpSimCfg.nconmax` / `njmax`
  say otherwise. An overflow (more contacts or constraint rows than allocated) is
  checked after every step and raises `SimOverflowError`; it never continues with
  dropped contacts or NaNs.
- **CUDA graphs**: on a CUDA device the physics step (all `decimation` substeps) and
  the reset-time forward pass are captured into CUDA graphs after their first eager
  run. If capture fails, the backend says so (a `RuntimeWarning` and
  `describe()["graph_capture"]`) and runs eagerly. The Warp CPU device has no graphs.

One module although it is over 400 lines: one backend, whose model transfer, stepping,
resets and randomization all depend on the same Warp array layout.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
import torch

from roboreal.envs.sim.backend import RANDOMIZED_FIELDS

STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


class SimOverflowError(RuntimeError):
    """A fixed-size simulation buffer (contacts, constraint rows) overflowed."""


@dataclass
class WarpSimCfg:
    """Options of the MuJoCo Warp backend (the ``warp`` section of a task config)."""

    nconmax: int | None = None  # contacts per world; None: the model's collision-pair bound, capped at 64
    njmax: int | None = None  # constraint rows per world; None: upper bound from the model and nconmax
    graph_capture: bool | None = None  # None: capture on CUDA devices; True on a CPU device is an error
    check_overflow: bool = True  # check the buffers after every step (one device->host flag read)
    verbose: bool = False  # Warp's own messages (banner, one line per kernel module loaded)

    def __post_init__(self) -> None:
        for name in ("nconmax", "njmax"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or null for the model-derived size), got {v}")


def import_warp(verbose: bool = False) -> tuple[Any, Any]:
    """``(warp, mujoco_warp)``, or an ImportError that says how to install them."""
    try:
        import warp

        # Warp prints a banner and a line per kernel module it loads (hundreds for MuJoCo
        # Warp); importing mujoco_warp already initializes Warp, so decide before that.
        warp.config.quiet = not verbose
        if hasattr(warp, "LOG_WARNING"):
            warp.config.log_level = warp.LOG_INFO if verbose else warp.LOG_WARNING
        import mujoco_warp
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(f"backend='warp' needs the packages mujoco-warp and warp-lang ({e}); "
                          "install them with: pip install -e '.[gpu]'") from e
    return warp, mujoco_warp


# ----------------------------------------------------------------------------------------------
# Buffer sizes from the model

_G = mujoco.mjtGeom


def _pair_max_contacts(t1: int, t2: int) -> int:
    """Most contacts MuJoCo (C or Warp) generates for one geom pair of these types."""
    types = {int(t1), int(t2)}
    if types & {int(_G.mjGEOM_HFIELD), int(_G.mjGEOM_SDF)}:
        return mujoco.mjMAXCONPAIR
    if int(_G.mjGEOM_SPHERE) in types:
        return 1
    if types <= {int(_G.mjGEOM_CAPSULE), int(_G.mjGEOM_PLANE), int(_G.mjGEOM_BOX)} and int(_G.mjGEOM_CAPSULE) in types:
        return 2  # capsule-capsule, plane-capsule, capsule-box
    return 8  # boxes (plane-box and box-box give up to 8 in MuJoCo Warp), cylinders, meshes


def contact_capacity(model: mujoco.MjModel) -> int:
    """Upper bound on simultaneous contacts in one world.

    Sums the per-pair maximum over every geom pair the collision filter lets through
    (contype/conaffinity, not on the same body, not both static, not excluded) plus the
    explicit `<pair>`s. The parent-child filter is deliberately not applied, so the
    bound can only be too large, never too small.
    """
    m = model
    weld = m.body_weldid[m.geom_bodyid]
    static = weld == 0
    excluded = {int(s) for s in m.exclude_signature} if m.nexclude else set()
    total = 0
    for i in range(m.ngeom):
        for j in range(i + 1, m.ngeom):
            if not ((m.geom_contype[i] & m.geom_conaffinity[j]) or (m.geom_contype[j] & m.geom_conaffinity[i])):
                continue
            if weld[i] == weld[j] or (static[i] and static[j]):
                continue
            b1, b2 = sorted((int(m.geom_bodyid[i]), int(m.geom_bodyid[j])))
            if ((b1 << 16) + b2) in excluded:
                continue
            total += _pair_max_contacts(m.geom_type[i], m.geom_type[j])
    for p in range(m.npair):
        total += _pair_max_contacts(m.geom_type[m.pair_geom1[p]], m.geom_type[m.pair_geom2[p]])
    return max(total, 1)


def constraint_capacity(model: mujoco.MjModel, nconmax: int) -> int:
    """Upper bound on constraint rows in one world with at most `nconmax` contacts."""
    m = model
    eq_rows = {int(mujoco.mjtEq.mjEQ_CONNECT): 3, int(mujoco.mjtEq.mjEQ_WELD): 6}
    rows = sum(eq_rows.get(int(t), 1) for t in m.eq_type)  # joint/tendon/distance couplings: 1 row
    rows += int((m.dof_frictionloss > 0).sum()) + int((m.tendon_frictionloss > 0).sum())
    rows += int(m.jnt_limited.sum()) + int(m.tendon_limited.sum())  # one side of a limit is active at a time
    condim = max([1, *m.geom_condim.tolist(), *m.pair_dim.tolist()])
    per_contact = condim if m.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC else max(1, 2 * (condim - 1))
    return max(rows + nconmax * per_contact, 1)


# The strict bound counts every pair that *could* touch (a bin of five walls times every
# link of an arm gives 642 for panda), far more than can touch at once; buffers that large
# cost GPU memory and solver time (dense constraint kernels scale with njmax). The default
# is the bound, capped at this many contacts per world; contact slots are pooled across
# worlds (naconmax = nconmax x num_envs), and anything past the buffers is an error.
DEFAULT_NCONMAX_CAP = 64

# ----------------------------------------------------------------------------------------------
# The backend

# Overflow bits that mean contacts or constraint rows were dropped (mujoco_warp.OverflowType).
# Solver iteration limits (ITERATIONS, LS_ITERATIONS) are not buffer overflows and are not errors.
_ERROR_OVERFLOWS = ("NEFC", "NJMAX_NNZ", "BROADPHASE", "NARROWPHASE", "CCD", "HFIELD", "CONTACT_MATCH", "NVMAX",
                    "TACTILE")


class WarpBatchSim:
    """`roboreal.envs.sim.backend.BatchSim` on MuJoCo Warp (see the module docstring)."""

    backend = "warp"
    # Every field behind the randomization table has a world dimension in MuJoCo Warp
    # (array specs starting with "*"), so every model parameter can be randomized per world.
    randomizable = frozenset(RANDOMIZED_FIELDS)

    def __init__(self, model: mujoco.MjModel, num_envs: int, decimation: int, device: str | torch.device = "cpu",
                 cfg: WarpSimCfg | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if decimation < 1:
            raise ValueError(f"decimation must be >= 1, got {decimation}")
        self.cfg = cfg or WarpSimCfg()
        wp, mjw = import_warp(self.cfg.verbose)
        self._wp, self._mjw = wp, mjw
        self.model = model
        self.num_envs = int(num_envs)
        self.decimation = int(decimation)
        tdev = torch.device(device)
        if tdev.type == "cuda" and tdev.index is None:
            tdev = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
        if tdev.type not in ("cpu", "cuda"):
            raise ValueError(f"backend='warp' runs on 'cpu' or 'cuda[:N]' devices, not {str(device)!r}")
        wp.init()
        self.wp_device = wp.get_device(str(tdev))
        self.device = tdev
        self.is_cuda = bool(self.wp_device.is_cuda)

        self.contact_bound = contact_capacity(model)
        self.nconmax = int(self.cfg.nconmax or min(self.contact_bound, DEFAULT_NCONMAX_CAP))
        self.njmax = int(self.cfg.njmax or constraint_capacity(model, self.nconmax))
        # Start from a fresh MjData without mj_forward: put_data refuses initial contacts
        # beyond nconmax, and the env sets and forwards every world's state on reset anyway.
        data0 = mujoco.MjData(model)
        with wp.ScopedDevice(self.wp_device):
            self._m = mjw.put_model(model)
            # Overflows are reported by this class as errors; the kernels' printf warnings
            # would only repeat them (and, on the CPU device, interleave with test output).
            self._m.opt.warn_overflow = 0
            self._d = mjw.put_data(model, data0, nworld=self.num_envs, nconmax=self.nconmax, njmax=self.njmax)
        self.naconmax = int(self._d.naconmax)
        self._bind_views()

        self._batched: set[str] = set()
        self._model_cache: dict[int, mujoco.MjModel] = {}
        self._graphs: dict[str, Any] = {}
        want = self.cfg.graph_capture
        if want and not self.is_cuda:
            raise ValueError("warp.graph_capture: CUDA graphs need a CUDA device; the Warp CPU device runs eagerly "
                             "(leave graph_capture unset or false)")
        self._capture = self.is_cuda if want is None else bool(want)
        self.graph_status = ("pending: captured after the first step" if self._capture else
                             ("off: disabled by warp.graph_capture" if self.is_cuda else
                              "off: the Warp CPU device has no CUDA graphs"))
        self._capture_failed: dict[str, str] = {}
        mask = 0
        for name in _ERROR_OVERFLOWS:
            mask |= int(getattr(mjw.OverflowType, name, 0))
        self._overflow_mask = mask
        self._launch("forward")  # sensors at qpos0, like the C backend's initial mj_forward

    def _bind_views(self) -> None:
        """Torch tensors sharing memory with the Warp data arrays (no copies)."""
        wp, d = self._wp, self._d
        self.qpos = wp.to_torch(d.qpos)
        self.qvel = wp.to_torch(d.qvel)
        self.act = wp.to_torch(d.act)
        self.ctrl = wp.to_torch(d.ctrl)
        self.time = wp.to_torch(d.time)
        self.sensordata = wp.to_torch(d.sensordata)
        self.qacc_warmstart = wp.to_torch(d.qacc_warmstart)
        self._overflow = wp.to_torch(d.overflow)
        self._nacon = wp.to_torch(d.nacon)
        self._ncollision = wp.to_torch(d.ncollision)
        self._nefc = wp.to_torch(d.nefc)

    # ----- running the physics (eagerly or as captured CUDA graphs) -----
    def _step_fn(self) -> None:
        for _ in range(self.decimation):
            self._mjw.step(self._m, self._d)

    def _forward_fn(self) -> None:
        self._mjw.forward(self._m, self._d)

    def _launch(self, which: str) -> None:
        wp = self._wp
        graph = self._graphs.get(which)
        if graph is not None:
            wp.capture_launch(graph)
            return
        fn = self._step_fn if which == "step" else self._forward_fn
        with wp.ScopedDevice(self.wp_device):
            # The first run is eager: it compiles and loads every kernel the step needs,
            # which must not happen during capture.
            fn()
            if self._capture and which not in self._capture_failed:
                self._try_capture(which, fn)

    def _try_capture(self, which: str, fn) -> None:
        wp = self._wp
        try:
            with wp.ScopedCapture(device=self.wp_device) as capture:
                fn()
            self._graphs[which] = capture.graph
        except Exception as first:  # noqa: BLE001 - any capture failure falls back, loudly
            reason = f"{type(first).__name__}: {first}"
            if self._m.opt.graph_conditional:
                # Conditional graph nodes (solver while-loops) need a recent CUDA driver:
                # retry without them before giving up on graphs.
                self._m.opt.graph_conditional = False
                try:
                    with wp.ScopedCapture(device=self.wp_device) as capture:
                        fn()
                    self._graphs[which] = capture.graph
                    self.graph_status = f"on (without conditional nodes: {reason})"
                    return
                except Exception as second:  # noqa: BLE001
                    reason = f"{reason}; without conditional nodes: {type(second).__name__}: {second}"
            self._capture_failed[which] = reason
            self.graph_status = f"off: capture of the {which} failed ({reason}); running eagerly"
            warnings.warn(f"MuJoCo Warp backend: CUDA graph capture of the {which} failed, falling back to eager "
                          f"kernel launches (slower): {reason}", RuntimeWarning, stacklevel=3)
            return
        if not self._capture_failed and not self.graph_status.startswith("on"):
            self.graph_status = "on"

    def _check_overflow(self, where: str) -> None:
        if not self.cfg.check_overflow:
            return
        # One flag for every check, so the host waits on the device once per call.
        contact = torch.maximum(self._nacon[0], self._ncollision[0]) > self.naconmax
        rows = (self._nefc > self.njmax).any()
        flags = (self._overflow & self._overflow_mask).any()
        if not bool(contact | rows | flags):
            return
        ncon = int(torch.maximum(self._nacon[0], self._ncollision[0]))
        parts = []
        if ncon > self.naconmax:
            parts.append(f"{ncon} contacts (or broadphase candidates) for {self.naconmax} slots "
                         f"(nconmax {self.nconmax} per world x {self.num_envs} worlds): raise warp.nconmax")
        nefc = int(self._nefc.max())
        if nefc > self.njmax:
            worlds = (self._nefc > self.njmax).nonzero().flatten()[:8].tolist()
            parts.append(f"{nefc} constraint rows in a world for njmax {self.njmax} (worlds {worlds}): "
                         "raise warp.njmax")
        bits = int(np.bitwise_or.reduce(self._overflow.cpu().numpy()))  # error path only: a host copy is fine
        names = [n for n in _ERROR_OVERFLOWS if bits & int(getattr(self._mjw.OverflowType, n, 0))]
        if names:
            parts.append(f"MuJoCo Warp overflow flags: {', '.join(names)}")
        raise SimOverflowError(f"MuJoCo Warp buffer overflow during {where}: " + "; ".join(parts)
                               + ". Results past this point would miss contacts or constraints, so the "
                               "simulation stopped instead (set warp.nconmax / warp.njmax in the task config).")

    # ----- the backend protocol -----
    def torch_state(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The live views themselves: they change in place at every step."""
        if torch.device(device) != self.device:
            raise ValueError(f"backend='warp' on {self.device}: the env must use the same device, got {device}")
        return self.qpos, self.qvel, self.sensordata

    def step(self, ctrl: torch.Tensor | np.ndarray) -> None:
        self.ctrl.copy_(torch.as_tensor(ctrl, device=self.device, dtype=torch.float32))
        self._launch("step")
        self._check_overflow("step")

    def reset_worlds(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        ids = torch.as_tensor(env_ids, device=self.device, dtype=torch.long)
        self.qpos[ids] = qpos.to(self.device, torch.float32)
        self.qvel[ids] = qvel.to(self.device, torch.float32)
        if self.act.shape[-1]:
            self.act[ids] = 0.0
        self.time[ids] = 0.0
        self.qacc_warmstart[ids] = 0.0
        # mujoco_warp.forward runs over every world; keep the other worlds' step-time sensors.
        kept = self.sensordata.clone()
        self._launch("forward")
        kept[ids] = self.sensordata[ids]
        self.sensordata.copy_(kept)
        self._check_overflow("reset")

    def add_to_qvel(self, dofs: slice, delta: torch.Tensor) -> None:
        self.qvel[:, dofs] += delta.to(self.device, torch.float32)

    # ----- per-world model fields -----
    def _field_owner(self, name: str):
        return (self._m.opt, "gravity") if name == "gravity" else (self._m, name)

    def ensure_per_world_fields(self, fields: set[str]) -> None:
        """Tile each of `fields` to ``(num_envs, ...)`` (kernels index ``world % shape[0]``)."""
        wp = self._wp
        new = set(fields) - self._batched
        for name in sorted(new):
            owner, attr = self._field_owner(name)
            arr = getattr(owner, attr)
            if arr.shape[0] != self.num_envs:
                host = np.repeat(arr.numpy()[:1], self.num_envs, axis=0)
                setattr(owner, attr, wp.array(host, dtype=arr.dtype, device=self.wp_device))
            self._batched.add(name)
        if new:
            # Captured graphs hold the old arrays' addresses: capture again on the next launch.
            self._graphs.clear()
            if self._capture:
                self.graph_status = "pending: captured after the first step"

    def model_field(self, name: str) -> torch.Tensor:
        """Torch view ``(num_envs, ...)`` of a per-world model field (vectors as a last axis)."""
        if name not in self._batched:
            raise KeyError(f"model field {name!r} has no world dimension (call ensure_per_world_fields first)")
        owner, attr = self._field_owner(name)
        return self._wp.to_torch(getattr(owner, attr))

    @property
    def per_world(self) -> bool:
        return bool(self._batched)

    def model_of(self, env_id: int) -> mujoco.MjModel:
        """A host MjModel holding world `env_id`'s current per-world values (off the hot path)."""
        if not self._batched:
            return self.model
        m = self._model_cache.get(env_id)
        if m is None:
            m = self._model_cache[env_id] = copy.copy(self.model)
        for name in self._batched:
            value = self.model_field(name)[env_id].detach().cpu().double().numpy()
            if name == "gravity":
                m.opt.gravity[:] = value
            else:
                getattr(m, name)[:] = value
        return m

    def data_for(self, env_id: int, data: mujoco.MjData | None = None) -> mujoco.MjData:
        m = self.model_of(env_id)
        d = data if data is not None else mujoco.MjData(m)
        d.qpos[:] = self.qpos[env_id].detach().cpu().double().numpy()
        d.qvel[:] = self.qvel[env_id].detach().cpu().double().numpy()
        if m.na:
            d.act[:] = self.act[env_id].detach().cpu().double().numpy()
        d.time = float(self.time[env_id])
        mujoco.mj_forward(m, d)
        return d

    # ----- checkpoints -----
    def get_state(self) -> np.ndarray:
        m = self.model
        state = np.zeros((self.num_envs, mujoco.mj_stateSize(m, STATE_SPEC)))
        state[:, 0] = self.time.cpu().numpy()
        state[:, 1:1 + m.nq] = self.qpos.cpu().numpy()
        state[:, 1 + m.nq:1 + m.nq + m.nv] = self.qvel.cpu().numpy()
        if m.na:
            state[:, 1 + m.nq + m.nv:1 + m.nq + m.nv + m.na] = self.act.cpu().numpy()
        return state

    def get_sensordata(self) -> np.ndarray:
        return self.sensordata.cpu().double().numpy()

    def set_full_state(self, state: np.ndarray, sensordata: np.ndarray | None = None) -> None:
        m = self.model
        s = torch.as_tensor(np.asarray(state), dtype=torch.float32, device=self.device)
        self.time.copy_(s[:, 0])
        self.qpos.copy_(s[:, 1:1 + m.nq])
        self.qvel.copy_(s[:, 1 + m.nq:1 + m.nq + m.nv])
        if m.na:
            self.act.copy_(s[:, 1 + m.nq + m.nv:1 + m.nq + m.nv + m.na])
        if sensordata is not None:
            self.sensordata.copy_(torch.as_tensor(np.asarray(sensordata), dtype=torch.float32, device=self.device))

    def describe(self) -> dict:
        return {"backend": self.backend, "device": str(self.wp_device), "num_envs": self.num_envs,
                "contact_bound": self.contact_bound, "nconmax": self.nconmax, "naconmax": self.naconmax, "njmax": self.njmax,
                "graph_capture": self.graph_status, "per_world_fields": sorted(self._batched),
                "precision": "float32"}

    def close(self) -> None:
        self._graphs.clear()
