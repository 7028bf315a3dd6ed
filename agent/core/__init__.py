"""The pure core: money, periods, rules, attribution, allocation and split (no I/O, no clock, no pandas or Arrow)."""
