"""The chart tools (helm, helm-unittest, dashboard-linter, hadolint, the operator CRDs) from scripts/helm-tools.sh,
and helpers to run them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "cz-allocation-agent"
ALL_ON_VALUES = CHART / "ci" / "all-on-values.yaml"
HELM_TOOLS = REPO / "scripts" / "helm-tools.sh"


@dataclass(frozen=True)
class ChartTools:
    directory: Path
    # Helm's config, cache and data go here, never to the user's ~/.config/helm.
    helm_home: Path

    @property
    def helm(self) -> Path:
        return self.directory / "helm"

    @property
    def dashboard_linter(self) -> Path:
        return self.directory / "dashboard-linter"

    @property
    def hadolint(self) -> Path:
        return self.directory / "hadolint"

    @property
    def crds(self) -> list[Path]:
        return sorted((self.directory / "crds").glob("*.yaml"))

    def run_helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"HELM_PLUGINS": str(self.directory / "plugins"), "HELM_CONFIG_HOME": str(self.helm_home / "config"),
               "HELM_CACHE_HOME": str(self.helm_home / "cache"), "HELM_DATA_HOME": str(self.helm_home / "data"),
               # client-go keeps its discovery cache under $HOME/.kube: keep it out of the working tree.
               "HOME": str(self.helm_home), "PATH": "/usr/bin:/bin"}
        result = subprocess.run([str(self.helm), *args], capture_output=True, text=True, env=env)
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}",
                        pytrace=False)
        return result

    def render(self, *args: str) -> list[dict]:
        """The chart's objects from `helm template` (release `cz` in namespace `finops`)."""
        rendered = self.run_helm("template", "cz", str(CHART), "--namespace", "finops", *args).stdout
        return [document for document in yaml.safe_load_all(rendered) if document]


def build_chart_tools(helm_home: Path) -> ChartTools:
    """Runs scripts/helm-tools.sh (a no-op once built); a failure fails the test with the script's output."""
    built = subprocess.run(["bash", str(HELM_TOOLS)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.fail(f"{HELM_TOOLS} failed ({built.returncode}); the chart tests need helm, helm-unittest, "
                    f"dashboard-linter and hadolint:\n{built.stderr[-4000:]}", pytrace=False)
    tools = ChartTools(directory=Path(built.stdout.strip()), helm_home=helm_home)
    missing = [str(path) for path in (tools.helm, tools.dashboard_linter, tools.hadolint) if not path.is_file()]
    if missing or len(tools.crds) != 2:
        pytest.fail(f"{HELM_TOOLS} left an incomplete tool directory {tools.directory}: missing {missing or 'CRDs'}",
                    pytrace=False)
    return tools
