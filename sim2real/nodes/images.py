"""Camera images over ROS 2 <-> numpy, with OpenCV (no cv_bridge): what the sim bridge
publishes and the policy node reads.

The policy sees each camera as the bundle manifest's ``images`` entry says: ``width`` x
``height``, RGB (``rgb8``), uint8, layout CHW, scaled by 1/255 inside the model; a depth
camera adds a fourth channel, uint8 over ``depth.range`` (m).

On the wire (image_transport's conventions for a camera whose image topic is
``<ns>/image_raw``):

- ``<ns>/image_raw``            sensor_msgs/Image: rgb8 (the sim bridge); the policy node also
                                understands bgr8, rgba8 and bgra8 (converted to RGB) and mono8
                                (decoded, then refused for an RGB input: it has no colour)
- ``<ns>/image_raw/compressed`` sensor_msgs/CompressedImage: jpeg or png (`cv2.imencode`)
- ``<ns>/camera_info``          sensor_msgs/CameraInfo: a pinhole model from the vertical
                                field of view (fy = h / (2 tan(fovy / 2)), fx = fy, cx = w / 2,
                                cy = h / 2), no distortion
- ``<ns>/depth/image_raw``      depth cameras: sensor_msgs/Image 16UC1 in millimetres (REP 118;
                                32FC1 in metres is understood too); 0 = no reading (mapped to near)

A message that cannot be an image (empty, a buffer shorter than ``step * height``, a
``step`` shorter than a row, an unknown encoding) raises `ImageError` naming what is wrong;
the policy node counts it as a dropped message and never crashes on it.

`CameraInput` is one camera as the policy node feeds it to the policy; `feed_rendered` hands
it a rendered frame through the same decoders (sim2sim, which has no ROS); `frame_from_msg`
is what the recorder stores. The sim bridge's cameras are `sim_cameras.SimCameras`.

No ROS import at module level (sensor_msgs only inside the functions that make messages):
sim2sim decodes rendered frames with these functions on a machine without ROS 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

# encoding -> channels of the 8-bit colour encodings the policy node understands
COLOR_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
DEPTH_ENCODINGS = {"16UC1": (np.uint16, 1e-3), "32FC1": (np.float32, 1.0)}  # dtype, metres per unit
_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB}
COMPRESSED_FORMATS = ("jpeg", "png")
DEFAULT_CAMERA_RATE = 30.0  # Hz the sim bridge renders at without a bundle: a common camera frame rate


class ImageError(ValueError):
    """A message that is not a usable image for the policy's camera (the reason names it)."""


def camera_topics(image_topic: str) -> dict[str, str]:
    """The topics of a camera whose image is on `image_topic` (image_transport's layout):
    image, compressed, camera_info and depth."""
    ns = image_topic.rsplit("/", 1)[0] if "/" in image_topic.strip("/") else ""
    return {"image": image_topic, "compressed": f"{image_topic}/compressed", "camera_info": f"{ns}/camera_info",
            "depth": f"{ns}/depth/image_raw"}


# ----------------------------------------------------------------------------- decoding
def _rows(msg: Image, bytes_per_pixel: int) -> np.ndarray:
    """(height, width * bytes_per_pixel) uint8 view of `msg`'s pixels (row padding dropped)."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise ImageError(f"empty image ({w}x{h})")
    row = w * bytes_per_pixel
    if step < row:
        raise ImageError(f"step {step} is shorter than a row of {w} {msg.encoding} pixels ({row} bytes)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * h:
        raise ImageError(f"{data.size} bytes of data, a {w}x{h} {msg.encoding} image with step {step} "
                         f"needs {step * h}")
    return data[:step * h].reshape(h, step)[:, :row]


def image_from_msg(msg: Image) -> np.ndarray:
    """A colour Image message's pixels as sent: (H, W, C) uint8 (C from its encoding)."""
    enc = str(msg.encoding)
    if enc not in COLOR_ENCODINGS:
        raise ImageError(f"encoding {enc!r} is not understood (colour images: {', '.join(COLOR_ENCODINGS)}; "
                         f"depth: {', '.join(DEPTH_ENCODINGS)} on the depth topic)")
    c = COLOR_ENCODINGS[enc]
    return _rows(msg, c).reshape(int(msg.height), int(msg.width), c)


def to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) RGB from `image_from_msg`'s pixels; mono8 is refused (an RGB policy needs colour)."""
    if encoding == "rgb8":
        return pixels
    if encoding == "mono8":
        raise ImageError("encoding mono8 (one channel) differs from the bundle's rgb8: the policy was "
                         "trained on colour images")
    return cv2.cvtColor(np.ascontiguousarray(pixels), _TO_RGB[encoding])


