"""Batched camera images: every world's cameras rendered into ``(N, C, H, W)`` uint8 arrays.

One `mujoco.Renderer` (an OpenGL context; ``MUJOCO_GL=egl`` headless) per worker thread and
image size, each made and used only in its own thread; the worlds are split between the
threads. The visual settings are speed-first unless a task asks otherwise (`RenderCfg`): no
shadows, reflections or multisampling. Measured on this 2-core machine (panda scene, 84x84,
`benchmarks/render_throughput.py`): the model's defaults render a few frames/s, these
settings hundreds per core.

A world is drawn from its state alone: positions are loaded into the thread's MjData and only
kinematics and camera/light placement are computed (no dynamics), so rendering does not
change the simulation. The physics state holds no mocap poses: a task that moves a marker
(the goal sphere) gives the renderer its positions per world (`set_mocap_pos`). Works on
both backends (the Warp backend copies a world's state to the host first: correct, not fast).
`RenderCfg.renderer` chooses (`make_camera_renderer`): ``auto`` draws the Warp backend's worlds with MuJoCo Warp's batch ray tracer instead
(`warp_renderer.WarpCameraRenderer`, same contract) and uses this renderer everywhere else.

Camera randomization (`CameraRandomizationCfg`, drawn per world at each reset): camera
offset, rotation and field of view, light intensity, colours of named geoms, and Gaussian
pixel noise per frame. Values are written into the thread's own copy of the model just
before the world is drawn, so the physics model is never touched.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import mujoco
import numpy as np

from roboreal.config import ConfigError
from roboreal.envs.randomization import CameraRandomizationCfg
from roboreal.robots.cameras import CameraSpec

STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


@dataclass
class RenderCfg:
    # which renderer draws the images: "opengl" (this module, any backend), "warp" (MuJoCo Warp's
    # batch ray tracer, envs/sim/warp_renderer.py; backend=warp only), "auto": warp on the warp backend
    renderer: Literal["auto", "opengl", "warp"] = "auto"
    nthread: int | None = None  # renderer threads (one OpenGL context each); None: one per core
    shadows: bool = False
    reflections: bool = False
    multisample: bool = False
    # bodies a real camera does not see (task markers such as the goal sphere)
    hide_bodies: tuple[str, ...] = ("goal",)


def style_marker(model: mujoco.MjModel, body: str, radius: float, rgba) -> np.ndarray:
    """Draw the task marker `body` (a mocap body's sphere, such as the goal) in `model` with
    `radius` (m) and `rgba` (its own colour, no material); visual only (it collides with
    nothing). Returns its geom ids. The task that trains on the marker and the sim bridge
    that draws it for a deployed policy (from the bundle manifest's ``images[].markers``)
    both call this, so a policy sees the marker it was trained on."""
    bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body)
    if bid < 0:
        raise ConfigError("markers", f"{body!r} is not a body of the model")
    geoms = np.flatnonzero(model.geom_bodyid == bid)
    model.geom_size[geoms, 0] = float(radius)
    model.geom_rbound[geoms] = float(radius)
    model.geom_rgba[geoms] = np.asarray(rgba, dtype=np.float64)
    model.geom_matid[geoms] = -1
    return geoms


def _random_rotation(rng: np.random.Generator, n: int, max_angle: float) -> np.ndarray:
    """(n, 4) unit quaternions: rotations by a uniform angle in [-max_angle, max_angle] about a random axis."""
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True) + 1e-12
    half = 0.5 * rng.uniform(-max_angle, max_angle, size=(n, 1))
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=1)


class CameraRenderer:
    """``render(env_ids) -> {camera: (n, C, H, W) uint8}`` for the worlds of a `BatchSim`."""

    def __init__(self, sim, cameras: list[CameraSpec], cfg: RenderCfg | None = None,
                 randomization: CameraRandomizationCfg | None = None, seed: int = 0):
        self.sim = sim
        self.cfg = cfg or RenderCfg()
        self.cameras = list(cameras)
        self.num_envs = sim.num_envs
        m = sim.model
        self.cam_ids = camera_ids(m, self.cameras)
        for cam in self.cameras:
            if cam.width > m.vis.global_.offwidth or cam.height > m.vis.global_.offheight:
                raise ConfigError(f"cameras.{cam.name}", f"{cam.width}x{cam.height} is larger than the model's "
                                  f"offscreen buffer {m.vis.global_.offwidth}x{m.vis.global_.offheight}")
        # the model the renderers draw: a copy with the visual settings, never the physics model
        self.render_model = self._visual_copy(m)
        self.randomization = randomization
        self.rng = camera_draw_rng(seed)
        n, k = self.num_envs, len(self.cameras)
        self.nominal = {"cam_pos": self.render_model.cam_pos[self.cam_ids].copy(),
                        "cam_quat": self.render_model.cam_quat[self.cam_ids].copy(),
                        "cam_fovy": self.render_model.cam_fovy[self.cam_ids].copy(),
                        "light_diffuse": self.render_model.light_diffuse.copy()}
        self.color_geoms = color_geom_ids(self.render_model, randomization)
        rm = self.render_model
        # a geom drawn in its material's colour: jitter that colour (written as the geom's own)
        self.nominal["geom_rgba"] = np.array([rm.mat_rgba[rm.geom_matid[g]] if rm.geom_matid[g] >= 0 else rm.geom_rgba[g]
                                              for g in self.color_geoms]).reshape(-1, 4)
        # per-world draws (identity until randomized)
        self.cam_offset = np.zeros((n, k, 3))
        self.cam_rotation = np.tile([1.0, 0.0, 0.0, 0.0], (n, k, 1))
        self.fovy_offset = np.zeros((n, k))
        self.light_scale = np.ones(n)
        self.color_offset = np.zeros((n, len(self.color_geoms), 3))
        # where each world's mocap bodies are drawn (N, nmocap, 3), given by the task (`set_mocap_pos`):
        # the physics state holds no mocap poses; None draws them where the model puts them
        self.mocap_pos: np.ndarray | None = None
        nthread = self.cfg.nthread if self.cfg.nthread is not None else (os.cpu_count() or 1)
        self.nthread = max(1, min(int(nthread), n))
        self._local = threading.local()
        self._states: list = []  # every thread's (model, data, renderers), closed together
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.nthread, thread_name_prefix="roboreal-render") if self.nthread > 1 else None

    def _visual_copy(self, model: mujoco.MjModel) -> mujoco.MjModel:
        m = _copy(model)
        if not self.cfg.shadows:
            m.vis.quality.shadowsize = 0
        if not self.cfg.multisample:
            m.vis.quality.offsamples = 0
        m.geom_rgba[hidden_geom_ids(m, self.cfg.hide_bodies), 3] = 0.0
        return m

    @property
    def shapes(self) -> dict[str, tuple[int, int, int]]:
        return {c.name: c.shape for c in self.cameras}

    def set_mocap_pos(self, pos) -> None:
        """Draw the mocap bodies (task markers such as the goal sphere) of every world at `pos`,
        ``(N, nmocap, 3)`` world positions (numpy or torch), from the next render on."""
        if hasattr(pos, "detach"):
            pos = pos.detach().cpu().numpy()
        pos = np.asarray(pos, dtype=np.float64)
        want = (self.num_envs, self.render_model.nmocap, 3)
        if pos.shape != want:
            raise ValueError(f"mocap positions of shape {pos.shape}, expected {want}")
        self.mocap_pos = pos

    # ----- randomization -----
    def reset(self, env_ids) -> None:
        """Draw the camera randomization of the worlds `env_ids` (at their episode start)."""
        r = self.randomization
        if r is None:
            return
        draw_camera_randomization(self, r, env_ids)

    def describe(self, env_id: int) -> dict:
        """World `env_id`'s camera draws (what its images were rendered with)."""
        return describe_camera_draws(self, env_id)

    # ----- rendering -----
    def _thread_state(self):
        st = getattr(self._local, "state", None)
        if st is None:
            model = _copy(self.render_model)
            data = mujoco.MjData(model)
            renderers = {}
            for cam in self.cameras:
                key = (cam.width, cam.height)
                if key not in renderers:
                    r = mujoco.Renderer(model, cam.height, cam.width)
                    r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(self.cfg.shadows)
                    r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(self.cfg.reflections)
                    renderers[key] = r
            st = self._local.state = (model, data, renderers)
            with self._lock:
                self._states.append(st)
        return st

    def _draw(self, rows: np.ndarray, ids: np.ndarray, out: dict[str, np.ndarray]) -> None:
        model, data, renderers = self._thread_state()
        nom = self.nominal
        state = getattr(self.sim, "state", None)  # the C backend's host state: no copy needed
        for row, i in zip(rows, ids):
            if state is not None:
                mujoco.mj_setState(model, data, state[i], STATE_SPEC)
            else:
                src = self.sim.data_for(int(i))
                data.qpos[:], data.mocap_pos[:], data.mocap_quat[:] = src.qpos, src.mocap_pos, src.mocap_quat
            if self.mocap_pos is not None:
                data.mocap_pos[:] = self.mocap_pos[i]
            # this world's camera draws, written into the thread's model
            model.cam_pos[self.cam_ids] = nom["cam_pos"] + self.cam_offset[i]
            for j, cid in enumerate(self.cam_ids):
                mujoco.mju_mulQuat(model.cam_quat[cid], nom["cam_quat"][j], self.cam_rotation[i, j])
            model.cam_fovy[self.cam_ids] = nom["cam_fovy"] + self.fovy_offset[i]
            model.light_diffuse[:] = nom["light_diffuse"] * self.light_scale[i]
            if len(self.color_geoms):
                model.geom_rgba[self.color_geoms, :3] = np.clip(nom["geom_rgba"][:, :3] + self.color_offset[i], 0, 1)
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)
            for cam, cid in zip(self.cameras, self.cam_ids):
                r = renderers[(cam.width, cam.height)]
                r.update_scene(data, camera=int(cid))
                img = out[cam.name][row]
                img[:3] = r.render().transpose(2, 0, 1)
                if cam.depth:
                    r.enable_depth_rendering()
                    depth = r.render()
                    r.disable_depth_rendering()
                    near, far = cam.depth_range
                    img[3] = np.clip((depth - near) * (255.0 / (far - near)), 0, 255).astype(np.uint8)

    def _draw_and_release(self, rows: np.ndarray, ids: np.ndarray, out: dict[str, np.ndarray]) -> None:
        try:
            self._draw(rows, ids, out)
        finally:
            _release_gl_context()

    def render(self, env_ids=None) -> dict[str, np.ndarray]:
        """Images of the worlds `env_ids` (default: all), ``{camera: (n, C, H, W) uint8}``."""
        ids = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids, dtype=int).reshape(-1)
        out = {c.name: np.empty((len(ids), *c.shape), dtype=np.uint8) for c in self.cameras}
        if len(ids) == 0:
            return out
        rows = np.arange(len(ids))
        if self._pool is None or len(ids) < 2:
            self._draw_and_release(rows, ids, out)
        else:
            parts = np.array_split(rows, min(self.nthread, len(ids)))
            for f in [self._pool.submit(self._draw_and_release, p, ids[p], out) for p in parts]:
                f.result()
        if self.randomization is not None and self.randomization.noise > 0:
            for name, img in out.items():
                noisy = img + self.rng.normal(0.0, self.randomization.noise, size=img.shape)
                out[name] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        return out

    def close(self) -> None:
        # no context is left current in any thread after a render, so this thread may free them all
        with self._lock:
            states, self._states = self._states, []
        for _, _, renderers in states:
            for r in renderers.values():
                r.close()
        _release_gl_context()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._local = threading.local()


