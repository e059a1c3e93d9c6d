#!/usr/bin/env python3
"""Generate the Grafana dashboards and alert rules of ci-slo-exporter.

    python3 grafana/generate.py            # rewrite the files
    python3 grafana/generate.py --check    # exit 1 if a committed file differs

Writes grafana/dashboards/*.json and grafana/provisioning/alerting/rules.yml.
Edit this file, not the output: scripts/check-dashboards fails when the
committed files are not what this script writes. docs/grafana.md describes
the dashboards; metric names are those of docs/metrics.md, recording rules
those of prometheus/rules/ci-slo-recording.yml.

The alerts are defined once, in prometheus/rules/ci-slo-alerts.yml: the
Grafana alert rules are derived from it (see grafana_condition()). --check
also compares the committed Grafana rules with the committed Prometheus
alerts: query and condition (expression and threshold), `for`, labels,
groups and runbook links.

Needs the Python 3 standard library and PyYAML (Debian python3-yaml) to read
the Prometheus rules; the output YAML is written by hand.
"""

import ast
import json
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${datasource}"}
REPO = 'repository=~"$repository"'


# --- building blocks ---------------------------------------------------------


def target(expr, legend="", ref="A", instant=False, fmt=None, exemplar=False, interval=None):
    t = {
        "refId": ref,
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "exemplar": exemplar,
    }
    if fmt:
        t["format"] = fmt
    if interval:
        t["interval"] = interval
    return t


def thresholds(*steps):
    """steps: (value or None, color) from the bottom."""
    return {
        "mode": "absolute",
        "steps": [{"color": c, "value": v} for v, c in steps],
    }


GOOD_HIGH = thresholds((None, "red"), (0.9, "orange"), (0.95, "green"))
BUDGET = thresholds((None, "red"), (0, "orange"), (0.25, "green"))
NEUTRAL = thresholds((None, "green"))


# What a panel says instead of a bare empty graph when it has nothing to show
# for a real reason (no forge source, no flaky test yet, nothing went wrong).
NO_FORGE = "No forge source: GitHub or GitLab polling is not configured (docs/github.md, docs/gitlab.md)"
NO_VALUE = {
    "Error budget remaining (28d, Prometheus)": "No hourly recorded increases yet: load the history (docs/full-stack.md) or wait an hour",
    "Who spends the budget (28d)": "No bad event in 28 days",
    "Retries per green merged change": "No merged change decided in the window",
    "Flakiest tests": "No flaky test in tests.window",
    "Most failing tests": "No failing test in tests.window",
    "Flake ratio of the worst tests": "No flaky or failing test in tests.window",
    "Failure classes (time range)": "No classified failure in this time range",
    "Failure categories (time range)": "No classified failure in this time range",
    "Failures per interval by category": "No classified failure in this time range",
    "New failure fingerprints per interval": "No new failure fingerprint in this time range",
    "Forge API budget left": NO_FORGE,
    "Forge API requests left": NO_FORGE,
    "Sync freshness": NO_FORGE,
    "Forge API requests": NO_FORGE,
    "Webhook deliveries": "No webhook delivery since the exporter started (none configured, docs/github.md)",
    "Data-quality rejections": "No rejection: every record was plausible",
    "Backdated events": "No backdated event",
}


def panel(kind, title, description, targets, unit, w=12, h=8, defaults=None,
          options=None, overrides=None, **extra):
    d = {"unit": unit, "thresholds": NEUTRAL, "color": {"mode": "palette-classic"}}
    if title in NO_VALUE:
        d["noValue"] = NO_VALUE[title]
    if kind in ("stat", "gauge", "bargauge", "status-history", "state-timeline"):
        d["color"] = {"mode": "thresholds"}
    if kind == "timeseries":
        d["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": True,
        }
    d.update(defaults or {})
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": d, "overrides": overrides or []},
        "options": options or {},
        "_size": (w, h),
    }
    p.update(extra)
    return p


def ts(title, description, targets, unit, bars=False, stack=False, **kw):
    p = panel("timeseries", title, description, targets, unit, **kw)
    c = p["fieldConfig"]["defaults"]["custom"]
    if bars:
        c.update({"drawStyle": "bars", "fillOpacity": 80, "lineWidth": 0})
    if stack:
        c["stacking"] = {"mode": "normal", "group": "A"}
    p["options"] = {
        "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"], "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
        **p["options"],
    }
    return p


def stat(title, description, targets, unit, **kw):
    p = panel("stat", title, description, targets, unit, **kw)
    p["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": "value_and_name",
        "justifyMode": "auto",
        "orientation": "auto",
        **p["options"],
    }
    return p


def bargauge(title, description, targets, unit, **kw):
    p = panel("bargauge", title, description, targets, unit, **kw)
    p["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "displayMode": "gradient",
        "orientation": "horizontal",
        "showUnfilled": True,
        "minVizHeight": 10,
        **p["options"],
    }
    return p


def table(title, description, targets, unit, sort_by=None, **kw):
    p = panel("table", title, description, targets, unit, **kw)
    p["options"] = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "fields": ""},
        **({"sortBy": [{"displayName": sort_by, "desc": True}]} if sort_by else {}),
        **p["options"],
    }
    # Instant vectors as one row per series, without the Time column.
    p["transformations"] = [
        {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True, "job": True, "instance": True}}}
    ]
    return p


def heatmap(title, description, expr, yunit, **kw):
    p = panel(
        "heatmap",
        title,
        description,
        [target(expr, "{{le}}", fmt="heatmap", exemplar=True)],
        "short",
        **kw,
    )
    p["options"] = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential", "exponent": 0.5, "fill": "dark-orange", "steps": 64, "reverse": False},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto", "value": "runs"},
        "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
        "yAxis": {"axisPlacement": "left", "unit": yunit, "reverse": False},
        "cellValues": {"unit": "short"},
    }
    p["fieldConfig"]["defaults"]["custom"] = {"scaleDistribution": {"type": "linear"}, "hideFrom": {"legend": False, "tooltip": False, "viz": False}}
    return p


def text(title, content, w=24, h=4):
    return {
        "type": "text",
        "title": title,
        "description": "Orientation for this dashboard: what it shows and where the numbers come from.",
        "options": {"mode": "markdown", "content": content, "code": {"language": "plaintext", "showLineNumbers": False, "showMiniMap": False}},
        "_size": (w, h),
    }


def layout(panels):
    """Place panels left to right, wrapping at 24 columns."""
    x = y = row_h = 0
    out = []
    for i, p in enumerate(panels, 1):
        w, h = p.pop("_size")
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        p = {"id": i, **p}
        out.append(p)
        x += w
        row_h = max(row_h, h)
    return out


def dashboard(uid, title, description, panels, extra_vars=(), time_from="now-7d", timezone="browser"):
    variables = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"selected": False, "text": "Prometheus", "value": "prometheus"},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
        },
        {
            "name": "repository",
            "label": "Repository",
            "type": "query",
            "datasource": DS,
            "definition": "label_values(ci_runs_total, repository)",
            "query": {"query": "label_values(ci_runs_total, repository)", "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0,
            "includeAll": True,
            "allValue": ".*",
            "multi": True,
            "options": [],
            "refresh": 2,
            "regex": "",
            "sort": 1,
            "skipUrlSync": False,
        },
        *extra_vars,
    ]
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["ci-slo-exporter", "ci"],
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "1m",
        "schemaVersion": 39,
        "version": 1,
        "timezone": timezone,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {"title": "CI SLO dashboards", "type": "dashboards", "tags": ["ci-slo-exporter"], "asDropdown": True, "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}
        ],
        "templating": {"list": variables},
        "panels": layout(panels),
    }


def custom_var(name, label, values, default):
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "current": {"selected": True, "text": default, "value": default},
        "options": [{"selected": v == default, "text": v, "value": v} for v in values],
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "skipUrlSync": False,
    }


