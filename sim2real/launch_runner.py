"""`roboreal launch`: run ROS 2 launch files in the XML format, without `ros2 launch`.

ROS 2's `launch` / `ros2 launch` are not pip-installable, so roboreal reads the same XML
launch files (the files stay valid for `ros2 launch roboreal FILE` on a ROS 2 install)
and runs each node as its own process. Two steps, so the first is testable alone:

* `plan_launch(file, args)` evaluates the file (arguments, substitutions, conditions,
  scopes, namespaces, includes, parameters, remaps) into a `LaunchPlan`: the exact
  command line, environment and options of every process. Nothing is started.
* `run_plan(plan)` starts the processes, prefixes each output line with the process
  name, reports processes that die (name and exit code; the others keep running, as
  with `ros2 launch`, unless the dead one has `on_exit="shutdown"`), and on Ctrl-C
  (SIGINT) or SIGTERM shuts everything down: SIGINT to every process, SIGTERM to those
  still running after `sigterm_timeout`, SIGKILL after a further `sigkill_timeout`.

Supported XML (the `ros2 launch` frontend; tags may be spelled with `-` or `_`):

  <launch>                       root
  <arg name default description> declare an argument; no default = required. A value
                                 given on the command line (name:=value) or by an
                                 enclosing <include> wins over the default.
  <let name value>               set a launch configuration
  <node pkg exec name namespace args ros_args launch-prefix output respawn
        respawn_delay on_exit>   pkg="roboreal": `python -m roboreal EXEC ARGS --ros-args
                                 -r __node:=NAME -r __ns:=NS <params> <remaps> ROS_ARGS`
                                 (exec "sim_bridge" also finds the command "sim-bridge").
                                 Other packages are reported as not available here.
    <param name value [value-sep]>  -> -p name:=value (nested <param name> -> a.b:=value)
    <param from="file.yaml">        -> --params-file file; an empty value (an optional
                                       params-file argument left at "") adds none, as
                                       ros2 launch skips it (warning that "." is not a file)
    <remap from to>                 -> -r from:=to
    <env name value>                extra environment variable
  <executable cmd cwd name shell launch-prefix output respawn respawn_delay on_exit>
    <env name value>
  <group scoped if unless>       scoped (default true): lets, args, namespaces, global
                                 params/remaps and env changes inside stay inside
  <push-ros-namespace namespace> prefix the namespace of the nodes that follow (in scope)
  <include file>  <arg name value/>  </include>   XML launch files only
  <set-parameter name value>     parameter for every node that follows (in scope)
  <set-remap from to>            remap for every node that follows (in scope)
  <set-env name value> / <unset-env name>
  <log message>                  printed when the launch starts
  <timer period> ... </timer>    the nodes/executables/shutdown inside start `period` s late
  <shutdown reason>              shut the launch down (immediately, or inside a timer)
  if / unless                    on every action; the value must be true/false/1/0

Substitutions: $(var NAME), $(env NAME [DEFAULT]), $(optenv NAME [DEFAULT]),
$(find-pkg-share roboreal) (the roboreal package directory, which holds launch/),
$(find-pkg-prefix roboreal), $(dirname), $(filename), $(anon NAME), $(eval EXPR)
(Python with math functions; no builtins). They nest: $(var $(var which)).

Deviations from `ros2 launch`, on purpose: a name:=value on the command line (or an
<arg> of an <include>) that no <arg> of the launched files declares is an error naming
it (ros2 launch ignores it); process output always goes to the screen, prefixed
`[name]`; the runner exits 1 if a process died with a non-zero code before the
shutdown began, else 0.
"""

from __future__ import annotations

import ast
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the roboreal package (= repository root)
LAUNCH_DIR = PACKAGE_DIR / "launch"
TRUE_VALUES, FALSE_VALUES = ("true", "1"), ("false", "0")


class LaunchError(Exception):
    """A launch file is invalid or cannot be run here; the message names the cause."""


# ----------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------
@dataclass
class ProcessPlan:
    name: str  # unique display name ([name] prefix of its output)
    cmd: list[str]
    env: dict[str, str | None] = field(default_factory=dict)  # changes to the runner's env (None = unset)
    cwd: str | None = None
    shell: bool = False
    kind: str = "node"  # node | executable
    node_name: str | None = None
    namespace: str | None = None
    on_exit_shutdown: bool = False
    respawn: bool = False
    respawn_delay: float = 0.0
    delay: float = 0.0  # s after the launch starts (from <timer>)
    output: str = "screen"
    source: str = ""  # file:line of the element

    @property
    def command_line(self) -> str:
        return self.cmd[0] if self.shell else shlex.join(self.cmd)


