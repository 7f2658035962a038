"""ROS 2 nodes: the simulated robot (`sim_bridge`), and the CLI that runs them.

Modules here that import rclpy are imported only by the command handlers in `cli.py`,
so `roboreal --help` works without ROS 2 installed.
"""