def slo_var():
    return {
        "name": "slo",
        "label": "SLO",
        "type": "query",
        "datasource": DS,
        "definition": "label_values(ci_slo_objective_ratio, slo)",
        "query": {"query": "label_values(ci_slo_objective_ratio, slo)", "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "options": [],
        "refresh": 1,
        "regex": "",
        "sort": 1,
        "skipUrlSync": False,
    }


def dashed(name_regex):
    return {
        "matcher": {"id": "byRegexp", "options": name_regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "custom.lineWidth", "value": 2},
        ],
    }


# --- dashboards ----------------------------------------------------------------

SLO = 'slo=~"$slo"'


def slo_dashboard():
    panels = [
        text(
            "About",
            "Each SLO counts **good** and **bad** events in `ci_slo_events_total` (summable over exporter shards), "
            "except `test_success`, judged per test: its events are the tests evaluated in a window (at least "
            "`slo.test_min_runs` runs), bad the ones passing less often than the objective (`ci_slo_tests`, 1d, 3d "
            "and 28d only, so no fast burn); the execution-level ratio is `slo=\"test_executions\"` (no objective). "
            "The *Prometheus* panels use the recording rules `ci:*` of `prometheus/rules/ci-slo-recording.yml`; the "
            "28-day numbers there are sums of hourly increases, complete 28 days after Prometheus started (or after a "
            "backfill, see docs/alerting.md). The *exporter* panels are the exporter's own gauges computed from its "
            "database: complete at once, but per instance. Burn rate 1 = spending exactly the budget over 28 days. "
            "Alerts: fast burn = 1h and 6h above the fast threshold; slow burn = 1d and 3d above 1 (docs/alerting.md).",
            h=3,
        ),
        stat(
            "Error budget remaining (28d, Prometheus)",
            "Share of the 28-day error budget left per SLO, from ci:slo_error_budget_remaining:ratio28d. "
            "Good: above 25% (green). 0 or below (red) means the budget is spent and the error-budget policy "
            "applies (docs/runbook.md). Empty until Prometheus holds hourly recorded increases.",
            [target(f"ci:slo_error_budget_remaining:ratio28d{{{SLO}}}", "{{slo}}")],
            "percentunit",
            w=12,
            h=6,
            defaults={"thresholds": BUDGET, "decimals": 1},
        ),
        bargauge(
            "Error budget remaining (exporter, from stored history)",
            "ci_slo_error_budget_remaining_ratio: the same share computed by the exporter over its stored 28 days. "
            "Good: above 25% for every SLO. Use it while Prometheus has less than 28 days of data.",
            [target(f"max by (slo) (ci_slo_error_budget_remaining_ratio{{{SLO}}})", "{{slo}}", instant=True)],
            "percentunit",
            w=12,
            h=6,
            defaults={"thresholds": BUDGET, "min": -1, "max": 1, "decimals": 1},
        ),
        ts(
            "SLI over 1 day vs objective",
            "Solid: good / valid events over the trailing day per SLO (ci:slo_sli:ratio_rate1d); dashed: the "
            "objective (ci:slo_objective:ratio). Good: every solid line stays above its dashed line.",
            [
                target(f"ci:slo_sli:ratio_rate1d{{{SLO}}}", "{{slo}}"),
                target(f"ci:slo_objective:ratio{{{SLO}}}", "{{slo}} objective", ref="B"),
            ],
            "percentunit",
            overrides=[dashed(".* objective")],
            defaults={"max": 1},
        ),
        table(
            "SLI per window (exporter)",
            "ci_slo_sli_ratio per SLO and trailing window (1h, 6h, 1d, 3d, 28d) with the objective. Good: every "
            "SLI at or above the objective; a window without events has no row.",
            [
                target(f"max by (slo, window) (ci_slo_sli_ratio{{{SLO}}})", "", instant=True, fmt="table"),
            ],
            "percentunit",
            defaults={"decimals": 1, "thresholds": GOOD_HIGH, "custom": {"cellOptions": {"type": "color-text"}}},
        ),
        ts(
            "Fast burn: burn rate over 1h and 6h",
            "ci:slo_burn_rate:ratio_rate1h and _6h per SLO; dashed: the fast-burn threshold "
            "(ci:slo_burn_rate_threshold:fast, 6 or less for low objectives). CISLOFastBurn pages when both "
            "windows are above it with at least 5 events in 1h and 10 in 6h. Good: below 1.",
            [
                target(f"ci:slo_burn_rate:ratio_rate1h{{{SLO}}}", "{{slo}} 1h"),
                target(f"ci:slo_burn_rate:ratio_rate6h{{{SLO}}}", "{{slo}} 6h", ref="B"),
                target(f"ci:slo_burn_rate_threshold:fast{{{SLO}}}", "{{slo}} threshold", ref="C"),
            ],
            "short",
            overrides=[dashed(".* threshold")],
            defaults={"min": 0},
        ),
        ts(
            "Slow burn: burn rate over 1d and 3d",
            "ci:slo_burn_rate:ratio_rate1d and _3d per SLO; dashed: the slow-burn threshold (1). CISLOSlowBurn "
            "opens a ticket when both are above it with at least 10 events in 1d and 30 in 3d. Good: below 1, "
            "i.e. the budget lasts the whole 28 days.",
            [
                target(f"ci:slo_burn_rate:ratio_rate1d{{{SLO}}}", "{{slo}} 1d"),
                target(f"ci:slo_burn_rate:ratio_rate3d{{{SLO}}}", "{{slo}} 3d", ref="B"),
                target(f"ci:slo_burn_rate_threshold:slow{{{SLO}}}", "{{slo}} threshold", ref="C"),
            ],
            "short",
            overrides=[dashed(".* threshold")],
            defaults={"min": 0},
        ),
        ts(
            "Valid events per window",
            "Valid SLO events in the last 1h and 6h (ci:slo_events:increase1h / _6h), the numbers the "
            "minimum-event guards of the burn alerts read (5 in 1h, 10 in 6h). Good: steady with the team's "
            "working hours; a drop to 0 on a working day means the exporter receives nothing.",
            [
                target(f"ci:slo_events:increase1h{{{SLO}}}", "{{slo}} 1h"),
                target(f"ci:slo_events:increase6h{{{SLO}}}", "{{slo}} 6h", ref="B"),
            ],
            "short",
            defaults={"min": 0, "decimals": 0},
        ),
        ts(
            "Good and bad events ($repository)",
            "SLO events per SLO and result in each interval, from ci_slo_events_total of the selected "
            "repositories. Good: bad bars are a small share of each SLO's bars (5% for a 95% objective).",
            [
                target(
                    f"sum by (slo, result) (increase(ci_slo_events_total{{{REPO},{SLO}}}[$__rate_interval]))",
                    "{{slo}} {{result}}",
                )
            ],
            "short",
            bars=True,
            stack=True,
            defaults={"min": 0},
            overrides=[
                {"matcher": {"id": "byRegexp", "options": ".* bad"}, "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}
            ],
        ),
        ts(
            "SLI over 1 day per repository",
            "ci_repository:slo_sli:ratio_rate1d for the selected repositories: where an SLO is lost. Good: "
            "every repository above the objective; a single low repository is the first place to look.",
            [target(f"ci_repository:slo_sli:ratio_rate1d{{{REPO},{SLO}}}", "{{slo}} {{repository}}")],
            "percentunit",
            defaults={"max": 1},
        ),
        table(
            "Who spends the budget (28d)",
            "Share of each SLO's bad events over 28 days per repository "
            "(ci_repository:slo_budget_spent_events:ratio28d). Good: no single repository dominates; when the "
            "budget is exhausted, the top rows are where the CI fixing starts.",
            [
                target(
                    f"sort_desc(ci_repository:slo_budget_spent_events:ratio28d{{{REPO},{SLO}}})",
                    "",
                    instant=True,
                    fmt="table",
                )
            ],
            "percentunit",
            w=24,
            sort_by="Value",
            defaults={"decimals": 1},
        ),
    ]
    return dashboard(
        "ci-slo-budget",
        "CI SLO: SLOs and error budget",
        "SLIs against objectives, error budget left, burn rates and event counts per SLO.",
        panels,
        extra_vars=[slo_var()],
        time_from="now-7d",
    )


def quantile(q, metric, by="le"):
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}{{{REPO}}}[$window])))"


