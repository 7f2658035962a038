"""Batched camera images on the Warp backend: MuJoCo Warp's ray tracer draws every world's
cameras in one launch, from the Warp arrays the physics steps (no copy of the state to the host).

Same contract as `camera_renderer.CameraRenderer` (``render(env_ids) -> {camera: (n, C, H, W)
uint8}``, `reset`, `describe`, `close`, the same camera randomization draws for the same seed),
chosen by ``render.renderer`` (`camera_renderer.make_camera_renderer`: ``auto`` picks this one on
the Warp backend).

How a frame is made (`render`), all on the Warp device:

1. forward kinematics and camera/light placement (`mujoco_warp.kinematics`, `camlight`) at each
   world's current ``qpos`` and mocap poses (the task's marker positions where it gives them,
   `set_mocap_pos`), written into the renderer's own copies of the pose
   arrays (a shallow copy of the physics `Data` whose output arrays are replaced), so drawing
   never changes the simulation;
2. the scene BVH is refitted to those poses and `mujoco_warp.render` ray-traces every camera of
   every world (one kernel launch);
3. the packed RGB (and planar depth) buffers are unpacked into uint8 ``(N, C, H, W)`` with torch
   on the device, pixel noise added there, and the result copied to the host once (the contract
   returns numpy arrays; the env moves them back to its device).

Per-world visual fields (the randomization and the hidden bodies) live in a render-only view of
the device model (a shallow copy of `mujoco_warp.Model` with its own ``geom_rgba``,
``cam_pos``, ``cam_quat``, ``cam_fovy``, ``light_diffuse``); the physics model is never written.

It is a ray tracer, not a rasterizer: images match the OpenGL renderer's in structure (where
each object is, its colour, depth) but not pixel for pixel (lighting, edges, the checker
texture's filtering differ); `tests/test_warp_render.py` states the measured differences.
There are no reflections (``render.reflections: true`` is refused); ``render.shadows`` casts
shadow rays; ``render.multisample`` is 2x2 supersampling. ``render.nthread`` does not apply
(one launch renders every world). A camera randomization this renderer cannot apply is refused,
naming the field, never ignored.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from roboreal.config import ConfigError
from roboreal.envs.randomization import CameraRandomizationCfg
from roboreal.envs.sim.camera_renderer import (RenderCfg, camera_draw_rng, camera_ids, color_geom_ids, hidden_geom_ids,
                                              describe_camera_draws, draw_camera_randomization)
from roboreal.robots.cameras import CameraSpec

# The randomization fields this renderer applies (per world, on the device). A field added to
# CameraRandomizationCfg and not listed here is refused when it is set, not ignored.
SUPPORTED_RANDOMIZATION = frozenset({"position", "rotation", "fovy", "light", "colors", "color", "noise"})

# Data arrays written by mujoco_warp.kinematics and camlight: the renderer gives its Data view
# its own copies of these, so the physics Data's are never written.
_POSE_FIELDS = ("xpos", "xquat", "xmat", "xipos", "ximat", "xanchor", "xaxis", "geom_xpos", "geom_xmat",
                "site_xpos", "site_xmat", "cam_xpos", "cam_xmat", "light_xpos", "light_xdir")


def _mul_quat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products of (..., 4) quaternions (w, x, y, z), like `mujoco.mju_mulQuat`."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def _check_randomization(r: CameraRandomizationCfg | None) -> None:
    if r is None:
        return
    default = CameraRandomizationCfg()
    for f in dataclasses.fields(r):
        if f.name not in SUPPORTED_RANDOMIZATION and getattr(r, f.name) != getattr(default, f.name):
            raise ConfigError(f"randomization.camera.{f.name}",
                              "not supported by the warp renderer, use render.renderer=opengl")


class WarpCameraRenderer:
    """``render(env_ids) -> {camera: (n, C, H, W) uint8}`` for the worlds of a `WarpBatchSim`."""

    def __init__(self, sim, cameras: list[CameraSpec], cfg: RenderCfg | None = None,
                 randomization: CameraRandomizationCfg | None = None, seed: int = 0):
        if getattr(sim, "backend", None) != "warp":
            raise ConfigError("render.renderer", f"the warp renderer draws the worlds of backend='warp', not "
                                                 f"{getattr(sim, 'backend', type(sim).__name__)!r}")
        self.sim = sim
        self.cfg = cfg or RenderCfg()
        self.cameras = list(cameras)
        self.num_envs = sim.num_envs
        self.randomization = randomization
        if self.cfg.reflections:
            raise ConfigError("render.reflections", "the warp ray tracer draws no reflections; set it false or "
                                                    "use render.renderer=opengl")
        _check_randomization(randomization)
        fovy_random = randomization is not None and randomization.fovy > 0
        if self.cfg.multisample and fovy_random:
            raise ConfigError("render.multisample", "the warp renderer cannot supersample with "
                                                    "randomization.camera.fovy (per-world rays); use "
                                                    "render.renderer=opengl or multisample=false")
        wp, mjw = sim._wp, sim._mjw
        self._wp, self._mjw = wp, mjw
        m = sim.model
        self.cam_ids = camera_ids(m, self.cameras)
        # hidden bodies (task markers a real camera does not see): alpha 0, which the ray tracer skips
        self.hidden_geoms = hidden_geom_ids(m, self.cfg.hide_bodies)
        self.color_geoms = color_geom_ids(m, randomization)
        # a geom drawn in its material's colour: jitter that colour (written as the geom's own), as the OpenGL one
        self.nominal = {"cam_pos": m.cam_pos.copy(), "cam_quat": m.cam_quat.copy(), "cam_fovy": m.cam_fovy.copy(),
                        "light_diffuse": m.light_diffuse.copy(), "geom_rgba": m.geom_rgba.copy()}
        self.nominal["geom_rgba"][self.hidden_geoms, 3] = 0.0
        self.nominal["color_rgba"] = np.array([m.mat_rgba[m.geom_matid[g]] if m.geom_matid[g] >= 0 else m.geom_rgba[g]
                                               for g in self.color_geoms]).reshape(-1, 4)
        n, k = self.num_envs, len(self.cameras)
        self.rng = camera_draw_rng(seed)  # the OpenGL renderer's stream: the same draws
        self.cam_offset = np.zeros((n, k, 3))
        self.cam_rotation = np.tile([1.0, 0.0, 0.0, 0.0], (n, k, 1))
        self.fovy_offset = np.zeros((n, k))
        self.light_scale = np.ones(n)
        self.color_offset = np.zeros((n, len(self.color_geoms), 3))
        self.noise_gen = torch.Generator(device=sim.device).manual_seed(int(seed) * 7919 + 0x0CA3)
        self._mocap_pos = None  # each world's mocap positions (`set_mocap_pos`); None: the physics Data's

        dev = sim.wp_device
        self._device = dev
        worlds = n if randomization is not None else 1  # kernels index a per-world field by world % rows
        with wp.ScopedDevice(dev):
            vec = {"geom_rgba": wp.vec4, "cam_pos": wp.vec3, "cam_quat": wp.quat, "cam_fovy": wp.float32,
                   "light_diffuse": wp.vec3}
            self._fields = {}
            for name, dtype in vec.items():
                host = np.repeat(self.nominal[name][None], worlds, axis=0).astype(np.float32)
                self._fields[name] = wp.array(host, dtype=dtype)
            # the renderer's own pose arrays (kinematics output), so the physics Data is only read;
            # copies, not zeros: kinematics never writes the world body's frame (identity quaternion)
            self._pose = {name: wp.clone(getattr(sim._d, name)) for name in _POSE_FIELDS}
            self.rc = mjw.create_render_context(
                m, nworld=n, cam_res=[(c.width, c.height) for c in self.cameras], render_rgb=True,
                render_depth=[c.depth for c in self.cameras], render_seg=False, use_textures=True,
                use_shadows=self.cfg.shadows, cam_active=[int(i) for i in self.cam_ids],
                use_precomputed_rays=not fovy_random, samples_per_pixel=2 if self.cfg.multisample else 1)
        self._rgb_adr = self.rc.rgb_adr.numpy()
        self._depth_adr = self.rc.depth_adr.numpy()
        # far plane: a ray that hits nothing is as far as the OpenGL depth buffer's clear value
        self._zfar = float(m.vis.map.zfar * m.stat.extent)

    @property
    def shapes(self) -> dict[str, tuple[int, int, int]]:
        return {c.name: c.shape for c in self.cameras}

    def set_mocap_pos(self, pos) -> None:
        """Draw the mocap bodies (task markers such as the goal sphere) of every world at `pos`,
        ``(N, nmocap, 3)`` world positions, from the next render on (the renderer's own array: the
        physics Data's mocap poses are not written)."""
        pos = torch.as_tensor(pos, dtype=torch.float32, device=self.sim.device)
        want = (self.num_envs, self.sim.model.nmocap, 3)
        if tuple(pos.shape) != want:
            raise ValueError(f"mocap positions of shape {tuple(pos.shape)}, expected {want}")
        if self._mocap_pos is None:
            self._mocap_pos = self._wp.clone(self.sim._d.mocap_pos)
        self._wp.to_torch(self._mocap_pos).copy_(pos)

    # ----- randomization -----
    def reset(self, env_ids) -> None:
        """Draw the camera randomization of the worlds `env_ids` (at their episode start)."""
        r = self.randomization
        if r is None:
            return
        ids = draw_camera_randomization(self, r, env_ids)  # the same draws as CameraRenderer.reset
        if len(ids):
            self._upload(ids)

    def _upload(self, ids: np.ndarray) -> None:
        """Write the draws of the worlds `ids` into the render model's per-world fields (their rows only)."""
        nom, n = self.nominal, len(ids)
        cam_pos = np.repeat(nom["cam_pos"][None], n, axis=0)
        cam_quat = np.repeat(nom["cam_quat"][None], n, axis=0)
        cam_fovy = np.repeat(nom["cam_fovy"][None], n, axis=0)
        cam_pos[:, self.cam_ids] += self.cam_offset[ids]
        cam_quat[:, self.cam_ids] = _mul_quat(nom["cam_quat"][self.cam_ids][None], self.cam_rotation[ids])
        cam_fovy[:, self.cam_ids] += self.fovy_offset[ids]
        light = nom["light_diffuse"][None] * self.light_scale[ids, None, None]
        rgba = np.repeat(nom["geom_rgba"][None], n, axis=0)
        if len(self.color_geoms):
            rgba[:, self.color_geoms, :3] = np.clip(nom["color_rgba"][None, :, :3] + self.color_offset[ids], 0, 1)
        rows = torch.as_tensor(ids, device=self.sim.device)
        for name, host in (("cam_pos", cam_pos), ("cam_quat", cam_quat), ("cam_fovy", cam_fovy),
                           ("light_diffuse", light), ("geom_rgba", rgba)):
            self._wp.to_torch(self._fields[name])[rows] = torch.as_tensor(host, dtype=torch.float32,
                                                                           device=self.sim.device)

    def describe(self, env_id: int) -> dict:
        """World `env_id`'s camera draws (what its images were rendered with)."""
        return describe_camera_draws(self, env_id)

    # ----- rendering -----
    def _views(self):
        """The render-only model and data: shallow copies of the physics ones (taken at each render,
        so fields the physics gives a world dimension later are seen) with the renderer's own arrays."""
        m = copy.copy(self.sim._m)
        for name, arr in self._fields.items():
            setattr(m, name, arr)
        d = copy.copy(self.sim._d)
        for name, arr in self._pose.items():
            setattr(d, name, arr)
        if self._mocap_pos is not None:
            d.mocap_pos = self._mocap_pos
        return m, d

    def _trace(self) -> None:
        wp, mjw = self._wp, self._mjw
        m, d = self._views()
        with wp.ScopedDevice(self._device):
            mjw.kinematics(m, d)
            mjw.camlight(m, d)
            mjw.refit_bvh(m, d, self.rc)
            mjw.render(m, d, self.rc)

    def render(self, env_ids=None) -> dict[str, np.ndarray]:
        """Images of the worlds `env_ids` (default: all), ``{camera: (n, C, H, W) uint8}``.

        Every world is traced (one launch); the rows of `env_ids` are taken from the result."""
        ids = None if env_ids is None else torch.as_tensor(np.asarray(env_ids, dtype=np.int64).reshape(-1),
                                                           device=self.sim.device)
        if ids is not None and len(ids) == 0:
            return {c.name: np.empty((0, *c.shape), dtype=np.uint8) for c in self.cameras}
        self._trace()
        wp = self._wp
        packed = wp.to_torch(self.rc.rgb_data.view(wp.int32))  # (N, pixels of every camera), 0xAARRGGBB
        depth = wp.to_torch(self.rc.depth_data) if any(c.depth for c in self.cameras) else None
        noise = self.randomization.noise if self.randomization is not None else 0.0
        out = {}
        for j, cam in enumerate(self.cameras):
            h, w = cam.height, cam.width
            a = int(self._rgb_adr[j])
            px = packed[:, a:a + h * w] if ids is None else packed[ids, a:a + h * w]
            px = px.reshape(-1, 1, h, w)
            chans = [(px >> 16) & 0xFF, (px >> 8) & 0xFF, px & 0xFF]
            if cam.depth:
                a = int(self._depth_adr[j])
                z = depth[:, a:a + h * w] if ids is None else depth[ids, a:a + h * w]
                z = torch.where(z > 0, z, self._zfar).reshape(-1, 1, h, w)  # 0: the ray hit nothing
                near, far = cam.depth_range
                chans.append(torch.clamp((z - near) * (255.0 / (far - near)), 0, 255).to(torch.uint8))
            img = torch.cat([c.to(torch.uint8) for c in chans], dim=1)
            if noise > 0:
                noisy = img + torch.randn(img.shape, generator=self.noise_gen, device=img.device) * noise
                img = torch.clamp(torch.round(noisy), 0, 255).to(torch.uint8)
            out[cam.name] = img.cpu().numpy()
        return out

    def close(self) -> None:
        self.rc = None
        self._pose = {}
        self._fields = {}
