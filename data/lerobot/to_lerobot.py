"""Export a roboreal HDF5 dataset as a LeRobot v3.0 directory: `export_lerobot_v3`.

The layout written is described in `roboreal.data.lerobot.layout`.

frames whose every value of the feature is finite, so the NaN rows of ``expert_action`` and
``policy_action`` do not poison them; ``count`` is the number of such frames. A feature without a
single finite frame is left out of ``stats.json`` (and its per-episode stats are null):
"no statistics" rather than invented numbers. Quantiles are exact (``numpy.quantile``, linear),
where LeRobot's own writer approximates them with a histogram. Booleans count as 0/1.

`import_lerobot_v3` reads any conforming v3.0 directory (any chunking, several tasks, columns
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from roboreal.data import DatasetError, DatasetReader, step_labels
from roboreal.data.hdf5_format import to_json
from roboreal.data.lerobot.layout import (CODEBASE_VERSION, DATA_PATH, DEFAULT_CHUNKS_SIZE, DEFAULT_DATA_FILE_SIZE_IN_MB,
                                          DEFAULT_VIDEO_FILE_SIZE_IN_MB, EPISODES_PATH, INDEX_FEATURES, INFO_PATH,
                                          QUANTILES, ROBOREAL_PATH, STAT_NAMES, STATS_PATH, TASKS_PATH, VIDEO_PATH,
                                          column_values, require_pyarrow, video_columns)
from roboreal.data.lerobot.video import CODEC_NAME, VideoFile, channel_histograms, histogram_stats, pix_fmt


def feature_stats(values: np.ndarray) -> dict[str, list] | None:
    """LeRobot's per-feature statistics of `values` ((N,) or (N, k)) over its finite frames.

    A frame counts when every one of its values is finite (an unknown label is a NaN row);
    ``None`` when no frame does. Each statistic is a list of the feature's size (``[1]`` for a
    scalar), ``count`` is ``[frames]``.
    """
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    v = v[np.isfinite(v).all(axis=1)]
    if len(v) == 0:
        return None
    out = {"min": v.min(axis=0), "max": v.max(axis=0), "mean": v.mean(axis=0), "std": v.std(axis=0),
           "count": np.array([len(v)])}
    for name, q in QUANTILES.items():
        out[name] = np.quantile(v, q, axis=0)
    return {k: x.tolist() for k, x in out.items()}



def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"{out}: directory is not empty (pass overwrite=True / --overwrite to replace "
                               f"a LeRobot dataset there)")
        if not (out / INFO_PATH).is_file():  # never delete a directory that is not a dataset
            raise DatasetError(f"{out}: not empty and not a LeRobot dataset (no {INFO_PATH}); refusing to replace it")
        for sub in ("meta", "data", "videos"):
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)


def _export_fps(reader: DatasetReader, fps: float | None) -> float | int:
    if fps is None:
        dt = reader.meta.get("control_dt")
        if not dt:
            raise DatasetError(f"{reader.path}: no control_dt attribute to derive the frame rate from; pass fps "
                               f"(--fps)")
        fps = 1.0 / float(dt)
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise DatasetError(f"fps must be a positive number, got {fps}")
    # LeRobot's fps is an integer; keep a fractional rate as it is rather than bend the timestamps
    return int(round(fps)) if abs(fps - round(fps)) < 1e-6 else fps


def _state_names(reader: DatasetReader, group: str, size: int) -> list[str] | None:
    """Per-dimension names of an observation group from the file's observation layout, if it has one."""
    layout = (reader.meta.get("observation_layout") or {}).get(group)
    if not isinstance(layout, list) or sum(int(t.get("size", 0)) for t in layout) != size:
        return None
    names = []
    for term in layout:
        n = int(term["size"])
        names += [term["name"]] if n == 1 else [f"{term['name']}_{i}" for i in range(n)]
    return names


def _feature(dtype: str, size: int, names: list[str] | None = None) -> dict:
    return {"dtype": dtype, "shape": [int(size)], "names": names}