def durations_dashboard():
    q = "ci_run_queue_duration_seconds_bucket"
    r = "ci_run_duration_seconds_bucket"
    panels = [
        heatmap(
            "Queue time distribution",
            "Started runs per queue-time bucket (ci_run_queue_duration_seconds) in each interval, for the "
            "selected repositories. Pink dots are exemplars: hover one to open the run. Good: the mass sits "
            "below 300 s (the queue_time SLO threshold).",
            f"sum by (le) (increase({q}{{{REPO}}}[$__rate_interval]))",
            "s",
        ),
        heatmap(
            "Run time distribution",
            "Finished runs per run-time bucket (ci_run_duration_seconds) in each interval. Exemplars link to "
            "the run. Good: the mass sits below 3600 s (the run_time SLO threshold).",
            f"sum by (le) (increase({r}{{{REPO}}}[$__rate_interval]))",
            "s",
        ),
        ts(
            "Queue time p50 / p90 / p99",
            "Queue-time percentiles over the trailing $window (histogram_quantile of the buckets; a percentile "
            "is only as precise as the bucket it falls in). Exemplars shown. Good: p90 well below 5 min.",
            [
                target(quantile(0.5, q), "p50", exemplar=True),
                target(quantile(0.9, q), "p90", ref="B", exemplar=True),
                target(quantile(0.99, q), "p99", ref="C", exemplar=True),
            ],
            "s",
            defaults={"min": 0},
        ),
        ts(
            "Run time p50 / p90 / p99",
            "Run-time percentiles over the trailing $window. Exemplars shown. Good: p99 below 1 h, and no "
            "upward trend week over week.",
            [
                target(quantile(0.5, r), "p50", exemplar=True),
                target(quantile(0.9, r), "p90", ref="B", exemplar=True),
                target(quantile(0.99, r), "p99", ref="C", exemplar=True),
            ],
            "s",
            defaults={"min": 0},
        ),
        ts(
            "p90 queue time per repository (1d)",
            "ci_repository:run_queue_duration_seconds:p90_rate1d: the 90th percentile of queue time per "
            "repository over the last day. Good: every repository below 300 s; one repository creeping up "
            "points at its runners.",
            [target(f"ci_repository:run_queue_duration_seconds:p90_rate1d{{{REPO}}}", "{{repository}}")],
            "s",
            defaults={"min": 0},
        ),
        ts(
            "p90 run time per repository (1d)",
            "ci_repository:run_duration_seconds:p90_rate1d: the 90th percentile of run time per repository "
            "over the last day. Good: below 3600 s and flat.",
            [target(f"ci_repository:run_duration_seconds:p90_rate1d{{{REPO}}}", "{{repository}}")],
            "s",
            defaults={"min": 0},
        ),
        ts(
            "Runs within the thresholds (all repositories)",
            "Share of started runs that queued at most 5 min and of finished runs that took at most 1 h, over "
            "1h and 1d (ci:run_queue_within_threshold:* and ci:run_duration_within_threshold:*, from the "
            "histogram buckets le=300 and le=3600). Good: above 95%, the queue_time and run_time objectives.",
            [
                target("ci:run_queue_within_threshold:ratio_rate1d", "queued <= 5 min (1d)"),
                target("ci:run_duration_within_threshold:ratio_rate1d", "ran <= 1 h (1d)", ref="B"),
                target("ci:run_queue_within_threshold:ratio_rate1h", "queued <= 5 min (1h)", ref="C"),
                target("ci:run_duration_within_threshold:ratio_rate1h", "ran <= 1 h (1h)", ref="D"),
            ],
            "percentunit",
            defaults={"max": 1},
        ),
        table(
            "p90 per context (over $window)",
            "90th percentile of queue time and run time per repository and context over the trailing $window. "
            "Good: every queue p90 below 300 s and run p90 below 3600 s; sort by a column to find the slowest "
            "context.",
            [
                target(
                    f"histogram_quantile(0.9, sum by (repository, context, le) (rate({q}{{{REPO}}}[$window])))",
                    "",
                    instant=True,
                    fmt="table",
                ),
            ],
            "s",
            w=12,
            sort_by="Value",
        ),
        ts(
            "Runs finished per interval, by state",
            "Runs that reached a final state in each interval (ci_runs_total), by state. Good: mostly "
            "success; error, cancelled and timed_out are CI's own failures.",
            [target(f"sum by (state) (increase(ci_runs_total{{{REPO}}}[$__rate_interval]))", "{{state}}")],
            "short",
            bars=True,
            stack=True,
            defaults={"min": 0},
        ),
        ts(
            "Retries per green merged change",
            "Average retries a green merged change needed, per repository, over the trailing $window "
            "(ci_change_retries_to_green). Good: close to 0; above 1 means every change is retried.",
            [
                target(
                    f"sum by (repository) (increase(ci_change_retries_to_green_sum{{{REPO}}}[$window]))"
                    f" / sum by (repository) (increase(ci_change_retries_to_green_count{{{REPO}}}[$window]))",
                    "{{repository}}",
                )
            ],
            "short",
            defaults={"min": 0},
        ),
        stat(
            "Share of runs that were retries (over $window)",
            "Retries (attempt > 0) among all finished runs over the trailing $window. Good: below 10%; retries "
            "hide flakiness and cost runner time.",
            [
                target(
                    f'sum(increase(ci_runs_total{{{REPO},attempt="retry"}}[$window])) / sum(increase(ci_runs_total{{{REPO}}}[$window]))',
                    "retries",
                )
            ],
            "percentunit",
            w=12,
            h=5,
            defaults={"thresholds": thresholds((None, "green"), (0.1, "orange"), (0.25, "red")), "decimals": 1},
        ),
    ]
    window = custom_var("window", "Percentile window", ["1h", "6h", "1d", "7d"], "1d")
    return dashboard(
        "ci-slo-durations",
        "CI SLO: queue and run time",
        "Queue-time and run-time distributions, percentiles and exemplars linking to runs.",
        panels,
        extra_vars=[window],
        time_from="now-7d",
    )


