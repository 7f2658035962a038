"""Reading a launch file's attributes: the scope they are evaluated in, $(...)
substitutions, if/unless conditions, true/false flags, and which attributes each element
may have.
"""

from __future__ import annotations

import ast
import math
import os
import shlex
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from roboreal.sim2real.launching.plan import PACKAGE_DIR, LaunchError

TRUE_VALUES, FALSE_VALUES = ("true", "1"), ("false", "0")

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

_EVAL_NAMES = {k: getattr(math, k) for k in dir(math) if not k.startswith("_")}
_EVAL_NAMES.update(abs=abs, min=min, max=max, round=round, int=int, float=float, str=str, bool=bool, len=len,
                   true=True, false=False)


def check_attributes(el: ET.Element, allowed: set[str], where: str) -> None:
    extra = sorted(set(el.attrib) - allowed)
    if not extra:
        return
    hint = " (ROS 1's required=\"true\" is on_exit=\"shutdown\" in ROS 2)" if "required" in extra else ""
    raise LaunchError(f"{where}: unexpected attribute {extra[0]!r} (allowed: {', '.join(sorted(allowed))}){hint}")


def children(el: ET.Element, tag: str, where: str, unsupported: str) -> list[ET.Element]:
    """`el`'s child elements (comments skipped), each a `tag` with only its allowed attributes;
    any other child is refused with `unsupported` (formatted with ``{tag}``)."""
    out = []
    for child in el:
        if not isinstance(child.tag, str):
            continue
        if child.tag != tag:
            raise LaunchError(unsupported.format(tag=child.tag))
        check_attributes(child, CHILD_ATTRIBUTES[tag], f"{where} <{tag}>")
        out.append(child)
    return out


def required(el: ET.Element, name: str, where: str) -> str:
    """The raw text of an attribute the element must have."""
    if name not in el.attrib:
        raise LaunchError(f"{where}: missing attribute {name!r}")
    return el.attrib[name]


class Scope:
    """Launch configurations and the other scoped state (namespaces, global params...)."""

    def __init__(self, configs: dict[str, str], namespace: str = "", global_params: list | None = None,
                 global_remaps: list | None = None, env: dict[str, str | None] | None = None,
                 anon: dict[str, str] | None = None):
        self.configs = dict(configs)
        self.namespace = namespace
        self.global_params = list(global_params or [])
        self.global_remaps = list(global_remaps or [])
        self.env = dict(env or {})
        # Shared, not copied, by child scopes: $(anon NAME) is one name for the whole launch.
        self.anon = {} if anon is None else anon

    def child(self) -> Scope:
        return Scope(self.configs, self.namespace, self.global_params, self.global_remaps, self.env, self.anon)


def join_namespace(base: str, ns: str) -> str:
    ns = ns.strip()
    if not ns:
        return base or ""
    full = ns if ns.startswith("/") else f"{base.rstrip('/')}/{ns}"
    full = "/" + "/".join(p for p in full.split("/") if p)
    return full


# ----------------------------------------------------------------------------------------
# Substitutions
# ----------------------------------------------------------------------------------------
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


def subst(text: str | None, scope: Scope, file: Path, where: str) -> str:
    """`text` with every $(...) replaced by its value ("" for a missing attribute)."""
    if text is None:
        return ""
    return "".join(part for part, _ in _subst_parts(text, scope, file, where))


def _subst_parts(text: str, scope: Scope, file: Path, where: str) -> list[tuple[str, bool]]:
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
            body = subst(body, scope, file, where) if "$(" in body else body
            parts.append((_one(body, scope, file, where), False))
            i = j
        else:
            lit.append(text[i])
            i += 1
    if lit:
        parts.append(("".join(lit), True))
    return parts


def _one(body: str, scope: Scope, file: Path, where: str) -> str:
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
        return scope.anon.setdefault(args[0], f"{args[0]}_{os.getpid()}_{uuid.uuid4().hex[:8]}")
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


def split_cmd(text: str, scope: Scope, file: Path, where: str) -> list[str]:
    """Split a command line like ros2 launch: literal text at whitespace (shell quoting),
    substitution values never split."""
    parts = _subst_parts(text, scope, file, where)
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


# ----------------------------------------------------------------------------------------
# Conditions and flags
# ----------------------------------------------------------------------------------------
def condition(el: ET.Element, scope: Scope, file: Path, where: str) -> bool:
    """False when the element's if/unless says to skip it."""
    for attr, want in (("if", True), ("unless", False)):
        if attr in el.attrib:
            v = subst(el.attrib[attr], scope, file, where).strip().lower()
            if v not in TRUE_VALUES + FALSE_VALUES:
                raise LaunchError(f"{where}: {attr}={el.attrib[attr]!r} evaluates to {v!r}, "
                                  f"expected true, false, 1 or 0")
            if (v in TRUE_VALUES) != want:
                return False
    return True


def flag(el: ET.Element, attr: str, scope: Scope, file: Path, where: str, default: bool) -> bool:
    """A true/false attribute (respawn, shell, scoped)."""
    if attr not in el.attrib:
        return default
    v = subst(el.attrib[attr], scope, file, where).lower()
    if v not in TRUE_VALUES + FALSE_VALUES:
        raise LaunchError(f"{where}: {attr} must be true or false, got {v!r}")
    return v in TRUE_VALUES
