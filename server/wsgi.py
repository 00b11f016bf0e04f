"""Run the app under gunicorn, through its Python API (no shell-out).

Each worker process builds its own app, so the CA key, the policy and the
inventory are loaded once per worker. On SIGHUP gunicorn starts
fresh workers, which is how a policy or CA key change reaches a running
server without a restart.
"""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from server.config import Config


class SSHCAApplication(BaseApplication):
    def __init__(self, config: Config, options: dict):
        self.sshca_config = config
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)
        # Import the code (not the app) in the master, so a forked worker only
        # loads the configuration, the CA key and the policy. That keeps the
        # pause short when SIGHUP replaces every worker at once.
        import server.app  # noqa: F401

    def load(self):
        from server.app import create_app
        from server.config import load_config
        from server.logs import configure_logging

        # Re-read the file on every worker start, so SIGHUP also picks up config changes.
        config = load_config(self.sshca_config.source) if self.sshca_config.source != "defaults" else self.sshca_config
        configure_logging(config.log_level)
        return create_app(config)


def run(config: Config, options: dict) -> None:
    """Serve until stopped; ``options`` are gunicorn settings such as bind and workers."""
    SSHCAApplication(config, options).run()
