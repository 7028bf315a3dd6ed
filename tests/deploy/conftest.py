"""Fixtures of the deployment tests: the chart tools, built once per machine and cached."""

from __future__ import annotations

import pytest

from tests.deploy.tools import ChartTools, build_chart_tools


@pytest.fixture(scope="session")
def chart_tools(tmp_path_factory: pytest.TempPathFactory) -> ChartTools:
    return build_chart_tools(tmp_path_factory.mktemp("helm-home"))
