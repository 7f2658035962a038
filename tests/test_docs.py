"""The commands and snippets README.md and agents/README.md document keep working.

A documented command that breaks fails this test (the whole file: ~10 s on the 2-core machine):

* every line of a fenced ```bash``` block:
  - ``roboreal ...`` (also after ``torchrun ... -m`` and ``python -m``, and on each side of
    ``&&``) is parsed by roboreal's own parser (``roboreal.cli.build_parser``: an unknown
    subcommand, flag or choice fails), then its handler runs with the expensive step replaced
    by a stop (``runner.train`` for train, ``bc.train_bc`` for bc, ``offline_cli.run_offline`` for
    offline, ``dagger.DAgger`` for dagger, ...), so ``key=value`` overrides go through the
    command's own validation (``resolve_config``, the ``BCConfig``/``DAggerConfig``/``IQLConfig``
    dataclasses, the task config); launch arguments are checked against the launch file's
    declarations, robots named by ``--robot``/``robot:=`` must load, ``gym:`` ids must exist.
    Placeholders (``runs/<run>``, ``RUN``, ``BUNDLE``, ``...``) and optional parts
    (``[--out DIR]``, ``[--mcap FILE|none]``) are understood; a dataset file a command names
    that no earlier line wrote is an empty placeholder for that command only.
  - ``python benchmarks/X.py ...``: the script exists and names every flag (and subcommand);
    ``./dev X``: ``X`` is a case of ./dev; ``pip install``: the extras exist in pyproject.toml
    and a ``torch==`` pin equals pyproject's.
* every fenced ```python``` block compiles; its ``import roboreal...`` / ``from roboreal...
  import X`` resolve, every ``roboreal.a.b`` attribute chain resolves, and a
  ``roboreal.make("task", field=...)`` with literal arguments validates its task config.
* a block preceded by ``<!-- docs-check: run -->`` is also executed, in a scratch folder that
  links the repository's top-level folders (a clone's root as a user has it): a python block
  as written; in a bash block the cheap commands (``tasks``, ``robot``, ``data``, ``collect
  --expert scripted``) in order, so later lines read what earlier lines wrote.
* inline code in the prose: a ``roboreal ...``/``python ...`` command gets the same static
  check (it may name a command without its required arguments: ``roboreal play``); every
  ``roboreal.a.b`` name resolves (``roboreal.make(...)`` with literal arguments validates);
  every path under one of the repository's folders exists (``FILE::test_name``: the function
  too), every ``test_*`` name is a test function, every relative link target exists.
* the README's task table equals ``roboreal.envs.make(task).spec`` (observation group sizes,
  action size, control rate, episode length, robot).

What cannot be checked is skipped by a marker in the markdown, a visible decision:
``<!-- docs-check: skip (why) -->`` before a block, or ``<!-- docs-check: skip `PREFIX` (why)
-->`` for the lines of the next block that start with PREFIX. The test prints what it skipped
and fails when the skips differ from EXPECTED_SKIPS below.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import os
import re
import shlex
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "agents/README.md")

# (document, what): a whole block (its first line) or a line prefix, with the reason in the markdown.
EXPECTED_SKIPS = {
    ("README.md", "ros2 service call"),  # needs the ros2 CLI of a ROS 2 install; the pip wheels ship none
}

# Commands cheap enough to execute in a block marked `run` (collect: with the scripted expert only).
RUNNABLE = {"tasks", "robot", "data", "collect"}
# Parsed (and their robot checked), not run unless RUNNABLE in a `run` block: ROS 2 nodes, and
# commands with nothing to validate beyond their arguments.
PARSE_ONLY = {"deploy", "teleop", "sim-bridge", "record", "tasks", "robot"}

FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*docs-check:\s*(?P<kind>run|skip)\s*(?:`(?P<prefix>[^`]+)`)?\s*"
                    r"(?:\((?P<why>.*)\))?\s*-->\s*$")
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|^[A-Z][A-Z_]*$|/[A-Z][A-Z_]*$")
OPTIONAL = re.compile(r"(?<!\S)\[([^\[\]]+)\]")  # `[--flag ARG]`, `[key=value ...]`; not `key=[1,2]`
INLINE = re.compile(r"`([^`\n]+)`")
NAME_CHAIN = re.compile(r"(?<![\w./-])roboreal(?:\.[A-Za-z_]\w*)+")
TOP_DIRS = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
                  and "." not in p.name and p.name not in ("runs", "outputs"))
DOC_PATH = re.compile(rf"^(?:(?:{'|'.join(map(re.escape, TOP_DIRS))})/|(?=test_\w+\.py))[\w./*-]*(?:::\w+)?$")
LINK = re.compile(r"\]\(([^()\s]+)\)")
TEST_NAME = re.compile(r"^test_\w+$")
MAKE_OWN_ARGS = {"num_envs", "device", "backend", "seed", "config_file"}


@contextlib.contextmanager
def _chdir(path: Path):  # contextlib.chdir is Python >= 3.11; the project supports 3.10
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class _Stop(Exception):
    """Raised by a stubbed expensive step: the command got that far, so it validated."""


def _stop(*_args, **_kwargs):
    raise _Stop


@dataclasses.dataclass
class Block:
    doc: str
    line: int  # 1-based line of the first content line
    lang: str
    lines: list[str]
    run: bool = False
    skip: str | None = None  # reason the whole block is skipped
    skip_prefixes: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Report:
    problems: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (doc, what, why)
    checked: int = 0
    ran: int = 0

    def problem(self, doc: str, line: int, text: str, message: str) -> None:
        message = " ".join(str(message).split())
        self.problems.append(f"{doc}:{line}: {text.strip()}\n    -> {message[:400]}")


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------
def parse_markdown(text: str, doc: str, report: Report) -> tuple[list[Block], list[tuple[int, str]]]:
    """Fenced blocks (with the docs-check markers just before them) and the prose lines."""
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    pending: list[re.Match] = []
    block: Block | None = None
    for i, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if block is not None:
            if fence and not fence.group(1):
                blocks.append(block)
                block = None
            else:
                block.lines.append(line)
            continue
        if fence:
            block = Block(doc, i + 1, fence.group(1).lower(), [])
            for m in pending:
                if m.group("kind") == "run":
                    block.run = True
                elif m.group("prefix"):
                    block.skip_prefixes[m.group("prefix").strip()] = m.group("why") or ""
                else:
                    block.skip = m.group("why") or ""
            pending = []
            continue
        marker = MARKER.match(line)
        if marker:
            if marker.group("kind") == "skip" and not (marker.group("why") or "").strip():
                report.problem(doc, i, line, "a docs-check skip needs its reason: <!-- docs-check: skip (why) -->")
            pending.append(marker)
            continue
        if "docs-check" in line:
            report.problem(doc, i, line, "malformed docs-check marker (run | skip (why) | skip `PREFIX` (why))")
        if line.strip():
            pending = []
        prose.append((i, line))
    if block is not None:
        report.problem(doc, block.line - 1, "```" + block.lang, "unclosed code fence")
    return blocks, prose


# ----------------------------------------------------------------------------------------------
# Python names
# ----------------------------------------------------------------------------------------------
def resolve_name(dotted: str):
    """Import the longest module prefix of `dotted`, then getattr the rest (submodules imported)."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        if isinstance(obj, type(sys)):
            name = ".".join(parts[: i + 1])
            try:
                obj = importlib.import_module(name)
                continue
            except ModuleNotFoundError as e:
                if e.name != name:
                    raise
        raise AttributeError(f"{'.'.join(parts[:i])} has no attribute {part!r}")
    return obj


