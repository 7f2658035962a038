"""LeRobot v3.0 datasets: export roboreal HDF5 demonstrations to LeRobot, import LeRobot's into roboreal.

* `layout`: the v3.0 layout as followed here (paths, metadata files, frame columns; sources);
* `to_lerobot`: `export_lerobot_v3` (``roboreal data export FILE --lerobot DIR``);
* `from_lerobot`: `import_lerobot_v3` (``roboreal data import-lerobot DIR --out FILE``).

Needs pyarrow: ``pip install roboreal[lerobot]`` (imported when a function runs, so importing
this package does not need it).
"""

from roboreal.data.lerobot.from_lerobot import import_lerobot_v3
from roboreal.data.lerobot.to_lerobot import export_lerobot_v3

__all__ = ["export_lerobot_v3", "import_lerobot_v3"]
