"""What a task needs from a robot, checked when the task is made.

A task declares its needs (`RobotNeeds`: robot kind, sites, feet, gripper, topics, scene
objects); `unmet_needs(spec, needs, model)` lists each missing piece as (robot.yaml field,
what is missing and how to declare it), and `check_needs` raises the first as a
`ConfigError`, so ``roboreal train go1-walk env.robot=my_arm`` fails with the field to add,
not a ``KeyError`` from deep inside the simulation. `roboreal robot check` prints the
whole list for every task.
"""

from __future__ import annotations

from dataclasses import dataclass

from roboreal.config import ConfigError

# How to declare each piece in robot.yaml (the hint of the error message).
HOW = {
    "kind": "pick a task made for this kind of robot (`roboreal tasks`)",
    "sites.imu": "declare `sites: {imu: NAME}`: a site (or body) on the base where the IMU sits; "
                 "its orientation, gyro and accelerometer sensors are added when the MJCF has none",
    "sites.end_effector": "declare `sites: {end_effector: NAME}`: the tool centre point, a site (or a body)",
    "sites.feet": "declare `sites: {feet: [NAME, ...]}`: one site, geom or body per foot, in the order "
                  "the task expects; touch sensors are added when the MJCF has none",
    "sites.base_body": "declare `sites: {base_body: NAME}`: the body the robot is built on "
                       "(a legged robot's trunk on its free joint, an arm's base link)",
    "gripper": "declare `gripper: {joints: [...], open: M, closed: M, force_limit: N}` and give the model "
               "one position actuator that drives none of robot.yaml's joints (the gripper's)",
    "ros.imu": "declare `ros: {imu: /imu/data}` (sensor_msgs/Imu)",
    "ros.cmd_vel": "declare `ros: {cmd_vel: /cmd_vel}` (geometry_msgs/Twist)",
    "ros.goal": "declare `ros: {goal: /goal_pose}` (geometry_msgs/PoseStamped)",
    "ros.object_pose": "declare `ros: {object_pose: /object_pose}` (an object tracker's PoseStamped)",
    "ros.gripper_commands": "declare `ros: {gripper_commands: /gripper_controller/commands}`",
    "control_mode": "set `control_mode:` in robot.yaml",
    "scene": "the task's scene objects are not added automatically: put them in the MJCF (see the task's "
             "docstring and robots/panda/model.xml)",
}


@dataclass(frozen=True)
class RobotNeeds:
    """What a task needs from its robot. Every name is a robot.yaml field."""

    kinds: tuple[str, ...]  # robot kinds the task runs on
    control_mode: str | None = None  # "position" / "force"; None: either
    sites: tuple[str, ...] = ()  # SitesSpec fields that must be set: imu, end_effector, feet, base_body
    feet: int | None = None  # how many feet `sites.feet` must list
    free_base: bool = False  # the base floats on a free joint (legged robots)
    gripper: bool = False
    ros: tuple[str, ...] = ()  # RosSpec topics a deployment of the task reads or writes
    scene: tuple[tuple[str, str], ...] = ()  # (MJCF element type, name) the scene must have: ("joint", "object_joint")


def unmet_needs(spec, needs: RobotNeeds, model=None) -> list[tuple[str, str]]:
    """Each missing piece as (robot.yaml field, message with how to declare it)."""
    import mujoco

    out: list[tuple[str, str]] = []

    def miss(field: str, what: str, how: str | None = None) -> None:
        out.append((field, f"{what}; {how or HOW.get(field, HOW.get(field.split('.')[0], ''))}".rstrip("; ")))

    if spec.kind not in needs.kinds:
        miss("kind", f"is {spec.kind!r}; the task runs on {' or '.join(needs.kinds)} robots")
    if needs.control_mode is not None and spec.control_mode != needs.control_mode:
        miss("control_mode", f"is {spec.control_mode!r}; the task needs a {needs.control_mode}-controlled robot")
    for site in needs.sites:
        if not getattr(spec.sites, site):
            miss(f"sites.{site}", "missing")
    if needs.feet is not None and spec.sites.feet and len(spec.sites.feet) != needs.feet:
        miss("sites.feet", f"lists {len(spec.sites.feet)} feet; the task needs {needs.feet}")
    if needs.gripper and spec.gripper is None:
        miss("gripper", "missing: the task opens and closes a gripper")
    for topic in needs.ros:
        if not getattr(spec.ros, topic):
            miss(f"ros.{topic}", "missing")
    if model is not None:
        if needs.free_base:
            from roboreal.robots.model import base_body

            body = base_body(model, spec) if spec.sites.base_body else -1
            free = int(mujoco.mjtJoint.mjJNT_FREE)
            if body >= 0 and not any(int(model.jnt_type[j]) == free and int(model.jnt_bodyid[j]) == body
                                     for j in range(model.njnt)):
                miss("sites.base_body", f"body {spec.sites.base_body!r} has no free joint",
                     "the task's robot walks: give its base body a <freejoint/> in the MJCF")
        for kind, name in needs.scene:
            obj = getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}")
            if mujoco.mj_name2id(model, obj, name) < 0:
                miss("model", f"{spec.model} has no {kind} {name!r}, which the task's scene needs", HOW["scene"])
    return out


def check_needs(spec, needs: RobotNeeds, task: str, model=None) -> None:
    """Refuse a robot that lacks what `task` needs, naming the robot.yaml field and how to add it."""
    unmet = unmet_needs(spec, needs, model)
    if unmet:
        field, message = unmet[0]
        more = f" (and {len(unmet) - 1} more: run `roboreal robot check {spec.directory}`)" if len(unmet) > 1 else ""
        raise ConfigError(field, f"task {task} on robot {spec.name}: {message}{more}",
                          source=f"{spec.directory}/robot.yaml")