def check_make_call(call: ast.Call) -> None:
    """`roboreal.make("task", field=...)` with literal arguments: the task and its config fields."""
    if not call.args or not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[0].value, str):
        return
    try:
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    except ValueError:
        return  # not literal: nothing to validate statically
    task = call.args[0].value
    if task.startswith("gym:"):
        import gymnasium

        gymnasium.spec(task[4:])
        return
    from roboreal.envs.registry import task_config

    task_config(task, {k: v for k, v in kwargs.items() if k not in MAKE_OWN_ARGS})
    backend = kwargs.get("backend", "mujoco")
    from roboreal.envs.sim.backend import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")


def _chain(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def check_python_source(src: str, where: str, implicit_roboreal: bool = True) -> list[tuple[int, str]]:
    """Problems of a python snippet that are visible without running it, as (line in the snippet,
    message)."""
    try:
        tree = ast.parse(src, where)
        compile(tree, where, "exec")
    except SyntaxError as e:
        return [(e.lineno or 1, f"does not compile: {e.msg}")]
    _mark_parents(tree)
    problems: list[str] = []
    aliases = {"roboreal": "roboreal"} if implicit_roboreal else {}
    for node in ast.walk(tree):
        try:
            if isinstance(node, ast.Import):
                for a in node.names:
                    importlib.import_module(a.name)
                    if a.name.split(".")[0] == "roboreal":
                        aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "roboreal"
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                importlib.import_module(node.module)
                for a in node.names:
                    if a.name == "*":
                        continue
                    obj = resolve_name(f"{node.module}.{a.name}")
                    if node.module.split(".")[0] == "roboreal" and isinstance(obj, type(sys)):
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        except Exception as e:  # noqa: BLE001 - every failure is a documentation problem
            problems.append((node.lineno, f"{type(e).__name__}: {e}"))
    seen: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "_parent", None), ast.Attribute):
            chain = _chain(node)
            if chain and chain.split(".")[0] in aliases:
                full = aliases[chain.split(".")[0]] + chain[len(chain.split(".")[0]):]
                if full not in seen:
                    seen.add(full)
                    try:
                        resolve_name(full)
                    except Exception as e:  # noqa: BLE001
                        problems.append((node.lineno, f"{full}: {type(e).__name__}: {e}"))
        if isinstance(node, ast.Call):
            chain = _chain(node.func)
            if chain and chain.split(".")[0] in aliases:
                full = aliases[chain.split(".")[0]] + chain[len(chain.split(".")[0]):]
                if full in ("roboreal.make", "roboreal.envs.make", "roboreal.envs.registry.make"):
                    try:
                        check_make_call(node)
                    except Exception as e:  # noqa: BLE001
                        problems.append((node.lineno, f"{ast.unparse(node)[:120]}: {type(e).__name__}: {e}"))
    return problems


