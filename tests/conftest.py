"""Shared fixtures. The real-service fixtures live in their own modules (one job each)."""

pytest_plugins = ["fixtures_core", "fixtures_kafka", "fixtures_prometheus", "fixtures_edge"]
