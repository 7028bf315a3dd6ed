"""The one registry of bill formats: the importer's specs, the command line and the rules all follow it."""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields

import pytest

from agent.bills import ImportOptions
from agent.bills.detect import SPECS
from agent.cli import build_parser
from agent.core.bill_formats import BILL_FORMAT_CHOICES, BILL_FORMATS, COLUMN_OVERRIDES
from agent.core.rules import BillColumns, parse_rules
from agent.errors import RulesError


def test_every_format_has_a_spec_and_every_spec_a_format():
    assert sorted(SPECS) == sorted(BILL_FORMATS)


@pytest.mark.parametrize("command", ["allocate", "split"])
def test_the_command_line_offers_the_registered_formats(command):
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    option = next(a for a in subcommands.choices[command]._actions if "--bill-format" in a.option_strings)
    assert tuple(option.choices) == BILL_FORMAT_CHOICES


def test_the_rules_accept_the_registered_formats_only():
    assert typing.get_args(BillColumns.model_fields["format"].annotation) == BILL_FORMAT_CHOICES
    for name in BILL_FORMAT_CHOICES:
        assert parse_rules(f"companies: {{a: 1}}\nbill: {{format: {name}}}\n").bill.format == name
    with pytest.raises(RulesError, match="bill.format: Input should be 'auto', 'native', 'focus', 'cur', 'cur2' "
                                         "or 'azure'"):
        parse_rules("companies: {a: 1}\nbill: {format: sap}\n")


def test_the_overridable_columns_are_one_list_for_the_rules_the_importer_and_the_command_line():
    assert set(BillColumns.model_fields) == {"format", "untagged", "line_id", "duplicates", "engine", "table",
                                              *COLUMN_OVERRIDES}
    assert {f"{column}_column" for column in COLUMN_OVERRIDES} <= {field.name for field in fields(ImportOptions)}
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("allocate", "split"):
        flags = {flag for action in subcommands.choices[command]._actions for flag in action.option_strings
                 if flag.endswith("-column")}
        assert flags == {f"--{column.replace('_', '-')}-column" for column in COLUMN_OVERRIDES}
