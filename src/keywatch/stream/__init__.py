"""The faust wiring: topics, the state table and the two agents. No detection logic lives here."""