def _episode_columns(ep, ep_index: int, first_index: int, fps: float, obs_group: str, labelled: np.ndarray) -> dict:
    n = len(ep)
    cols: dict[str, np.ndarray] = {
        "observation.state": ep.obs[obs_group], "action": ep.actions,
        "next.reward": ep.rewards.astype(np.float32), "next.done": ep.dones.astype(bool),
        "timestamp": (np.arange(n) / fps).astype(np.float32), "frame_index": np.arange(n, dtype=np.int64),
        "episode_index": np.full(n, ep_index, np.int64),
        "index": np.arange(first_index, first_index + n, dtype=np.int64),
        "task_index": np.zeros(n, np.int64)}
    for g in sorted(ep.obs):
        if g != obs_group and g not in ep.images:  # frames go to the videos
            cols[f"observation.{g}"] = ep.obs[g]
    cols.update({"expert_action": ep.expert_actions, "policy_action": ep.policy_actions,
                 "intervention": ep.intervention.astype(bool), "labelled": labelled.astype(bool)})
    return cols


def _video_streams(camera: str, shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """{video key: (first channel, end channel)} of a camera's (C, H, W) frames: RGB (or grey) in
    ``observation.images.<camera>``, a depth channel (C = 4) in ``observation.images.<camera>_depth``
    (LeRobot's depth videos are separate, ``video.is_depth_map``)."""
    c = int(shape[0])
    if c in (1, 3):
        return {f"observation.images.{camera}": (0, c)}
    if c == 4:
        return {f"observation.images.{camera}": (0, 3), f"observation.images.{camera}_depth": (3, 4)}
    raise DatasetError(f"camera {camera!r} has {c} channels; a LeRobot video holds RGB (3), grey (1) or "
                       f"RGB + depth (4)")


def _video_feature(height: int, width: int, channels: int, fps: float, depth: bool) -> dict:
    """A ``dtype: video`` feature as LeRobot's recorder declares a camera: (height, width, channels)."""
    return {"dtype": "video", "shape": [height, width, channels], "names": ["height", "width", "channels"],
            "info": {"video.height": height, "video.width": width, "video.codec": CODEC_NAME,
                     "video.pix_fmt": pix_fmt(height, width), "video.is_depth_map": depth, "video.fps": fps,
                     "video.channels": channels, "has_audio": False}}


class _VideoFiles:
    """``videos/<key>/chunk-CCC/file-FFF.mp4`` of one video key: whole episodes back to back, a new
    file once the current one passes ``video_files_size_in_mb``, a new chunk every ``chunks_size`` files."""

    def __init__(self, out: Path, key: str, shape: tuple[int, int, int], fps: float, chunks_size: int,
                 max_bytes: float):
        self.out, self.key, self.shape, self.fps = out, key, shape, fps
        self.chunks_size, self.max_bytes = chunks_size, max_bytes
        self.chunk_index, self.file_index = 0, 0
        self.file: VideoFile | None = None

    def write(self, frames: np.ndarray) -> dict:
        """Append one episode's (T, H, W, C) frames; returns its ``videos/<key>/...`` metadata."""
        if self.file is not None and self.file.size() > self.max_bytes:
            self.file.close()
            self.file = None
            self.file_index += 1
            if self.file_index == self.chunks_size:
                self.chunk_index, self.file_index = self.chunk_index + 1, 0
        if self.file is None:
            path = self.out / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk_index,
                                                file_index=self.file_index)
            self.file = VideoFile(path, *self.shape, fps=self.fps)
        start = self.file.frames
        self.file.write(frames)
        chunk, file, start_s, end_s = video_columns(self.key)
        return {chunk: self.chunk_index, file: self.file_index, start_s: start / self.fps,
                end_s: (start + len(frames)) / self.fps}

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _arrow_type(pa, feature: dict):
    types = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}
    scalar = types[feature["dtype"]]
    size = int(feature["shape"][0])
    # LeRobot types a shape-[1] feature as a plain value and a vector as a fixed-length sequence
    return scalar if size == 1 else pa.list_(scalar, size)


