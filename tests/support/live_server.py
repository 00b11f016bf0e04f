"""Fixtures for the live_server test harness."""
