"""Fixtures for the postgres test harness."""
