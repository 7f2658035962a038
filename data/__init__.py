"""Dataset formats shared by every layer (simulation, training, robot sessions).

Readers and writers of on-disk formats that the agents, the sim2real tools and the CLI all
use, without depending on any of them (nothing here imports `roboreal.robots`, `.envs`,
`.agents` or `.sim2real`). Import the public API from here
(``from roboreal.data import DatasetReader``); the modules behind it may move.

roboreal's own format, HDF5 episodes in robomimic's layout:

* `hdf5_format`: the layout (its docstring), `DatasetError`, provenance (`dataset_meta`) and
  the default train/validation split (`train_valid_split`);
* `writer`: `DatasetWriter` (crash-safe, readable while it records); camera frames are image
  groups, uint8 (T, C, H, W) `obs/<camera>`, one compressed frame per chunk;
* `batched_recorder`: `BatchedRecorder` (a batched env's episodes into a writer);
* `reader`: `Episode`, `DatasetReader` (episodes, summary, splits);
* `labels`: which steps are training labels (`step_labels`, `describe_label_source`);
* `transitions`: `TransitionSet`\\ s for BC / DAgger / IQL (`load_transitions`, `require_labels`,
  `check_compatible`).

Other formats are converted to and from it. `roboreal.data.lerobot`: LeRobot v3.0 export and
import (``pip install roboreal[lerobot]``; cameras as mp4 videos, `lerobot.video`), kept out of this list so that importing
`roboreal.data` needs no pyarrow.

Adding a dataset format (the one place to extend): a module (or subpackage, like `lerobot`) in
``data/`` with an export function (reads a roboreal file with `DatasetReader`, writes the
other format) and/or an import function (writes a roboreal file with `DatasetWriter` and
`dataset_meta`), raising `DatasetError` for malformed input. Wire it into ``roboreal data``,
whose actions live beside the formats in `roboreal.data.cli`: an action in its `add_commands`
(as ``export --lerobot DIR`` and ``import-lerobot DIR`` are) and a
``cmd_data_*`` handler that imports the format module inside the handler (an optional
dependency is needed only by that command) and turns its `DatasetError` into a `ConfigError`.
"""

from roboreal.data.batched_recorder import BatchedRecorder
from roboreal.data.hdf5_format import FORMAT, DatasetError, dataset_meta, train_valid_split
from roboreal.data.labels import describe_label_source, step_labels
from roboreal.data.reader import DatasetReader, Episode, format_rate
from roboreal.data.transitions import (TransitionSet, check_compatible, episodes_to_transitions, load_transitions,
                                       require_labels)
from roboreal.data.writer import DatasetWriter

__all__ = ["FORMAT", "BatchedRecorder", "DatasetError", "DatasetReader", "DatasetWriter", "Episode", "TransitionSet",
           "check_compatible", "dataset_meta", "describe_label_source", "episodes_to_transitions", "format_rate",
           "load_transitions", "require_labels", "step_labels", "train_valid_split"]
