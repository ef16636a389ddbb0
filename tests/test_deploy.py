"""The deployment files match the metrics and ports the stages serve."""

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

import common.metrics
from common.config import PipelineConfig

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY_DIR / "grafana" / "dashboards" / "emotion-pipeline.json"
SAMPLE_SUFFIXES = ("_bucket", "_sum", "_count", "_total")


def declared_metrics() -> dict[str, set[str]]:
    """Return the sample names of every metric declared in common.metrics, each with its label names."""
    samples = {}
    for metric in vars(common.metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = set(metric._labelnames) | {"le"}
        samples[metric._name] = labels
        for suffix in SAMPLE_SUFFIXES:
            samples[metric._name + suffix] = labels
    return samples


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_metrics_declared():
    declared = declared_metrics()
    used = {name for query in dashboard_queries() for name in re.findall(r"\bemotion_\w+", query)}

    assert used, "the dashboard queries no emotion_ metric"
    assert sorted(used - declared.keys()) == []


def test_dashboard_grouping_labels_exist():
    declared = declared_metrics()
    for query in dashboard_queries():
        names = re.findall(r"\bemotion_\w+", query)
        for group in re.findall(r"by \(([^)]*)\)", query):
            labels = {label.strip() for label in group.split(",")}
            for name in names:
                assert labels <= declared[name], f"{query!r} groups {name} by labels it does not have"


def test_prometheus_targets_match_default_ports():
    metrics = PipelineConfig().metrics
    scrape = (DEPLOY_DIR / "prometheus" / "prometheus.yml").read_text()
    ports = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", scrape)}

    assert {metrics.capture, metrics.detector, metrics.sink, metrics.classifier} <= ports
