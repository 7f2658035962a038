"""LeRobot v3.0 datasets: export roboreal HDF5 demonstrations to LeRobot, import LeRobot's into roboreal.

Format followed: **LeRobotDataset v3.0** (``codebase_version: "v3.0"``, LeRobot >= 0.4), as
Hugging Face publishes it: the documentation page "LeRobotDataset v3.0"
(huggingface/lerobot ``docs/source/lerobot-dataset-v3.mdx``) and the constants and metadata
writers that page describes (``src/lerobot/datasets/utils.py``: the ``meta/info.json``,
``meta/stats.json``, ``meta/tasks.parquet``, ``meta/episodes/...`` and
``data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet`` paths, ``DEFAULT_FEATURES``,
``create_empty_dataset_info``; ``dataset_metadata.py``: the per-episode metadata columns and the
tasks table indexed by task string; ``compute_stats.py``: min/max/mean/std/count and the
quantiles q01/q10/q50/q90/q99), read in their 2025-2026 versions. No LeRobot code is used or
copied. LeRobot itself cannot be installed here (it pulls a CUDA torch build), so
``tests/test_lerobot_format.py`` checks the layout against that description, not by loading it
with LeRobot.

Layout written by `export_lerobot_v3`::

    meta/info.json      codebase_version "v3.0", robot_type, fps, total_episodes, total_frames,
                        total_tasks, chunks_size, data_files_size_in_mb, video_files_size_in_mb,
                        splits {"train": "0:N"}, data_path, video_path (null: no videos),
                        features {name: {dtype, shape, names}}
    meta/stats.json     {feature: {min, max, mean, std, count, q01, q10, q50, q90, q99}}
    meta/tasks.parquet  task_index (int64) + task (string; the pandas index, as LeRobot reads it)
    meta/episodes/chunk-000/file-000.parquet
                        one row per episode: episode_index, tasks (list of strings), length,
                        data/chunk_index, data/file_index, dataset_from_index, dataset_to_index
                        (global frame ``index`` range, end exclusive), meta/episodes/chunk_index,
                        meta/episodes/file_index, stats/<feature>/<stat> (that episode's stats),
                        and roboreal/demo, roboreal/success (source demo name, success or null)
    meta/roboreal.json  roboreal's provenance (task, robot, observation groups, label rule):
                        a file LeRobot ignores, kept out of info.json so its schema stays LeRobot's
    data/chunk-CCC/file-FFF.parquet
                        many episodes per file (one parquet row group per episode), a new file
                        when the next episode would pass ``data_files_size_in_mb`` (in-memory
                        Arrow size, as LeRobot estimates), a new chunk every ``chunks_size`` files

Frame columns (vector features are fixed-size lists, shape-[1] features plain scalars, as
LeRobot's loader types them): ``observation.state`` (the `obs_group`, default ``policy``),
``action`` (the executed action), ``next.reward``, ``next.done``, ``timestamp``
(``frame_index / fps``), ``frame_index``, ``episode_index``, ``index``, ``task_index``, and the
roboreal extensions ``observation.<group>`` for every other stored group, ``expert_action`` and
``policy_action`` (NaN rows where no expert / no policy gave one: unknown stays unknown),
``intervention`` and ``labelled`` (True where the step is a training label under the file's
label rule, `roboreal.data.label_source`). ``next_obs`` and simulator ``states``
are not exported.

Statistics (``meta/stats.json`` and the per-episode ``stats/...`` columns) are computed over the
frames whose every value of the feature is finite, so the NaN rows of ``expert_action`` and
``policy_action`` do not poison them; ``count`` is the number of such frames. A feature without a
single finite frame is left out of ``stats.json`` (and its per-episode stats are null):
"no statistics" rather than invented numbers. Quantiles are exact (``numpy.quantile``, linear),
where LeRobot's own writer approximates them with a histogram. Booleans count as 0/1.

`import_lerobot_v3` reads any conforming v3.0 directory (any chunking, several tasks, columns
roboreal does not know) into a roboreal HDF5 file written by `DatasetWriter`:
``observation.state`` -> ``obs/policy``, every other numeric ``observation.<name>`` ->
``obs/<name>``, ``action`` -> ``actions`` and, as the label of a demonstration,
``expert_actions`` (a roboreal export's own ``expert_action``/``policy_action``/``intervention``
columns are restored instead). Images and videos are not imported (listed in the result).
Malformed input raises `DatasetError` naming the file and the field.

Needs pyarrow: ``pip install roboreal[lerobot]``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from roboreal.data import DatasetError, DatasetReader, DatasetWriter, dataset_meta, step_labels

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot's default)
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
ROBOREAL_PATH = "meta/roboreal.json"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_NAMES = ("min", "max", "mean", "std", "count", *QUANTILES)
# the per-frame bookkeeping columns every LeRobot dataset has (LeRobot's DEFAULT_FEATURES)
INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                  "task_index": "int64"}


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("LeRobot datasets are Parquet files and need pyarrow: "
                           "pip install roboreal[lerobot]") from None
    return pa, pq


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


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
        if g != obs_group:
            cols[f"observation.{g}"] = ep.obs[g]
    cols.update({"expert_action": ep.expert_actions, "policy_action": ep.policy_actions,
                 "intervention": ep.intervention.astype(bool), "labelled": labelled.astype(bool)})
    return cols


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
        _, pq = _pyarrow()
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
    for key, typ in (("episode_index", pa.int64()), ("tasks", pa.list_(pa.string())), ("length", pa.int64()),
                     ("data/chunk_index", pa.int64()), ("data/file_index", pa.int64()),
                     ("dataset_from_index", pa.int64()), ("dataset_to_index", pa.int64()),
                     ("meta/episodes/chunk_index", pa.int64()), ("meta/episodes/file_index", pa.int64()),
                     ("roboreal/demo", pa.string()), ("roboreal/success", pa.bool_())):
        cols[key] = pa.array([r[key] for r in rows], typ)
    for feat in features:
        for stat in STAT_NAMES:
            typ = pa.list_(pa.int64() if stat == "count" else pa.float64())
            # an episode without a finite frame of this feature has no statistics: null, count [0]
            cols[f"stats/{feat}/{stat}"] = pa.array(
                [(r["stats"][feat] or {}).get(stat, [0] if stat == "count" else None) for r in rows], typ)
    return pa.table(cols)


def export_lerobot_v3(hdf5_path: str | Path, out_dir: str | Path, fps: float | None = None, obs_group: str = "policy",
                      *, task: str | None = None, chunks_size: int = DEFAULT_CHUNKS_SIZE,
                      data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB, overwrite: bool = False) -> dict:
    """Write the roboreal HDF5 dataset `hdf5_path` as a LeRobot v3.0 dataset directory `out_dir`.

    `fps`: frames per second (default ``1 / control_dt`` of the file); `obs_group`: the group
    written as ``observation.state``; `task`: the task text of ``meta/tasks.parquet`` (default
    the file's task name). `chunks_size` / `data_files_size_in_mb`: LeRobot's chunking (files
    per chunk, size of one data file). A non-empty `out_dir` is refused unless `overwrite` (and
    it holds a LeRobot dataset). Returns ``{"episodes", "frames", "files", "out"}``.
    """
    pa, pq = _pyarrow()
    if int(chunks_size) < 1:
        raise DatasetError(f"chunks_size must be >= 1, got {chunks_size}")
    if not data_files_size_in_mb > 0:
        raise DatasetError(f"data_files_size_in_mb must be > 0, got {data_files_size_in_mb}")
    out = Path(out_dir)
    prepared = False  # set once `out` is ours to write (empty, or a dataset we may replace)
    try:
        with DatasetReader(hdf5_path) as reader:
            if not reader.names:
                raise DatasetError(f"{reader.path}: no episodes to export")
            fps = _export_fps(reader, fps)
            task_text = task or reader.task or "unknown"
            source = reader.label_source()
            first = reader.episode(reader.names[0])
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
                if g != obs_group:
                    features[f"observation.{g}"] = _feature("float32", first.obs[g].shape[1],
                                                            _state_names(reader, g, first.obs[g].shape[1]))
            features.update({"expert_action": _feature("float32", a_size), "policy_action": _feature("float32", a_size),
                             "intervention": _feature("bool", 1), "labelled": _feature("bool", 1)})
            schema = pa.schema([(k, _arrow_type(pa, f)) for k, f in features.items()])
            files = _DataFiles(out, schema, int(chunks_size), float(data_files_size_in_mb) * 1024 ** 2)
            rows: list[dict] = []
            frames = 0
            try:
                for ep_index, name in enumerate(reader.names):
                    ep = first if ep_index == 0 else reader.episode(name)
                    _, labelled = step_labels(ep.actions, ep.expert_actions, ep.policy_actions, source)
                    cols = _episode_columns(ep, ep_index, frames, fps, obs_group, labelled)
                    if set(cols) != set(features):
                        raise DatasetError(f"{reader.path}: {name} has observation groups "
                                           f"{sorted(ep.obs)}, the first episode {sorted(first.obs)}")
                    for key, values in cols.items():
                        size = int(np.prod(values.shape[1:], dtype=np.int64)) if values.ndim > 1 else 1
                        if size != features[key]["shape"][0]:
                            raise DatasetError(f"{reader.path}: {name} has {key} of size {size}, the first episode "
                                               f"{features[key]['shape'][0]}")
                    table = pa.table({k: _arrow_column(pa, cols[k], features[k]) for k in features}, schema=schema)
                    chunk_index, file_index = files.write(table)
                    n = len(ep)
                    rows.append({"episode_index": ep_index, "tasks": [task_text], "length": n,
                                 "data/chunk_index": chunk_index, "data/file_index": file_index,
                                 "dataset_from_index": frames, "dataset_to_index": frames + n,
                                 "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                                 "roboreal/demo": name, "roboreal/success": ep.success,
                                 "stats": {k: feature_stats(v) for k, v in cols.items()}})
                    frames += n
            finally:
                files.close()
            provenance = {"format": "roboreal-lerobot/1", "source_file": str(reader.path), "obs_group": obs_group,
                          "label_source": source, "demos": list(reader.names),
                          **{k: reader.meta.get(k) for k in ("task", "robot", "source", "obs_groups", "action_size",
                                                              "control_dt", "expert", "format")}}
            robot_type = reader.meta.get("robot")

        # whole-dataset statistics, read back one column at a time (memory: one feature, not the dataset)
        stats = {}
        for key, feat in features.items():
            parts = []
            for path in files.paths:
                col = pq.read_table(path, columns=[key]).column(0).combine_chunks()
                parts.append(_to_numpy(pa, col, feat["shape"][0]))
            s = feature_stats(np.concatenate(parts))
            if s is not None:
                stats[key] = s
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(rows),
                "total_frames": frames, "total_tasks": 1, "chunks_size": int(chunks_size),
                "data_files_size_in_mb": data_files_size_in_mb, "video_files_size_in_mb": DEFAULT_VIDEO_FILE_SIZE_IN_MB,
                "fps": fps, "splits": {"train": f"0:{len(rows)}"}, "data_path": DATA_PATH, "video_path": None,
                "features": features}
        (out / "meta").mkdir(parents=True, exist_ok=True)
        pq.write_table(_tasks_table(pa, [task_text]), str(out / TASKS_PATH))
        episodes_path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_episodes_table(pa, rows, features), str(episodes_path))
        _write_json(out / STATS_PATH, stats)
        _write_json(out / ROBOREAL_PATH, provenance)
        _write_json(out / INFO_PATH, info)  # last: a directory with info.json is a finished export
        return {"episodes": len(rows), "frames": frames, "files": [str(p.relative_to(out)) for p in files.paths],
                "out": str(out)}
    except BaseException:
        if prepared:  # no half-written dataset left behind (info.json, written last, is absent)
            for sub in ("meta", "data"):
                shutil.rmtree(out / sub, ignore_errors=True)
        raise


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=4, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# --------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------


def _to_numpy(pa, col, size: int) -> np.ndarray:
    """An Arrow column of a shape-[size] feature as (N,) (size 1, scalar column) or (N, size)."""
    typ = col.type
    if pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(col), -1) if len(col) else flat.reshape(0, size)
    values = col.to_numpy(zero_copy_only=False)
    return values if size == 1 else values.reshape(len(col), 1)


def _check_column(pa, col, key: str, feature: dict, path: Path) -> None:
    """Refuse a column whose per-frame size differs from ``features[key].shape`` (names file and field)."""
    shape = [int(s) for s in feature.get("shape") or [1]]
    expected = int(np.prod(shape))
    typ = col.type
    if col.null_count:
        raise DatasetError(f"{path}: column {key!r} has {col.null_count} null frames")
    if pa.types.is_fixed_size_list(typ):
        sizes = {typ.list_size}
        inner = typ.value_type
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
        import pyarrow.compute as pc

        sizes = set(pc.list_value_length(col).to_numpy(zero_copy_only=False).tolist()) or {expected}
        inner = typ.value_type
    else:
        sizes, inner = {1}, typ
    if sizes != {expected} or pa.types.is_nested(inner):
        got = sorted(sizes) if not pa.types.is_nested(inner) else f"nested {typ}"
        raise DatasetError(f"{path}: column {key!r} has {got} values per frame, {INFO_PATH} "
                           f"features[{key!r}].shape is {shape}")


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None


def _read_parquet(pq, path: Path, what: str, columns: list[str] | None = None):
    if not path.is_file():
        raise DatasetError(f"{path}: missing ({what})")
    try:
        return pq.read_table(str(path), columns=columns)
    except Exception as e:  # pyarrow raises several types for a damaged or non-parquet file
        raise DatasetError(f"{path}: not a readable parquet file ({e})") from None


def read_info(root: Path) -> dict:
    """``meta/info.json`` of a LeRobot v3 dataset, checked for what a reader relies on."""
    path = root / INFO_PATH
    info = _read_json(path, "LeRobot dataset metadata")
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: not a JSON object")
    version = info.get("codebase_version")
    if not (isinstance(version, str) and version.startswith("v3.")):
        raise DatasetError(f"{path}: codebase_version is {version!r}; this reader takes LeRobot v3 datasets "
                           f"(\"{CODEBASE_VERSION}\"; LeRobot converts v2.1 with convert_dataset_v21_to_v30)")
    for field, types, what in (("fps", (int, float), "number"), ("features", dict, "JSON object"),
                               ("data_path", str, "string"), ("total_episodes", int, "integer"),
                               ("total_frames", int, "integer")):
        if not isinstance(info.get(field), types) or isinstance(info.get(field), bool):
            raise DatasetError(f"{path}: field {field!r} is missing or not a {what} (got {info.get(field)!r})")
    if not info["fps"] > 0:
        raise DatasetError(f"{path}: field 'fps' must be positive, got {info['fps']}")
    for key, ft in info["features"].items():
        if not isinstance(ft, dict) or not isinstance(ft.get("dtype"), str) or not isinstance(ft.get("shape"), list):
            raise DatasetError(f"{path}: features[{key!r}] needs a 'dtype' string and a 'shape' list")
    for key in ("observation.state", "action"):
        if key not in info["features"]:
            raise DatasetError(f"{path}: features has no {key!r} (roboreal trains on observation.state -> action)")
    return info


def read_tasks(root: Path) -> dict[int, str]:
    """``meta/tasks.parquet`` as {task_index: task}. The task text is the pandas index LeRobot
    writes (a ``task`` column, or the index column the pandas metadata names)."""
    _, pq = _pyarrow()
    path = root / TASKS_PATH
    table = _read_parquet(pq, path, "LeRobot task table")
    names = table.column_names
    text_col = "task" if "task" in names else None
    if text_col is None and table.schema.metadata and b"pandas" in table.schema.metadata:
        index_cols = json.loads(table.schema.metadata[b"pandas"]).get("index_columns", [])
        text_col = next((c for c in index_cols if isinstance(c, str) and c in names), None)
    if "task_index" not in names or text_col is None:
        raise DatasetError(f"{path}: needs a 'task_index' column and the task text ('task' column or pandas index); "
                           f"columns are {names}")
    indices = table.column("task_index").to_pylist()
    texts = table.column(text_col).to_pylist()
    return {int(i): str(t) for i, t in zip(indices, texts)}


def read_episodes(root: Path) -> list[dict]:
    """Rows of every ``meta/episodes/chunk-*/file-*.parquet`` (stats columns left out), by episode_index."""
    _, pq = _pyarrow()
    paths = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not paths:
        raise DatasetError(f"{root / EPISODES_DIR}: missing (no chunk-*/file-*.parquet episode metadata)")
    required = ("episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index",
                "data/file_index")
    rows = []
    for path in paths:
        table = _read_parquet(pq, path, "LeRobot episode metadata")
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise DatasetError(f"{path}: no column {missing[0]!r} (episode metadata needs {', '.join(required)})")
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        for row in table.select(keep).to_pylist():
            row["_meta_file"] = path
            rows.append(row)
    rows.sort(key=lambda r: r["episode_index"])
    seen = [r["episode_index"] for r in rows]
    if len(set(seen)) != len(seen):
        dup = next(i for i in seen if seen.count(i) > 1)
        raise DatasetError(f"{root / EPISODES_DIR}: episode_index {dup} appears more than once")
    return rows


def import_lerobot_v3(lerobot_dir: str | Path, hdf5_path: str | Path, task: str | None = None, *,
                      mode: str = "w") -> dict:
    """Read the LeRobot v3 dataset `lerobot_dir` into the roboreal HDF5 dataset `hdf5_path`.

    `task`: the roboreal task the demonstrations are for (what ``roboreal bc --task`` would
    take; default: the task a roboreal export recorded, else none). LeRobot's task texts are
    kept per episode (``lerobot_tasks``) and in the file's ``lerobot`` attribute. `mode`:
    `DatasetWriter`'s (``"w"`` replaces the file, ``"a"`` appends). Returns ``{"episodes",
    "frames", "out", "obs_groups", "action_size", "tasks", "ignored"}`` (``ignored``: features
    and columns not imported, e.g. videos).
    """
    pa, pq = _pyarrow()
    root = Path(lerobot_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such LeRobot dataset directory")
    info = read_info(root)
    features = info["features"]
    tasks = read_tasks(root)
    episodes = read_episodes(root)
    roboreal_meta = json.loads((root / ROBOREAL_PATH).read_text()) if (root / ROBOREAL_PATH).is_file() else {}
    state_group = roboreal_meta.get("obs_group") or "policy"

    tabular = {k: f for k, f in features.items() if f["dtype"] not in ("video", "image", "string")}
    ignored = sorted(k for k in features if k not in tabular)
    for key, f in tabular.items():
        if len(f["shape"]) != 1 and key.startswith(("observation.", "action")):
            raise DatasetError(f"{root / INFO_PATH}: features[{key!r}].shape is {f['shape']}; roboreal reads "
                               f"flat (1-D) observations and actions")
    obs_keys = {"observation.state": state_group}
    for key in tabular:
        if key.startswith("observation.") and key != "observation.state" and len(tabular[key]["shape"]) == 1:
            group = key[len("observation."):]
            if group != state_group:
                obs_keys[key] = group
    # what roboreal reads; ``labelled`` and ``timestamp`` follow from the rest
    used = {*obs_keys, "action", "expert_action", "policy_action", "intervention", "labelled", "next.reward",
            "next.done", "next.success", "timestamp", "frame_index", "episode_index", "index", "task_index"}
    ignored += sorted(k for k in tabular if k not in used)
    action_size = int(np.prod(tabular["action"]["shape"]))
    obs_groups = {g: int(np.prod(tabular[k]["shape"])) for k, g in obs_keys.items()}
    fps = float(info["fps"])
    task_texts = [tasks[i] for i in sorted(tasks)]
    task_name = task or roboreal_meta.get("task")
    extra = {"lerobot": {"dir": str(root), "codebase_version": info["codebase_version"], "fps": info["fps"],
                         "robot_type": info.get("robot_type"), "tasks": task_texts}}
    if roboreal_meta.get("robot"):  # a roboreal export knows its robot (bc checks it against the task)
        extra["robot"] = roboreal_meta["robot"]
    meta = dataset_meta(task=task_name, source="lerobot", control_dt=1.0 / fps, action_size=action_size,
                        obs_groups=obs_groups, **extra)

    # runs of consecutive episodes stored in one data file (episodes stay in episode_index order)
    by_file: list[tuple[Path, list[dict]]] = []
    for row in episodes:
        path = root / info["data_path"].format(chunk_index=int(row["data/chunk_index"]),
                                               file_index=int(row["data/file_index"]))
        if by_file and by_file[-1][0] == path:
            by_file[-1][1].append(row)
        else:
            by_file.append((path, [row]))

    def load(path: Path, rows: list[dict]) -> dict[str, np.ndarray]:
        table = _read_parquet(pq, path, f"data file of episode {rows[0]['episode_index']}")
        for key, f in tabular.items():
            if key not in table.column_names:
                raise DatasetError(f"{path}: no column {key!r} ({INFO_PATH} declares it in features)")
            _check_column(pa, table.column(key).combine_chunks(), key, f, path)
        if "episode_index" not in table.column_names:
            raise DatasetError(f"{path}: no column 'episode_index'")
        for c in table.column_names:
            if c not in tabular and c not in ignored:
                ignored.append(c)
        return {k: _to_numpy(pa, table.column(k).combine_chunks(), int(np.prod(tabular[k]["shape"])))
                for k in tabular}

    # 1. check every file and episode before writing anything (the data is read twice: a
    #    malformed directory must not leave a half-imported HDF5 file, nor hold all in memory)
    for path, rows in by_file:
        cols = load(path, rows)
        for row in rows:
            _episode_frames(cols, row, path)
    # 2. write; a new file is written aside and moved into place whole
    target = Path(hdf5_path)
    scratch = target.with_name(target.name + ".importing") if mode == "w" else target
    frames = written = 0
    try:
        with DatasetWriter(scratch, meta, mode=mode, obs_groups=list(obs_groups)) as writer:
            for path, rows in by_file:
                cols = load(path, rows)
                for row in rows:
                    frames += _import_episode(writer, cols, row, path, obs_keys, action_size, tasks)
                    written += 1
        if scratch != target:
            scratch.replace(target)
    finally:
        if scratch != target and scratch.exists():
            scratch.unlink()
    return {"episodes": written, "frames": frames, "out": str(target), "obs_groups": obs_groups,
            "action_size": action_size, "tasks": task_texts, "ignored": ignored}


def _episode_frames(cols: dict[str, np.ndarray], row: dict, path: Path) -> np.ndarray:
    """Row numbers of episode ``row`` in a data file's columns, in frame order (checked against its metadata)."""
    ep_index = int(row["episode_index"])
    sel = np.flatnonzero(cols["episode_index"].reshape(-1) == ep_index)
    if "frame_index" in cols:
        sel = sel[np.argsort(cols["frame_index"].reshape(-1)[sel], kind="stable")]
    n = int(row["length"])
    meta_file = row["_meta_file"]
    if len(sel) != n:
        raise DatasetError(f"{path}: episode {ep_index} has {len(sel)} frames, {meta_file} says length {n}")
    if int(row["dataset_to_index"]) - int(row["dataset_from_index"]) != n:
        raise DatasetError(f"{meta_file}: episode {ep_index}: dataset_to_index - dataset_from_index "
                           f"({row['dataset_to_index']} - {row['dataset_from_index']}) is not its length {n}")
    if "index" in cols and n and (int(cols["index"].reshape(-1)[sel[0]]) != int(row["dataset_from_index"])):
        raise DatasetError(f"{path}: episode {ep_index} starts at index {int(cols['index'].reshape(-1)[sel[0]])}, "
                           f"{meta_file} says dataset_from_index {row['dataset_from_index']}")
    return sel