@dataclass
class LaunchPlan:
    file: str
    args: dict[str, str]  # the launch arguments in effect (top-level file)
    processes: list[ProcessPlan] = field(default_factory=list)
    shutdowns: list[tuple[float, str]] = field(default_factory=list)  # (delay s, reason)
    messages: list[str] = field(default_factory=list)  # from <log>

    def describe(self) -> str:
        lines = [f"# {self.file}"]
        lines += [f"# arg {k}:={v}" for k, v in self.args.items()]
        for m in self.messages:
            lines.append(f"# log: {m}")
        for p in self.processes:
            extra = []
            if p.delay:
                extra.append(f"after {p.delay:g} s")
            if p.on_exit_shutdown:
                extra.append("on_exit=shutdown")
            if p.respawn:
                extra.append(f"respawn (delay {p.respawn_delay:g} s)")
            env = " ".join(f"{k}={shlex.quote(v)}" if v is not None else f"-u {k}" for k, v in p.env.items())
            lines.append(f"[{p.name}]{' (' + ', '.join(extra) + ')' if extra else ''} "
                         f"{'env ' + env + ' ' if env else ''}{p.command_line}")
        for delay, reason in self.shutdowns:
            lines.append(f"# shutdown after {delay:g} s: {reason}")
        return "\n".join(lines)


@dataclass
class DeclaredArg:
    name: str
    default: str | None
    description: str
    value: str | None = None  # the value in effect (None: in a branch a condition skipped)


# Attributes each element may have (besides if/unless); anything else is an error, as in
# ros2 launch, so a typo never goes unnoticed.
ATTRIBUTES = {
    "arg": {"name", "default", "description"},
    "let": {"name", "value"},
    "node": {"pkg", "exec", "name", "namespace", "args", "ros_args", "launch-prefix", "output", "respawn",
             "respawn_delay", "on_exit", "exec_name", "emulate_tty", "cwd"},
    "executable": {"cmd", "cwd", "name", "shell", "launch-prefix", "output", "respawn", "respawn_delay", "on_exit",
                   "emulate_tty"},
    "group": {"scoped", "forwarding"},
    "include": {"file"},
    "push-ros-namespace": {"namespace"},
    "set-parameter": {"name", "value"},
    "set-remap": {"from", "to"},
    "set-env": {"name", "value"},
    "unset-env": {"name"},
    "log": {"message"},
    "timer": {"period"},
    "shutdown": {"reason"},
}
CHILD_ATTRIBUTES = {"param": {"name", "value", "value-sep", "from"}, "remap": {"from", "to"}, "env": {"name", "value"},
                    "arg": {"name", "value"}}


def _check_attributes(el: ET.Element, allowed: set[str], where: str) -> None:
    extra = sorted(set(el.attrib) - allowed)
    if not extra:
        return
    hint = " (ROS 1's required=\"true\" is on_exit=\"shutdown\" in ROS 2)" if "required" in extra else ""
    raise LaunchError(f"{where}: unexpected attribute {extra[0]!r} (allowed: {', '.join(sorted(allowed))}){hint}")


# ----------------------------------------------------------------------------------------
# Substitutions
# ----------------------------------------------------------------------------------------
_EVAL_NAMES = {k: getattr(math, k) for k in dir(math) if not k.startswith("_")}
_EVAL_NAMES.update(abs=abs, min=min, max=max, round=round, int=int, float=float, str=str, bool=bool, len=len,
                   true=True, false=False)


def _split_subst_args(body: str) -> list[str]:
    """Split the inside of $( ... ) at whitespace, honouring '...' quotes."""
    out, cur, quote, has = [], [], None, False
    for ch in body:
        if quote:
            if ch == quote:
                quote = None
            else:
                cur.append(ch)
        elif ch in "'\"":
            quote, has = ch, True
        elif ch.isspace():
            if cur or has:
                out.append("".join(cur))
            cur, has = [], False
        else:
            cur.append(ch)
    if quote:
        raise LaunchError(f"unterminated quote in $({body})")
    if cur or has:
        out.append("".join(cur))
    return out


class Scope:
    """Launch configurations and the other scoped state (namespaces, global params...)."""

    def __init__(self, configs: dict[str, str], namespace: str = "", global_params: list | None = None,
                 global_remaps: list | None = None, env: dict[str, str | None] | None = None):
        self.configs = dict(configs)
        self.namespace = namespace
        self.global_params = list(global_params or [])
        self.global_remaps = list(global_remaps or [])
        self.env = dict(env or {})

    def child(self) -> Scope:
        return Scope(self.configs, self.namespace, self.global_params, self.global_remaps, self.env)


