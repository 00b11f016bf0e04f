"""Fixtures for the sshd test harness."""
