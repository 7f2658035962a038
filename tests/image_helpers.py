"""Shared by the image deployment tests: a toy image policy whose gripper action is the front
camera's brightness (so a test can tell which frame reached it), and a goal publisher."""

from __future__ import annotations

import torch
from torch import nn

CAMERAS = ("front", "wrist")


class BrightnessPolicy(nn.Module):
    """``policy(obs, front, wrist)`` -> 8 actions: small joint actions (|a| <= 0.1, the arm stays
    near its default pose) from obs and both images; the 8th (gripper) is the front image's mean
    brightness mapped to [-1, 1]."""

    image_inputs = list(CAMERAS)

    def __init__(self, obs_size: int = 21):
        super().__init__()
        torch.manual_seed(0)
        self.obs_layer = nn.Linear(obs_size, 7)
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.image_layer = nn.Linear(8, 7)

    def forward(self, obs: torch.Tensor, front: torch.Tensor, wrist: torch.Tensor) -> torch.Tensor:
        f = self.conv(front.float() / 255.0).mean((2, 3))
        w = self.conv(wrist.float() / 255.0).mean((2, 3))
        joints = 0.1 * torch.tanh(self.obs_layer(obs) + self.image_layer(torch.cat([f, w], 1)))
        brightness = front.float().mean((1, 2, 3)) / 127.5 - 1.0
        return torch.cat([joints, brightness[:, None]], 1)


def publish_goals(probe, topic: str, position=(0.5, 0.0, 0.25), period: float = 0.05) -> None:
    """Publish a goal pose (frame "world") on `topic` every `period` s from the probe's node."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile

    pub = probe.node.create_publisher(PoseStamped, topic, QoSProfile(depth=10))

    def send() -> None:
        goal = PoseStamped()
        goal.header.frame_id = "world"
        goal.header.stamp = probe.node.get_clock().now().to_msg()
        goal.pose.position.x, goal.pose.position.y, goal.pose.position.z = position
        pub.publish(goal)

    probe.node.create_timer(period, send)
