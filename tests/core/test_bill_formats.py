"""The one registry of bill formats: the importer's specs, the command line and the rules all follow it."""

from __future__ import annotations

import argparse
import typing

import pytest

from agent.bills.detect import SPECS
from agent.cli import build_parser
from agent.core.bill_formats import BILL_FORMAT_CHOICES, BILL_FORMATS
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