def rgb_from_compressed(msg: CompressedImage) -> np.ndarray:
    """(H, W, 3) RGB from a jpeg/png CompressedImage (`cv2.imdecode`)."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageError("empty compressed image")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"compressed image (format {msg.format!r}, {data.size} bytes) could not be decoded")
    if img.dtype != np.uint8:
        raise ImageError(f"compressed image decodes to {img.dtype}, the policy takes 8-bit colour")
    if img.ndim == 2 or img.shape[2] == 1:
        raise ImageError(f"compressed image (format {msg.format!r}) is grayscale: the policy was trained "
                         "on colour images (rgb8)")
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def depth_from_msg(msg: Image, depth_range: tuple[float, float]) -> np.ndarray:
    """(H, W) uint8 from a 16UC1 (mm) / 32FC1 (m) depth Image: metres over `depth_range`
    mapped to 0..255 as in training (`envs.sim.camera_renderer`); no reading (0, NaN) -> 0."""
    enc = str(msg.encoding)
    if enc not in DEPTH_ENCODINGS:
        raise ImageError(f"depth encoding {enc!r} is not understood (expected {' or '.join(DEPTH_ENCODINGS)})")
    dtype, unit = DEPTH_ENCODINGS[enc]
    size = np.dtype(dtype).itemsize
    rows = np.ascontiguousarray(_rows(msg, size))
    order = ">" if msg.is_bigendian else "<"
    metres = rows.view(np.dtype(dtype).newbyteorder(order)).reshape(int(msg.height), int(msg.width)) * unit
    near, far = depth_range
    with np.errstate(invalid="ignore"):
        scaled = np.nan_to_num((metres - near) * (255.0 / (far - near)), nan=0.0)
    return np.clip(scaled, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- encoding
@dataclass
class RawImage:
    """The fields of a sensor_msgs/Image the decoders read, without ROS: what sim2sim hands
    the policy's camera input (`feed_rendered`), so its frames pass the same checks."""

    height: int
    width: int
    encoding: str
    step: int
    data: bytes
    is_bigendian: int = 0