def _arrow_column(pa, values: np.ndarray, feature: dict):
    typ = _arrow_type(pa, feature)
    if pa.types.is_fixed_size_list(typ):
        flat = np.ascontiguousarray(values).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=typ.value_type), typ.list_size)
    return pa.array(np.asarray(values).reshape(-1), type=typ)


class _DataFiles:
    """``data/chunk-CCC/file-FFF.parquet`` writer: whole episodes, one row group each, rolled over by size."""

    def __init__(self, out: Path, schema, chunks_size: int, max_bytes: float):
        self.out, self.schema, self.chunks_size, self.max_bytes = out, schema, chunks_size, max_bytes
        self.chunk_index, self.file_index = 0, 0
        self.writer = None
        self.bytes = 0
        self.paths: list[Path] = []

    def write(self, table) -> tuple[int, int]:
        _, pq = require_pyarrow()
        if self.writer is not None and self.bytes + table.nbytes > self.max_bytes:
            self.writer.close()
            self.writer = None
            self.file_index += 1
            if self.file_index == self.chunks_size:
                self.chunk_index, self.file_index = self.chunk_index + 1, 0
        if self.writer is None:
            path = self.out / DATA_PATH.format(chunk_index=self.chunk_index, file_index=self.file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(str(path), self.schema, compression="snappy")
            self.paths.append(path)
            self.bytes = 0
        self.writer.write_table(table)
        self.bytes += table.nbytes
        return self.chunk_index, self.file_index

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _tasks_table(pa, tasks: list[str]):
    """``meta/tasks.parquet``: LeRobot reads it with pandas and looks tasks up by the index, so
    the ``task`` column carries pandas metadata naming it the index (written without pandas)."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _episodes_table(pa, rows: list[dict], features: dict):
    cols: dict[str, Any] = {}
    columns = [("episode_index", pa.int64()), ("tasks", pa.list_(pa.string())), ("length", pa.int64()),
               ("data/chunk_index", pa.int64()), ("data/file_index", pa.int64()),
               ("dataset_from_index", pa.int64()), ("dataset_to_index", pa.int64())]
    for key, feat in features.items():
        if feat["dtype"] == "video":
            chunk, file, start_s, end_s = video_columns(key)
            columns += [(chunk, pa.int64()), (file, pa.int64()), (start_s, pa.float64()), (end_s, pa.float64())]
    columns += [("meta/episodes/chunk_index", pa.int64()), ("meta/episodes/file_index", pa.int64()),
                ("roboreal/demo", pa.string()), ("roboreal/success", pa.bool_())]
    for key, typ in columns:
        cols[key] = pa.array([r[key] for r in rows], typ)
    for feat, spec in features.items():
        for stat in STAT_NAMES:
            typ = pa.list_(pa.int64() if stat == "count" else pa.float64())
            if spec["dtype"] == "video" and stat != "count":  # per channel, (C, 1, 1) as LeRobot's image stats
                typ = pa.list_(pa.list_(pa.list_(pa.float64())))
            # an episode without a finite frame of this feature has no statistics: null, count [0]
            cols[f"stats/{feat}/{stat}"] = pa.array(
                [(r["stats"][feat] or {}).get(stat, [0] if stat == "count" else None) for r in rows], typ)
    return pa.table(cols)


def export_lerobot_v3(hdf5_path: str | Path, out_dir: str | Path, fps: float | None = None, obs_group: str = "policy",
                      *, task: str | None = None, chunks_size: int = DEFAULT_CHUNKS_SIZE,
                      data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
                      video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB, overwrite: bool = False) -> dict:
    """Write the roboreal HDF5 dataset `hdf5_path` as a LeRobot v3.0 dataset directory `out_dir`.

    `fps`: frames per second (default ``1 / control_dt`` of the file); `obs_group`: the group
    written as ``observation.state``; `task`: the task text of ``meta/tasks.parquet`` (default
    the file's task name). `chunks_size` / `data_files_size_in_mb` / `video_files_size_in_mb`:
    LeRobot's chunking (files per chunk, size of one data / video file). Image groups (cameras)
    become ``observation.images.<camera>`` videos (`roboreal.data.lerobot.video`). A non-empty
    `out_dir` is refused unless `overwrite` (and it holds a LeRobot dataset). Returns
    ``{"episodes", "frames", "files", "videos", "out"}``.
    """
    pa, pq = require_pyarrow()
    if int(chunks_size) < 1:
        raise DatasetError(f"chunks_size must be >= 1, got {chunks_size}")
    for name, size in (("data_files_size_in_mb", data_files_size_in_mb), ("video_files_size_in_mb",
                                                                          video_files_size_in_mb)):
        if not size > 0:
            raise DatasetError(f"{name} must be > 0, got {size}")
    out = Path(out_dir)
    prepared = False  # set once `out` is ours to write (empty, or a dataset we may replace)
    try:
        with DatasetReader(hdf5_path) as reader:
            if not reader.names:
                raise DatasetError(f"{reader.path}: no episodes to export")
            fps = _export_fps(reader, fps)
            task_text = task or reader.task or "unknown"
            source = reader.label_source()
            first = reader.episode(reader.names[0], next_obs_images=False)
            cameras = {g: first.obs[g].shape[1:] for g in first.images}
            if obs_group in cameras:
                raise DatasetError(f"{reader.path}: {obs_group!r} is a camera; observation.state is a vector group")
            if obs_group not in first.obs:
                raise DatasetError(f"{reader.path}: no observation group {obs_group!r} to write as observation.state "
                                   f"(groups: {sorted(first.obs)})")
            _prepare_out_dir(out, overwrite)
            prepared = True
            a_size = first.actions.shape[1]
            features = {"observation.state": _feature("float32", first.obs[obs_group].shape[1],
                                                      _state_names(reader, obs_group, first.obs[obs_group].shape[1])),
                        "action": _feature("float32", a_size), "next.reward": _feature("float32", 1),
                        "next.done": _feature("bool", 1)}
            features.update({k: _feature(t, 1) for k, t in INDEX_FEATURES.items()})
            for g in sorted(first.obs):
                if g != obs_group and g not in cameras:
                    features[f"observation.{g}"] = _feature("float32", first.obs[g].shape[1],
                                                            _state_names(reader, g, first.obs[g].shape[1]))
            features.update({"expert_action": _feature("float32", a_size), "policy_action": _feature("float32", a_size),
                             "intervention": _feature("bool", 1), "labelled": _feature("bool", 1)})
            tabular = dict(features)  # the parquet columns; videos are their own files
            streams: dict[str, tuple[str, int, int]] = {}  # video key -> (camera, first channel, end channel)
            for g, (_, height, width) in cameras.items():
                for key, (c0, c1) in _video_streams(g, cameras[g]).items():
                    streams[key] = (g, c0, c1)
                    features[key] = _video_feature(int(height), int(width), c1 - c0, fps, depth=c0 == 3)
            schema = pa.schema([(k, _arrow_type(pa, f)) for k, f in tabular.items()])
            files = _DataFiles(out, schema, int(chunks_size), float(data_files_size_in_mb) * 1024 ** 2)
            videos = {key: _VideoFiles(out, key, tuple(features[key]["shape"]), fps, int(chunks_size),
                                       float(video_files_size_in_mb) * 1024 ** 2) for key in streams}
            histograms = {key: np.zeros((c1 - c0, 256), np.int64) for key, (_, c0, c1) in streams.items()}
            rows: list[dict] = []
            frames = 0
            try:
                for ep_index, name in enumerate(reader.names):
                    ep = first if ep_index == 0 else reader.episode(name, next_obs_images=False)
                    _, labelled = step_labels(ep.actions, ep.expert_actions, ep.policy_actions, source)
                    cols = _episode_columns(ep, ep_index, frames, fps, obs_group, labelled)
                    if set(cols) != set(tabular) or {g: ep.obs[g].shape[1:] for g in ep.images} != cameras:
                        raise DatasetError(f"{reader.path}: {name} has observation groups "
                                           f"{_groups_text(ep)}, the first episode {_groups_text(first)}")
                    for key, values in cols.items():
                        size = int(np.prod(values.shape[1:], dtype=np.int64)) if values.ndim > 1 else 1
                        if size != features[key]["shape"][0]:
                            raise DatasetError(f"{reader.path}: {name} has {key} of size {size}, the first episode "
                                               f"{features[key]['shape'][0]}")
                    table = pa.table({k: _arrow_column(pa, cols[k], tabular[k]) for k in tabular}, schema=schema)
                    chunk_index, file_index = files.write(table)
                    n = len(ep)
                    row = {"episode_index": ep_index, "tasks": [task_text], "length": n,
                           "data/chunk_index": chunk_index, "data/file_index": file_index,
                           "dataset_from_index": frames, "dataset_to_index": frames + n,
                           "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                           "roboreal/demo": name, "roboreal/success": ep.success,
                           "stats": {k: feature_stats(v) for k, v in cols.items()}}
                    for key, (g, c0, c1) in streams.items():
                        channels = ep.obs[g][:, c0:c1]
                        row.update(videos[key].write(channels.transpose(0, 2, 3, 1)))
                        hist = channel_histograms(channels)
                        histograms[key] += hist
                        row["stats"][key] = histogram_stats(hist, n)
                    rows.append(row)
                    frames += n
            finally:
                files.close()
                for v in videos.values():
                    v.close()
            provenance = {"format": "roboreal-lerobot/1", "source_file": str(reader.path), "obs_group": obs_group,
                          "label_source": source, "demos": list(reader.names),
                          # which camera (and channels of it) each video holds, for the import
                          "videos": {key: {"camera": g, "channels": [c0, c1]} for key, (g, c0, c1) in streams.items()},
                          **{k: reader.meta.get(k) for k in ("task", "robot", "source", "obs_groups", "action_size",
                                                              "control_dt", "expert", "format")}}
            robot_type = reader.meta.get("robot")

        # whole-dataset statistics, read back one column at a time (memory: one feature, not the dataset)
        stats = {key: histogram_stats(histograms[key], frames) for key in streams}
        for key, feat in tabular.items():
            parts = []
            for path in files.paths:
                col = pq.read_table(path, columns=[key]).column(0).combine_chunks()
                parts.append(column_values(pa, col, feat["shape"][0]))
            s = feature_stats(np.concatenate(parts))
            if s is not None:
                stats[key] = s
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(rows),
                "total_frames": frames, "total_tasks": 1, "chunks_size": int(chunks_size),
                "data_files_size_in_mb": data_files_size_in_mb, "video_files_size_in_mb": video_files_size_in_mb,
                "fps": fps, "splits": {"train": f"0:{len(rows)}"}, "data_path": DATA_PATH,
                "video_path": VIDEO_PATH if streams else None,
                "features": features}
        (out / "meta").mkdir(parents=True, exist_ok=True)
        pq.write_table(_tasks_table(pa, [task_text]), str(out / TASKS_PATH))
        episodes_path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_episodes_table(pa, rows, features), str(episodes_path))
        _write_json(out / STATS_PATH, stats)
        _write_json(out / ROBOREAL_PATH, provenance)
        _write_json(out / INFO_PATH, info)  # last: a directory with info.json is a finished export
        video_files = sorted(str(p.relative_to(out)) for p in (out / "videos").rglob("*.mp4")) if streams else []
        return {"episodes": len(rows), "frames": frames, "files": [str(p.relative_to(out)) for p in files.paths],
                "videos": video_files, "out": str(out)}
    except BaseException:
        if prepared:  # no half-written dataset left behind (info.json, written last, is absent)
            for sub in ("meta", "data", "videos"):
                shutil.rmtree(out / sub, ignore_errors=True)
        raise


def _groups_text(ep) -> str:
    return ", ".join(f"{g} {'x'.join(map(str, v.shape[1:]))}" if g in ep.images else g
                     for g, v in sorted(ep.obs.items()))


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(to_json(obj, sort_keys=False, indent=4))