def _mark_parents(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child._parent = node  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------
# Shell lines
# ----------------------------------------------------------------------------------------------
def split_commands(line: str) -> list[list[str]]:
    """A documented shell line as commands (split at `&&`), optional `[--flag ARG|ALT]` parts kept
    with their first alternative, comments dropped."""
    line = OPTIONAL.sub(lambda m: " ".join(t.split("|")[0] if t.startswith("-") or t.isupper() else t
                                           for t in m.group(1).split(" ")), line)
    tokens = shlex.split(line, comments=True)
    commands, current = [], []
    for t in tokens:
        if t in ("&&", ";", "||"):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(t)
    if current:
        commands.append(current)
    return commands


def is_placeholder(value: str | None) -> bool:
    return bool(value) and bool(PLACEHOLDER.search(str(value)))


def check_pip(argv: list[str]) -> None:
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python >= 3.11)
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([\w-]+)\s*=\s*\[", section, re.M))
    pins = {m.group(1): m.group(0) for m in re.finditer(r"(?<=\")([\w-]+)==[^\"]+(?=\")", text)}
    if argv[:2] != ["pip", "install"]:
        raise ValueError("only `pip install` lines are checked")
    for t in argv[2:]:
        m = re.search(r"\[([\w,-]+)\]", t)
        if m and (t.startswith(".") or t.startswith("roboreal")):
            unknown = sorted(set(m.group(1).split(",")) - extras)
            if unknown:
                raise ValueError(f"pyproject.toml has no extra {unknown} (extras: {sorted(extras)})")
        m = re.match(r"^([\w-]+)==(\S+)$", t)
        if m and m.group(1) in pins and pins[m.group(1)].replace(" ", "") != t:
            raise ValueError(f"{t} differs from pyproject.toml's {pins[m.group(1)]!r}")


def check_dev(argv: list[str]) -> None:
    cases = set(re.findall(r"^\s*([\w|-]+)\)\s*$", (ROOT / "dev").read_text(), re.M))
    names = {c for case in cases for c in case.split("|")}
    if len(argv) < 2 or argv[1] not in names:
        raise ValueError(f"./dev has no command {argv[1:2]} (commands: {sorted(names - {'*'})})")


def check_python_script(argv: list[str]) -> None:
    script = ROOT / argv[1]
    if not script.is_file():
        raise FileNotFoundError(f"no such script: {argv[1]}")
    src = script.read_text()
    rest = argv[2:]
    if "add_subparsers" in src and rest and not rest[0].startswith("-"):
        if f'"{rest[0]}"' not in src and f"'{rest[0]}'" not in src:
            raise ValueError(f"{argv[1]} has no subcommand {rest[0]!r}")
    for t in rest:
        if t.startswith("--"):
            flag = t.split("=", 1)[0]
            if f'"{flag}"' not in src and f"'{flag}'" not in src:
                raise ValueError(f"{argv[1]} has no option {flag}")


class ShellChecker:
    """Checks (and, in blocks marked `run`, runs) documented shell commands in a scratch copy of
    the repository root."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        for entry in ROOT.iterdir():  # the user's view: a clone's root, written into only here
            if not entry.name.startswith(".") and entry.name not in ("runs", "outputs") \
                    and not (scratch / entry.name).exists():
                (scratch / entry.name).symlink_to(entry)

    def check_line(self, argv: list[str], run: bool, named: bool = False) -> bool:
        """Raises on a problem; True when the command was executed. `named`: the text may name a
        command without its required arguments (``roboreal play``), as prose does."""
        head = argv[0]
        if head == "roboreal":
            try:
                return self.check_roboreal(argv[1:], run)
            except Exception as e:
                if named and re.search(r"the following arguments are required|give a task", str(e)):
                    return False
                raise
        if head == "torchrun":
            if "-m" not in argv or argv[argv.index("-m") + 1] != "roboreal":
                raise ValueError("torchrun lines are checked when they run `-m roboreal`")
            return self.check_roboreal(argv[argv.index("-m") + 2:], run=False)
        if head in ("python", "python3"):
            if argv[1] == "-m":
                if argv[2] == "roboreal":
                    return self.check_roboreal(argv[3:], run)
                if importlib.util.find_spec(argv[2]) is None:
                    raise ModuleNotFoundError(f"no module {argv[2]}")
                return False
            check_python_script(argv)
            return False
        if head == "./dev":
            check_dev(argv)
            return False
        if head == "pip":
            check_pip(argv)
            return False
        raise ValueError(f"the docs check knows no way to check {head!r}: add one to tests/test_docs.py, or mark "
                         f"the line <!-- docs-check: skip `{head}` (why) -->")

    def check_roboreal(self, argv: list[str], run: bool) -> bool:
        from roboreal.cli import build_parser

        parser = build_parser(argv[0] if argv else None)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                args = parser.parse_args(argv)
            except SystemExit:
                lines = err.getvalue().strip().splitlines()
                raise ValueError(lines[-1] if lines else "argparse refused it") from None
        if not getattr(args, "handler", None):
            raise ValueError("no subcommand")
        command = args.command
        robot = getattr(args, "robot", None)
        if isinstance(robot, str) and not is_placeholder(robot):
            from roboreal.robots.spec import load_robot

            with _chdir(self.scratch):
                load_robot(robot)
        execute = run and command in RUNNABLE and not (command == "collect" and args.expert != "scripted")
        if command == "launch":
            self.check_launch(args)
            return False
        if command == "train" and args.resume and not (self.scratch / args.resume).exists():
            return False  # a run that is not here: parsed only
        if not execute and command in PARSE_ONLY:
            return False
        datasets = self.dataset_args(command, args)
        if getattr(args, "task", "") is None and any(not (self.scratch / f).exists() for f in datasets):
            return False  # the task would come from a dataset no earlier line wrote: parsed only
        stubs, placeholders = ([] if execute else self.stubs(command, args)), []
        if not execute and not stubs:
            raise ValueError(f"the docs check has no stop for `roboreal {command}`: add one to ShellChecker.stubs "
                             f"(the expensive step), or the command to RUNNABLE or PARSE_ONLY")
        for f in datasets:
            if not (self.scratch / f).exists():
                (self.scratch / f).parent.mkdir(parents=True, exist_ok=True)
                (self.scratch / f).touch()
                placeholders.append(self.scratch / f)
        if command == "bc" and placeholders:  # nothing real to read: stop before the dataset is opened
            stubs.append(("roboreal.agents.bc", "run_bc", _stop))
        out = io.StringIO()
        try:
            with contextlib.ExitStack() as stack:
                for module, name, fn in stubs:
                    stack.enter_context(mock.patch.object(importlib.import_module(module), name, fn))
                stack.enter_context(_chdir(self.scratch))
                stack.enter_context(contextlib.redirect_stdout(out))
                stack.enter_context(contextlib.redirect_stderr(out))
                try:
                    rc = args.handler(args)
                except _Stop:
                    return False
        finally:
            for p in placeholders:
                p.unlink(missing_ok=True)
        lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
        if rc not in (0, None):
            raise ValueError(f"exit code {rc}: {lines[-1] if lines else ''}")
        if not execute:
            raise ValueError(f"the stop of `roboreal {command}` was not reached: {lines[-1] if lines else ''}")
        return True

    @staticmethod
    def dataset_args(command: str, args) -> list[str]:
        if command in ("bc", "offline"):
            return [d for d in args.datasets if "=" not in d]
        if command == "dagger":
            return list(args.dataset)
        return []

    @staticmethod
    def stubs(command: str, args) -> list[tuple[str, str, object]]:
        """The expensive step of each command, replaced by a stop (what runs before it validates)."""

        def view_make(task, num_envs=1, seed=0, **overrides):
            from roboreal.envs.registry import task_config

            task_config(task, overrides)
            raise _Stop

        def sim2sim(bundle, randomize="heavy", *a, **k):
            from roboreal.sim2real.simulated_driver import preset_conditions

            if not is_placeholder(randomize):
                preset_conditions(randomize)
            raise _Stop

        def train(cfg, *a, **k):
            if cfg.task.startswith("gym:"):
                import gymnasium

                gymnasium.spec(cfg.task[4:])
            raise _Stop

        table = {
            "train": [("roboreal.agents.runner", "train", train)],
            "play": [("roboreal.agents.policy", "load_policy", _stop)],
            "view": [("roboreal.envs", "make", view_make)],
            "collect": [("roboreal.agents.dagger", "collect", _stop)],
            "bc": [("roboreal.agents.bc", "train_bc", _stop)],  # after the datasets are read and matched
            "dagger": [("roboreal.agents.dagger", "DAgger", _stop)],
            "offline": [("roboreal.agents.offline_cli", "run_offline", _stop)],
            "export": [("roboreal.sim2real.bundle", "export_bundle", _stop)],
            "sim2sim": [("roboreal.sim2real.sim2sim", "run_sim2sim", sim2sim),
                        ("roboreal.sim2real.sim2sim", "run_sim2sim_over_dds", sim2sim)],
            "data": [("roboreal.data.lerobot", "export_lerobot_v3", _stop),
                     ("roboreal.data.lerobot", "import_lerobot_v3", _stop)],
        }
        if command == "data" and getattr(args, "data_command", None) == "info":
            return [("roboreal.data", "DatasetReader", _stop)]
        return table.get(command, [])

    def check_launch(self, args) -> None:
        from roboreal.sim2real.launching import declared_args, parse_launch_args, resolve_launch_file

        with _chdir(self.scratch):
            path, rest = resolve_launch_file(args.file, args.launch_args)
            given = parse_launch_args(rest)
            declared = {a.name for a in declared_args(path)}
            unknown = sorted(set(given) - declared)
            if unknown:
                raise ValueError(f"{path.name} declares no argument {unknown} (arguments: {sorted(declared)})")
            robot = given.get("robot")
            if robot and not is_placeholder(robot):
                from roboreal.robots.spec import load_robot

                load_robot(robot)


# ----------------------------------------------------------------------------------------------
# The whole check
# ----------------------------------------------------------------------------------------------
def check_docs(docs: dict[str, str], scratch: Path, run: bool = True) -> Report:
    """`docs`: {name: markdown text}. Returns every problem and skip found."""
    report = Report()
    shell = ShellChecker(scratch)
    test_defs = {name for p in (ROOT / "tests").glob("*.py")
                 for name in re.findall(r"^\s*def (test_\w+)", p.read_text(), re.M)}
    for doc, text in docs.items():
        blocks, prose = parse_markdown(text, doc, report)
        for b in blocks:
            if b.lang not in ("bash", "sh", "python"):
                continue
            if b.skip is not None:
                report.skipped.append((doc, b.lines[0].strip() if b.lines else "", b.skip))
                continue
            if b.lang == "python":
                check_python_block(b, report, scratch if run else None)
                continue
            for offset, line in enumerate(b.lines):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                prefix = next((p for p in b.skip_prefixes if line.lstrip().startswith(p)), None)
                if prefix is not None:
                    report.skipped.append((doc, prefix, b.skip_prefixes[prefix]))
                    continue
                try:
                    commands = split_commands(line)
                except ValueError as e:
                    report.problem(doc, b.line + offset, line, f"cannot split: {e}")
                    continue
                for argv in commands:
                    report.checked += 1
                    try:
                        report.ran += shell.check_line(argv, run and b.run)
                    except Exception as e:  # noqa: BLE001 - every failure is a documentation problem
                        report.problem(doc, b.line + offset, " ".join(argv), f"{type(e).__name__}: {e}")
        check_prose(doc, prose, report, shell, test_defs)
    return report


def check_python_block(b: Block, report: Report, scratch: Path | None) -> None:
    src = "\n".join(b.lines)
    report.checked += 1
    problems = check_python_source(src, f"{b.doc}:{b.line}")
    for n, p in problems:
        report.problem(b.doc, b.line + n - 1, b.lines[n - 1] if len(b.lines) >= n else "", p)
    if b.run and scratch is not None and not problems:
        out = io.StringIO()
        try:
            with _chdir(scratch), contextlib.redirect_stdout(out):
                exec(compile(src, f"{b.doc}:{b.line}", "exec"), {"__name__": "__docs__"})
            report.ran += 1
        except Exception as e:  # noqa: BLE001
            tb, n = e.__traceback__, 1
            while tb is not None:  # the snippet's line that raised
                if tb.tb_frame.f_code.co_filename == f"{b.doc}:{b.line}":
                    n = tb.tb_lineno
                tb = tb.tb_next
            report.problem(b.doc, b.line + n - 1, b.lines[n - 1], f"running it: {type(e).__name__}: {e}")


def check_prose(doc: str, prose: list[tuple[int, str]], report: Report, shell: ShellChecker, test_defs: set) -> None:
    for i, line in prose:
        for target in LINK.findall(line):
            if not re.match(r"[a-z]+:|#", target) and not (ROOT / Path(doc).parent / target).exists():
                report.problem(doc, i, target, f"the link's target does not exist: {target}")
        for span in INLINE.findall(line):
            span = span.strip()
            if re.match(r"(?:roboreal|python3?|torchrun|\./dev|pip) ", span):
                try:
                    for argv in split_commands(span):
                        report.checked += 1
                        shell.check_line(argv, run=False, named=True)
                except Exception as e:  # noqa: BLE001
                    report.problem(doc, i, f"`{span}`", f"{type(e).__name__}: {e}")
            elif "roboreal." in span:
                try:
                    ast.parse(span, mode="eval")
                    expression = True
                except SyntaxError:
                    expression = False
                if expression:
                    for _, p in check_python_source(span, f"{doc}:{i}"):
                        report.problem(doc, i, f"`{span}`", p)
                else:
                    for name in NAME_CHAIN.findall(span):
                        try:
                            resolve_name(name)
                        except Exception as e:  # noqa: BLE001
                            report.problem(doc, i, f"`{span}`", f"{name}: {type(e).__name__}: {e}")
            elif DOC_PATH.match(span) and not is_placeholder(span):
                path, _, name = span.partition("::")
                path = path if "/" in path else f"tests/{path}"
                found = sorted(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
                if not found:
                    report.problem(doc, i, f"`{span}`", f"no such file: {path}")
                elif name and not re.search(rf"^\s*(?:async )?def {re.escape(name)}\b|^class {re.escape(name)}\b",
                                            found[0].read_text(), re.M):
                    report.problem(doc, i, f"`{span}`", f"{path} has no {name}")
            elif TEST_NAME.match(span) and span not in test_defs:
                report.problem(doc, i, f"`{span}`", f"no test function {span} in tests/")


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------
def test_documented_commands_and_snippets_work(tmp_path, capsys):
    start = time.monotonic()
    docs = {name: (ROOT / name).read_text() for name in DOCS}
    report = check_docs(docs, tmp_path)
    took = time.monotonic() - start
    with capsys.disabled():
        print(f"\ndocs check: {report.checked} commands/blocks checked, {report.ran} run, "
              f"{len(report.skipped)} skipped, {len(report.problems)} problems, {took:.1f} s")
        for doc, what, why in report.skipped:
            print(f"  skipped {doc}: {what} ({why})")
    assert not report.problems, "documented commands that do not work:\n" + "\n".join(report.problems)
    skips = {(doc, what) for doc, what, _ in report.skipped}
    assert skips == EXPECTED_SKIPS, (
        f"the documents skip {sorted(skips - EXPECTED_SKIPS)} (not in EXPECTED_SKIPS: check those lines, or list "
        f"them with the reason) and no longer skip {sorted(EXPECTED_SKIPS - skips)} (remove them from the list)")
    assert report.ran >= 5, f"only {report.ran} documented commands/snippets ran: were the run markers removed?"


def test_the_task_table_matches_the_tasks():
    """README's "Tasks" table: observation groups and sizes, action size, control rate, episode
    length and robot are what `roboreal.envs.make(task).spec` says."""
    from roboreal.envs import make, task_names

    text = (ROOT / "README.md").read_text()
    section = text.split("### Tasks", 1)[1].split("\n\n", 2)[1]
    rows = [r for r in section.splitlines() if r.startswith("| `")]
    documented: set[str] = set()
    problems = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        tasks, robot, obs, action, control, episode = cells[:6]
        for task in re.findall(r"`([^`]+)`", tasks):
            documented.add(task)
            env = make(task, num_envs=1)
            s = env.spec
            env.close()
            obs = re.sub(r"\(.*?\)", "", obs)
            images = {k: tuple(map(int, v.split("x"))) for k, v in re.findall(r"image (\w+) ([\dx]+)", obs)}
            got = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)\b(?!x)", re.sub(r"image \w+ [\dx]+", "", obs))}
            if got != dict(s.observation_sizes):
                problems.append(f"{task}: observations {got}, the task has {dict(s.observation_sizes)}")
            if images != dict(s.image_shapes):
                problems.append(f"{task}: images {images}, the task has {dict(s.image_shapes)}")
            if int(re.match(r"\d+", action).group()) != s.action_size:
                problems.append(f"{task}: action {action!r}, the task has {s.action_size}")
            if control != f"{1 / s.control_dt:.0f} Hz":
                problems.append(f"{task}: control {control!r}, the task has {1 / s.control_dt:.0f} Hz")
            if episode != f"{s.max_episode_steps} steps":
                problems.append(f"{task}: episode {episode!r}, the task has {s.max_episode_steps} steps")
            if robot != s.robot:
                problems.append(f"{task}: robot {robot!r}, the task's default is {s.robot!r}")
    missing = sorted(set(task_names()) - documented)
    assert not problems and not missing, "\n".join(problems + [f"undocumented tasks: {missing}"] * bool(missing))


BROKEN_DOC = """
# A document with broken examples

```bash
roboreal trian cartpole-balance --algo ppo            # misspelled subcommand
roboreal train cartpole-balance --algo ppo lerning_rate=1e-3
roboreal train cartpole-balance --algo ppo --sed 1
roboreal bc demos.hdf5 --task panda-reach bc.relabel_fraction=0.5
roboreal launch sim_deploy.launch.xml bundle:=runs/<run>/bundle robt:=panda
roboreal tasks
python benchmarks/no_such_benchmark.py --seconds 2
frobnicate --now
```

```python
from roboreal.agents.policy import load_polcy
import roboreal
env = roboreal.make("panda-reach", episode_lenght_s=3)
```

<!-- docs-check: skip `ros2 service` (needs ROS) -->
```bash
ros2 service call /recorder/end_episode std_srvs/srv/Trigger
roboreal train cartpole-balance --algo ppo learning_rate=1e-3
```

<!-- docs-check: run -->
```python
import roboreal
env = roboreal.make("cartpole-balance", num_envs=2)
env.reset()
env.no_such_method()
```

<!-- docs-check: run -->
```bash
roboreal data info no_such_file.hdf5
```

Prose: `roboreal.sim2real.load_bundel` and `tests/test_no_such_file.py` and `test_no_such_test`.
"""


def test_the_checker_reports_broken_commands_and_imports(tmp_path):
    report = check_docs({"BROKEN.md": BROKEN_DOC}, tmp_path)
    text = "\n".join(report.problems)
    expected = {
        "roboreal trian": "invalid choice: 'trian'",
        "lerning_rate=1e-3": "lerning_rate: unknown field",
        "--sed 1": "unrecognized arguments: --sed",
        "bc.relabel_fraction=0.5": "bc: unknown field",
        "robt:=panda": "declares no argument ['robt']",
        "no_such_benchmark": "no such script",
        "frobnicate": "knows no way to check 'frobnicate'",
        "load_polcy": "load_polcy",
        "episode_lenght_s": "episode_lenght_s: unknown field",
        "load_bundel": "has no attribute 'load_bundel'",
        "test_no_such_file.py": "no such file",
        "`test_no_such_test`": "no test function",
        "env.no_such_method()": "running it: AttributeError",
        "data info no_such_file.hdf5": "no_such_file.hdf5",
    }
    for what, message in expected.items():
        hits = [p for p in report.problems if what in p and message in p]
        assert hits, f"not reported: {what} ({message}); reported:\n{text}"
    assert len(report.problems) == len(expected), text  # and nothing else: the valid lines pass
    assert report.skipped == [("BROKEN.md", "ros2 service", "needs ROS")]


def test_a_dataset_for_another_task_is_refused_in_one_line_naming_the_mismatch(tmp_path, capsys):
    """What README's goal-conditioned BC line once ran into (a pick dataset, 8-D actions, with
    --task panda-reach-sparse): one line naming the sizes, the task the data was recorded for and
    what to do, never a traceback, even when the recording used settings only its own task has."""
    from roboreal.cli import main

    pick = tmp_path / "pick.hdf5"
    assert main(["collect", "panda-pick", "--expert", "scripted", "--episodes", "2", "--num-envs", "2",
                 "--out", str(pick), "goal_in_air_fraction=1.0"]) == 0
    capsys.readouterr()
    for argv in (["bc", str(pick), "--task", "panda-reach-sparse", "--eval-episodes", "0"],
                 ["dagger", "--task", "panda-reach-sparse", "--expert", "human", "--dataset", str(pick)]):
        rc = main([*argv, "--run-dir", str(tmp_path / argv[0])])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err, err
        assert "(recorded for panda-pick) has 8-D actions, task panda-reach-sparse takes 7-D actions: " \
               "pass --task panda-pick, or a dataset recorded for panda-reach-sparse" in err, err