def flaky_dashboard():
    panels = [
        table(
            "Flakiest tests",
            "ci_test_flake_ratio over the last 7 days: flaky failures per run (failed runs on commits where "
            "the test also passed, and passes after an in-run retry). Only each repository's worst flaky and "
            "broken tests are exported. Good: empty, or every ratio below 2%; above 5% the test is a "
            "CITestBecameFlaky alert.",
            [
                target(
                    f"sort_desc(max by (repository, context, test) (ci_test_flake_ratio{{{REPO}}}))",
                    "",
                    instant=True,
                    fmt="table",
                )
            ],
            "percentunit",
            w=12,
            h=10,
            sort_by="Value",
            defaults={"decimals": 1, "thresholds": thresholds((None, "green"), (0.02, "orange"), (0.05, "red")), "custom": {"cellOptions": {"type": "color-background"}}},
        ),
        table(
            "Most failing tests",
            "ci_test_failure_ratio over the last 7 days: failed or errored executions / executions. Good: "
            "empty or below 5%; a test at 100% is broken, not flaky.",
            [
                target(
                    f"sort_desc(max by (repository, context, test) (ci_test_failure_ratio{{{REPO}}}))",
                    "",
                    instant=True,
                    fmt="table",
                )
            ],
            "percentunit",
            w=12,
            h=10,
            sort_by="Value",
            defaults={"decimals": 1, "thresholds": thresholds((None, "green"), (0.05, "orange"), (0.5, "red")), "custom": {"cellOptions": {"type": "color-background"}}},
        ),
        bargauge(
            "Tests by verdict",
            "ci_tests: tests seen in the last 7 days, by verdict (healthy, flaky, broken, and new: fewer runs "
            "than tests.min_runs). Good: flaky and broken at 0.",
            [target(f"sum by (verdict) (ci_tests{{{REPO}}})", "{{verdict}}", instant=True)],
            "short",
            w=8,
            h=6,
            defaults={"decimals": 0},
            overrides=[
                {"matcher": {"id": "byName", "options": "healthy"}, "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "green"}}]},
                {"matcher": {"id": "byName", "options": "flaky"}, "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "orange"}}]},
                {"matcher": {"id": "byName", "options": "broken"}, "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]},
            ],
        ),
        ts(
            "Flaky and broken tests over time",
            "ci_tests per verdict over time for the selected repositories. Good: flat at 0; a rising flaky "
            "line means tests are decaying faster than they are fixed.",
            [target(f'sum by (verdict) (ci_tests{{{REPO},verdict!="healthy"}})', "{{verdict}}")],
            "short",
            w=8,
            h=6,
            defaults={"min": 0, "decimals": 0},
        ),
        stat(
            "Failing or flaky tests not exported",
            "ci_exporter_tests_not_exported: flaky or broken tests that fell outside the per-repository, "
            "per-verdict worst-N cut (tests.worst_per_repository). Good: 0; otherwise the tables above are "
            "incomplete: see the exporter UI or raise the limit.",
            [target(f"sum(ci_exporter_tests_not_exported{{{REPO}}})", "not exported")],
            "short",
            w=8,
            h=6,
            defaults={"thresholds": thresholds((None, "green"), (1, "orange")), "decimals": 0},
        ),
        ts(
            "Flake ratio of the worst tests",
            "ci_test_flake_ratio of the 10 flakiest tests over time. Good: lines fall after a fix; a line "
            "crossing 5% starts a CITestBecameFlaky alert.",
            [target(f"topk(10, max by (repository, context, test) (ci_test_flake_ratio{{{REPO}}}))", "{{test}} ({{context}})")],
            "percentunit",
            defaults={"min": 0},
        ),
        ts(
            "test_success SLI per repository (28d)",
            "ci_repository:slo_sli:ratio_rate28d for slo=test_success: tests passing at least 90% of their runs / "
            "tests with at least slo.test_min_runs runs, over 28 days (whole UTC days; a single day rarely has "
            "enough runs of a test to judge it). Good: above the 90% objective (at most 10% of the tests breaching).",
            [target(f'ci_repository:slo_sli:ratio_rate28d{{slo="test_success",{REPO}}}', "{{repository}}")],
            "percentunit",
            defaults={"max": 1},
        ),
        ts(
            "Tests breaching test_success (28d)",
            "ci_slo_tests{result=\"breaching\",window=\"28d\"} per repository: tests whose runs passed less "
            "than 90% of the time over 28 days (summed over shards). Good: 0; the SLO page of the exporter UI "
            "(/slos/test_success) lists them, worst first.",
            [target(f'sum by (repository) (ci_slo_tests{{slo="test_success",window="28d",result="breaching",{REPO}}})', "{{repository}}")],
            "short",
            defaults={"min": 0, "decimals": 0},
        ),
        ts(
            "Test executions passed per repository (1d)",
            "ci_repository:slo_sli:ratio_rate1d for slo=test_executions: passed executions / executions "
            "(skipped excluded) over a day, the execution-level ratio test_success used to be. It hides a single "
            "test failing half the time among many passing ones: read it next to the panel above.",
            [target(f'ci_repository:slo_sli:ratio_rate1d{{slo="test_executions",{REPO}}}', "{{repository}}")],
            "percentunit",
            defaults={"max": 1},
        ),
    ]
    return dashboard(
        "ci-slo-flaky-tests",
        "CI SLO: flaky tests",
        "The flakiest and most failing tests, tests by verdict, and the test_success SLI.",
        panels,
    )


def failures_dashboard():
    panels = [
        bargauge(
            "Failure classes (time range)",
            "Failed runs per failure class over the selected time range (ci_failures_total; a run counts once "
            "per class). Good: few bars and short ones; a large `unknown` bar means the classification rules "
            "need work (docs/classification.md).",
            [target(f"sort_desc(sum by (class) (increase(ci_failures_total{{{REPO}}}[$__range])))", "{{class}}", instant=True)],
            "short",
            h=9,
            defaults={"decimals": 0, "min": 0},
        ),
        bargauge(
            "Failure categories (time range)",
            "The same by category (infra, timeout, dependency, build, product, unknown). Good: `product` and "
            "`build` dominate (real failures); much `infra` or `timeout` is CI's own unreliability.",
            [target(f"sort_desc(sum by (category) (increase(ci_failures_total{{{REPO}}}[$__range])))", "{{category}}", instant=True)],
            "short",
            h=9,
            defaults={"decimals": 0, "min": 0},
        ),
        ts(
            "Failures per interval by category",
            "Failed runs per category in each interval. Good: low and without spikes; a spike of one category "
            "(for example infra) is an outage.",
            [target(f"sum by (category) (increase(ci_failures_total{{{REPO}}}[$__rate_interval]))", "{{category}}")],
            "short",
            bars=True,
            stack=True,
            defaults={"min": 0},
        ),
        ts(
            "New failure fingerprints per interval",
            "ci_failure_fingerprints_new_total: failure fingerprints never seen before, per repository. Good: "
            "near 0; more than 10 within an hour in one repository is a CIFailureFingerprintSurge (something "
            "new broke).",
            [target(f"sum by (repository) (increase(ci_failure_fingerprints_new_total{{{REPO}}}[$__rate_interval]))", "{{repository}}")],
            "short",
            bars=True,
            defaults={"min": 0},
        ),
        stat(
            "New fingerprints (time range)",
            "New failure fingerprints over the selected time range, all selected repositories. Good: a "
            "handful a week.",
            [target(f"sum(increase(ci_failure_fingerprints_new_total{{{REPO}}}[$__range]))", "new fingerprints", instant=True)],
            "short",
            w=6,
            h=6,
            defaults={"decimals": 0},
        ),
        stat(
            "Share of failures unclassified (time range)",
            "Share of classified failures that fell into `unknown`. Good: below 20%; above that the rules "
            "miss common failures.",
            [
                target(
                    f'sum(increase(ci_failures_total{{{REPO},class="unknown"}}[$__range])) / sum(increase(ci_failures_total{{{REPO}}}[$__range]))',
                    "unknown",
                    instant=True,
                )
            ],
            "percentunit",
            w=6,
            h=6,
            defaults={"thresholds": thresholds((None, "green"), (0.2, "orange"), (0.5, "red")), "decimals": 0},
        ),
        table(
            "Failure classes by repository (all time)",
            "ci_failures_total per repository, class and category since the exporter's database began. Good: "
            "the same few classes do not top every repository month after month.",
            [target(f"sort_desc(sum by (repository, class, category) (ci_failures_total{{{REPO}}}))", "", instant=True, fmt="table")],
            "short",
            sort_by="Value",
            defaults={"decimals": 0},
        ),
    ]
    return dashboard(
        "ci-slo-failures",
        "CI SLO: failure classes",
        "Which kinds of failure happen where, and new failure fingerprints.",
        panels,
    )


SCHED = f'trigger="schedule",{REPO}'


def nightly_state(by):
    """0 no scheduled run, 1 all green, 2 a test/build failure, 3 error/cancelled/timed out/skipped.

    One point per UTC day: Grafana aligns a 1d step to midnight of the
    dashboard's time zone (UTC here) and draws a point's cell from its time to
    the next point, so the point at midnight must count the day that *starts*
    there: the 1d window is shifted forward (`offset -1d`), as the exporter's
    /nightly groups runs by UTC day."""

    def part(states, code, label):
        return (
            f'label_replace((sum by ({by}) (increase(ci_runs_total{{{SCHED},state=~"{states}"}}[1d] offset -1d)) > bool 0) * {code},'
            f' "outcome", "{label}", "", "")'
        )

    return (
        f"max by ({by}) (\n"
        f"  {part('success', 1, 'success')}\n"
        f"  or {part('failure', 2, 'failure')}\n"
        f"  or {part('error|cancelled|timed_out|skipped', 3, 'broken')}\n"
        ")"
    )


NIGHTLY_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "no run", "color": "text", "index": 0},
            "1": {"text": "green", "color": "green", "index": 1},
            "2": {"text": "failed", "color": "red", "index": 2},
            "3": {"text": "error / timeout", "color": "purple", "index": 3},
        },
    }
]


