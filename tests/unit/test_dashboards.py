"""Every Grafana panel under dashboards/ queries metrics that exist: cpr's as the controller exports them, Ray's as
Ray's own installed dashboards name them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from orchestrator.controller.metrics import EXPORTED

DASHBOARDS = sorted((Path(__file__).parents[2] / "dashboards").glob("*.json"))
RAY_DASHBOARDS = Path(ray.__file__).parent / "dashboard" / "modules" / "metrics" / "dashboards"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
KEYWORDS |= {"inf", "nan"}
CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
LABEL_VALUES = re.compile(r"label_values\(\s*([^,()]*?)\s*,\s*\w+\s*\)")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers that are not functions, keywords, labels or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors ($__rate_interval inside)
    expr = CLAUSE.sub(" ", expr)  # label lists of by/without/on/… clauses
    expr = LABEL_VALUES.sub(r" \1 ", expr)  # Grafana's label_values(metric, label): the metric only
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)  # Grafana variables
    names = set()
    for m in IDENT.finditer(expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("(") or m.group() in KEYWORDS:  # a function or aggregation, or a keyword
            continue
        if m.start() > 0 and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue  # the exponent or suffix of a number, e.g. 1e6
        names.add(m.group())
    return names


def queries(node: Any) -> Iterator[str]:
    """Every PromQL query of a dashboard: panel targets (rows' nested panels too) and template variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def ray_metric_names() -> set[str]:
    """Names Ray's own Grafana dashboards (shipped with the installed ray) query."""
    files = [*RAY_DASHBOARDS.glob("*.py"), *RAY_DASHBOARDS.glob("*.json")]
    assert files, f"no Ray dashboard definitions under {RAY_DASHBOARDS}"
    return {name for f in files for name in re.findall(r"\bray_[a-z0-9_]+", f.read_text(encoding="utf-8"))}


def test_the_extractor_skips_functions_labels_and_variables() -> None:
    expr = (
        'sum by (job_id, reason) (increase(ray_cpr_decisions_total{action="stop",job_id=~"$job"}[$__rate_interval]))'
        " / on() ray_x_total * 1e6 + label_values(ray_y, instance)"
    )
    assert metric_names(expr) == {"ray_cpr_decisions_total", "ray_x_total", "ray_y"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_names_an_exported_metric(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    found = [name for expr in queries(dashboard) for name in metric_names(expr)]
    assert found, f"{path.name} has no queries"
    cpr = {n for n in found if n.startswith("ray_cpr_")}
    assert cpr - EXPORTED == set(), "cpr metrics the controller does not export"
    ray_names = ray_metric_names()
    others = set(found) - cpr
    assert others - ray_names == set(), "metrics neither cpr exports nor Ray's dashboards know"
    assert not [n for n in found if n.startswith("cpr_")], "cpr metrics reach Prometheus with Ray's ray_ prefix"


def test_the_cpr_dashboard_covers_every_exported_metric() -> None:
    dashboard = json.loads((Path(__file__).parents[2] / "dashboards" / "cpr.json").read_text(encoding="utf-8"))
    assert {n for expr in queries(dashboard) for n in metric_names(expr)} >= EXPORTED
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${datasource}" and p["targets"] for p in panels)
    assert dashboard["schemaVersion"] >= 39
