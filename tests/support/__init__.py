"""What the tests share: the real servers' fixtures (registered as pytest plugins by tests/conftest.py), a served
agent, free ports, waiting and log tails, and helpers over a run store."""
