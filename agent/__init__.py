"""cz-allocation-agent: exact chargeback of cloud bills to companies and services."""

__version__ = "0.1.0"