class _Evaluator:
    def __init__(self, cli_args: dict[str, str]):
        self.cli_args = cli_args
        self.plan_processes: list[ProcessPlan] = []
        self.shutdowns: list[tuple[float, str]] = []
        self.messages: list[str] = []
        self.names: dict[str, int] = {}
        self.include_stack: list[Path] = []
        self.anon: dict[str, str] = {}

    # ----- substitutions -----
    def subst(self, text: str | None, scope: Scope, file: Path, where: str) -> str:
        if text is None:
            return ""
        return "".join(part for part, _ in self._subst_parts(text, scope, file, where))

    def _subst_parts(self, text: str, scope: Scope, file: Path, where: str) -> list[tuple[str, bool]]:
        """[(text, is_literal)]: literal text and the values of the substitutions in it."""
        parts: list[tuple[str, bool]] = []
        i, n, lit = 0, len(text), []
        while i < n:
            if text.startswith("$(", i):
                depth, j, quote = 1, i + 2, None
                while j < n and depth:
                    c = text[j]
                    if quote:
                        quote = None if c == quote else quote
                    elif c == "'":
                        quote = c
                    elif text.startswith("$(", j):
                        depth += 1
                        j += 1
                    elif c == ")":
                        depth -= 1
                    j += 1
                if depth:
                    raise LaunchError(f"{where}: unterminated substitution in {text!r}")
                if lit:
                    parts.append(("".join(lit), True))
                    lit = []
                body = text[i + 2:j - 1]
                # nested substitutions first
                body = self.subst(body, scope, file, where) if "$(" in body else body
                parts.append((self._one(body, scope, file, where), False))
                i = j
            else:
                lit.append(text[i])
                i += 1
        if lit:
            parts.append(("".join(lit), True))
        return parts

    def _one(self, body: str, scope: Scope, file: Path, where: str) -> str:
        words = _split_subst_args(body)
        if not words:
            raise LaunchError(f"{where}: empty substitution $()")
        kind, args = words[0], words[1:]

        def need(k: int, usage: str) -> None:
            if not (k <= len(args) <= (k + 1 if "[" in usage else k)):
                raise LaunchError(f"{where}: $({kind}) takes {usage}, got $({body})")

        if kind == "var":
            need(1, "NAME")
            if args[0] not in scope.configs:
                raise LaunchError(f"{where}: $(var {args[0]}): no launch argument or <let> named {args[0]!r} "
                                  f"(defined: {sorted(scope.configs)})")
            return scope.configs[args[0]]
        if kind in ("env", "optenv"):
            need(1, "NAME [DEFAULT]")
            env = {**os.environ, **{k: v for k, v in scope.env.items() if v is not None}}
            for k, v in scope.env.items():
                if v is None:
                    env.pop(k, None)
            if args[0] in env:
                return env[args[0]]
            if len(args) > 1:
                return args[1]
            if kind == "optenv":
                return ""
            raise LaunchError(f"{where}: $(env {args[0]}): environment variable {args[0]!r} is not set")
        if kind in ("find-pkg-share", "find-pkg-prefix"):
            need(1, "PACKAGE")
            if args[0] != "roboreal":
                raise LaunchError(f"{where}: $({kind} {args[0]}): package {args[0]!r} is not available here "
                                  f"(roboreal launch knows only the package 'roboreal')")
            return str(PACKAGE_DIR)
        if kind == "dirname":
            return str(file.parent)
        if kind == "filename":
            return str(file)
        if kind == "anon":
            need(1, "NAME")
            return self.anon.setdefault(args[0], f"{args[0]}_{os.getpid()}_{uuid.uuid4().hex[:8]}")
        if kind == "eval":
            expr = " ".join(args)
            try:
                value = eval(compile(ast.parse(expr, mode="eval"), "<eval>", "eval"),  # noqa: S307
                             {"__builtins__": {}}, dict(_EVAL_NAMES))
            except Exception as e:
                raise LaunchError(f"{where}: $(eval {expr}) failed: {e}") from None
            return str(value).lower() if isinstance(value, bool) else str(value)
        raise LaunchError(f"{where}: unknown substitution $({kind} ...) (supported: var, env, optenv, "
                          f"find-pkg-share, find-pkg-prefix, dirname, filename, anon, eval)")

    def split_cmd(self, text: str, scope: Scope, file: Path, where: str) -> list[str]:
        """Split a command line like ros2 launch: literal text at whitespace (shell quoting),
        substitution values never split."""
        parts = self._subst_parts(text, scope, file, where)
        values, template = {}, []
        for k, (t, literal) in enumerate(parts):
            if literal:
                template.append(t)
            else:
                key = f"\0{k}\0"
                values[key] = t
                template.append(key)
        try:
            tokens = shlex.split("".join(template))
        except ValueError as e:
            raise LaunchError(f"{where}: cannot split {text!r}: {e}") from None
        out = []
        for tok in tokens:
            for key, v in values.items():
                tok = tok.replace(key, v)
            out.append(tok)
        return out

    # ----- conditions -----
    def condition(self, el: ET.Element, scope: Scope, file: Path, where: str) -> bool:
        for attr, want in (("if", True), ("unless", False)):
            if attr in el.attrib:
                v = self.subst(el.attrib[attr], scope, file, where).strip().lower()
                if v not in TRUE_VALUES + FALSE_VALUES:
                    raise LaunchError(f"{where}: {attr}={el.attrib[attr]!r} evaluates to {v!r}, "
                                      f"expected true, false, 1 or 0")
                if (v in TRUE_VALUES) != want:
                    return False
        return True

    # ----- files -----
    def load(self, path: Path, where: str) -> ET.Element:
        if path.suffix in (".py",) or path.name.endswith((".launch.py", ".launch.yaml", ".launch.yml")) \
                or path.suffix in (".yaml", ".yml"):
            raise LaunchError(f"{where}: {path}: only XML launch files are supported by roboreal launch")
        if not path.exists():
            raise LaunchError(f"{where}: launch file not found: {path}")
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            raise LaunchError(f"{path}: malformed XML: {e}") from None
        if root.tag != "launch":
            raise LaunchError(f"{path}: the root element must be <launch>, got <{root.tag}>")
        return root

    def run_file(self, path: Path, scope: Scope, declared: dict[str, DeclaredArg], where: str) -> None:
        path = path.resolve()
        if path in self.include_stack:
            raise LaunchError(f"{where}: {path} includes itself")
        root = self.load(path, where)
        self.include_stack.append(path)
        try:
            self.walk(list(root), scope, path, declared, delay=0.0)
        finally:
            self.include_stack.pop()

    # ----- elements -----
    def walk(self, elements: list[ET.Element], scope: Scope, file: Path, declared: dict[str, DeclaredArg],
             delay: float) -> None:
        for el in elements:
            if not isinstance(el.tag, str):  # comments, processing instructions
                continue
            tag = el.tag.replace("_", "-")
            where = f"{file.name}: <{el.tag}>"
            handler = getattr(self, "el_" + tag.replace("-", "_"), None)
            if handler is None:
                raise LaunchError(f"{where}: unsupported element (supported: arg, let, node, executable, group, "
                                  f"include, push-ros-namespace, set-parameter, set-remap, set-env, unset-env, "
                                  f"log, timer, shutdown)")
            _check_attributes(el, ATTRIBUTES[tag] | {"if", "unless"}, where)
            if not self.condition(el, scope, file, where):
                if tag != "arg":
                    _static_args(el, declared)
                else:
                    declared.setdefault(el.attrib.get("name", ""), DeclaredArg(el.attrib.get("name", ""), None, ""))
                continue
            handler(el, scope, file, declared, delay, where)

    def el_arg(self, el, scope, file, declared, delay, where) -> None:
        name = self._attr(el, "name", where)
        desc = el.attrib.get("description", "")
        default = el.attrib.get("default")
        if default is not None:
            default = self.subst(default, scope, file, where)
        if name not in scope.configs:  # else given on the command line, by an <include> or an enclosing scope
            if default is None:
                raise LaunchError(f"{file.name}: missing required launch argument {name!r} "
                                  f"({desc or 'no description'}); pass {name}:=VALUE")
            scope.configs[name] = default
        declared[name] = DeclaredArg(name, el.attrib.get("default"), desc, scope.configs[name])

    def el_let(self, el, scope, file, declared, delay, where) -> None:
        scope.configs[self._attr(el, "name", where)] = self.subst(self._attr(el, "value", where), scope, file, where)

    def el_group(self, el, scope, file, declared, delay, where) -> None:
        scoped = self.subst(el.attrib.get("scoped", "true"), scope, file, where).lower()
        if scoped not in TRUE_VALUES + FALSE_VALUES:
            raise LaunchError(f"{where}: scoped must be true or false, got {scoped!r}")
        if scoped in TRUE_VALUES:
            self.walk(list(el), scope.child(), file, declared, delay)
        else:
            self.walk(list(el), scope, file, declared, delay)

    def el_timer(self, el, scope, file, declared, delay, where) -> None:
        period = self.subst(self._attr(el, "period", where), scope, file, where)
        try:
            p = float(period)
        except ValueError:
            raise LaunchError(f"{where}: period must be a number of seconds, got {period!r}") from None
        self.walk(list(el), scope.child(), file, declared, delay + p)

    def el_shutdown(self, el, scope, file, declared, delay, where) -> None:
        self.shutdowns.append((delay, self.subst(el.attrib.get("reason", "<shutdown/> in the launch file"),
                                                 scope, file, where)))

    def el_log(self, el, scope, file, declared, delay, where) -> None:
        self.messages.append(self.subst(self._attr(el, "message", where), scope, file, where))

    def el_push_ros_namespace(self, el, scope, file, declared, delay, where) -> None:
        ns = self.subst(self._attr(el, "namespace", where), scope, file, where)
        scope.namespace = _join_namespace(scope.namespace, ns)

    def el_set_parameter(self, el, scope, file, declared, delay, where) -> None:
        scope.global_params.append(("-p", f"{self.subst(self._attr(el, 'name', where), scope, file, where)}:="
                                          f"{self.subst(self._attr(el, 'value', where), scope, file, where)}"))

    def el_set_remap(self, el, scope, file, declared, delay, where) -> None:
        scope.global_remaps.append(("-r", f"{self.subst(self._attr(el, 'from', where), scope, file, where)}:="
                                          f"{self.subst(self._attr(el, 'to', where), scope, file, where)}"))

    def el_set_env(self, el, scope, file, declared, delay, where) -> None:
        scope.env[self.subst(self._attr(el, "name", where), scope, file, where)] = \
            self.subst(self._attr(el, "value", where), scope, file, where)

    def el_unset_env(self, el, scope, file, declared, delay, where) -> None:
        scope.env[self.subst(self._attr(el, "name", where), scope, file, where)] = None

    def el_include(self, el, scope, file, declared, delay, where) -> None:
        target = self.subst(self._attr(el, "file", where), scope, file, where)
        path = Path(target)
        if not path.is_absolute():
            path = (file.parent / path) if (file.parent / path).exists() else Path.cwd() / path
        inner = scope.child()
        passed = {}
        for a in el:
            if not isinstance(a.tag, str):
                continue
            if a.tag != "arg":
                raise LaunchError(f"{where}: <{a.tag}> inside <include> (only <arg name value/>)")
            _check_attributes(a, CHILD_ATTRIBUTES["arg"], f"{where} <arg>")
            name = self._attr(a, "name", where + " <arg>")
            passed[name] = self.subst(self._attr(a, "value", where + f" <arg name={name!r}>"), scope, file, where)
        inner.configs.update(passed)
        inner_declared: dict[str, DeclaredArg] = {}
        self.run_file(path, inner, inner_declared, f"{where} file={target!r}")
        unknown = sorted(set(passed) - set(inner_declared))
        if unknown:
            raise LaunchError(f"{where}: {path.name} has no launch argument {unknown[0]!r} "
                              f"(its arguments: {sorted(inner_declared)})")
        for k, v in inner_declared.items():
            declared.setdefault(k, v)

    def el_node(self, el, scope, file, declared, delay, where) -> None:
        pkg = self.subst(self._attr(el, "pkg", where), scope, file, where)
        exe = self.subst(self._attr(el, "exec", where), scope, file, where)
        where = f"{file.name}: <node pkg={pkg!r} exec={exe!r}>"
        if pkg != "roboreal":
            raise LaunchError(f"{where}: package {pkg!r} is not available here: roboreal launch runs nodes of the "
                              f"package 'roboreal' (and <executable> commands) only")
        command = _roboreal_command(exe, where)
        node_name = self.subst(el.attrib.get("name"), scope, file, where) or None
        ns_attr = self.subst(el.attrib.get("namespace"), scope, file, where)
        namespace = _join_namespace(scope.namespace, ns_attr) if (scope.namespace or ns_attr) else None
        cmd = [sys.executable, "-m", "roboreal", command]
        cmd += self.split_cmd(el.attrib["args"], scope, file, where) if "args" in el.attrib else []
        ros: list[str] = []
        if node_name:
            ros += ["-r", f"__node:={node_name}"]
        if namespace:
            ros += ["-r", f"__ns:={namespace}"]
        for flag, value in scope.global_params:
            ros += [flag, value]
        remaps = list(scope.global_remaps)
        env: dict[str, str | None] = dict(scope.env)
        for child in el:
            if not isinstance(child.tag, str):
                continue
            cw = f"{where} <{child.tag}>"
            if child.tag in CHILD_ATTRIBUTES:
                _check_attributes(child, CHILD_ATTRIBUTES[child.tag], cw)
            if child.tag == "param":
                ros += self._param(child, scope, file, cw, prefix="")
            elif child.tag == "remap":
                remaps.append(("-r", f"{self.subst(self._attr(child, 'from', cw), scope, file, cw)}:="
                                     f"{self.subst(self._attr(child, 'to', cw), scope, file, cw)}"))
            elif child.tag == "env":
                env[self.subst(self._attr(child, "name", cw), scope, file, cw)] = \
                    self.subst(self._attr(child, "value", cw), scope, file, cw)
            else:
                raise LaunchError(f"{cw}: unsupported inside <node> (param, remap, env)")
        for flag, value in remaps:
            ros += [flag, value]
        if "ros_args" in el.attrib:
            ros += self.split_cmd(el.attrib["ros_args"], scope, file, where)
        if ros:
            cmd += ["--ros-args", *ros]
        prefix = self.split_cmd(el.attrib["launch-prefix"], scope, file, where) if "launch-prefix" in el.attrib else []
        display = node_name or el.attrib.get("exec_name") or command
        self._add(el, scope, file, where, ProcessPlan(
            name=display, cmd=prefix + cmd, env=env, kind="node", node_name=node_name, namespace=namespace,
            cwd=self.subst(el.attrib.get("cwd"), scope, file, where) or None, delay=delay, source=where))

    def el_executable(self, el, scope, file, declared, delay, where) -> None:
        cmd_text = self._attr(el, "cmd", where)
        shell = self._bool(el, "shell", scope, file, where, False)
        prefix = self.split_cmd(el.attrib["launch-prefix"], scope, file, where) if "launch-prefix" in el.attrib else []
        if shell:
            cmd = [" ".join(([shlex.join(prefix)] if prefix else []) + [self.subst(cmd_text, scope, file, where)])]
        else:
            cmd = prefix + self.split_cmd(cmd_text, scope, file, where)
        if not cmd or not cmd[0]:
            raise LaunchError(f"{where}: empty cmd")
        env = dict(scope.env)
        for child in el:
            if not isinstance(child.tag, str):
                continue
            if child.tag != "env":
                raise LaunchError(f"{where} <{child.tag}>: unsupported inside <executable> (env)")
            _check_attributes(child, CHILD_ATTRIBUTES["env"], f"{where} <env>")
            env[self.subst(self._attr(child, "name", where), scope, file, where)] = \
                self.subst(self._attr(child, "value", where), scope, file, where)
        name = self.subst(el.attrib.get("name"), scope, file, where) or Path(shlex.split(cmd[0])[0] if shell
                                                                           else cmd[len(prefix)]).name
        cwd = self.subst(el.attrib.get("cwd"), scope, file, where) or None
        self._add(el, scope, file, where, ProcessPlan(name=name, cmd=cmd, env=env, cwd=cwd, shell=shell,
                                                      kind="executable", delay=delay, source=where))

    # ----- helpers -----
    def _add(self, el, scope, file, where, proc: ProcessPlan) -> None:
        on_exit = self.subst(el.attrib.get("on_exit"), scope, file, where)
        if on_exit not in ("", "shutdown"):
            raise LaunchError(f"{where}: on_exit={on_exit!r}: only 'shutdown' is supported")
        proc.on_exit_shutdown = on_exit == "shutdown"
        proc.respawn = self._bool(el, "respawn", scope, file, where, False)
        rd = self.subst(el.attrib.get("respawn_delay", "0"), scope, file, where)
        try:
            proc.respawn_delay = float(rd)
        except ValueError:
            raise LaunchError(f"{where}: respawn_delay must be a number, got {rd!r}") from None
        proc.output = self.subst(el.attrib.get("output", "screen"), scope, file, where)
        count = self.names.get(proc.name, 0) + 1
        self.names[proc.name] = count
        if count > 1:
            proc.name = f"{proc.name}-{count}"
        self.plan_processes.append(proc)

    def _param(self, el: ET.Element, scope, file, where, prefix: str) -> list[str]:
        if "from" in el.attrib:
            value = self.subst(el.attrib["from"], scope, file, where).strip()
            if not value:  # an optional params file not given
                return []
            f = Path(value).expanduser()
            f = f if f.is_absolute() else Path.cwd() / f
            if not f.is_file():
                raise LaunchError(f"{where}: parameter file not found: {f}")
            return ["--params-file", str(f)]
        name = prefix + self.subst(self._attr(el, "name", where), scope, file, where)
        children = [c for c in el if isinstance(c.tag, str)]
        if children:
            out = []
            for c in children:
                if c.tag != "param":
                    raise LaunchError(f"{where}: <{c.tag}> inside <param>")
                out += self._param(c, scope, file, where, prefix=name + ".")
            return out
        value = self.subst(self._attr(el, "value", where), scope, file, where)
        if "value-sep" in el.attrib:
            sep = el.attrib["value-sep"]
            value = "[" + ", ".join(_yaml_scalar(v) for v in (value.split(sep) if value else [])) + "]"
        return ["-p", f"{name}:={value}"]

    def _bool(self, el, attr, scope, file, where, default: bool) -> bool:
        if attr not in el.attrib:
            return default
        v = self.subst(el.attrib[attr], scope, file, where).lower()
        if v not in TRUE_VALUES + FALSE_VALUES:
            raise LaunchError(f"{where}: {attr} must be true or false, got {v!r}")
        return v in TRUE_VALUES

    @staticmethod
    def _attr(el: ET.Element, name: str, where: str) -> str:
        if name not in el.attrib:
            raise LaunchError(f"{where}: missing attribute {name!r}")
        return el.attrib[name]