def image_msg(pixels: np.ndarray, encoding: str = "rgb8", stamp=None, frame_id: str = "", ros: bool = True
              ) -> Image | RawImage:
    """An Image message of (H, W, C) uint8 `pixels` (rows unpadded); `ros=False`: a `RawImage`."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = pixels.shape[:2]
    step, data = w * (pixels.shape[2] if pixels.ndim == 3 else 1), pixels.tobytes()
    if not ros:
        return RawImage(h, w, encoding, step, data)
    from sensor_msgs.msg import Image

    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.step, msg.data = step, data
    return msg


def depth_msg(metres: np.ndarray, stamp=None, frame_id: str = "", ros: bool = True) -> Image | RawImage:
    """A 16UC1 depth Image (millimetres, REP 118) of (H, W) depths in metres."""
    mm = np.clip(np.rint(np.nan_to_num(metres, nan=0.0) * 1000.0), 0, 65535).astype("<u2")
    msg = image_msg(mm.view(np.uint8).reshape(mm.shape[0], mm.shape[1], 2), "16UC1", stamp, frame_id, ros)
    msg.is_bigendian = 0
    return msg


def depth_levels_to_metres(levels: np.ndarray, depth_range: tuple[float, float]) -> np.ndarray:
    """A rendered depth channel's uint8 levels as metres at the centre of each level, so that
    `depth_from_msg` of the resulting depth image gives the levels back."""
    near, far = depth_range
    return near + (np.asarray(levels, dtype=np.float64) + 0.5) * (far - near) / 255.0


def compressed_msg(rgb: np.ndarray, fmt: str = "jpeg", stamp=None, frame_id: str = "", quality: int = 90
                   ) -> CompressedImage:
    """A CompressedImage of (H, W, 3) RGB `rgb` as `fmt` (jpeg | png), as image_transport's
    compressed plugin labels it."""
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"compressed format must be one of {COMPRESSED_FORMATS}, got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageError(f"cv2.imencode failed ({fmt})")
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = f"rgb8; {fmt} compressed bgr8"
    msg.data = buf.tobytes()
    return msg


def camera_info_msg(width: int, height: int, fovy_deg: float, stamp=None, frame_id: str = "") -> CameraInfo:
    """A distortion-free pinhole CameraInfo from the vertical field of view (MuJoCo's ``fovy``):
    fy = h / (2 tan(fovy / 2)), fx = fy (square pixels), principal point at the image centre."""
    fy = height / (2.0 * math.tan(math.radians(fovy_deg) / 2.0))
    fx, cx, cy = fy, width / 2.0, height / 2.0
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# ----------------------------------------------------------------------------- the policy's input
@dataclass
class CameraInput:
    """One manifest ``images`` entry as the policy node receives it: the latest accepted
    image (C, H, W) uint8, when it was measured, and why the last message was refused."""

    name: str
    width: int
    height: int
    channels: int
    resize: bool = False  # allow another resolution, resized with cv2.INTER_AREA
    depth_range: tuple[float, float] | None = None  # a depth camera: its 4th channel's range (m)
    image: np.ndarray | None = None  # (channels, height, width) uint8
    measured: float | None = None  # monotonic time the colour image was measured
    depth: np.ndarray | None = None  # (height, width) uint8, depth cameras
    depth_measured: float | None = None
    refused: str | None = None  # why the last message was refused (None: it was accepted)

    @classmethod
    def from_manifest(cls, entry: dict, resize: bool = False) -> CameraInput:
        depth = entry.get("depth") or None
        return cls(str(entry["camera"]), int(entry["width"]), int(entry["height"]), int(entry["channels"]),
                   resize=resize, depth_range=tuple(depth["range"]) if depth else None)

    def _fit(self, pixels: np.ndarray, what: str) -> np.ndarray:
        h, w = pixels.shape[:2]
        if (w, h) == (self.width, self.height):
            return pixels
        if not self.resize:
            raise ImageError(f"{what} is {w}x{h}, the bundle was trained on {self.width}x{self.height} "
                             "(the camera driver must publish that size, or set the resize parameter to resize "
                             "with cv2.INTER_AREA)")
        return cv2.resize(np.ascontiguousarray(pixels), (self.width, self.height), interpolation=cv2.INTER_AREA)

    def accept_rgb(self, rgb: np.ndarray, measured: float) -> None:
        """Keep (H, W, 3) RGB `rgb`, measured at `measured`; `ImageError` if its size is wrong."""
        rgb = self._fit(rgb, f"camera {self.name}'s image")
        self.image = np.ascontiguousarray(rgb.transpose(2, 0, 1))
        self.measured, self.refused = measured, None

    def accept_depth(self, depth: np.ndarray, measured: float) -> None:
        self.depth = self._fit(depth, f"camera {self.name}'s depth image")
        self.depth_measured, self.refused = measured, None

    def refuse(self, why: str) -> None:
        self.refused = why

    def age(self, now: float) -> float:
        """s since the older of its streams was measured (inf: never)."""
        times = [self.measured] + ([self.depth_measured] if self.depth_range is not None else [])
        return math.inf if any(t is None for t in times) else now - min(times)

    def latest(self) -> np.ndarray:
        """The (channels, height, width) uint8 the policy takes (`ImageError` if there is none)."""
        if self.image is None or (self.depth_range is not None and self.depth is None):
            raise ImageError(f"no image from camera {self.name} yet")
        if self.depth_range is None:
            return self.image
        return np.concatenate([self.image, self.depth[None]], axis=0)

    def waiting(self) -> str | None:
        """Why this camera does not feed the policy yet (None: it does)."""
        if self.refused:
            return f"camera {self.name}: {self.refused}"
        if self.image is None:
            return f"camera {self.name}'s image"
        if self.depth_range is not None and self.depth is None:
            return f"camera {self.name}'s depth image"
        return None


def decode_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """(H, W, 3) RGB of a colour Image (any encoding `to_rgb` takes) or a CompressedImage."""
    if hasattr(msg, "format"):  # sensor_msgs/CompressedImage
        return rgb_from_compressed(msg)
    return to_rgb(image_from_msg(msg), str(msg.encoding))


def feed_rendered(cam: CameraInput, frame: np.ndarray, measured: float) -> None:
    """A rendered (C, H, W) uint8 frame (`envs.sim.camera_renderer`) into `cam` as the sim
    bridge sends it and the policy node decodes it: rgb8 bytes (and a depth camera's 16UC1
    millimetres) through `image_from_msg` / `depth_from_msg` and `CameraInput`'s size check.
    Lossless: the policy gets the rendered pixels (the depth channel's levels) back."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3:
        raise ImageError(f"camera {cam.name}: a rendered frame is (C, H, W) uint8, got {frame.dtype} "
                         f"{frame.shape}")
    msg = image_msg(np.ascontiguousarray(frame[:3].transpose(1, 2, 0)), "rgb8", ros=False)
    cam.accept_rgb(to_rgb(image_from_msg(msg), msg.encoding), measured)
    if cam.depth_range is not None:
        metres = depth_levels_to_metres(frame[3], cam.depth_range)
        cam.accept_depth(depth_from_msg(depth_msg(metres, ros=False), cam.depth_range), measured)


def frame_from_msg(cam: CameraInput, msg: Image | CompressedImage, measured: float) -> np.ndarray:
    """The (C, H, W) uint8 rgb8 frame a camera message gives the policy (`CameraInput`'s size
    check or resize; `ImageError` naming what is wrong): what the recorder stores per step."""
    cam.accept_rgb(decode_rgb(msg), measured)
    return cam.image