def status_history(title, description, expr, legend, h=8):
    p = panel(
        "status-history",
        title,
        description,
        [target(expr, legend, interval="1d")],
        "short",
        w=24,
        h=h,
        defaults={"mappings": NIGHTLY_MAPPINGS, "thresholds": thresholds((None, "green")), "custom": {"lineWidth": 1, "fillOpacity": 80}},
        interval="1d",
        # Enough points that the step stays 1d for ranges up to a year.
        maxDataPoints=400,
    )
    p["options"] = {
        "showValue": "never",
        "rowHeight": 0.9,
        "colWidth": 0.95,
        "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return p


def nightly_dashboard():
    panels = [
        status_history(
            "Nightly result per repository, by day",
            "One cell per repository and day from the increase of ci_runs_total{trigger=\"schedule\"} over "
            "that day: green = every scheduled run succeeded, red = a run failed, purple = a run errored, "
            "timed out, was cancelled or skipped (CI's fault), grey = no scheduled run. Good: a green grid; "
            "a grey cell on a day the nightly should run is a lost run.",
            nightly_state("repository"),
            "{{repository}}",
        ),
        status_history(
            "Nightly result per repository and context, by day",
            "The same grid per scheduled context (job). Good: green; a column of red across contexts is a "
            "shared cause (infrastructure, dependency), a row of red is one broken job.",
            nightly_state("repository, context"),
            "{{repository}} / {{context}}",
            h=10,
        ),
        table(
            "Last day's scheduled runs by state",
            "Scheduled runs per repository, context and state that finished in the last 24 hours. Good: only "
            "`success` rows.",
            [
                target(
                    f"sum by (repository, context, state) (increase(ci_runs_total{{{SCHED}}}[1d])) > 0",
                    "",
                    instant=True,
                    fmt="table",
                )
            ],
            "short",
            sort_by="Value",
            defaults={"decimals": 0},
        ),
        ts(
            "runs_completed SLI per repository (1d)",
            "ci_repository:slo_sli:ratio_rate1d for slo=runs_completed: scheduled runs that finished with a "
            "result (success or failure) / scheduled runs. Good: above the 95% objective; below it, runs are "
            "lost, time out or error.",
            [target(f'ci_repository:slo_sli:ratio_rate1d{{slo="runs_completed",{REPO}}}', "{{repository}}")],
            "percentunit",
            defaults={"max": 1},
        ),
        bargauge(
            "Scheduled runs completed (exporter, 28d)",
            "ci_slo_sli_ratio{slo=\"runs_completed\",window=\"28d\"}: the exporter's 28-day view including lost "
            "runs. Good: above 95%.",
            [target('max(ci_slo_sli_ratio{slo="runs_completed",window="28d"})', "runs_completed 28d", instant=True)],
            "percentunit",
            w=24,
            h=4,
            defaults={"min": 0, "max": 1, "thresholds": GOOD_HIGH, "decimals": 1},
        ),
    ]
    return dashboard(
        "ci-slo-nightly",
        "CI SLO: nightly grid",
        "Scheduled (nightly) runs per repository and day.",
        panels,
        time_from="now-30d",
        # Days are UTC days, as on the exporter's /nightly page.
        timezone="utc",
    )


def health_dashboard():
    panels = [
        stat(
            "Exporter up",
            "up{job=\"ci-slo-exporter\"} per instance. Good: UP everywhere; DOWN for 5 minutes is the "
            "CIExporterDown page and inhibits every other CI alert.",
            [target('up{job="ci-slo-exporter"}', "{{instance}}")],
            "short",
            w=6,
            h=5,
            defaults={
                "thresholds": thresholds((None, "red"), (1, "green")),
                "mappings": [{"type": "value", "options": {"0": {"text": "DOWN", "index": 0}, "1": {"text": "UP", "index": 1}}}],
            },
        ),
        stat(
            "Snapshot age",
            "ci_exporter_snapshot_age_seconds: age of the /metrics snapshot served at the last scrape. Good: "
            "below metrics.refresh_interval (15 s) plus a scrape interval; growing means the background "
            "refresh is stuck.",
            [target("max by (instance) (ci_exporter_snapshot_age_seconds)", "{{instance}}")],
            "s",
            w=6,
            h=5,
            defaults={"thresholds": thresholds((None, "green"), (60, "orange"), (300, "red"))},
        ),
        stat(
            "Stored runs",
            "ci_exporter_stored_runs: runs in the database. Good: grows with CI activity; ci_exporter_demo_data "
            "= 1 marks a demo database.",
            [
                target("sum by (instance) (ci_exporter_stored_runs)", "{{instance}} runs"),
                target("max by (instance) (ci_exporter_demo_data)", "{{instance}} demo data", ref="B"),
            ],
            "short",
            w=6,
            h=5,
            defaults={"decimals": 0},
        ),
        stat(
            "Scrape duration",
            "scrape_duration_seconds of the exporter job: scrape cost is independent of history size. Good: "
            "well below 1 s.",
            [target('max by (instance) (scrape_duration_seconds{job="ci-slo-exporter"})', "{{instance}}")],
            "s",
            w=6,
            h=5,
            defaults={"thresholds": thresholds((None, "green"), (1, "orange"), (5, "red"))},
        ),
        bargauge(
            "Forge API budget left",
            "ci_exporter_forge_rate_limit_remaining / ci_exporter_forge_rate_limit_limit per forge and "
            "instance. Good: above 50%; below 10% for 15 minutes is CIForgeRateLimitLow and syncs slow down. "
            "Empty without a GitHub or GitLab source.",
            [
                target(
                    "ci_exporter_forge_rate_limit_remaining / ci_exporter_forge_rate_limit_limit",
                    "{{forge}} {{instance}}",
                    instant=True,
                )
            ],
            "percentunit",
            h=6,
            defaults={"min": 0, "max": 1, "thresholds": thresholds((None, "red"), (0.1, "orange"), (0.5, "green"))},
        ),
        ts(
            "Forge API requests left",
            "ci_exporter_forge_rate_limit_remaining over time with the window size "
            "(ci_exporter_forge_rate_limit_limit, dashed). Good: a saw-tooth that never reaches 0 before the "
            "window resets.",
            [
                target("ci_exporter_forge_rate_limit_remaining", "{{forge}} remaining"),
                target("ci_exporter_forge_rate_limit_limit", "{{forge}} limit", ref="B"),
            ],
            "short",
            h=6,
            overrides=[dashed(".* limit")],
            defaults={"min": 0},
        ),
        table(
            "Sync freshness",
            "Time since the last successful sync per forge and repository "
            "(time() - ci_exporter_last_sync_timestamp_seconds). Good: below the poll interval; above 2 h is "
            "CIForgeSyncStale and the repository's SLIs miss runs. Empty without forge sources.",
            [
                target(
                    f"sort_desc(time() - max by (forge, repository) (ci_exporter_last_sync_timestamp_seconds{{{REPO}}}))",
                    "",
                    instant=True,
                    fmt="table",
                )
            ],
            "s",
            sort_by="Value",
            defaults={"thresholds": thresholds((None, "green"), (3600, "orange"), (7200, "red")), "custom": {"cellOptions": {"type": "color-text"}}},
        ),
        ts(
            "Forge API requests",
            "ci_exporter_forge_api_requests_total per forge, endpoint and status, per second. Good: mostly "
            "2xx and 304 (not modified: nothing re-downloaded); 403/429 mean rate limiting.",
            [target("sum by (forge, endpoint, status) (rate(ci_exporter_forge_api_requests_total[$__rate_interval]))", "{{forge}} {{endpoint}} {{status}}")],
            "reqps",
        ),
        ts(
            "Series per family",
            "ci_exporter_series: series per metric family in the snapshot (cardinality watch). Good: flat; "
            "per-test families are capped by tests.worst_per_repository.",
            [target("sum by (family) (ci_exporter_series)", "{{family}}")],
            "short",
            defaults={"min": 0, "decimals": 0},
        ),
        ts(
            "Snapshot rebuild time",
            "ci_exporter_snapshot_build_duration_seconds: how long the last snapshot rebuild took, off the "
            "scrape path. Good: well below metrics.refresh_interval (15 s).",
            [target("max by (instance) (ci_exporter_snapshot_build_duration_seconds)", "{{instance}}")],
            "s",
            defaults={"min": 0},
        ),
        ts(
            "HTTP requests by route and status",
            "ci_exporter_http_requests_total per second. Good: /metrics at the scrape rate, ingest matching "
            "CI activity, no 5xx; 401 on /api/v1/runs is a client with a wrong token.",
            [target("sum by (route, status) (rate(ci_exporter_http_requests_total[$__rate_interval]))", "{{route}} {{status}}")],
            "reqps",
        ),
        ts(
            "Runs ingested by result",
            "ci_exporter_ingested_runs_total per source and result in each interval. Good: created/updated/"
            "unchanged; rejected or unauthorized need a look at the sender.",
            [target("sum by (source, result) (increase(ci_exporter_ingested_runs_total[$__rate_interval]))", "{{source}} {{result}}")],
            "short",
            bars=True,
            stack=True,
            defaults={"min": 0},
        ),
        ts(
            "Webhook deliveries",
            "ci_exporter_webhook_deliveries_total per forge, event and result in each interval. Good: "
            "accepted and some duplicate/ignored; rejected or unauthorized means a wrong secret or a bad "
            "payload. Empty without webhooks.",
            [target("sum by (forge, event, result) (increase(ci_exporter_webhook_deliveries_total[$__rate_interval]))", "{{forge}} {{event}} {{result}}")],
            "short",
            bars=True,
            stack=True,
            defaults={"min": 0},
        ),
        ts(
            "Data-quality rejections",
            "ci_exporter_data_quality_rejections_total per reason in each interval: durations or records not "
            "exported (negative or absurd queue/run times, runs after a change was decided). Good: rare; a "
            "steady stream means a source reports wrong timestamps.",
            [target("sum by (reason) (increase(ci_exporter_data_quality_rejections_total[$__rate_interval]))", "{{reason}}")],
            "short",
            bars=True,
            stack=True,
            defaults={"min": 0},
        ),
        ts(
            "Backdated events",
            "ci_exporter_backdated_events_total per kind in each interval: history loaded on purpose (a "
            "command given --history on a database that has served), stored without moving live counters "
            "(so loaded history does not trip burn alerts). Late live events are not in it: they count when "
            "they arrive. Good: 0 unless history is being loaded.",
            [target("sum by (kind) (increase(ci_exporter_backdated_events_total[$__rate_interval]))", "{{kind}}")],
            "short",
            bars=True,
            stack=True,
            defaults={"min": 0},
        ),
        table(
            "Build",
            "ci_exporter_build_info: the version each instance runs. Good: one version across all shards.",
            [target("ci_exporter_build_info", "", instant=True, fmt="table")],
            "short",
        ),
    ]
    return dashboard(
        "ci-slo-exporter-health",
        "CI SLO: exporter health",
        "The exporter itself: scrape, snapshot, forge API budget, sync freshness, cardinality, ingest.",
        panels,
        time_from="now-24h",
    )


DASHBOARDS = {
    "slo-error-budget.json": slo_dashboard,
    "queue-and-run-time.json": durations_dashboard,
    "flaky-tests.json": flaky_dashboard,
    "failure-classes.json": failures_dashboard,
    "nightly-grid.json": nightly_dashboard,
    "exporter-health.json": health_dashboard,
}


# --- Grafana alert rules ---------------------------------------------------------
#
# The alerts are defined once, in prometheus/rules/ci-slo-alerts.yml (names,
# groups, expressions, thresholds, `for`, labels). The Grafana rules are derived
# from that file: grafana_condition() splits each Prometheus expression into
# query A (a value per series, with the guards applied as `and`/`unless`
# filters) and the condition C on its last value. Only what Grafana cannot take
# from Prometheus lives here: the rule uid and the annotation templates
# (Grafana has no `query` template function and no numeric `$value`).

RUNBOOK = "https://github.com/ci-slo-exporter/ci-slo-exporter/blob/main/docs/runbook.md#"
PROM_ALERTS = os.path.join(HERE, "..", "prometheus", "rules", "ci-slo-alerts.yml")

# alert name -> (uid, summary, description); $values.B.Value is the value of query A.
GRAFANA = {
    "CISLOFastBurn": (
        "ci-slo-fast-burn",
        "SLO {{ $labels.slo }} is burning its error budget fast ({{ humanize $values.B.Value }}x the fast-burn threshold over 1h)",
        "The burn rates over 1h and 6h of SLO {{ $labels.slo }} are both above the fast-burn threshold "
        "(6x, capped for low objectives), with at least 5 events in the last hour and 10 in 6 hours. "
        "At this pace about 5% of the 28-day error budget goes every 6 hours.",
    ),
    "CISLOSlowBurn": (
        "ci-slo-slow-burn",
        "SLO {{ $labels.slo }} is burning its error budget ({{ humanize $values.B.Value }}x the slow-burn threshold over 1d)",
        "The burn rates over 1d and 3d of SLO {{ $labels.slo }} are both above 1 (the budget runs out "
        "before the 28 days end), with at least 10 events in a day and 30 in 3 days (test_success: at least one "
        "evaluated test).",
    ),
    "CISLOBudgetExhausted": (
        "ci-slo-budget-exhausted",
        "SLO {{ $labels.slo }} has exhausted its 28-day error budget",
        "Budget remaining: {{ humanizePercentage $values.B.Value }} (at least 20 events in 28 days; test_success: "
        "at least one evaluated test). "
        "The error-budget policy applies: feature merges pause except CI fixes.",
    ),
    "CIExporterDown": (
        "ci-exporter-down",
        "ci-slo-exporter {{ $labels.instance }} is down",
        "Prometheus has failed to scrape {{ $labels.instance }} for more than 5 minutes; SLO counters of "
        "this instance are missing.",
    ),
    "CIExporterAbsent": (
        "ci-exporter-absent",
        "Prometheus has no ci-slo-exporter target",
        "No `up` series for job ci-slo-exporter for 10 minutes: the scrape job is missing or finds no "
        "target. No SLO alert can fire.",
    ),
    "CIForgeSyncStale": (
        "ci-forge-sync-stale",
        "{{ $labels.forge }} repository {{ $labels.repository }} not synced for {{ humanizeDuration $values.B.Value }}",
        "The last successful poll of {{ $labels.repository }} on {{ $labels.forge }} is older than 2 hours; "
        "its SLIs miss runs.",
    ),
    "CIForgeRateLimitLow": (
        "ci-forge-rate-limit-low",
        "{{ $labels.forge }} API rate limit almost used up on {{ $labels.instance }} ({{ humanizePercentage $values.B.Value }} left)",
        "Less than 10% of the {{ $labels.forge }} API rate limit has been left for 15 minutes; polling and "
        "log downloads slow down.",
    ),
    "CIFailureFingerprintSurge": (
        "ci-failure-fingerprint-surge",
        "{{ humanize $values.B.Value }} new failure fingerprints in {{ $labels.repository }} within 1h",
        "Failure fingerprints never seen before are appearing in {{ $labels.repository }} (more than 10 in "
        "an hour): a new kind of failure is spreading. See /failures in the exporter UI.",
    ),
    "CITestBecameFlaky": (
        "ci-test-became-flaky",
        "Test {{ $labels.test }} in {{ $labels.repository }} became flaky ({{ humanizePercentage $values.B.Value }})",
        "Test {{ $labels.test }} of context {{ $labels.context }} has failed more than 5% of its runs for "
        "no reason of the commit (flake ratio) for an hour; the day before it was below 5%.",
    ),
}

# Comparison operators of PromQL, longest first; Grafana's threshold type has
# only gt and lt, the others become a math expression on $B.
CMP_OPS = (">=", "<=", "==", "!=", ">", "<")
THRESHOLD_TYPES = {">": "gt", "<": "lt"}
SET_OP = re.compile(r"(and|unless|or)\b\s*(?:(?:on|ignoring)\s*\([^)]*\)\s*)?")
CMP_MOD = re.compile(r"\s*(bool\b)?\s*((?:on|ignoring)\s*\([^)]*\))?\s*")
CONSTANT = re.compile(r"[0-9.eE\s*+/()-]+")


class AlertShapeError(ValueError):
    pass


def strip_comments(expr):
    """PromQL without `# ...` comments (outside strings)."""
    out, quote = [], None
    for line in expr.split("\n"):
        kept = []
        for ch in line:
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "\"'`":
                quote = ch
            elif ch == "#":
                break
            kept.append(ch)
        out.append("".join(kept))
    return "\n".join(out)


def top_level(expr):
    """Indexes of expr that are outside (), [], {} and strings."""
    depth, quote, idx = 0, None, []
    for i, ch in enumerate(expr):
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            idx.append(i)
    return idx


def squash(expr):
    """One line, single spaces, no space inside parentheses."""
    s = " ".join(expr.split())
    return re.sub(r"\s+\)", ")", re.sub(r"\(\s+", "(", s))


def split_set_ops(expr):
    """[elem, (op, elem), ...] of a chain of top-level and/unless/or."""
    parts, ops, last = [], [], 0
    top = set(top_level(expr))
    i = 0
    while i < len(expr):
        if i in top and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_:")):
            m = SET_OP.match(expr, i)
            if m and m.group(1):
                parts.append(expr[last:i])
                ops.append(squash(m.group(0)))
                last = i = m.end()
                continue
        i += 1
    parts.append(expr[last:])
    return [p.strip() for p in parts], ops


def unwrap(expr):
    """expr without parentheses that enclose all of it."""
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")") and len(top_level(expr)) == 0:
        expr = expr[1:-1].strip()
    return expr


