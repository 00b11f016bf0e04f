"""The ``sshca`` command."""
