"""Dataset formats shared by every layer (simulation, training, robot sessions).

This is where the project's data code is moving: readers and writers of on-disk formats
that the agents, the sim2real tools and the CLI all use, without depending on them.

* `roboreal.data.lerobot`: LeRobot v3.0 export and import (``pip install roboreal[lerobot]``).
"""
