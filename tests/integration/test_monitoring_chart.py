"""The chart's dashboards and alerts (issue 15), rendered by the real helm: off by default, each
behind its value, the PrometheusRule and dashboard carrying the checked files unchanged (their
metric names are cross-checked against the code in tests/unit/test_monitoring.py)."""

from __future__ import annotations

import json

import yaml

from tests.integration.conftest import StackEnv
from tests.integration.test_install import CHART, render

MONITORING = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
ALL_ON = ("monitoring.podMonitor.enabled=true", "monitoring.serviceMonitor.enabled=true",
          "monitoring.prometheusRule.enabled=true", "monitoring.dashboard.enabled=true")


def test_off_by_default(stack: StackEnv) -> None:
    docs = render(stack)
    assert not {d["kind"] for d in docs} & MONITORING
    assert not [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]


def test_each_object_behind_its_value(stack: StackEnv) -> None:
    docs = render(stack, "imagegen-system", *ALL_ON)
    by_kind = {d["kind"]: d for d in docs if d["kind"] in MONITORING}
    assert set(by_kind) == MONITORING
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert by_kind["PrometheusRule"]["spec"] == rules
    pod_monitor = by_kind["PodMonitor"]["spec"]
    assert pod_monitor["selector"]["matchLabels"]["app.kubernetes.io/name"] == "imagegen-worker"
    assert {r["targetLabel"] for r in pod_monitor["podMetricsEndpoints"][0]["relabelings"]} == {
        "pool", "role"}
    assert by_kind["ServiceMonitor"]["spec"]["endpoints"][0]["honorLabels"] is True
    (dash,) = [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["imagegen-pool.json"]) == json.loads(
        (CHART / "files" / "dashboard.json").read_text())
    only_rule = render(stack, "imagegen-system", "monitoring.prometheusRule.enabled=true")
    assert {d["kind"] for d in only_rule} & MONITORING == {"PrometheusRule"}