def split_compare(expr):
    """(lhs, op, modifier, rhs) of the one top-level comparison of expr, or None."""
    top = top_level(expr)
    found = []
    skip = set()
    for i in top:
        if i in skip:
            continue
        for op in CMP_OPS:
            if expr.startswith(op, i) and all(j in top for j in range(i, i + len(op))):
                found.append((i, op))
                skip.update(range(i, i + len(op)))
                break
    if not found:
        return None
    if len(found) > 1:
        raise AlertShapeError(f"more than one top-level comparison in {squash(expr)!r}")
    i, op = found[0]
    m = CMP_MOD.match(expr, i + len(op))
    if m.group(1):
        raise AlertShapeError(f"`bool` comparison in {squash(expr)!r}")
    return expr[:i].strip(), op, squash(m.group(2) or ""), expr[m.end():].strip()


def constant(s):
    """The value of a constant arithmetic expression (`2 * 3600`), or None."""
    if not CONSTANT.fullmatch(s):
        return None
    try:
        value = eval(compile(ast.parse(s, mode="eval"), "<threshold>", "eval"), {"__builtins__": {}})  # noqa: S307
    except (SyntaxError, TypeError, ZeroDivisionError):
        return None
    return int(value) if float(value).is_integer() else float(value)


def paren(expr):
    """expr, parenthesized unless it is a single operand (no top-level operator)."""
    s = squash(expr)
    if any(s[i] in "+-*/%^ " for i in top_level(s)):
        return f"({s})"
    return s


