"""Monitoring as code: rules, their promtool unit tests, the dashboard, Alertmanager routes.

promtool and amtool are the real ones (Debian's prometheus and prometheus-alertmanager packages,
installed by ``make system-deps``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from scripts import dashboard, rule_tests
from tests.k8s_manifests import ROOT

MONITORING = ROOT / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yaml"))
ALERTMANAGER = MONITORING / "alertmanager" / "alertmanager.yaml"
# Grafana's variables, as "All" and a short rate window, for PromQL outside Grafana.
GRAFANA_VARIABLES = {
    "$namespace": ".*",
    "$model": ".*",
    "$version": ".*",
    "$__rate_interval": "1m",
}


def grafana_free(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: `make system-deps` installs it (Debian package)")
    return path


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_promtool_checks_the_rules() -> None:
    done = run(binary("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_pass_and_are_fresh() -> None:
    assert rule_tests.document() == rule_tests.OUTPUT.read_text(), "run `make rule-tests`"
    done = run(binary("promtool"), "test", "rules", str(rule_tests.OUTPUT))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test_on_both_sides() -> None:
    """Each alert is expected to fire at one time and to be silent at an earlier one."""
    checks = [c for t in rule_tests.cases() for c in t["alert_rule_test"]]
    for name in {r["alert"] for r in rules() if "alert" in r}:
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: never expected to fire"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: never expected to be silent"


def test_every_alert_is_complete_and_has_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9-]", "", line[3:].strip().lower().replace(" ", "-"))
        for line in (MONITORING / "RUNBOOK.md").read_text().splitlines()
        if line.startswith("## ")
    }
    alerts = [r for r in rules() if "alert" in r]
    assert len({a["alert"] for a in alerts}) >= 10
    for alert in alerts:
        name = alert["alert"]
        assert re.fullmatch(r"(ModelServer|Trainer)[A-Z][A-Za-z0-9]+", name)
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert re.fullmatch(r"\d+[mh]", alert["for"]), name
        annotations = alert["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        url = annotations["runbook_url"]
        assert url.endswith(f"RUNBOOK.md#{name.lower()}"), name
        assert name.lower() in anchors, f"RUNBOOK.md has no section for {name}"


def test_recording_rules_are_named_level_metric_operation() -> None:
    records = [r["record"] for r in rules() if "record" in r]
    assert records
    for record in records:
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", record), record


def test_slo_alerts_are_multi_window_multi_burn_rate() -> None:
    for slo in ("Availability", "Latency"):
        pair = [r for r in rules() if r.get("alert") == f"ModelServer{slo}BudgetBurn"]
        exprs = {r["labels"]["severity"]: r["expr"] for r in pair}
        assert set(exprs) == {"critical", "warning"}
        for factor, long, short in (("14.4", "1h", "5m"), ("6", "6h", "30m")):
            assert f"ratio_rate{long} > ({factor} *" in exprs["critical"]
            assert f"ratio_rate{short} > ({factor} *" in exprs["critical"]
        for factor, long, short in (("3", "1d", "2h"), ("1", "3d", "6h")):
            assert f"ratio_rate{long} > ({factor} *" in exprs["warning"]
            assert f"ratio_rate{short} > ({factor} *" in exprs["warning"]


# -- dashboard ---------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dashboard.OUTPUT.read_text())
    return data


def test_dashboard_is_generated_and_fresh() -> None:
    assert dashboard.render() == dashboard.OUTPUT.read_text(), "run `make dashboard`"


def test_dashboard_uid_and_variables() -> None:
    board = load_dashboard()
    assert board["uid"] == "model-serving"
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "namespace", "model", "version"]
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_dashboard_covers_what_an_sre_needs() -> None:
    titles = " | ".join(title for title, _ in dashboard.expressions()).lower()
    for needed in (
        "requests per second by version",
        "traffic share",
        "error ratio",
        "p50, p95, p99",
        "inference-only",
        "batch size",
        "predictions per class",
        "drift",
        "missing values imputed by feature",
        "model info",
        "error budget",
        "since the last successful training",
        "training scores",
        "prediction log",
    ):
        assert needed in titles


def unknown_keys(original: Any, round_trip: Any, path: str = "") -> list[str]:
    if isinstance(original, dict):
        if not isinstance(round_trip, dict):
            return [path or "."]
        found = []
        for key, value in original.items():
            if key not in round_trip:
                found.append(f"{path}.{key}")
            else:
                found += unknown_keys(value, round_trip[key], f"{path}.{key}")
        return found
    if isinstance(original, list):
        if not isinstance(round_trip, list) or len(original) != len(round_trip):
            return [path]
        return [
            key
            for i, (a, b) in enumerate(zip(original, round_trip, strict=True))
            for key in unknown_keys(a, b, f"{path}[{i}]")
        ]
    return []


def round_trip(board: dict[str, Any]) -> Any:
    plugins.register_default_plugins()
    return json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))


def test_dashboard_round_trips_through_grafana_foundation_sdk() -> None:
    board = load_dashboard()
    assert unknown_keys(board, round_trip(board)) == []


def test_the_round_trip_does_find_unknown_keys() -> None:
    board = load_dashboard()
    board["panels"][1]["fieldConfg"] = {}
    board["templating"]["list"][1]["definitionn"] = "x"
    assert unknown_keys(board, round_trip(board)) == [
        ".templating.list[1].definitionn",
        ".panels[1].fieldConfg",
    ]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each panel's PromQL (Grafana's variables set to All)."""
    queries = list(dashboard.expressions())
    assert len(queries) >= 15
    records: list[dict[str, str]] = [
        {"record": f"dashboard:query:n{i}", "expr": grafana_free(expr)}
        for i, (_, expr) in enumerate(queries)
    ]
    groups = [{"name": "dashboard", "rules": records}]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    done = run(binary("promtool"), "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    # And a broken query is caught.
    records[0]["expr"] = "sum by (model_version (rate(x[1m]))"
    path.write_text(yaml.safe_dump({"groups": groups}))
    assert run(binary("promtool"), "check", "rules", str(path)).returncode != 0


# -- Alertmanager ------------------------------------------------------------------------


def test_amtool_checks_the_config() -> None:
    done = run(binary("amtool"), "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, done.stdout + done.stderr


def route_test(receiver: str, labels: list[str]) -> subprocess.CompletedProcess[str]:
    return run(
        binary("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receiver}",
        *labels,
    )


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "model_name=m", "namespace=n"], "page"),
        (["severity=warning", "model_name=m", "namespace=n"], "ticket"),
        (["alertname=Unlabelled"], "ticket"),
    ],
)
def test_amtool_routes(labels: list[str], receiver: str) -> None:
    done = route_test(receiver, labels)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receiver
    wrong = "ticket" if receiver == "page" else "page"
    assert route_test(wrong, labels).returncode != 0


