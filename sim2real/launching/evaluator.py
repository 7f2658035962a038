"""Evaluating an XML launch file into a `LaunchPlan` (starts nothing).

The walk over the elements: arguments, lets, groups and scopes, namespaces, global
parameters/remaps/environment, includes, timers, logs and shutdowns. <node> and
<executable> become processes in `process_elements.py`; attribute values are read in
`attributes.py`. The supported XML is listed in the package docstring.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from roboreal.sim2real.launching.attributes import (ATTRIBUTES, Scope, check_attributes, children, condition,
                                                    flag, join_namespace, required, subst)
from roboreal.sim2real.launching.plan import LAUNCH_DIR, DeclaredArg, LaunchError, LaunchPlan, ProcessPlan
from roboreal.sim2real.launching.process_elements import executable_process, node_process


class _Evaluator:
    def __init__(self):
        self.plan_processes: list[ProcessPlan] = []
        self.shutdowns: list[tuple[float, str]] = []
        self.messages: list[str] = []
        self.names: dict[str, int] = {}
        self.include_stack: list[Path] = []

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
            check_attributes(el, ATTRIBUTES[tag] | {"if", "unless"}, where)
            if not condition(el, scope, file, where):
                if tag != "arg":
                    _static_args(el, declared)
                else:
                    declared.setdefault(el.attrib.get("name", ""), DeclaredArg(el.attrib.get("name", ""), None, ""))
                continue
            handler(el, scope, file, declared, delay, where)

    def el_arg(self, el, scope, file, declared, delay, where) -> None:
        name = required(el, "name", where)
        desc = el.attrib.get("description", "")
        default = el.attrib.get("default")
        if default is not None:
            default = subst(default, scope, file, where)
        if name not in scope.configs:  # else given on the command line, by an <include> or an enclosing scope
            if default is None:
                raise LaunchError(f"{file.name}: missing required launch argument {name!r} "
                                  f"({desc or 'no description'}); pass {name}:=VALUE")
            scope.configs[name] = default
        declared[name] = DeclaredArg(name, el.attrib.get("default"), desc, scope.configs[name])

    def el_let(self, el, scope, file, declared, delay, where) -> None:
        scope.configs[required(el, "name", where)] = subst(required(el, "value", where), scope, file, where)

    def el_group(self, el, scope, file, declared, delay, where) -> None:
        scoped = flag(el, "scoped", scope, file, where, True)
        self.walk(list(el), scope.child() if scoped else scope, file, declared, delay)

    def el_timer(self, el, scope, file, declared, delay, where) -> None:
        period = subst(required(el, "period", where), scope, file, where)
        try:
            p = float(period)
        except ValueError:
            raise LaunchError(f"{where}: period must be a number of seconds, got {period!r}") from None
        self.walk(list(el), scope.child(), file, declared, delay + p)

    def el_shutdown(self, el, scope, file, declared, delay, where) -> None:
        self.shutdowns.append((delay, subst(el.attrib.get("reason", "<shutdown/> in the launch file"),
                                            scope, file, where)))

    def el_log(self, el, scope, file, declared, delay, where) -> None:
        self.messages.append(subst(required(el, "message", where), scope, file, where))

    def el_push_ros_namespace(self, el, scope, file, declared, delay, where) -> None:
        ns = subst(required(el, "namespace", where), scope, file, where)
        scope.namespace = join_namespace(scope.namespace, ns)

    def el_set_parameter(self, el, scope, file, declared, delay, where) -> None:
        scope.global_params.append(("-p", f"{subst(required(el, 'name', where), scope, file, where)}:="
                                          f"{subst(required(el, 'value', where), scope, file, where)}"))

    def el_set_remap(self, el, scope, file, declared, delay, where) -> None:
        scope.global_remaps.append(("-r", f"{subst(required(el, 'from', where), scope, file, where)}:="
                                          f"{subst(required(el, 'to', where), scope, file, where)}"))

    def el_set_env(self, el, scope, file, declared, delay, where) -> None:
        scope.env[subst(required(el, "name", where), scope, file, where)] = \
            subst(required(el, "value", where), scope, file, where)

    def el_unset_env(self, el, scope, file, declared, delay, where) -> None:
        scope.env[subst(required(el, "name", where), scope, file, where)] = None

    def el_include(self, el, scope, file, declared, delay, where) -> None:
        target = subst(required(el, "file", where), scope, file, where)
        path = Path(target)
        if not path.is_absolute():
            path = (file.parent / path) if (file.parent / path).exists() else Path.cwd() / path
        inner = scope.child()
        passed = {}
        for a in children(el, "arg", where, f"{where}: <{{tag}}> inside <include> (only <arg name value/>)"):
            name = required(a, "name", where + " <arg>")
            passed[name] = subst(required(a, "value", where + f" <arg name={name!r}>"), scope, file, where)
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
        self._add(node_process(el, scope, file, where), delay)

    def el_executable(self, el, scope, file, declared, delay, where) -> None:
        self._add(executable_process(el, scope, file, where), delay)

    def _add(self, proc: ProcessPlan, delay: float) -> None:
        proc.delay = delay
        count = self.names.get(proc.name, 0) + 1  # a repeated name gets -2, -3...: output prefixes stay unique
        self.names[proc.name] = count
        if count > 1:
            proc.name = f"{proc.name}-{count}"
        self.plan_processes.append(proc)


def _static_args(el: ET.Element, declared: dict[str, DeclaredArg]) -> None:
    """Arguments declared in a branch that a condition skipped still count as declared."""
    for a in el.iter("arg"):
        name = a.attrib.get("name", "")
        if name and "$(" not in name and "value" not in a.attrib:
            declared.setdefault(name, DeclaredArg(name, a.attrib.get("default"), a.attrib.get("description", "")))


# ----------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------
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
    ev = _Evaluator()
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
        _static_args(_Evaluator().load(path, str(path)), declared)
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
