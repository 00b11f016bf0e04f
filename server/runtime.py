"""Per-process state: the database, the CA signing key, the parsed policy and inventory.

Loaded once when the app starts (once per gunicorn worker) and swapped as a
whole on reload, so a request always reads one consistent snapshot.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from ca.errors import KRLError
from ca.keys import CAKey, load_ca_key
from ca.krl import build_krl
from hostconfig.inventory import load_inventory
from server import audit
from server.config import Config
from server.db import Database
from server.models import CAKeyRecord, Certificate, RevokedKey
from server.policy import Policy, load_policy
from server.ratelimit import FailureLimiter

logger = logging.getLogger("sshca.server")

# How long after it expires a revoked certificate stays in the KRL.
KRL_RETENTION = timedelta(days=1)


@dataclass(frozen=True)
class Snapshot:
    policy: Policy
    inventory: object  # hostconfig.inventory.Inventory
    signer: CAKey
    ca_public_keys: tuple[str, ...]  # every CA key ever recorded, retired ones included


class Runtime:
    """Process-wide state that every request needs, loaded once and swapped whole on reload."""

    def __init__(self, config: Config, *, database: Database | None = None):
        self.config = config
        self.db = database or Database(config.database_url)
        self._lock = threading.Lock()
        self._krl_cache: tuple[tuple, bytes] | None = None
        self.last_verification = None  # audit.VerifyResult of the newest chain verification in this process
        self._signer_cache: tuple[tuple, CAKey] | None = None
        self.auth_failures = FailureLimiter()
        self._snapshot = self._load()
        self._audit_load("system")

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def reload(self, actor: str = "system") -> Snapshot:
        """Re-read the policy, the inventory and the CA keys; keep the old snapshot if any is invalid.

        Raises the loading error (PolicyError, InventoryError, CAError).
        """
        snapshot = self._load()
        with self._lock:
            self._snapshot = snapshot
        self._audit_load(actor)
        return snapshot

    def _load(self) -> Snapshot:
        config = self.config
        policy = load_policy(
            config.policy,
            max_certificate_lifetime=config.max_certificate_lifetime,
            clock_skew=config.clock_skew,
            request_ttl=config.request_ttl,
        )
        inventory = load_inventory(config.inventory)
        policy.check_targets(inventory)
        signer = self._load_signer()
        with self.db.read() as session:
            ca_public_keys = session.execute(sa.select(CAKeyRecord.public_key)).scalars().all()
        return Snapshot(policy=policy, inventory=inventory, signer=signer,
                        ca_public_keys=tuple(ca_public_keys) + (signer.public_line(),))

    def _load_signer(self) -> CAKey:
        with self.db.read() as session:
            record = session.execute(
                sa.select(CAKeyRecord).where(CAKeyRecord.signing.is_(True), CAKeyRecord.retired_at.is_(None))
            ).scalar_one_or_none()
        path = Path(record.path) if record is not None else self.config.ca_key
        if not path.is_absolute():
            path = self.config.data_dir / path

        # Decrypting the key runs bcrypt's KDF (a fraction of a second), so a
        # reload keeps the loaded key while the file is unchanged.
        try:
            info = path.stat()
        except OSError:
            return load_ca_key(path, self.config.read_passphrase())  # raises CAKeyError naming the file
        cache_key = (str(path), info.st_mtime_ns, info.st_size, info.st_ino)
        if self._signer_cache is not None and self._signer_cache[0] == cache_key:
            return self._signer_cache[1]
        signer = load_ca_key(path, self.config.read_passphrase())
        self._signer_cache = (cache_key, signer)
        return signer

    def _audit_load(self, actor: str) -> None:
        snapshot = self._snapshot
        with self.db.write() as session:
            audit.append_event(
                session,
                actor=actor,
                action="policy.loaded",
                details={
                    "policy": str(self.config.policy),
                    "policy_sha256": snapshot.policy.sha256,
                    "inventory": str(self.config.inventory),
                    "inventory_sha256": snapshot.inventory.sha256,
                    "rules": len(snapshot.policy.rules),
                    "hosts": len(snapshot.inventory.hosts),
                    "ca_fingerprint": snapshot.signer.fingerprint,
                    "pid": os.getpid(),
                },
            )
            session.commit()
            audit.emit_committed(session)
        logger.info(
            "policy and inventory loaded",
            extra={"policy_sha256": snapshot.policy.sha256, "inventory_sha256": snapshot.inventory.sha256},
        )

    def krl(self, session) -> bytes:
        """Return the current KRL, rebuilt only when revocations, CA keys or the hour change.

        A revoked certificate stays in the KRL until a day after it expires.
        By then sshd refuses it anyway, even on a host whose clock is hours
        behind, and leaving it out keeps the KRL small however many
        certificates were revoked over the years.
        """
        horizon = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - KRL_RETENTION
        revoked = (Certificate.revoked_at.is_not(None), Certificate.valid_before > horizon)
        version = session.execute(
            sa.select(sa.func.count(Certificate.serial), sa.func.max(Certificate.revoked_at)).where(*revoked)
        ).one()
        key_version = session.execute(sa.select(sa.func.count(RevokedKey.id), sa.func.max(RevokedKey.id))).one()
        ca_keys = self._all_ca_keys(session)
        cache_key = (horizon, tuple(version), tuple(key_version), tuple(ca_keys))

        cached = self._krl_cache
        if cached is not None and cached[0] == cache_key:
            return cached[1]

        rows = session.execute(
            sa.select(Certificate.serial, Certificate.key_id).where(*revoked).order_by(Certificate.serial)
        ).all()
        keys = session.execute(sa.select(RevokedKey.public_key).order_by(RevokedKey.id)).scalars().all()
        try:
            data = build_krl(serials=[row.serial for row in rows], public_keys=keys, ca_public_keys=ca_keys)
        except KRLError as error:
            if error.code != "unreadable_krl":
                raise
            # Some ssh-keygen versions write serials dense over a wide span
            # in a form they cannot read back. Key IDs name the same
            # certificates (each carries its serial) without that limit.
            logger.warning("KRL by serial unreadable, revoking by key ID instead",
                           extra={"certificates": len(rows), "error": str(error)})
            data = build_krl(serials=[], key_ids=[row.key_id for row in rows], public_keys=keys,
                             ca_public_keys=ca_keys)
        self._krl_cache = (cache_key, data)
        return data

    def _all_ca_keys(self, session) -> list[str]:
        # Serials are revoked per CA key, so the KRL names every key that
        # ever signed, retired ones included.
        rows = session.execute(sa.select(CAKeyRecord.public_key).order_by(CAKeyRecord.id)).scalars().all()
        return list(rows) or [self._snapshot.signer.public_line()]

    def close(self) -> None:
        self.db.dispose()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