def test_alertmanager_config_groups_and_inhibits() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    assert {"namespace", "model_name"} <= set(config["route"]["group_by"])
    (inhibit,) = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert set(inhibit["equal"]) == {"namespace", "model_name"}


def runbook_sections() -> dict[str, str]:
    text = (MONITORING / "RUNBOOK.md").read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_alert_mitigation_checks_what_is_in_flight_first() -> None:
    """A canary or an experiment in progress changes the right step: each alert's mitigation
    starts by pointing at both status commands."""
    sections = runbook_sections()
    assert "model-rollout status NAME -n NS" in sections["Before any mitigation"]
    assert "model-rollout experiment status NAME -n NS" in sections["Before any mitigation"]
    for name in {r["alert"] for r in rules() if "alert" in r}:
        mitigate = sections[name].split("**Mitigate.**", 1)
        assert len(mitigate) == 2, f"{name}: no Mitigate paragraph"
        first = mitigate[1].lstrip()
        assert first.startswith("First [what is in flight](#before-any-mitigation)"), name


def test_the_runbook_commands_are_safe_on_a_laptop_and_on_a_release() -> None:
    """Every model-registry command names the registry (on an on-call laptop the default is
    ./registry, which answers "not found"); the safe rollback comes first; no whole-object
    kustomize apply that would replace a Helm release's spec."""
    text = (MONITORING / "RUNBOOK.md").read_text()
    calls = re.findall(r"model-registry [^`\n]*", text)
    assert calls
    for call in calls:
        assert call.startswith("model-registry --registry-uri "), call
    mitigations = runbook_sections()["Common mitigations"]
    assert mitigations.index("model-rollout rollback NAME -n NS") < mitigations.index("kubectl")
    assert "kubectl apply -n NS -k" not in text
    assert not re.search(r"kubectl apply[^\n]*k8s/overlays/(rollback|promote)", text)
