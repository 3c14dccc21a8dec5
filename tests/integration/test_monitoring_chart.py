"""The chart's dashboards and alerts (issue 15), rendered by the real helm: off by default, each
behind its value, the PrometheusRule and dashboard carrying the checked files unchanged (their
metric names are cross-checked against the code in tests/unit/test_monitoring.py); the rendered
alert rules load in a real Prometheus rule loader (`promtool check rules`, promtool built by
dev/build.sh) and fire on synthetic series (`promtool test rules`, promtool/alerts_test.yaml)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.integration.conftest import StackEnv
from tests.integration.test_install import CHART, render

MONITORING = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool" / "alerts_test.yaml"
ALL_ON = ("monitoring.podMonitor.enabled=true", "monitoring.gatewayPodMonitor.enabled=true",
          "monitoring.serviceMonitor.enabled=true", "monitoring.prometheusRule.enabled=true",
          "monitoring.dashboard.enabled=true")


def test_off_by_default(stack: StackEnv) -> None:
    docs = render(stack)
    assert not {d["kind"] for d in docs} & MONITORING
    assert not [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]


def test_each_object_behind_its_value(stack: StackEnv) -> None:
    docs = render(stack, "imagegen-system", *ALL_ON)
    by_kind = {d["kind"]: d for d in docs if d["kind"] in MONITORING - {"PodMonitor"}}
    pod_monitors = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodMonitor"}
    assert set(by_kind) | {"PodMonitor"} == MONITORING
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert by_kind["PrometheusRule"]["spec"] == rules
    pod_monitor = pod_monitors["imagegen-operator-workers"]
    assert pod_monitor["selector"]["matchLabels"]["app.kubernetes.io/name"] == "imagegen-worker"
    assert {r["targetLabel"] for r in pod_monitor["podMetricsEndpoints"][0]["relabelings"]} == {
        "pool", "role"}
    # The gateways' pods, as the operator labels them (builders/gateway.py), on their http port.
    gateways = pod_monitors["imagegen-operator-gateways"]
    assert gateways["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "imagegen-gateway",
        "app.kubernetes.io/managed-by": "imagegen-operator"}
    (endpoint,) = gateways["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert {r["targetLabel"] for r in endpoint["relabelings"]} == {"pool"}
    assert by_kind["ServiceMonitor"]["spec"]["endpoints"][0]["honorLabels"] is True
    (dash,) = [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["imagegen-pool.json"]) == json.loads(
        (CHART / "files" / "dashboard.json").read_text())
    only_rule = render(stack, "imagegen-system", "monitoring.prometheusRule.enabled=true")
    assert {d["kind"] for d in only_rule} & MONITORING == {"PrometheusRule"}
    only_gateways = render(stack, "imagegen-system", "monitoring.gatewayPodMonitor.enabled=true")
    assert [(d["kind"], d["metadata"]["name"]) for d in only_gateways
            if d["kind"] in MONITORING] == [("PodMonitor", "imagegen-operator-gateways")]


def promtool(stack: StackEnv, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = stack.bin_dir / "promtool"
    assert binary.exists(), f"{binary} missing (dev/build.sh builds it, dev/stack up links it)"
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_alert_rules_load_and_fire_in_promtool(stack: StackEnv, tmp_path: Path) -> None:
    (rule,) = [d for d in render(stack, "imagegen-system", "monitoring.prometheusRule.enabled=true")
               if d["kind"] == "PrometheusRule"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    checked = promtool(stack, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, f"promtool check rules:\n{checked.stdout}\n{checked.stderr}"
    found = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    assert f"SUCCESS: {found} rules found" in checked.stdout + checked.stderr, checked.stdout
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    tested = promtool(stack, "test", "rules", PROMTOOL_TESTS.name, cwd=tmp_path)
    assert tested.returncode == 0, f"promtool test rules:\n{tested.stdout}\n{tested.stderr}"
    assert "SUCCESS" in tested.stdout + tested.stderr, tested.stdout
