"""`cz-agent serve`: the inbox, scheduled jobs, the HTTP API, the /metrics collector, leader election."""