def grafana_condition(expr):
    """Split a Prometheus alert expression into (query A, op, threshold).

    Supported shapes (anything else is an error, so that a new alert is
    either derivable or fails loudly):
    - `absent(X)`: A = `count(X) or vector(0)`, condition `< 1` (A always has
      a value, the rule never depends on no-data handling);
    - a chain `E and|unless ... G1 and ... G2` whose first element E (after
      flattening leading parenthesized and/unless chains) is `L op C` with a
      constant C: A = the chain with E replaced by L, condition `op C`;
    - the same with `L op on (...) S` and a series S (a positive threshold such
      as ci:slo_burn_rate_threshold:fast): A uses `L / on (...) S`, condition
      `op 1`.
    The guards keep their values' series (`and`/`unless` keep the left-hand
    side's values), so filtering by the condition after them is the same as
    filtering E before them.
    """
    e = unwrap(strip_comments(expr))
    m = re.fullmatch(r"absent\s*\((.*)\)", e, re.S)
    if m and len(top_level(e)) == len("absent"):
        return f"count({squash(m.group(1))}) or vector(0)", "<", 1
    parts, ops = split_set_ops(e)
    # (a and b) and c == a and b and c: flatten a leading group of and/unless.
    while True:
        inner_parts, inner_ops = split_set_ops(unwrap(parts[0]))
        if len(inner_parts) == 1 or any(not o.startswith(("and", "unless")) for o in inner_ops):
            break
        parts, ops = inner_parts + parts[1:], inner_ops + ops
    if any(o.startswith("or") for o in ops):
        raise AlertShapeError(f"top-level `or` in {squash(expr)!r}: cannot derive a Grafana rule")
    first = split_compare(unwrap(parts[0]))
    if first is None:
        raise AlertShapeError(f"no comparison in the first operand of {squash(expr)!r}")
    lhs, op, modifier, rhs = first
    value = constant(rhs)
    if value is None:
        if op not in THRESHOLD_TYPES:
            raise AlertShapeError(f"series threshold with {op} in {squash(expr)!r}")
        head = f"{paren(lhs)} / {modifier + ' ' if modifier else ''}{paren(rhs)}"
        value = 1
    else:
        if modifier:
            raise AlertShapeError(f"matching modifier on a constant in {squash(expr)!r}")
        head = squash(lhs)
    lines = [head] + [f"  {o} {squash(p)}" for o, p in zip(ops, parts[1:])]
    return "\n".join(lines), op, value


