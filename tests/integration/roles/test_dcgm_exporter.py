# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the dcgm_exporter role renders, and the MIG-aware dashboard it ships."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from roles_helpers import REPO, by_kind_name, dump_task, read_json, run_playbook

from gpuops_sim.k8s import agents_nvidia as daemons

ROLE = "gpuops.nvidia.dcgm_exporter"
DASHBOARD = REPO / "files" / "dashboards" / "dcgm-exporter-mig.json"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("dcgm-render")
    cases = {"defaults": {}, "custom": {"dcgm_exporter_port": 9500, "dcgm_exporter_image_pull_secrets": ["mirror"],
                                        "dcgm_exporter_kubernetes_pod_mapping": False,
                                        "dcgm_exporter_service_monitor_labels": {"release": "kube-prometheus-stack"}}}
    monitor = str(REPO / "roles/dcgm_exporter/templates/servicemonitor.yml.j2")
    plays = [{"name": name, "hosts": "localhost", "gather_facts": False, "vars": variables, "tasks": [
        {"name": "Render", "ansible.builtin.include_role": {"name": ROLE, "tasks_from": "render.yml", "public": True}},
        dump_task(tmp / f"{name}.json", "{'objects': dcgm_exporter_objects, 'monitor': lookup('ansible.builtin.template', '"
                  + monitor + "') | from_yaml}")]} for name, variables in cases.items()]
    run = run_playbook(tmp, plays)
    assert run.returncode == 0, run.output
    return {path.stem: read_json(path) for path in tmp.glob("*.json")}


def test_the_daemonset_is_the_exporter_on_gpu_nodes(rendered: dict[str, Any]) -> None:
    objects = by_kind_name(rendered["defaults"]["objects"])
    spec = objects["DaemonSet/nvidia-dcgm-exporter"]["spec"]["template"]["spec"]
    roles = daemons.pod_roles(spec)
    assert list(roles) == ["dcgm-exporter"]
    assert roles["dcgm-exporter"]["image"] == "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.deploy.dcgm-exporter": "true"}
    assert {"key": "gpuops.io/mig-reconfigure", "operator": "Exists"} in spec["tolerations"]
    assert {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"} in roles["dcgm-exporter"]["env"]


def test_least_privilege(rendered: dict[str, Any]) -> None:
    objects = by_kind_name(rendered["defaults"]["objects"])
    assert not [key for key in objects if key.split("/")[0] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
    assert objects["ServiceAccount/dcgm-exporter"]["automountServiceAccountToken"] is False
    spec = objects["DaemonSet/nvidia-dcgm-exporter"]["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    context = spec["containers"][0]["securityContext"]
    assert context["capabilities"] == {"add": ["SYS_ADMIN"], "drop": ["ALL"]}
    assert context["allowPrivilegeEscalation"] is False


def test_service_and_monitor_select_the_exporter_pods(rendered: dict[str, Any]) -> None:
    case = rendered["custom"]
    objects = by_kind_name(case["objects"])
    pod_labels = objects["DaemonSet/nvidia-dcgm-exporter"]["spec"]["template"]["metadata"]["labels"]
    service = objects["Service/nvidia-dcgm-exporter"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9500, "targetPort": "metrics", "protocol": "TCP"}]
    container = objects["DaemonSet/nvidia-dcgm-exporter"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "DCGM_EXPORTER_LISTEN", "value": ":9500"} in container["env"]
    assert {"name": "DCGM_EXPORTER_KUBERNETES", "value": "false"} in container["env"]
    monitor = case["monitor"]
    assert monitor["kind"] == "ServiceMonitor" and monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The monitor is only added when the Prometheus Operator's CRD exists (tasks/service_monitor.yml).
    assert "ServiceMonitor/nvidia-dcgm-exporter" not in objects


def test_the_dashboard_shows_gpus_and_mig_instances() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    expressions = [t["expr"] for p in panels for t in p["targets"]]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for metric in ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"):
        assert any(metric in e for e in expressions), metric
    # Per MIG instance: grouped or legended by profile and instance id.
    mig_panels = [p for p in panels if any('GPU_I_ID!=""' in t["expr"] for t in p["targets"])]
    assert len(mig_panels) >= 5
    for panel in mig_panels:
        for target in panel["targets"]:
            assert "GPU_I_PROFILE" in target["expr"] + target.get("legendFormat", "")
    # Every query uses the dashboard's variables, and every variable it uses exists.
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    used = {name for e in expressions for name in re.findall(r"\$(\w+)", e)}
    assert used <= variables and {"node", "gpu", "profile"} <= used
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    # Balanced braces and parentheses in every PromQL expression.
    for expression in expressions:
        assert expression.count("{") == expression.count("}") and expression.count("(") == expression.count(")"), expression
