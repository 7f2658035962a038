"""Import a LeRobot v3.0 directory into a roboreal HDF5 dataset: `import_lerobot_v3`.

``observation.state`` -> ``obs/policy``, every other numeric ``observation.<name>`` ->
``obs/<name>``, ``action`` -> ``actions`` and, as the label of a demonstration,
``expert_actions`` (a roboreal export's own ``expert_action``/``policy_action``/``intervention``
columns are restored instead). A video feature (``observation.images.<camera>``, or any
``dtype: video``) is decoded into ``obs/<camera>`` uint8 (T, C, H, W) frames (a roboreal
export's RGB + depth pair back into one 4-channel camera); ``dtype: image`` features (PNG
frames inside the parquet), and videos no episode row locates, are not imported (listed in the
result).
Malformed input raises `DatasetError` naming the file and the field.


The layout read is described in `roboreal.data.lerobot.layout`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from roboreal.data import DatasetError, DatasetWriter, dataset_meta
from roboreal.data.lerobot.layout import (CODEBASE_VERSION, EPISODES_DIR, INFO_PATH, ROBOREAL_PATH, TASKS_PATH,
                                          column_values, require_pyarrow, video_columns)
from roboreal.data.lerobot.video import VideoReader


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
    _, pq = require_pyarrow()
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
    _, pq = require_pyarrow()
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
    "frames", "out", "obs_groups", "images", "action_size", "tasks", "ignored"}`` (``images``:
    {camera: [C, H, W]}; ``ignored``: features and columns not imported, e.g. PNG image features).
    """
    pa, pq = require_pyarrow()
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
    videos = _video_sources(root, info, roboreal_meta)  # video key -> (camera, first channel, channels)
    # a video no episode row locates (a directory written without its videos) is not imported, as
    # image features are not; one that some rows locate must be found for every episode
    videos = {k: v for k, v in videos.items() if any(row.get(video_columns(k)[0]) is not None for row in episodes)}
    ignored = sorted(k for k in features if k not in tabular and k not in videos)
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
    image_shapes = _camera_shapes(root, features, videos, set(obs_groups))
    fps = float(info["fps"])
    task_texts = [tasks[i] for i in sorted(tasks)]
    task_name = task or roboreal_meta.get("task")
    extra = {"lerobot": {"dir": str(root), "codebase_version": info["codebase_version"], "fps": info["fps"],
                         "robot_type": info.get("robot_type"), "tasks": task_texts}}
    if roboreal_meta.get("robot"):  # a roboreal export knows its robot (bc checks it against the task)
        extra["robot"] = roboreal_meta["robot"]
    if image_shapes:
        extra["image_shapes"] = {c: list(s) for c, s in image_shapes.items()}
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
        return {k: column_values(pa, table.column(k).combine_chunks(), int(np.prod(tabular[k]["shape"])))
                for k in tabular}

    # 1. check every file and episode before writing anything (the data is read twice: a
    #    malformed directory must not leave a half-imported HDF5 file, nor hold all in memory)
    for path, rows in by_file:
        cols = load(path, rows)
        for row in rows:
            _episode_frames(cols, row, path)
            for key in videos:  # the video files exist (decoded in step 2: reading them twice costs)
                _video_location(root, info, key, row)
    # 2. write; a new file is written aside and moved into place whole
    target = Path(hdf5_path)
    scratch = target.with_name(target.name + ".importing") if mode == "w" else target
    frames = written = 0
    decoder = VideoReader()
    try:
        with DatasetWriter(scratch, meta, mode=mode, obs_groups=[*obs_groups, *image_shapes]) as writer:
            for path, rows in by_file:
                cols = load(path, rows)
                for row in rows:
                    images = _episode_images(root, info, videos, image_shapes, row, decoder)
                    frames += _import_episode(writer, cols, row, path, obs_keys, action_size, tasks, images)
                    written += 1
        if scratch != target:
            scratch.replace(target)
    finally:
        decoder.close()
        if scratch != target and scratch.exists():
            scratch.unlink()
    return {"episodes": written, "frames": frames, "out": str(target), "obs_groups": obs_groups,
            "images": {c: list(s) for c, s in image_shapes.items()}, "action_size": action_size,
            "tasks": task_texts, "ignored": ignored}