def prometheus_alerts(path=PROM_ALERTS):
    """[(group, rule)] of the Prometheus alerting rules, in file order."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    return [(g["name"], r) for g in doc["groups"] for r in g["rules"] if "alert" in r]


def yq(s):
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(s)


def num(v):
    return repr(v) if isinstance(v, float) else str(v)


def rules_yaml():
    alerts = prometheus_alerts()
    names = [r["alert"] for _, r in alerts]
    missing = [n for n in names if n not in GRAFANA]
    extra = [n for n in GRAFANA if n not in names]
    if missing or extra:
        raise AlertShapeError(
            "grafana/generate.py GRAFANA must name exactly the alerts of prometheus/rules/ci-slo-alerts.yml: "
            f"missing {missing}, unknown {extra}"
        )
    out = [
        "# GENERATED by grafana/generate.py from prometheus/rules/ci-slo-alerts.yml:",
        "# edit the alerts there (annotations of these rules: GRAFANA in generate.py)",
        "# and run `python3 grafana/generate.py`.",
        "#",
        "# Grafana-managed alert rules equivalent to prometheus/rules/ci-slo-alerts.yml",
        "# (same names, groups, expressions, thresholds, minimum-event guards, `for` and",
        "# labels; the reasoning is in docs/alerting.md, what to do in docs/runbook.md).",
        "# Use them when Grafana, not Alertmanager, sends the alerts; see docs/grafana.md.",
        "#",
        "# Each rule: A = PromQL (instant) on the datasource uid `prometheus`,",
        "# B = reduce(last) of A, C = threshold (or math) on B = the condition.",
        "# No data means the guard is not met or the metric does not exist: OK.",
        "apiVersion: 1",
        "",
        "groups:",
    ]
    groups = []
    for g, _ in alerts:
        if g not in groups:
            groups.append(g)
    for g in groups:
        out += [
            "  - orgId: 1",
            f"    name: {g}",
            "    folder: CI SLO alerts",
            "    interval: 1m",
            "    rules:",
        ]
        for group, rule in alerts:
            if group != g:
                continue
            title = rule["alert"]
            uid, summary, description = GRAFANA[title]
            expr, op, value = grafana_condition(rule["expr"])
            out += [
                f"      - uid: {uid}",
                f"        title: {title}",
                "        condition: C",
                "        data:",
                "          - refId: A",
                "            relativeTimeRange: {from: 600, to: 0}",
                "            datasourceUid: prometheus",
                "            model:",
                "              refId: A",
                "              datasource: {type: prometheus, uid: prometheus}",
                "              editorMode: code",
                "              instant: true",
                "              range: false",
                "              intervalMs: 60000",
                "              maxDataPoints: 43200",
                "              expr: |-",
                *[f"                {line}" for line in expr.split("\n")],
                "          - refId: B",
                "            relativeTimeRange: {from: 0, to: 0}",
                "            datasourceUid: __expr__",
                "            model:",
                "              refId: B",
                "              datasource: {type: __expr__, uid: __expr__}",
                "              type: reduce",
                "              expression: A",
                "              reducer: last",
                "              settings: {mode: dropNN}",
                "          - refId: C",
                "            relativeTimeRange: {from: 0, to: 0}",
                "            datasourceUid: __expr__",
                "            model:",
                "              refId: C",
                "              datasource: {type: __expr__, uid: __expr__}",
            ]
            if op in THRESHOLD_TYPES:
                out += [
                    "              type: threshold",
                    "              expression: B",
                    "              conditions:",
                    f"                - evaluator: {{type: {THRESHOLD_TYPES[op]}, params: [{num(value)}]}}",
                ]
            else:
                out += [
                    "              type: math",
                    f"              expression: {yq(f'$B {op} {num(value)}')}",
                ]
            out += [
                "        noDataState: OK",
                "        execErrState: Error",
                f"        for: {rule['for']}",
                "        isPaused: false",
                "        labels:",
                *[f"          {k}: {v}" for k, v in rule.get("labels", {}).items()],
                "        annotations:",
                f"          summary: {yq(summary)}",
                f"          description: {yq(description)}",
                f"          runbook_url: {RUNBOOK}{title.lower()}",
            ]
    return "\n".join(out) + "\n"


def grafana_rule_condition(rule):
    """(query A, op, threshold) of a provisioned Grafana rule, or a problem string."""
    refs = {q.get("refId"): q for q in rule.get("data", [])}
    a, b, c = refs.get("A", {}), refs.get("B", {}).get("model", {}), refs.get(rule.get("condition"), {}).get("model", {})
    if a.get("datasourceUid") != "prometheus" or not a.get("model", {}).get("expr"):
        return "query A is not PromQL on datasource prometheus"
    if b.get("type") != "reduce" or b.get("expression") != "A" or b.get("reducer") != "last":
        return "B is not reduce(last) of A"
    if c.get("type") == "threshold" and c.get("expression") == "B":
        ev = (c.get("conditions") or [{}])[0].get("evaluator", {})
        ops = {v: k for k, v in THRESHOLD_TYPES.items()}
        if ev.get("type") not in ops or len(ev.get("params", [])) != 1:
            return f"unsupported threshold evaluator {ev}"
        return a["model"]["expr"], ops[ev["type"]], ev["params"][0]
    if c.get("type") == "math":
        m = re.fullmatch(r"\$B\s*(>=|<=|==|!=|>|<)\s*(\S+)", c.get("expression", "").strip())
        if m and constant(m.group(2)) is not None:
            return a["model"]["expr"], m.group(1), constant(m.group(2))
    return f"condition {rule.get('condition')} is neither a threshold nor `$B <op> <number>` on B"


def compare_alerts(prom_path, grafana_path):
    """Problems where the committed Grafana rules do not match the Prometheus alerts:
    names, groups, query + condition (the Prometheus expression split as
    grafana_condition() does), threshold, `for`, labels, runbook_url."""
    problems = []
    prom = prometheus_alerts(prom_path)
    with open(grafana_path, encoding="utf-8") as f:
        graf = {r.get("title"): (g.get("name"), r) for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
    for group, rule in prom:
        name = rule["alert"]
        if name not in graf:
            problems.append(f"{name}: no Grafana rule")
            continue
        ggroup, g = graf[name]
        if ggroup != group:
            problems.append(f"{name}: Grafana group {ggroup}, Prometheus group {group}")
        try:
            want = grafana_condition(rule["expr"])
        except AlertShapeError as e:
            problems.append(f"{name}: {e}")
            continue
        got = grafana_rule_condition(g)
        if isinstance(got, str):
            problems.append(f"{name}: Grafana rule: {got}")
        else:
            if squash(got[0]) != squash(want[0]):
                problems.append(f"{name}: Grafana query A {squash(got[0])!r} != {squash(want[0])!r} (from Prometheus)")
            if (got[1], float(got[2])) != (want[1], float(want[2])):
                problems.append(f"{name}: Grafana condition {got[1]} {got[2]} != Prometheus' {want[1]} {want[2]}")
        if str(g.get("for")) != str(rule.get("for")):
            problems.append(f"{name}: Grafana for {g.get('for')} != Prometheus' {rule.get('for')}")
        if g.get("labels") != rule.get("labels"):
            problems.append(f"{name}: Grafana labels {g.get('labels')} != Prometheus' {rule.get('labels')}")
        if g.get("annotations", {}).get("runbook_url") != RUNBOOK + name.lower():
            problems.append(f"{name}: Grafana runbook_url is not {RUNBOOK + name.lower()}")
        if g.get("noDataState") != "OK":
            problems.append(f"{name}: Grafana noDataState must be OK (no data = guard not met)")
    for extra in sorted(set(graf) - {r["alert"] for _, r in prom}):
        problems.append(f"{extra}: Grafana rule without a Prometheus alert")
    return problems


def outputs():
    files = {}
    for name, build in DASHBOARDS.items():
        files[os.path.join("dashboards", name)] = json.dumps(build(), indent=2) + "\n"
    files[os.path.join("provisioning", "alerting", "rules.yml")] = rules_yaml()
    return files


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for rel, content in outputs().items():
        path = os.path.join(HERE, rel)
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    current = f.read()
            except FileNotFoundError:
                current = None
            if current != content:
                stale.append(rel)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
    if stale:
        print("grafana/generate.py: out of date (run python3 grafana/generate.py): " + ", ".join(stale), file=sys.stderr)
    problems = compare_alerts(PROM_ALERTS, os.path.join(HERE, "provisioning", "alerting", "rules.yml"))
    for p in problems:
        print(f"grafana/generate.py: alert rules differ from prometheus/rules/ci-slo-alerts.yml: {p}", file=sys.stderr)
    if stale or problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
