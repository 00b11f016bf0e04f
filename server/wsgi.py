"""Run the app under gunicorn, through its Python API (no shell-out).

Each worker process builds its own app, so the CA key, the policy and the
inventory are loaded once per worker. On SIGHUP gunicorn starts
fresh workers, which is how a policy or CA key change reaches a running
server without a restart.
"""

from __future__ import annotations

import sys

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from server.config import Config


class CheckingArbiter(Arbiter):
    """A gunicorn master that checks the files before it acts on SIGHUP.

    On SIGHUP gunicorn starts new workers. A worker that cannot load the
    policy fails to boot, and gunicorn then stops the whole server. So the master loads the configuration, policy and inventory
    first, and on an error logs it and keeps the running workers.
    """

    def handle_hup(self):
        from server.admin import check_policy
        from server.config import load_config

        source = self.app.sshca_config.source
        try:
            config = load_config(source) if source != "defaults" else self.app.sshca_config
            check_policy(config)
        except (ValueError, OSError) as error:  # CAError, ConfigError, PolicyError, TOMLDecodeError
            self.log.error("SIGHUP ignored, the workers keep the files they loaded: %s", error)
            return
        super().handle_hup()


class SSHCAApplication(BaseApplication):
    def __init__(self, config: Config, options: dict):
        self.sshca_config = config
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)
        # Gunicorn 27 opens a control socket at one path per user
        # (~/.gunicorn/gunicorn.ctl), shared by every server that user runs.
        # sshca does not use it.
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)
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
    application = SSHCAApplication(config, options)
    try:
        CheckingArbiter(application).run()
    except RuntimeError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