def camera_ids(model: mujoco.MjModel, cameras: list[CameraSpec]) -> np.ndarray:
    """The model's ids of `cameras`; a camera the model lacks is refused."""
    ids = []
    for cam in cameras:
        cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam.name)
        if cid < 0:
            raise ConfigError("env.image_observations", f"camera {cam.name!r} is not in the model")
        ids.append(cid)
    return np.array(ids, dtype=int)


def hidden_geom_ids(model: mujoco.MjModel, bodies: tuple[str, ...]) -> np.ndarray:
    """The geoms of `bodies` (task markers a real camera does not see; a name the model lacks is
    skipped: not every scene has every marker)."""
    ids = [np.nonzero(model.geom_bodyid == bid)[0]
           for bid in (mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name) for name in bodies) if bid >= 0]
    return np.concatenate(ids) if ids else np.zeros(0, dtype=int)


def color_geom_ids(model: mujoco.MjModel, randomization: CameraRandomizationCfg | None) -> np.ndarray:
    """The ids of the geoms whose colour `randomization` jitters; an unknown name is refused."""
    ids = []
    for name in (randomization.colors if randomization else ()):
        gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
        if gid < 0:
            raise ConfigError("randomization.camera.colors", f"{name!r} is not a geom of the model")
        ids.append(gid)
    return np.array(ids, dtype=int)


