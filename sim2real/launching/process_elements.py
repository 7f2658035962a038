"""<node> and <executable>: the elements that become processes (one `ProcessPlan` each).

A roboreal node runs as `python -m roboreal COMMAND ARGS --ros-args -r __node:=NAME
-r __ns:=NS <params> <remaps> ROS_ARGS`; an executable runs its command line as written.
"""

from __future__ import annotations

import re
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from roboreal.sim2real.launching.attributes import (CHILD_ATTRIBUTES, Scope, check_attributes, children, flag,
                                                    join_namespace, required, split_cmd, subst)
from roboreal.sim2real.launching.plan import LaunchError, ProcessPlan


def node_process(el: ET.Element, scope: Scope, file: Path, where: str) -> ProcessPlan:
    pkg = subst(required(el, "pkg", where), scope, file, where)
    exe = subst(required(el, "exec", where), scope, file, where)
    where = f"{file.name}: <node pkg={pkg!r} exec={exe!r}>"
    if pkg != "roboreal":
        raise LaunchError(f"{where}: package {pkg!r} is not available here: roboreal launch runs nodes of the "
                          f"package 'roboreal' (and <executable> commands) only")
    command = _roboreal_command(exe, where)
    node_name = subst(el.attrib.get("name"), scope, file, where) or None
    ns_attr = subst(el.attrib.get("namespace"), scope, file, where)
    namespace = join_namespace(scope.namespace, ns_attr) if (scope.namespace or ns_attr) else None
    cmd = [sys.executable, "-m", "roboreal", command]
    cmd += split_cmd(el.attrib["args"], scope, file, where) if "args" in el.attrib else []
    ros: list[str] = []
    if node_name:
        ros += ["-r", f"__node:={node_name}"]
    if namespace:
        ros += ["-r", f"__ns:={namespace}"]
    for option, value in scope.global_params:
        ros += [option, value]
    remaps = list(scope.global_remaps)
    env: dict[str, str | None] = dict(scope.env)
    for child in el:
        if not isinstance(child.tag, str):
            continue
        cw = f"{where} <{child.tag}>"
        if child.tag in CHILD_ATTRIBUTES:
            check_attributes(child, CHILD_ATTRIBUTES[child.tag], cw)
        if child.tag == "param":
            ros += _param(child, scope, file, cw, prefix="")
        elif child.tag == "remap":
            remaps.append(("-r", f"{subst(required(child, 'from', cw), scope, file, cw)}:="
                                 f"{subst(required(child, 'to', cw), scope, file, cw)}"))
        elif child.tag == "env":
            env[subst(required(child, "name", cw), scope, file, cw)] = \
                subst(required(child, "value", cw), scope, file, cw)
        else:
            raise LaunchError(f"{cw}: unsupported inside <node> (param, remap, env)")
    for option, value in remaps:
        ros += [option, value]
    if "ros_args" in el.attrib:
        ros += split_cmd(el.attrib["ros_args"], scope, file, where)
    if ros:
        cmd += ["--ros-args", *ros]
    prefix = split_cmd(el.attrib["launch-prefix"], scope, file, where) if "launch-prefix" in el.attrib else []
    display = node_name or el.attrib.get("exec_name") or command
    proc = ProcessPlan(name=display, cmd=prefix + cmd, env=env, node_name=node_name, namespace=namespace,
                       cwd=subst(el.attrib.get("cwd"), scope, file, where) or None)
    return _with_exit_options(proc, el, scope, file, where)


def executable_process(el: ET.Element, scope: Scope, file: Path, where: str) -> ProcessPlan:
    cmd_text = required(el, "cmd", where)
    shell = flag(el, "shell", scope, file, where, False)
    prefix = split_cmd(el.attrib["launch-prefix"], scope, file, where) if "launch-prefix" in el.attrib else []
    if shell:
        cmd = [" ".join(([shlex.join(prefix)] if prefix else []) + [subst(cmd_text, scope, file, where)])]
    else:
        cmd = prefix + split_cmd(cmd_text, scope, file, where)
    if not cmd or not cmd[0]:
        raise LaunchError(f"{where}: empty cmd")
    env = dict(scope.env)
    for child in children(el, "env", where, f"{where} <{{tag}}>: unsupported inside <executable> (env)"):
        env[subst(required(child, "name", where), scope, file, where)] = \
            subst(required(child, "value", where), scope, file, where)
    name = subst(el.attrib.get("name"), scope, file, where) or Path(shlex.split(cmd[0])[0] if shell
                                                                   else cmd[len(prefix)]).name
    cwd = subst(el.attrib.get("cwd"), scope, file, where) or None
    proc = ProcessPlan(name=name, cmd=cmd, env=env, cwd=cwd, shell=shell)
    return _with_exit_options(proc, el, scope, file, where)


def _with_exit_options(proc: ProcessPlan, el: ET.Element, scope: Scope, file: Path, where: str) -> ProcessPlan:
    """on_exit, respawn and respawn_delay, which <node> and <executable> share."""
    on_exit = subst(el.attrib.get("on_exit"), scope, file, where)
    if on_exit not in ("", "shutdown"):
        raise LaunchError(f"{where}: on_exit={on_exit!r}: only 'shutdown' is supported")
    proc.on_exit_shutdown = on_exit == "shutdown"
    proc.respawn = flag(el, "respawn", scope, file, where, False)
    rd = subst(el.attrib.get("respawn_delay", "0"), scope, file, where)
    try:
        proc.respawn_delay = float(rd)
    except ValueError:
        raise LaunchError(f"{where}: respawn_delay must be a number, got {rd!r}") from None
    subst(el.attrib.get("output"), scope, file, where)  # checked only: output always goes to the screen
    return proc


def _param(el: ET.Element, scope: Scope, file: Path, where: str, prefix: str) -> list[str]:
    if "from" in el.attrib:
        value = subst(el.attrib["from"], scope, file, where).strip()
        if not value:  # an optional params file not given
            return []
        f = Path(value).expanduser()
        f = f if f.is_absolute() else Path.cwd() / f
        if not f.is_file():
            raise LaunchError(f"{where}: parameter file not found: {f}")
        return ["--params-file", str(f)]
    name = prefix + subst(required(el, "name", where), scope, file, where)
    children = [c for c in el if isinstance(c.tag, str)]
    if children:
        out = []
        for c in children:
            if c.tag != "param":
                raise LaunchError(f"{where}: <{c.tag}> inside <param>")
            out += _param(c, scope, file, where, prefix=name + ".")
        return out
    value = subst(required(el, "value", where), scope, file, where)
    if "value-sep" in el.attrib:
        sep = el.attrib["value-sep"]
        value = "[" + ", ".join(_yaml_scalar(v) for v in (value.split(sep) if value else [])) + "]"
    return ["-p", f"{name}:={value}"]


def _yaml_scalar(v: str) -> str:
    v = v.strip()
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|true|false|True|False", v):
        return v
    return "'" + v.replace("'", "''") + "'"


def _roboreal_commands() -> frozenset[str]:
    """The `roboreal` subcommands (from the CLI's table; nothing is imported)."""
    from roboreal.cli import COMMAND_MODULES

    return frozenset(c for cmds in COMMAND_MODULES.values() for c in cmds)


def _roboreal_command(exe: str, where: str) -> str:
    commands = _roboreal_commands()
    if exe in commands:
        return exe
    if exe.replace("_", "-") in commands:
        return exe.replace("_", "-")
    raise LaunchError(f"{where}: roboreal has no command {exe!r} (commands: {', '.join(sorted(commands))})")
