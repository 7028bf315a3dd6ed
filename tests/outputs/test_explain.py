"""The one explain selection (agent.outputs.explain) that `cz-agent explain` and the API's explain endpoint share."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from agent.cli import main
from agent.errors import NoCostError
from agent.outputs.explain import select_explanation
from agent.store.runs import StoredRun, load_run, open_store

WORKED = Path(__file__).resolve().parents[1] / "data" / "worked"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> StoredRun:
    directory = tmp_path_factory.mktemp("explain")
    store = f"sqlite:///{directory / 'runs.db'}"
    assert main(["--store", store, "allocate", "--bill", str(WORKED / "bill.csv"), "--rules", str(WORKED / "rules.yaml"),
                 "--usage", str(WORKED / "usage.csv"), "--period", "2026-10", "--out", str(directory / "r.csv")]) == 0
    return load_run(open_store(store), 1)


def test_the_contributions_of_each_row_add_up_to_it_and_name_their_bill_lines(stored):
    explanation = select_explanation(stored, company="alpha", service="mobile")
    assert explanation.rows and {(r.company, r.service) for r in explanation.rows} == {("alpha", "mobile")}
    for row in explanation.rows:
        pieces = explanation.contributions_to(row)
        assert abs(sum(c.amount for c in pieces) - Fraction(row.amount)) < Fraction(1, 100)
        assert {(line.tag, line.rule) for line in explanation.lines_behind(row)} == {(c.tag, c.rule) for c in pieces}
    keys = sorted({(c.currency, c.tag, c.rule) for c in explanation.contributions})
    assert [(line.currency, line.tag, line.rule) for line in explanation.bill_lines()] == keys


def test_every_service_of_a_company_without_a_service_asked(stored):
    every = select_explanation(stored, company="alpha", service=None)
    assert {r.service for r in every.rows} > {"mobile"}
    assert len(every.contributions) == sum(c.company == "alpha" for c in stored.contributions)


def test_no_cost_names_the_companies_the_run_has(stored):
    with pytest.raises(NoCostError, match=r"^run 1 has no cost for company 'nobody'$") as caught:
        select_explanation(stored, company="nobody", service=None)
    assert caught.value.companies == sorted({c.company for c in stored.contributions})
    with pytest.raises(NoCostError, match=r"^run 1 has no cost for company 'alpha' and service 'nothing'$"):
        select_explanation(stored, company="alpha", service="nothing")
