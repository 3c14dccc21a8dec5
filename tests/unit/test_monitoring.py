"""The chart's alerts and dashboard name only metrics the code exports (issue 15).

Every PromQL expression of charts/imagegen-operator/files/prometheus-rules.yaml and
files/dashboard.json is reduced to the metric names it reads; each must be a series of the
operator's, a worker's or a gateway's registry (counters as <name>_total, histograms as
_bucket/_sum/_count), a series the file's own recording rules record, or one of the few external
series listed below. A renamed metric fails here, not silently in
someone's Grafana."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from imagegen_gateway.metrics import new_metrics as gateway_metrics
from imagegen_operator.metrics import OperatorMetrics
from imagegen_worker.metrics import WorkerMetrics
from prometheus_client import CollectorRegistry

FILES = Path(__file__).resolve().parents[2] / "charts" / "imagegen-operator" / "files"
# Series other exporters provide: kube-state-metrics (the crash-loop alert).
EXTERNAL = {"kube_pod_container_status_restarts_total"}
KEYWORDS = {"and", "or", "unless", "by", "on", "without", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan"}


def series_of(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def metrics_in(expr: str) -> set[str]:
    """Metric names an expression reads (functions, keywords, labels and strings left out)."""
    expr = re.sub(r"label_values\(([^,)]*)(,[^)]*)?\)", r"\1", expr)  # Grafana: metric, label
    expr = re.sub(r'"(\\.|[^"\\])*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((FILES / "prometheus-rules.yaml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def rule_exprs() -> dict[str, str]:
    """Alert or recorded series name → expression."""
    return {r.get("alert") or r["record"]: r["expr"] for r in rules()}


RECORDED = {r["record"] for r in rules() if "record" in r}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FILES / "dashboard.json").read_text())
    return loaded


def dashboard_exprs() -> dict[str, str]:
    d = dashboard()
    out = {f"{p['title']} / {t['refId']}": t["expr"] for p in d["panels"] for t in p["targets"]}
    out.update({f"variable {v['name']}": v["query"] for v in d["templating"]["list"]
                if v["type"] == "query"})
    return out


KNOWN = (series_of(OperatorMetrics().registry) | series_of(WorkerMetrics().registry)
         | series_of(gateway_metrics().registry) | RECORDED | EXTERNAL)


def test_the_extractor_finds_metrics_and_nothing_else() -> None:
    assert metrics_in('histogram_quantile(0.95, sum by (le, tier) '
                      '(rate(imagegen_total_seconds_bucket{pool=~"$pool"}[5m])))') == {
        "imagegen_total_seconds_bucket"}
    assert metrics_in("a > on (namespace, pool) b and on (x) sum by (y) (deriv(c[10m])) > 0") \
        == {"a", "b", "c"}
    assert metrics_in('label_values(imagegen_pool_queue_lag{namespace=~"$ns"}, pool)') == {
        "imagegen_pool_queue_lag"}


def test_every_alert_reads_metrics_the_code_exports() -> None:
    for alert, expr in rule_exprs().items():
        used = metrics_in(expr)
        assert used, f"{alert}: no metric found in {expr!r}"
        assert used <= KNOWN, f"{alert} reads unknown metrics {sorted(used - KNOWN)}"


def test_every_dashboard_query_reads_metrics_the_code_exports() -> None:
    for where, expr in dashboard_exprs().items():
        used = metrics_in(expr)
        assert used, f"{where}: no metric found in {expr!r}"
        assert used <= KNOWN, f"{where} reads unknown metrics {sorted(used - KNOWN)}"


def test_the_alerts_the_issue_asks_for_exist() -> None:
    assert set(rule_exprs()) >= {
        "ImagegenBacklogOlderThanMaxWait", "ImagegenPoolAtMaxReplicasLagGrowing",
        "ImagegenWorkersCrashLooping", "ImagegenDeadLettersGrowing",
        "ImagegenQueueMetricsUnavailable", "ImagegenPartitionsStalled",
        "ImagegenCacheBreakerOpen", "ImagegenGatewayServerErrors", "ImagegenGatewayShedding"}
    for rule in rules():
        if "record" in rule:  # recording rules: level:metric:operation names
            assert re.fullmatch(r"imagegen:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule
            continue
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_gateway_rules_read_the_api_routes_only() -> None:
    """Probes and scrapes hit /healthz, /readyz and /metrics every few seconds: a ratio over
    all routes would hide a failing API."""
    exprs = rule_exprs()
    assert 'route=~"/v1/.+"' in exprs["imagegen:gateway_api_requests:rate5m"]
    for alert in ("ImagegenGatewayServerErrors", "ImagegenGatewayShedding"):
        assert "imagegen:gateway_api_requests:rate5m" in metrics_in(exprs[alert]), alert


def test_the_dashboard_covers_a_pool() -> None:
    d = dashboard()
    titles = {p["title"] for p in d["panels"]}
    assert {"Queue lag by tier", "Replicas: desired vs ready (warm / cold)", "Images per second",
            "Queue wait percentiles by tier", "Cache hit rate", "Failures by reason"} <= titles
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"])
    assert [v["name"] for v in d["templating"]["list"]] == ["datasource", "namespace", "pool"]
