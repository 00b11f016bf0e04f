"""The sshca service: JSON API, web pages, request lifecycle, policy and audit log."""