def _import_episode(writer: DatasetWriter, cols: dict[str, np.ndarray], row: dict, path: Path,
                    obs_keys: dict[str, str], action_size: int, tasks: dict[int, str]) -> int:
    ep_index = int(row["episode_index"])
    sel = _episode_frames(cols, row, path)
    n = len(sel)

    def get(key: str, default):
        return cols[key][sel] if key in cols else default

    actions = np.asarray(cols["action"][sel], np.float32).reshape(n, action_size)
    # a roboreal export carries its own labels; any other dataset's actions are demonstrations
    expert = np.asarray(get("expert_action", actions), np.float32).reshape(n, action_size)
    policy = np.asarray(get("policy_action", np.full_like(actions, np.nan)), np.float32).reshape(n, action_size)
    rewards = np.asarray(get("next.reward", np.full(n, np.nan)), np.float32).reshape(n)  # unknown: NaN
    done_default = np.zeros(n, bool)
    done_default[-1:] = True
    dones = np.asarray(get("next.done", done_default)).astype(bool).reshape(n)
    intervention = np.asarray(get("intervention", np.zeros(n, bool))).astype(bool).reshape(n)
    obs = {g: np.asarray(cols[k][sel], np.float32).reshape(n, -1) for k, g in obs_keys.items()}
    for t in range(n):
        writer.add_step({g: v[t] for g, v in obs.items()}, actions[t], float(rewards[t]), bool(dones[t]),
                        expert_action=expert[t], policy_action=policy[t], intervention=bool(intervention[t]))
    success = row.get("roboreal/success")
    if success is None and "next.success" in cols:
        success = bool(np.asarray(cols["next.success"][sel]).reshape(n)[-1])
    ep_tasks = row.get("tasks")
    if ep_tasks is None:
        ep_tasks = sorted({tasks.get(int(i), str(int(i))) for i in get("task_index", np.zeros(0)).reshape(-1)})
    writer.end_episode(success=success, source="lerobot", lerobot_episode_index=ep_index, lerobot_tasks=list(ep_tasks))
    return n