def camera_draw_rng(seed: int) -> np.random.Generator:
    """The stream camera randomization is drawn from: the same for both renderers, so one seed
    gives the same draws on either."""
    return np.random.default_rng([seed, 0x0CA3])


def draw_camera_randomization(renderer, r: CameraRandomizationCfg, env_ids) -> np.ndarray:
    """Draw the camera randomization `r` of the worlds `env_ids` into `renderer`'s per-world
    arrays (``cam_offset``, ``cam_rotation``, ``fovy_offset``, ``light_scale``,
    ``color_offset``) from its ``rng``: both renderers draw through here, so the same seed
    gives the same draws on either. Returns the world ids drawn."""
    ids = np.asarray(env_ids, dtype=int).reshape(-1)
    n, k = len(ids), len(renderer.cameras)
    if n == 0:
        return ids
    rng = renderer.rng
    renderer.cam_offset[ids] = rng.uniform(-r.position, r.position, size=(n, k, 3))
    renderer.cam_rotation[ids] = _random_rotation(rng, n * k, r.rotation).reshape(n, k, 4)
    renderer.fovy_offset[ids] = rng.uniform(-r.fovy, r.fovy, size=(n, k))
    renderer.light_scale[ids] = rng.uniform(*r.light, size=n)
    renderer.color_offset[ids] = rng.uniform(-r.color, r.color, size=(n, len(renderer.color_geoms), 3))
    return ids


