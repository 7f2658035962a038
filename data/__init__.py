"""Dataset formats shared by every layer (simulation, training, robot sessions).

Readers and writers of on-disk formats that the agents, the sim2real tools and the CLI
all use, without depending on any of them. Import the public API from here
(``from roboreal.data import DatasetReader``); the modules behind it may move.

* HDF5 episodes in robomimic's layout (writer, batched recorder, reader), expert labels,
  transition sets for BC / IQL: `roboreal.data.datasets`.
* `roboreal.data.lerobot`: LeRobot v3.0 export and import (``pip install roboreal[lerobot]``).
"""

from roboreal.data.datasets import (FORMAT, BatchedRecorder, DatasetError, DatasetReader, DatasetWriter, Episode,
                                    TransitionSet, check_compatible, dataset_meta, describe_label_source,
                                    episodes_to_transitions, format_rate, load_transitions,
                                    require_labels, step_labels, train_valid_split)

__all__ = ["FORMAT", "BatchedRecorder", "DatasetError", "DatasetReader", "DatasetWriter", "Episode", "TransitionSet",
           "check_compatible", "dataset_meta", "describe_label_source", "episodes_to_transitions", "format_rate",
           "load_transitions", "require_labels", "step_labels", "train_valid_split"]
