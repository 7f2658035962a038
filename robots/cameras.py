"""Cameras: declared in robot.yaml (``cameras:``, e.g. a wrist camera) or by a task (a fixed
camera over the scene), added to the model through `mujoco.MjSpec` when the MJCF lacks them.

A camera is mounted on a body (``body:``; none: the world, a fixed camera) at ``pos`` in
that body's frame, pointing at ``lookat`` (a point in the same frame) with ``up`` as the
image's up direction, or oriented by ``quat`` (w, x, y, z; MuJoCo's convention: the camera
looks along its -z axis, image up is +y). A camera the MJCF already has (same name) is used
as the MJCF places it; ``fovy`` then overrides the MJCF's only if given.

The image the policy sees is ``width`` x ``height`` RGB (``depth: true`` adds a channel:
metres over ``depth_range`` mapped to 0..255), the same size the robot's camera driver
must publish (the policy node refuses another size or encoding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from roboreal.config import ConfigError

if TYPE_CHECKING:
    import mujoco

DEFAULT_FOVY = 58.0  # degrees: a common RGB-D camera's vertical field of view (RealSense D435 colour)


@dataclass(frozen=True)
class CameraSpec:
    name: str
    width: int = 64
    height: int = 64
    fovy: float | None = None  # vertical field of view (deg); None: the MJCF's, or DEFAULT_FOVY for an added camera
    body: str | None = None  # the body it is mounted on; None: the world (a fixed camera)
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)  # m, in the body's frame
    lookat: tuple[float, float, float] | None = None  # a point it looks at, in the body's frame
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)  # the image's up direction, roughly
    quat: tuple[float, float, float, float] | None = None  # w, x, y, z (instead of lookat)
    depth: bool = False  # add a depth channel (uint8 over depth_range)
    depth_range: tuple[float, float] = (0.05, 2.0)  # m: near -> 0, far -> 255
    topic: str | None = None  # ROS image topic; None: /camera/<name>/image_raw

    @property
    def channels(self) -> int:
        return 3 + int(self.depth)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the image observation."""
        return (self.channels, self.height, self.width)

    @property
    def image_topic(self) -> str:
        return self.topic or f"/camera/{self.name}/image_raw"

    def check(self, where: str) -> None:
        """Refuse values no renderer or camera can have, naming the field."""
        if not self.name or not str(self.name).replace("_", "").isalnum():
            raise ConfigError(f"{where}.name", f"must be letters, digits and _, got {self.name!r}")
        for f in ("width", "height"):
            v = getattr(self, f)
            if not isinstance(v, int) or not 8 <= v <= 1024:
                raise ConfigError(f"{where}.{f}", f"must be an integer pixel count in [8, 1024], got {v!r}")
        if self.fovy is not None and not 1.0 <= float(self.fovy) <= 170.0:
            raise ConfigError(f"{where}.fovy", f"must be in [1, 170] degrees, got {self.fovy!r}")
        if self.lookat is not None and self.quat is not None:
            raise ConfigError(f"{where}.quat", "give lookat or quat, not both")
        for f in ("pos", "lookat", "up", "quat", "depth_range"):
            v = getattr(self, f)
            if v is not None and not np.all(np.isfinite(np.asarray(v, dtype=float))):
                raise ConfigError(f"{where}.{f}", f"must be finite, got {v!r}")
        if self.lookat is not None and np.linalg.norm(np.subtract(self.lookat, self.pos)) < 1e-6:
            raise ConfigError(f"{where}.lookat", "is the camera's own position")
        if self.quat is not None and np.linalg.norm(self.quat) < 1e-6:
            raise ConfigError(f"{where}.quat", "is zero")
        near, far = self.depth_range
        if not 0 <= near < far:
            raise ConfigError(f"{where}.depth_range", f"must be [near, far] with 0 <= near < far, got {self.depth_range!r}")


def look_at_xyaxes(pos, lookat, up=(0.0, 0.0, 1.0)) -> list[float]:
    """MuJoCo's camera ``xyaxes`` (image right, image up) for a camera at `pos` looking at
    `lookat`: it looks along its -z, so z = pos - lookat."""
    z = np.subtract(pos, lookat).astype(float)
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, dtype=float), z)
    if np.linalg.norm(x) < 1e-6:  # looking along `up`: any right direction will do
        x = np.cross([0.0, 1.0, 0.0] if abs(z[1]) < 0.9 else [1.0, 0.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return [*x.tolist(), *y.tolist()]


def xyaxes_quat(xyaxes: list[float]) -> list[float]:
    """The unit quaternion (w, x, y, z) of the frame whose x and y axes are `xyaxes`."""
    import mujoco

    x, y = np.asarray(xyaxes[:3], dtype=float), np.asarray(xyaxes[3:], dtype=float)
    mat = np.stack([x, y, np.cross(x, y)], axis=1)  # columns: the frame's axes in the parent
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(-1))
    return quat.tolist()


def add_cameras(mspec: "mujoco.MjSpec", m: "mujoco.MjModel", cameras: tuple[CameraSpec, ...] | list[CameraSpec],
                where: str = "cameras") -> list[str]:
    """Add to `mspec` (the MJCF compiled as `m`) each camera it lacks; set ``fovy`` on those
    it has when the spec gives one. Returns what was added, for `robot check`."""
    import mujoco

    added: list[str] = []
    seen: set[str] = set()
    for i, cam in enumerate(cameras):
        at = f"{where}[{i}]"
        cam.check(at)
        if cam.name in seen:
            raise ConfigError(f"{at}.name", f"camera {cam.name!r} is declared twice")
        seen.add(cam.name)
        if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cam.name) >= 0:
            placed = [f for f in ("body", "lookat", "quat") if getattr(cam, f) is not None] + \
                     (["pos"] if any(cam.pos) else [])
            if placed:  # the MJCF places it: a second placement here would be silently ignored
                raise ConfigError(f"{at}.{placed[0]}", f"the model already has camera {cam.name!r} and places it; "
                                  "give only its name, size and fovy here (or rename it to add another camera)")
            if cam.fovy is not None:
                mspec.camera(cam.name).fovy = float(cam.fovy)
            continue
        if cam.body is None:
            parent = mspec.worldbody
        else:
            if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, cam.body) < 0:
                raise ConfigError(f"{at}.body", f"{cam.body!r} is not a body of the model")
            parent = mspec.body(cam.body)
        kwargs: dict = {"name": cam.name, "pos": list(map(float, cam.pos)),
                        "fovy": float(cam.fovy if cam.fovy is not None else DEFAULT_FOVY)}
        if cam.quat is not None:
            q = np.asarray(cam.quat, dtype=float)
            kwargs["quat"] = (q / np.linalg.norm(q)).tolist()
        elif cam.lookat is not None:
            kwargs["quat"] = xyaxes_quat(look_at_xyaxes(cam.pos, cam.lookat, cam.up))
        parent.add_camera(**kwargs)
        added.append(f"camera {cam.name} ({cam.width}x{cam.height}) on {'the world' if cam.body is None else cam.body}")
    return added
