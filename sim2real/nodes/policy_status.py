"""What the policy node says about itself: ``~/info`` (`PolicyNodeStatus.session_info`, the
provenance a recording needs) and ``/diagnostics`` (`PolicyNodeStatus.diagnostics`: mode,
faults, loop rate, latency, overruns, safety interventions, dropped messages).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from roboreal.policy_bundle import sha256
from roboreal.sim2real.nodes.policy_params import NODE_NAME
from roboreal.sim2real.nodes.step_record import MODES, audit_fields, step_fields


class PolicyNodeStatus:
    """The policy node's ``~/info`` and diagnostics (a part of `PolicyNode`, which sets the
    attributes used here: spec, bundle, builder, chain, settings, schedule, topics, the loop
    statistics and the drop counters)."""

    def session_info(self, bundle_path: str, runtime: str, p: dict) -> dict:
        """What ~/info says: the provenance a recording of this node needs (see step_record.py)."""
        m = self.bundle.manifest
        path = Path(bundle_path)
        resolve = lambda name: self.resolve_topic_name(name)  # noqa: E731  (namespaces, ~ expanded)
        topics = {k: resolve(v) for k, v in self.topics.items() if v}
        if not self.builder.needs_imu:
            topics.pop("imu", None)
        if not self.needs_cmd_vel:
            topics.pop("cmd_vel", None)
        if not self.builder.needs_goal:
            topics.pop("goal", None)
        if not self.builder.needs_object:
            topics.pop("object_pose", None)
        if self.gripper_pub is None:
            topics.pop("gripper_commands", None)
        topics.update(intervention=resolve(str(p["intervention_topic"])),
                      teleop_action=resolve(str(p["teleop_action_topic"])),
                      diagnostics=resolve(str(p["diagnostics_topic"])),
                      **{k: resolve(f"~/{k}") for k in ("estop", "policy_action", "executed_action", "mode",
                                                        "step", "info", "audit")})
        return {
            "node": self.get_fully_qualified_name(), "robot": self.spec.name,
            "robot_spec_checksum": self.spec.checksum, "robot_kind": self.spec.kind,
            "bundle": {"path": str(path.resolve()), "manifest_sha256": sha256(path / "manifest.yaml"),
                       "files": m.get("files") or {}, "runtime": runtime, "created": m.get("created")},
            "training": m.get("training") or {}, "control_dt": self.dt, "joints": list(m["joints"]),
            "obs_size": int(self.builder.size), "observation_layout": m["observation"]["terms"],
            "obs_group": m["observation"].get("group", "policy"), "action_size": int(self.action_size),
            "action": {k: m["action"].get(k) for k in ("type", "space", "extra") if k in m["action"]},
            "step_fields": step_fields(self.builder.size, self.action_size), "modes": list(MODES),
            "command_interface": self.settings.interface, "topics": topics,
            "audit_fields": audit_fields(self.chain.n), "audit_interventions": self.audit_filters,
            "gains": self.chain.gains, "control_trigger": self.schedule.trigger,
            "executor": self.settings.executor_kind, "safety_limits": self.limits.to_dict(),
            # the cameras the policy sees, in its call order, and where this node reads them
            "images": [{"camera": c.name, "topic": resolve(self.image_topics[c.name]), "width": c.width,
                        "height": c.height, "channels": c.channels, "transport": self.settings.image_transport,
                        "resize": self.settings.resize, "timeout": self.settings.image_timeout}
                       for c in self.cameras],
        }

    def diagnostics(self) -> DiagnosticStatus:
        """The node's status since the last report (interventions per second are counted from it)."""
        now = time.monotonic()
        st = DiagnosticStatus()
        st.name = f"{NODE_NAME}: {self.spec.name}"
        st.hardware_id = self.spec.name
        faults = self.chain.faults
        mode = self.mode
        if mode in ("damping", "estop") or faults:
            st.level = DiagnosticStatus.ERROR
        elif mode in ("waiting", "hold", "startup_ramp"):
            st.level = DiagnosticStatus.WARN
        else:
            st.level = DiagnosticStatus.OK
        diag_period = self.settings.diag_period
        recent = [w for w in self.window if now - w[0] <= max(diag_period, 1.0)]
        span = max(diag_period, 1.0)
        lat = [w[1] * 1e3 for w in recent if w[1] is not None]
        inf = [w[2] * 1e3 for w in recent]
        periods = list(self.periods)[-len(recent):] if recent else []
        report = self.chain.report()
        dt_report = max(now - self.prev_report_time, 1e-9)
        overruns = self.schedule.overruns
        values = {
            "mode": mode,
            "faults": "; ".join(f"{k}: {v}" for k, v in faults.items()) or "none",
            "intervening": str(self.intervening).lower(),
            "loop_rate_hz": f"{len(recent) / span:.1f}",
            "target_rate_hz": f"{1 / self.dt:.1f}",
            "loop_period_max_ms": f"{max(periods) * 1e3:.2f}" if periods else "nan",
            "latency_mean_ms": f"{np.mean(lat):.2f}" if lat else "nan",
            "latency_max_ms": f"{np.max(lat):.2f}" if lat else "nan",
            "inference_mean_ms": f"{np.mean(inf):.3f}" if inf else "nan",
            "steps": str(self.steps),
            "waiting_for": "; ".join(self.waiting_for if not self.started else []) or self.pending or "nothing",
            "control_trigger": self.schedule.trigger,
            "executor": self.settings.executor_kind,
            # the node itself ran late (a stall, an overloaded CPU): not a sensor timeout
            "overruns": str(overruns.total),
            "overrun_late_steps": str(overruns.late_steps),
            "overrun_missed_ticks": str(overruns.missed_ticks),
            "overrun_max_ms": f"{overruns.max_lateness * 1e3:.2f}",
        }
        for name, r in report.items():
            if r["count"] == 0:
                continue
            delta = r["count"] - self.prev_report.get(name, {}).get("count", 0)
            values[f"intervention.{name}.count"] = str(r["count"])
            values[f"intervention.{name}.per_s"] = f"{delta / dt_report:.1f}"
            values[f"intervention.{name}.max_magnitude"] = f"{r['max_magnitude']:.4g}"
        for c in self.cameras:  # how old each camera's image is, and why the last one was refused
            age = c.age(now)
            values[f"camera.{c.name}.age_ms"] = "inf" if age == float("inf") else f"{age * 1e3:.1f}"
            values[f"camera.{c.name}.status"] = c.refused or ("ok" if c.image is not None else "no image yet")
        for what, n in self.dropped.items():
            values[f"dropped.{what}"] = str(n)
            values[f"dropped.{what}.last_reason"] = self.drop_reasons.get(what, "")
        self.prev_report, self.prev_report_time = report, now
        st.message = mode + (f" ({', '.join(faults)})" if faults else "")
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return st

    def _publish_diagnostics(self, *_) -> None:  # (the events executor passes timer info)
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics()]
        self.diag_pub.publish(msg)
