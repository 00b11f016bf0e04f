"""Host inventory and the files each host needs to trust sshca."""
