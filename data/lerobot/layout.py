"""The LeRobot v3.0 layout roboreal writes (`to_lerobot`) and reads (`from_lerobot`).

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
                        splits {"train": "0:N"}, data_path, video_path (null without cameras),
                        features {name: {dtype, shape, names}}; a camera is
                        ``observation.images.<camera>``: dtype "video", shape [H, W, C], names
                        ["height", "width", "channels"] (as LeRobot's recorder declares cameras;
                        LeRobot hands policies (C, H, W)), info {video.height, video.width,
                        video.codec, video.pix_fmt, video.is_depth_map, video.fps,
                        video.channels, has_audio}; an RGB + depth camera (C = 4) is two
                        videos, ``<camera>`` (RGB) and ``<camera>_depth`` (is_depth_map)
    meta/stats.json     {feature: {min, max, mean, std, count, q01, q10, q50, q90, q99}}; a
                        video's are per channel of the values / 255, each (C, 1, 1), as
                        LeRobot's image statistics (exact, from per-channel value histograms)
    meta/tasks.parquet  task_index (int64) + task (string; the pandas index, as LeRobot reads it)
    meta/episodes/chunk-000/file-000.parquet
                        one row per episode: episode_index, tasks (list of strings), length,
                        data/chunk_index, data/file_index, dataset_from_index, dataset_to_index
                        (global frame ``index`` range, end exclusive), per video key
                        videos/<key>/chunk_index, videos/<key>/file_index,
                        videos/<key>/from_timestamp, videos/<key>/to_timestamp (where the
                        episode's frames lie in that mp4, seconds), meta/episodes/chunk_index,
                        meta/episodes/file_index, stats/<feature>/<stat> (that episode's stats),
                        and roboreal/demo, roboreal/success (source demo name, success or null)
    meta/roboreal.json  roboreal's provenance (task, robot, observation groups, label rule):
                        a file LeRobot ignores, kept out of info.json so its schema stays LeRobot's
    data/chunk-CCC/file-FFF.parquet
                        many episodes per file (one parquet row group per episode), a new file
                        when the next episode would pass ``data_files_size_in_mb`` (in-memory
                        Arrow size, as LeRobot estimates), a new chunk every ``chunks_size`` files
    videos/<key>/chunk-CCC/file-FFF.mp4
                        a camera's frames, episodes back to back (H.264, `video`), a new file
                        once one passes ``video_files_size_in_mb``; no frame is in the parquet

Frame columns of the data files (info.json's features other than videos, typed as
LeRobot's loader types them): ``observation.state`` (the `obs_group`, default ``policy``),
``action`` (the executed action), ``next.reward``, ``next.done``, ``timestamp``
(``frame_index / fps``), ``frame_index``, ``episode_index``, ``index``, ``task_index``, and the
roboreal extensions ``observation.<group>`` for every other stored group, ``expert_action`` and
``policy_action`` (NaN rows where no expert / no policy gave one: unknown stays unknown),
``intervention`` and ``labelled`` (True where the step is a training label under the file's
label rule, `roboreal.data.labels.label_source`). Image groups are the videos above, not
columns. ``next_obs`` and simulator ``states`` are not exported.
"""

from __future__ import annotations

import numpy as np

from roboreal.data import DatasetError

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
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_NAMES = ("min", "max", "mean", "std", "count", *QUANTILES)
# the per-frame bookkeeping columns every LeRobot dataset has (LeRobot's DEFAULT_FEATURES)
INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                  "task_index": "int64"}


def video_columns(video_key: str) -> tuple[str, str, str, str]:
    """The episode-metadata columns locating an episode in a video key's files: chunk index, file
    index, from_timestamp, to_timestamp (seconds into that file)."""
    return tuple(f"videos/{video_key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"))


def require_pyarrow():
    """``(pyarrow, pyarrow.parquet)``; a `DatasetError` naming the extra to install without them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("LeRobot datasets are Parquet files and need pyarrow: "
                           "pip install roboreal[lerobot]") from None
    return pa, pq


def column_values(pa, col, size: int) -> np.ndarray:
    """An Arrow column of a shape-[size] feature as (N,) (size 1, scalar column) or (N, size)."""
    typ = col.type
    if pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(col), -1) if len(col) else flat.reshape(0, size)
    values = col.to_numpy(zero_copy_only=False)
    return values if size == 1 else values.reshape(len(col), 1)
