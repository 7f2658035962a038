"""`roboreal launch`: run ROS 2 launch files in the XML format, without `ros2 launch`.

ROS 2's `launch` / `ros2 launch` are not pip-installable, so roboreal reads the same XML
launch files (the files stay valid for `ros2 launch roboreal FILE` on a ROS 2 install)
and runs each node as its own process. Two steps, so the first is testable alone:

* `plan_launch(file, args)` (`evaluator.py`) evaluates the file (arguments, substitutions,
  conditions, scopes, namespaces, includes, parameters, remaps) into a `LaunchPlan`: the
  exact command line, environment and options of every process. Nothing is started.
* `run_plan(plan)` (`supervisor.py`) starts the processes, prefixes each output line with
  the process name, reports processes that die (name and exit code; the others keep
  running, as with `ros2 launch`, unless the dead one has `on_exit="shutdown"`), and on
  Ctrl-C (SIGINT) or SIGTERM shuts everything down: SIGINT to every process, SIGTERM to
  those still running after `sigterm_timeout`, SIGKILL after a further `sigkill_timeout`.

The modules: `plan.py` (LaunchPlan, ProcessPlan, LaunchError), `attributes.py` (scopes,
substitutions, conditions), `process_elements.py` (<node>, <executable>), `evaluator.py`
(the walk over the file, `plan_launch`), `supervisor.py` (`LaunchRunner`, `run_plan`),
`cli.py` (the handler of `roboreal launch`). A new element is an `el_<tag>` method of
the evaluator plus its attributes in `attributes.ATTRIBUTES`; a new substitution is a
branch of `attributes._one`.

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

from roboreal.sim2real.launching.cli import launch_main
from roboreal.sim2real.launching.evaluator import declared_args, parse_launch_args, plan_launch, resolve_launch_file
from roboreal.sim2real.launching.plan import LAUNCH_DIR, PACKAGE_DIR, DeclaredArg, LaunchError, LaunchPlan, ProcessPlan
from roboreal.sim2real.launching.supervisor import LaunchRunner, run_plan

__all__ = ["LAUNCH_DIR", "PACKAGE_DIR", "DeclaredArg", "LaunchError", "LaunchPlan", "LaunchRunner", "ProcessPlan",
           "declared_args", "launch_main", "parse_launch_args", "plan_launch", "resolve_launch_file", "run_plan"]
