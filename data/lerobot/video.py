"""Camera frames as LeRobot v3 videos: mp4 files of many episodes each, written and read with ffmpeg.

LeRobot v3 stores a camera as ``videos/<video_key>/chunk-CCC/file-FFF.mp4``: the episodes'
frames back to back, an episode found by ``videos/<video_key>/from_timestamp`` in the
episode metadata (frames before it / fps). Written here with imageio-ffmpeg's ffmpeg binary
as H.264 (``libx264``, ``-g 2`` as LeRobot encodes: a key frame every 2 frames keeps random
access cheap), pixel format yuv420p (yuv444p for odd sizes, which 4:2:0 cannot hold), `CRF`;
read back as RGB (or grey) uint8. H.264 is lossy: frames come back close, not equal
(`tests/test_data_images.py` measures how close). LeRobot's own default is AV1; its loaders
(torchcodec, pyav) decode H.264 as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from roboreal.data import DatasetError
from roboreal.data.lerobot.layout import QUANTILES

CODEC = "libx264"
CODEC_NAME = "h264"  # what info.json's video.codec says (ffprobe's name)
CRF = 18  # visually lossless for H.264; small frames stay within a few grey levels
GOP = 2


def pix_fmt(height: int, width: int) -> str:
    """yuv420p (what every player decodes) unless a side is odd (4:2:0 needs even sizes)."""
    return "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"


class VideoFile:
    """One mp4 being written: frames (H, W, C) uint8, C 3 (RGB) or 1 (grey), at `fps`."""

    def __init__(self, path: Path, height: int, width: int, channels: int, fps: float):
        import imageio_ffmpeg

        if channels not in (1, 3):
            raise DatasetError(f"{path}: a video holds 1 (grey) or 3 (RGB) channels, not {channels}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames, self.shape = path, 0, (height, width, channels)
        self._gen = imageio_ffmpeg.write_frames(
            str(path), (width, height), pix_fmt_in="rgb24" if channels == 3 else "gray",
            pix_fmt_out=pix_fmt(height, width), fps=fps, codec=CODEC, quality=None, macro_block_size=1,
            output_params=["-crf", str(CRF), "-g", str(GOP)], ffmpeg_log_level="error")
        self._gen.send(None)

    def write(self, frames: np.ndarray) -> None:
        """(T, H, W, C) uint8 frames appended."""
        if frames.shape[1:] != self.shape:
            raise DatasetError(f"{self.path}: frames of shape {frames.shape[1:]}, the video is {self.shape}")
        for f in frames:
            self._gen.send(np.ascontiguousarray(f))
        self.frames += len(frames)

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()  # ffmpeg finishes the file
            self._gen = None


class VideoReader:
    """Frames of mp4 files read forward: `frames(path, start, n)` decodes from the file's start
    once and keeps going for the next episode of the same file (episodes are read in order)."""

    def __init__(self):
        self._path: Path | None = None
        self._gen: Iterator | None = None
        self._pos = 0
        self._shape: tuple[int, int, int] | None = None

    def _open(self, path: Path, channels: int) -> None:
        import imageio_ffmpeg

        self.close()
        if not path.is_file():
            raise DatasetError(f"{path}: missing (a video the episode metadata points to)")
        try:
            self._gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24" if channels == 3 else "gray",
                                                   bits_per_pixel=8 * channels)
            meta = next(self._gen)
        except (RuntimeError, OSError, StopIteration) as e:
            raise DatasetError(f"{path}: not a readable video ({e})") from None
        width, height = meta["size"]
        self._path, self._pos, self._shape = path, 0, (int(height), int(width), channels)

    def frames(self, path: Path, start: int, n: int, channels: int = 3) -> np.ndarray:
        """(n, H, W, channels) uint8: frames start .. start + n - 1 of `path`."""
        if self._path != path or self._pos > start or self._shape[2] != channels:
            self._open(path, channels)
        out = []
        try:
            while self._pos < start + n:
                raw = next(self._gen)
                if self._pos >= start:
                    out.append(np.frombuffer(raw, np.uint8).reshape(self._shape))
                self._pos += 1
        except StopIteration:
            self.close()
            raise DatasetError(f"{path}: has {self._pos} frames, the episode metadata wants frames {start}.."
                               f"{start + n - 1}") from None
        except RuntimeError as e:
            self.close()
            raise DatasetError(f"{path}: cannot be decoded ({e})") from None
        return np.stack(out) if out else np.zeros((0, *self._shape), np.uint8)

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
        self._gen, self._path = None, None


# --------------------------------------------------------------------------------------
# Statistics: LeRobot's per-channel image statistics (values scaled to [0, 1], shape (C, 1, 1))
# --------------------------------------------------------------------------------------


def channel_histograms(frames: np.ndarray) -> np.ndarray:
    """(C, 256) counts of each uint8 value per channel of (T, C, H, W) frames."""
    return np.stack([np.bincount(frames[:, c].reshape(-1), minlength=256) for c in range(frames.shape[1])])


def histogram_stats(hist: np.ndarray, frames: int) -> dict[str, list]:
    """LeRobot's image statistics from per-channel histograms of uint8 values: exact min, max,
    mean, std and (linear) quantiles of the values / 255, each a (C, 1, 1) nested list;
    ``count`` is ``[frames]``."""
    values = np.arange(256, dtype=np.float64) / 255.0
    total = hist.sum(axis=1, keepdims=True).astype(np.float64)
    mean = (hist * values).sum(axis=1) / total[:, 0]
    var = (hist * values ** 2).sum(axis=1) / total[:, 0] - mean ** 2
    out = {"min": [values[np.flatnonzero(h)[0]] for h in hist], "max": [values[np.flatnonzero(h)[-1]] for h in hist],
           "mean": mean, "std": np.sqrt(np.maximum(var, 0.0))}
    cum = np.cumsum(hist, axis=1)
    for name, q in QUANTILES.items():
        per_channel = []
        for c in range(hist.shape[0]):
            pos = q * (cum[c, -1] - 1)  # numpy's "linear" quantile: between sorted values floor(pos), ceil(pos)
            lo, hi = (np.searchsorted(cum[c], np.floor(pos) + 1), np.searchsorted(cum[c], np.ceil(pos) + 1))
            per_channel.append(values[lo] + (values[hi] - values[lo]) * (pos - np.floor(pos)))
        out[name] = per_channel
    stats = {k: [[[float(x)]] for x in v] for k, v in out.items()}
    stats["count"] = [int(frames)]
    return stats