def describe_camera_draws(renderer, env_id: int) -> dict:
    """World `env_id`'s camera draws in `renderer` (what its images were rendered with)."""
    return {"camera_offset": renderer.cam_offset[env_id].tolist(),
            "camera_rotation": renderer.cam_rotation[env_id].tolist(),
            "fovy_offset": renderer.fovy_offset[env_id].tolist(), "light_scale": float(renderer.light_scale[env_id]),
            "color_offset": renderer.color_offset[env_id].tolist()}


def make_camera_renderer(sim, cameras: list[CameraSpec], cfg: RenderCfg | None = None,
                         randomization: CameraRandomizationCfg | None = None, seed: int = 0):
    """The renderer `cfg.renderer` names for `sim`: ``auto`` is MuJoCo Warp's batch ray tracer
    (`warp_renderer.WarpCameraRenderer`) on the warp backend and OpenGL (`CameraRenderer`) otherwise;
    ``warp`` on another backend is refused."""
    cfg = cfg or RenderCfg()
    backend = getattr(sim, "backend", "mujoco")
    if cfg.renderer == "warp" and backend != "warp":
        raise ConfigError("render.renderer", f"'warp' draws the worlds of backend='warp', this env runs "
                                             f"backend={backend!r}: use render.renderer=opengl (or auto)")
    if cfg.renderer == "warp" or (cfg.renderer == "auto" and backend == "warp"):
        from roboreal.envs.sim.warp_renderer import WarpCameraRenderer

        return WarpCameraRenderer(sim, cameras, cfg, randomization, seed)
    return CameraRenderer(sim, cameras, cfg, randomization, seed)


def _release_gl_context() -> None:
    """Unbind this thread's current OpenGL context (EGL), so that another thread (the one that
    closes the renderer, or the interpreter's exit) can bind and free it."""
    if os.environ.get("MUJOCO_GL", "").lower() != "egl":
        return
    import mujoco.egl as egl

    if egl.EGL_DISPLAY is not None:
        egl.EGL.eglMakeCurrent(egl.EGL_DISPLAY, egl.EGL.EGL_NO_SURFACE, egl.EGL.EGL_NO_SURFACE, egl.EGL.EGL_NO_CONTEXT)


def _copy(model: mujoco.MjModel) -> mujoco.MjModel:
    import copy

    return copy.copy(model)