def _video_sources(root: Path, info: dict, roboreal_meta: dict) -> dict[str, tuple[str, int, int]]:
    """{video key: (camera, first channel, channels)}: a roboreal export's own mapping (its RGB +
    depth pairs), else each video its own camera, named after the key without ``observation.images.``
    (or ``observation.``), grey when LeRobot marks it a depth map or 1-channel, else RGB."""
    keys = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    if keys and not isinstance(info.get("video_path"), str):
        raise DatasetError(f"{root / INFO_PATH}: features {keys} are videos but 'video_path' is "
                           f"{info.get('video_path')!r} (a path template is needed to find them)")
    mapping = roboreal_meta.get("videos") if isinstance(roboreal_meta.get("videos"), dict) else {}
    out = {}
    for key in keys:
        ft = info["features"][key]
        if key in mapping:
            c0, c1 = (int(c) for c in mapping[key]["channels"])
            out[key] = (str(mapping[key]["camera"]), c0, c1 - c0)
            continue
        vinfo = ft.get("info") or {}
        channels = 1 if vinfo.get("video.is_depth_map") or vinfo.get("is_depth_map") or \
            vinfo.get("video.channels") == 1 else 3
        camera = key.removeprefix("observation.images.").removeprefix("observation.")
        out[key] = (camera, 0, channels)
    return out


def _camera_shapes(root: Path, features: dict, videos: dict[str, tuple[str, int, int]],
                   vector_groups: set[str]) -> dict[str, tuple[int, int, int]]:
    """{camera: (C, H, W)} from the video features (H, W from info.json; C the channels summed)."""
    shapes: dict[str, list] = {}
    for key, (camera, c0, channels) in sorted(videos.items(), key=lambda kv: (kv[1][0], kv[1][1])):
        if camera in vector_groups:
            raise DatasetError(f"{root / INFO_PATH}: video {key!r} would become camera {camera!r}, which is also a "
                               f"vector observation group")
        ft = features[key]
        shape, names = [int(x) for x in ft["shape"]], ft.get("names") or []
        if len(shape) != 3:
            raise DatasetError(f"{root / INFO_PATH}: features[{key!r}].shape is {shape}; a video is (H, W, C) or "
                               f"(C, H, W)")
        # LeRobot's rule: names ending in "channel(s)" mean (H, W, C), else (C, H, W)
        height, width = shape[:2] if len(names) == 3 and names[2] in ("channel", "channels") else shape[1:]
        row = shapes.setdefault(camera, [0, height, width])
        if (row[1], row[2]) != (height, width) or row[0] != c0:
            raise DatasetError(f"{root / INFO_PATH}: video {key!r} ({height}x{width}, channels from {c0}) does not "
                               f"fit camera {camera!r} ({row[1]}x{row[2]}, {row[0]} channels so far)")
        row[0] += channels
    return {c: tuple(v) for c, v in shapes.items()}


def _video_location(root: Path, info: dict, key: str, row: dict) -> tuple[Path, float]:
    """The mp4 holding episode ``row``'s frames of video `key`, and the second they start at."""
    chunk, file, start_s, _ = video_columns(key)
    missing = [c for c in (chunk, file, start_s) if row.get(c) is None]
    if missing:
        raise DatasetError(f"{row['_meta_file']}: episode {row['episode_index']} has no {missing[0]!r} (where its "
                           f"frames of video {key!r} are)")
    path = root / info["video_path"].format(video_key=key, chunk_index=int(row[chunk]), file_index=int(row[file]))
    if not path.is_file():
        raise DatasetError(f"{path}: missing (episode {row['episode_index']}'s frames of video {key!r})")
    return path, float(row[start_s])


def _episode_images(root: Path, info: dict, videos: dict[str, tuple[str, int, int]],
                    image_shapes: dict[str, tuple[int, int, int]], row: dict, decoder: VideoReader
                    ) -> dict[str, np.ndarray]:
    """{camera: (T, C, H, W) uint8} of episode ``row``, decoded from its videos."""
    n = int(row["length"])
    out = {c: np.empty((n, *shape), np.uint8) for c, shape in image_shapes.items()}
    for key, (camera, c0, channels) in videos.items():
        path, start_s = _video_location(root, info, key, row)
        frames = decoder.frames(path, int(round(start_s * float(info["fps"]))), n, channels)
        if frames.shape[1:3] != image_shapes[camera][1:]:
            raise DatasetError(f"{path}: frames are {frames.shape[1]}x{frames.shape[2]}, {INFO_PATH} says video "
                               f"{key!r} is {image_shapes[camera][1]}x{image_shapes[camera][2]}")
        out[camera][:, c0:c0 + channels] = frames.transpose(0, 3, 1, 2)
    return out


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
                    obs_keys: dict[str, str], action_size: int, tasks: dict[int, str],
                    images: dict[str, np.ndarray]) -> int:
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
    obs.update(images)
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
