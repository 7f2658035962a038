"""CPU simulation backend: N MuJoCo worlds stepped by `mujoco.rollout` C threads.

One `step` call advances every world by `decimation` physics steps without a Python
loop over worlds: `mujoco.rollout` runs them on a persistent thread pool (one thread
per core). The full physics state of all worlds lives in one `(N, nstate)` float64
array; sensor readings in one `(N, nsensordata)` array.

Sensor semantics: `mujoco.rollout` records sensors inside `mj_step`, i.e. computed at
the start of the last physics substep. Sensor values are therefore one physics step
(`timestep` seconds) older than the state, like a real sensor with a small latency.
After a reset the sensors are recomputed at the reset state (`mj_forward`).

Per-world models: domain randomization of model fields (masses, friction, gains...)
gives each world its own `MjModel` copy; without it all worlds share one model.

Implements `roboreal.envs.sim.backend.BatchSim` (backend ``"mujoco"``); the numpy
attributes (`state`, `sensordata`, `models`) stay public for tools that want them.
"""

from __future__ import annotations

import copy
import os
from typing import Sequence

import mujoco
import mujoco.rollout
import numpy as np
import torch

from roboreal.envs.sim.backend import RANDOMIZED_FIELDS

STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


class MujocoBatchSim:
    backend = "mujoco"
    # Every model parameter of the randomization table: each world owns a full MjModel.
    randomizable = frozenset(RANDOMIZED_FIELDS)

    def __init__(self, model: mujoco.MjModel, num_envs: int, decimation: int, nthread: int | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if decimation < 1:
            raise ValueError(f"decimation must be >= 1, got {decimation}")
        self.model = model
        self.num_envs = num_envs
        self.decimation = decimation
        if nthread is None:
            # Thread dispatch costs more than it saves for a handful of worlds.
            nthread = 1 if num_envs < 16 else (os.cpu_count() or 1)
        self.nthread = max(1, min(nthread, num_envs))
        self.models: list[mujoco.MjModel] | None = None  # per-world copies, made on demand
        self._shared_models = [model] * num_envs  # rollout with skip_checks wants one entry per world
        self._datas = [mujoco.MjData(model) for _ in range(self.nthread)]
        self._scratch = mujoco.MjData(model)
        self.nstate = mujoco.mj_stateSize(model, STATE_SPEC)
        self.nsensordata = model.nsensordata
        # Layout of the FULLPHYSICS state vector: [time, qpos, qvel, act, history?, plugin]
        self.qpos_slice = slice(1, 1 + model.nq)
        self.qvel_slice = slice(1 + model.nq, 1 + model.nq + model.nv)
        self.state = np.zeros((num_envs, self.nstate))
        self.sensordata = np.zeros((num_envs, self.nsensordata))
        self._out_state = np.zeros((num_envs, decimation, self.nstate))
        self._out_sensor = np.zeros((num_envs, decimation, max(self.nsensordata, 0)))
        self._control = np.zeros((num_envs, decimation, model.nu))
        self._pool = mujoco.rollout.Rollout(nthread=self.nthread if self.nthread > 1 else 0)
        mujoco.mj_resetData(model, self._scratch)
        mujoco.mj_forward(model, self._scratch)
        template = np.empty(self.nstate)
        mujoco.mj_getState(model, self._scratch, template, STATE_SPEC)
        self.state[:] = template
        self.sensordata[:] = self._scratch.sensordata

    # ----- per-world models -----
    def ensure_per_world_models(self) -> list[mujoco.MjModel]:
        """Give every world its own MjModel copy (needed to randomize model fields)."""
        if self.models is None:
            self.models = [copy.copy(self.model) for _ in range(self.num_envs)]
        return self.models

    def ensure_per_world_fields(self, fields: set[str]) -> None:
        """The C engine cannot batch single fields: any randomized field means per-world copies."""
        if fields:
            self.ensure_per_world_models()

    @property
    def per_world(self) -> bool:
        return self.models is not None

    def model_of(self, env_id: int) -> mujoco.MjModel:
        return self.models[env_id] if self.models is not None else self.model

    # ----- the torch-facing side of the backend protocol -----
    def torch_state(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Torch copies of qpos, qvel, sensordata (one host->device copy per step)."""
        state = torch.from_numpy(self.state).to(device, torch.float32)
        return (state[:, self.qpos_slice], state[:, self.qvel_slice],
                torch.from_numpy(self.sensordata).to(device, torch.float32))

    def reset_worlds(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        ids = env_ids.cpu().numpy()
        self.set_state(ids, qpos.cpu().double().numpy(), qvel.cpu().double().numpy())
        self.forward(ids)

    def add_to_qvel(self, dofs: slice, delta: torch.Tensor) -> None:
        start = self.qvel_slice.start
        self.state[:, start + dofs.start:start + dofs.stop] += delta.detach().cpu().double().numpy()

    def get_state(self) -> np.ndarray:
        return self.state.copy()

    def set_full_state(self, state: np.ndarray, sensordata: np.ndarray | None = None) -> None:
        self.state[:] = state
        if sensordata is not None:
            self.sensordata[:] = sensordata

    def get_sensordata(self) -> np.ndarray:
        return self.sensordata.copy()

    def describe(self) -> dict:
        return {"backend": self.backend, "device": "cpu", "num_envs": self.num_envs, "nthread": self.nthread,
                "per_world_models": self.models is not None, "precision": "float64"}

    # ----- stepping -----
    def step(self, ctrl: np.ndarray | torch.Tensor) -> None:
        """Advance every world by `decimation` physics steps holding `ctrl` (N, nu), or
        applying ``ctrl[:, k]`` in substep k when it is (N, decimation, nu) (sim2sim: commands
        that arrive part-way through a control period). `substeps()` has every substep's result."""
        if isinstance(ctrl, torch.Tensor):
            ctrl = ctrl.detach().to("cpu", torch.float64).numpy()
        self._control[:] = ctrl if ctrl.ndim == 3 else ctrl[:, None, :]
        self._pool.rollout(
            self.models if self.models is not None else self._shared_models,
            self._datas,
            self.state,
            self._control,
            skip_checks=True,
            nstep=self.decimation,
            state=self._out_state,
            sensordata=self._out_sensor,
        )
        self.state[:] = self._out_state[:, -1]
        if self.nsensordata:
            self.sensordata[:] = self._out_sensor[:, -1]

    def substeps(self) -> tuple[np.ndarray, np.ndarray]:
        """The last `step`'s per-substep results: states (N, decimation, nstate), each after its
        substep, and sensor readings (N, decimation, nsensordata), each computed at the start
        of its substep (see the module docstring). Views, overwritten by the next step."""
        return self._out_state, self._out_sensor

    def set_state(self, env_ids: Sequence[int], qpos: np.ndarray | None = None, qvel: np.ndarray | None = None,
                  time: float | None = 0.0) -> None:
        if qpos is not None:
            self.state[env_ids, self.qpos_slice] = qpos
        if qvel is not None:
            self.state[env_ids, self.qvel_slice] = qvel
        if time is not None:
            self.state[env_ids, 0] = time

    def forward(self, env_ids: Sequence[int]) -> None:
        """Recompute sensors at the current state of `env_ids` (used after resets only)."""
        d = self._scratch
        for i in env_ids:
            m = self.model_of(int(i))
            mujoco.mj_setState(m, d, self.state[i], STATE_SPEC)
            mujoco.mj_forward(m, d)
            if self.nsensordata:
                self.sensordata[i] = d.sensordata

    def data_for(self, env_id: int, data: mujoco.MjData | None = None) -> mujoco.MjData:
        """An MjData holding world `env_id`'s state, forward-computed (for rendering/inspection)."""
        m = self.model_of(env_id)
        d = data if data is not None else mujoco.MjData(m)
        mujoco.mj_setState(m, d, self.state[env_id], STATE_SPEC)
        mujoco.mj_forward(m, d)
        return d

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