def _yaml_scalar(v: str) -> str:
    v = v.strip()
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|true|false|True|False", v):
        return v
    return "'" + v.replace("'", "''") + "'"


def _static_args(el: ET.Element, declared: dict[str, DeclaredArg]) -> None:
    """Arguments declared in a branch that a condition skipped still count as declared."""
    for a in el.iter("arg"):
        name = a.attrib.get("name", "")
        if name and "$(" not in name and "value" not in a.attrib:
            declared.setdefault(name, DeclaredArg(name, a.attrib.get("default"), a.attrib.get("description", "")))


def _join_namespace(base: str, ns: str) -> str:
    ns = ns.strip()
    if not ns:
        return base or ""
    full = ns if ns.startswith("/") else f"{base.rstrip('/')}/{ns}"
    full = "/" + "/".join(p for p in full.split("/") if p)
    return full


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


def parse_launch_args(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if ":=" not in item:
            raise LaunchError(f"launch arguments are name:=value, got {item!r}")
        k, v = item.split(":=", 1)
        if not k:
            raise LaunchError(f"launch argument without a name: {item!r}")
        out[k] = v
    return out


def resolve_launch_file(file: str, args: list[str] | None = None) -> tuple[Path, list[str]]:
    """FILE may be a path, a file in roboreal's launch/ folder, or `roboreal FILE` (ros2 launch style)."""
    args = list(args or [])
    if file == "roboreal" and args and ":=" not in args[0] and not Path(file).exists():
        file, args = args[0], args[1:]
    p = Path(file)
    if not p.exists() and not p.is_absolute() and (LAUNCH_DIR / p).exists():
        p = LAUNCH_DIR / p
    if not p.exists():
        raise LaunchError(f"launch file not found: {file} (looked in . and {LAUNCH_DIR})")
    return p.resolve(), args


def _evaluate(path: Path, cli: dict[str, str]) -> tuple[_Evaluator, dict[str, DeclaredArg]]:
    ev = _Evaluator(cli)
    declared: dict[str, DeclaredArg] = {}
    ev.run_file(path, Scope(cli), declared, str(path))
    return ev, declared


def declared_args(file: str | Path, args: dict[str, str] | None = None) -> list[DeclaredArg]:
    """The arguments a launch file declares, with those of the files it includes (--show-args)."""
    path = Path(file).resolve()
    try:
        _, declared = _evaluate(path, dict(args or {}))
    except LaunchError:  # e.g. a required argument is missing: the file's own declarations
        declared = {}
        _static_args(_Evaluator({}).load(path, str(path)), declared)
    return list(declared.values())


def plan_launch(file: str | Path, args: dict[str, str] | list[str] | None = None) -> LaunchPlan:
    """Evaluate a launch file into the processes it would start (starts nothing).

    `args` are the launch arguments (a dict, or ["name:=value", ...]). Raises `LaunchError`
    naming the cause for an unknown or missing argument, an unknown element or attribute,
    a package other than roboreal, a missing file...
    """
    cli = parse_launch_args(args) if isinstance(args, list) else dict(args or {})
    path = Path(file).resolve()
    ev, declared = _evaluate(path, cli)
    unknown = [k for k in cli if k not in declared]
    if unknown:
        raise LaunchError(f"{path.name}: unknown launch argument {unknown[0]!r} "
                          f"(arguments: {', '.join(sorted(declared)) or 'none'})")
    top = {k: a.value for k, a in declared.items() if a.value is not None}
    return LaunchPlan(file=str(path), args=top, processes=ev.plan_processes, shutdowns=ev.shutdowns,
                      messages=ev.messages)


# ----------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------
def _set_pdeathsig() -> None:  # runs in the child before exec (Linux): die with the runner
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Child:
    def __init__(self, plan: ProcessPlan):
        self.plan = plan
        self.proc: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None
        self.start_at = plan.delay
        self.exit_code: int | None = None
        self.done = False  # exited and not to be restarted


class LaunchRunner:
    """Starts a `LaunchPlan`'s processes and supervises them until shutdown."""

    def __init__(self, plan: LaunchPlan, sigterm_timeout: float = 5.0, sigkill_timeout: float = 5.0,
                 out: IO[str] | None = None, poll_interval: float = 0.02):
        self.plan = plan
        self.sigterm_timeout = sigterm_timeout
        self.sigkill_timeout = sigkill_timeout
        self.out = out or sys.stdout
        self.poll = poll_interval
        self.children = [_Child(p) for p in plan.processes]
        self.write_lock = threading.Lock()
        self.shutdown_reason: str | None = None
        self.failed = False
        self._signals = 0
        self._escalate = False
        self.env = dict(os.environ)
        self.env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self.env.setdefault("PYTHONUNBUFFERED", "1")

    # ----- output -----
    def log(self, level: str, msg: str) -> None:
        self.write(f"[{level}] [launch]: {msg}\n")

    def write(self, text: str) -> None:
        with self.write_lock:
            try:
                self.out.write(text)
                self.out.flush()
            except (OSError, ValueError):
                pass  # our stdout is gone (e.g. a closed pipe): keep supervising regardless

    def _pump(self, child: _Child, stream: IO[bytes]) -> None:
        name = child.plan.name
        for raw in iter(stream.readline, b""):
            self.write(f"[{name}] {raw.decode(errors='replace').rstrip()}\n")  # keeps draining: never blocks it
        stream.close()

    # ----- processes -----
    def _start(self, child: _Child) -> None:
        p = child.plan
        env = dict(self.env)
        for k, v in p.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        try:
            child.proc = subprocess.Popen(
                p.cmd[0] if p.shell else p.cmd, shell=p.shell, cwd=p.cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0, preexec_fn=_set_pdeathsig)
        except OSError as e:
            self.log("ERROR", f"process '{p.name}' failed to start: {e} [cmd '{p.command_line}']")
            child.done, child.exit_code = True, 127
            self.failed = True
            return
        self.log("INFO", f"process started with pid [{child.proc.pid}]: {p.name}")
        child.reader = threading.Thread(target=self._pump, args=(child, child.proc.stdout), daemon=True)
        child.reader.start()

    def _signal(self, child: _Child, sig: signal.Signals) -> None:
        if child.proc is None or child.proc.poll() is not None:
            return
        self.log("INFO", f"sending signal '{sig.name}' to process '{child.plan.name}'")
        try:
            os.killpg(child.proc.pid, sig)  # the child's own process group: shells and wrappers too
        except (ProcessLookupError, PermissionError):
            try:
                child.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _on_signal(self, signum, frame) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self.shutdown_reason is None:
            self.shutdown_reason = f"{name} received"
        else:
            self._escalate = True  # Ctrl-C while shutting down: stop waiting, escalate to the next signal

    def _reap(self, now: float, t0: float) -> None:
        for c in self.children:
            if c.proc is None or c.done or c.proc.poll() is None:
                continue
            code = c.proc.returncode
            c.exit_code = code
            if c.reader is not None:
                c.reader.join(timeout=1.0)
            p = c.plan
            if self.shutdown_reason is not None:
                self.log("INFO", f"process '{p.name}' has finished [pid {c.proc.pid}, {_describe_exit(code)}]")
                c.done = True
                continue
            if code == 0:
                self.log("INFO", f"process '{p.name}' has finished cleanly [pid {c.proc.pid}]")
            else:
                self.failed = True
                self.log("ERROR", f"process '{p.name}' has died [pid {c.proc.pid}, {_describe_exit(code)}, "
                                  f"cmd '{p.command_line}']")
            if p.on_exit_shutdown:
                self.shutdown_reason = f"process '{p.name}' exited ({_describe_exit(code)}) and has on_exit=shutdown"
                c.done = True
            elif p.respawn:
                self.log("INFO", f"respawning '{p.name}' in {p.respawn_delay:g} s")
                c.proc = None
                c.start_at = now - t0 + p.respawn_delay
            else:
                c.done = True

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _run(self) -> int:
        for m in self.plan.messages:
            self.log("INFO", m)
        t0 = time.monotonic()
        shutdown_at = sorted(self.plan.shutdowns)
        while self.shutdown_reason is None:
            now = time.monotonic()
            for c in self.children:
                if c.proc is None and not c.done and now - t0 >= c.start_at:
                    self._start(c)
            if shutdown_at and now - t0 >= shutdown_at[0][0]:
                self.shutdown_reason = shutdown_at[0][1]
                break
            self._reap(now, t0)
            if all(c.done for c in self.children) and not shutdown_at:
                self.log("INFO", "all processes have finished")
                return 1 if self.failed else 0
            time.sleep(self.poll)
        self._reap(time.monotonic(), t0)
        self._shutdown()
        return 1 if self.failed else 0

    def _shutdown(self) -> None:
        self.log("INFO", f"shutting down ({self.shutdown_reason})")
        running = lambda: [c for c in self.children if c.proc is not None and c.proc.poll() is None]  # noqa: E731
        for c in self.children:
            if c.proc is None:
                c.done = True  # never started (timer) or waiting to respawn
        for sig, timeout in ((signal.SIGINT, self.sigterm_timeout), (signal.SIGTERM, self.sigkill_timeout),
                             (signal.SIGKILL, 5.0)):
            alive = running()
            if not alive:
                break
            if sig != signal.SIGINT:
                self.log("WARNING", f"{', '.join(repr(c.plan.name) for c in alive)} still running: escalating to "
                                    f"{sig.name}")
            for c in alive:
                self._signal(c, sig)
            self._escalate = False
            deadline = time.monotonic() + timeout
            while running() and time.monotonic() < deadline and not self._escalate:
                time.sleep(self.poll)
        self._reap(time.monotonic(), 0.0)
        for c in self.children:
            if c.reader is not None:
                c.reader.join(timeout=1.0)


def run_plan(plan: LaunchPlan, sigterm_timeout: float = 5.0, sigkill_timeout: float = 5.0,
             out: IO[str] | None = None) -> int:
    return LaunchRunner(plan, sigterm_timeout, sigkill_timeout, out).run()


def launch_main(file: str, launch_args: list[str], dry_run: bool = False, show_args: bool = False,
                sigterm_timeout: float = 5.0, sigkill_timeout: float = 5.0) -> int:
    try:
        path, launch_args = resolve_launch_file(file, launch_args)
        if show_args:
            args = declared_args(path, parse_launch_args(launch_args))
            print(f"Arguments (pass arguments as '<name>:=<value>'):" if args else "No arguments.")
            for a in args:
                default = f"(default: '{a.default}')" if a.default is not None else "(required)"
                print(f"\n    '{a.name}':\n        {a.description or 'no description given'}\n        {default}")
            return 0
        plan = plan_launch(path, launch_args)
    except LaunchError as e:
        print(f"roboreal launch: error: {e}", file=sys.stderr)
        return 2
    if dry_run:
        print(plan.describe())
        return 0
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return run_plan(plan, sigterm_timeout, sigkill_timeout)


def main(argv: list[str] | None = None) -> int:
    """`python -m roboreal.sim2real.launch_runner FILE [name:=value ...]` (no CLI start-up cost)."""
    import argparse

    p = argparse.ArgumentParser(prog="roboreal launch")
    p.add_argument("file")
    p.add_argument("launch_args", nargs="*")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("-s", "--show-args", action="store_true")
    p.add_argument("--sigterm-timeout", type=float, default=5.0)
    p.add_argument("--sigkill-timeout", type=float, default=5.0)
    a = p.parse_args(argv)
    return launch_main(a.file, a.launch_args, a.dry_run, a.show_args, a.sigterm_timeout, a.sigkill_timeout)


if __name__ == "__main__":
    sys.exit(main())
