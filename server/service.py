"""The request lifecycle: every decision the API and the web pages make goes through here.

States::

    pending --(approvals reach quorum)--> approved --(window ends)--> expired
    pending --(one eligible deny)--> denied
    pending --(requester)--> cancelled
    pending --(request_ttl passes)--> expired
    approved --(requester, approver or admin)--> revoked

Terminal states never change. Expiry is applied lazily: a request whose time
has passed reads as ``expired`` at once, and is stored (and audited) as
expired the next time an operation touches it.

Each public method of :class:`Service` checks its input and permissions
before it writes anything, writes its audit event in the same transaction as
its change, and commits before it returns.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import unicodedata
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from ca.certs import CertificateSpec, key_id_for, sign_certificate
from ca.durations import format_duration, parse_duration, parse_time
from ca.principals import MAX_PRINCIPALS, grant_principals, parse_target, validate_host, validate_login
from ca.userkeys import parse_user_key
from server import audit
from server.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from server.models import AccessRequest, Approval, AuditEvent, Certificate, RevokedKey, Token, User
from server.runtime import Runtime

logger = logging.getLogger("sshca.server")

STATES = ("pending", "approved", "denied", "cancelled", "expired", "revoked")
MAX_REASON_LENGTH = 2000
MAX_COMMENT_LENGTH = 2000
MAX_TOKEN_LENGTH = 256
MAX_START_AHEAD = timedelta(days=30)
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
TOKEN_PREFIX = "sshca_"
INVALID_TOKEN_MESSAGE = (
    "the API token is unknown, expired or revoked; ask an admin for a new one "
    "('sshca admin token create NAME')"
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def whole_seconds(value: datetime) -> datetime:
    """Round down to the second, the precision of certificate times."""
    return value.replace(microsecond=0)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_is_valid(token: Token, now: datetime) -> bool:
    """Tell whether a stored token may still authenticate: not revoked and not expired."""
    return token.revoked_at is None and (token.expires_at is None or now < token.expires_at)


def effective_state(request: AccessRequest, now: datetime) -> str:
    """Return the request's state at ``now``, counting deadlines that passed as expired."""
    if request.state == "pending" and now >= request.expires_at:
        return "expired"
    if request.state == "approved" and request.ends_at is not None and now >= request.ends_at:
        return "expired"
    return request.state


class Service:
    """The lifecycle operations, bound to one database session and one runtime snapshot."""

    def __init__(self, runtime: Runtime, session: Session, *, now: datetime | None = None):
        self.runtime = runtime
        self.session = session
        self.snapshot = runtime.snapshot
        self.now = now or utcnow()

    # -- transactions ------------------------------------------------------

    def _commit(self) -> None:
        try:
            self.session.commit()
        except Exception:
            audit.discard_uncommitted(self.session)
            raise
        audit.emit_committed(self.session)

    def _audit(self, actor: User | str, action: str, **fields) -> AuditEvent:
        name = actor if isinstance(actor, str) else actor.name
        # The event time is taken under the append lock, so times never go
        # backwards along the chain (on one clock).
        return audit.append_event(self.session, actor=name, action=action, **fields)

    def _decision_hashes(self) -> dict:
        return {
            "policy_sha256": self.snapshot.policy.sha256,
            "inventory_sha256": self.snapshot.inventory.sha256,
        }

    # -- authentication ----------------------------------------------------

    def authenticate(self, token: str | None) -> User:
        """Return the user owning ``token``.

        Raises Unauthorized with the same message for an unknown, expired or
        revoked token, so the response gives an attacker nothing to go on.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("invalid_token", INVALID_TOKEN_MESSAGE)

        digest = hash_token(token)
        row = self.session.execute(sa.select(Token).where(Token.token_hash == digest)).scalar_one_or_none()
        # The lookup is by hash, so timing reveals nothing about the token;
        # compare_digest keeps the final check constant-time as well.
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            raise Unauthorized("invalid_token", INVALID_TOKEN_MESSAGE)
        if not token_is_valid(row, self.now):
            raise Unauthorized("invalid_token", INVALID_TOKEN_MESSAGE)
        return row.user

    def _require_active(self, actor: User) -> None:
        if actor.disabled:
            raise Forbidden("user_disabled", f"user {actor.name!r} is disabled; ask an admin to enable the account")

    # -- input checks ------------------------------------------------------

    @staticmethod
    def _text(value, field: str, *, required: bool, limit: int) -> str:
        if value is None:
            if required:
                raise InvalidInput("missing_field", f"missing field '{field}'", field=field)
            return ""
        if not isinstance(value, str):
            raise InvalidInput("invalid_type", f"field '{field}' must be a string, got {_json_type(value)}", field=field)
        if required and not value.strip():
            raise InvalidInput("missing_field", f"field '{field}' must not be empty; say why you need access", field=field)
        if len(value) > limit:
            raise InvalidInput("too_long", f"field '{field}' is {len(value)} characters long; the limit is {limit}", field=field)
        if any(ord(char) < 32 and char not in "\t\n" for char in value) or "\x7f" in value:
            raise InvalidInput("invalid_characters", f"field '{field}' contains control characters; remove them", field=field)
        # Format characters (Unicode category Cf) include the bidirectional
        # overrides, with which a requester could make a reason read
        # differently to approvers than it is stored.
        formatting = next((char for char in value if unicodedata.category(char) == "Cf"), None)
        if formatting is not None:
            raise InvalidInput(
                "invalid_characters",
                f"field '{field}' contains the invisible format character U+{ord(formatting):04X}; remove it",
                field=field,
            )
        return value

    @staticmethod
    def _duration(value, field: str = "duration") -> timedelta:
        if value is None:
            raise InvalidInput("missing_field", f"missing field '{field}', for example \"2h\"", field=field)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InvalidInput(
                "invalid_type", f"field '{field}' must be a string such as \"2h\" or whole seconds, got {_json_type(value)}",
                field=field,
            )
        return parse_duration(value, field=field)

    def _targets(self, hosts) -> list[str]:
        """Validate the requested hosts: a non-empty list of known host names and ``group:<name>`` entries."""
        if hosts is None:
            raise InvalidInput("missing_field", "missing field 'hosts', a list of host names or group:<name>", field="hosts")
        if not isinstance(hosts, list):
            raise InvalidInput("invalid_type", f"field 'hosts' must be a list of strings, got {_json_type(hosts)}", field="hosts")
        if not hosts:
            raise InvalidInput("missing_field", "field 'hosts' must name at least one host or group:<name>", field="hosts")
        if len(hosts) > MAX_PRINCIPALS:
            raise InvalidInput(
                "too_many_hosts", f"field 'hosts' lists {len(hosts)} entries, more than {MAX_PRINCIPALS}; request a host group",
                field="hosts",
            )

        inventory = self.snapshot.inventory
        seen = set()
        for entry in hosts:
            if not isinstance(entry, str):
                raise InvalidInput("invalid_type", f"each entry of 'hosts' must be a string, got {_json_type(entry)}", field="hosts")
            kind, name = parse_target(entry)
            if entry in seen:
                raise InvalidInput("duplicate_host", f"host {entry!r} is listed twice in 'hosts'; list it once", field="hosts")
            seen.add(entry)
            if kind == "host" and name not in inventory.hosts:
                raise InvalidInput("unknown_host", f"unknown host {entry!r}: the inventory does not list it; check the name", field="hosts")
            if kind == "group" and not inventory.hosts_in_group(name):
                raise InvalidInput("unknown_group", f"unknown host group {entry!r}: no host in the inventory belongs to it", field="hosts")
        return list(hosts)

    def _check_login_on_targets(self, login: str, targets: list[str]) -> None:
        inventory = self.snapshot.inventory
        for target in targets:
            for host_name in inventory.expand_targets([target]):
                host = inventory.hosts[host_name]
                if login not in host.logins:
                    raise InvalidInput(
                        "invalid_login",
                        f"login {login!r} does not exist on host {host_name!r} (from {target!r}); "
                        f"the inventory lists: {', '.join(host.logins) or 'no logins'}",
                        field="login",
                    )

    # -- requests ----------------------------------------------------------

    def create_request(self, actor: User, *, hosts, login, duration, reason, starts_at=None,
                       extends: AccessRequest | None = None) -> AccessRequest:
        """Create a pending request under the first matching rule.

        Raises InvalidInput or CAError for bad input (400), Forbidden when no
        rule lets ``actor`` request it (403).
        """
        self._require_active(actor)

        targets = self._targets(hosts)
        if login is None:
            raise InvalidInput("missing_field", "missing field 'login', the account to log in as", field="login")
        if not isinstance(login, str):
            raise InvalidInput("invalid_type", f"field 'login' must be a string, got {_json_type(login)}", field="login")
        validate_login(login)
        self._check_login_on_targets(login, targets)
        grant_principals(login, targets)

        length = self._duration(duration)
        reason = self._text(reason, "reason", required=True, limit=MAX_REASON_LENGTH)

        requested_start = None
        if starts_at is not None:
            if not isinstance(starts_at, str):
                raise InvalidInput("invalid_type", f"field 'starts_at' must be an ISO 8601 time string, got {_json_type(starts_at)}", field="starts_at")
            requested_start = whole_seconds(parse_time(starts_at, field="starts_at"))
            if requested_start > self.now + MAX_START_AHEAD:
                raise InvalidInput(
                    "starts_at_too_far",
                    f"starts_at {starts_at!r} is more than {MAX_START_AHEAD.days} days ahead; request closer to the time",
                    field="starts_at",
                )

        policy = self.snapshot.policy
        rule = policy.match(actor.name, actor.group_names, targets, login, self.snapshot.inventory)
        if rule is None:
            raise Forbidden(
                "no_matching_rule",
                f"no policy rule lets {actor.name!r} request {', '.join(targets)} as {login!r}; "
                "ask an admin to add a rule to the policy",
            )
        if length > rule.max_duration:
            raise InvalidInput(
                "duration_too_long",
                f"duration {duration!r} ({format_duration(length)}) is longer than the {format_duration(rule.max_duration)} "
                f"that rule {rule.name!r} allows; request at most {format_duration(rule.max_duration)}",
                field="duration",
            )

        created = whole_seconds(self.now)
        request = AccessRequest(
            requester_id=actor.id,
            hosts=targets,
            login=login,
            reason=reason,
            rule=rule.name,
            approvals_required=rule.approvals,
            duration_seconds=int(length.total_seconds()),
            requested_start=requested_start,
            state="pending",
            created_at=created,
            expires_at=created + policy.request_ttl,
            extends_id=extends.id if extends is not None else None,
            **self._decision_hashes(),
        )
        self.session.add(request)
        self.session.flush()

        self._audit(actor, "request.created", request_id=request.id, details={
            "hosts": targets,
            "login": login,
            "duration_seconds": request.duration_seconds,
            "reason": reason,
            "rule": rule.name,
            "approvals_required": rule.approvals,
            "requested_start": iso(requested_start),
            "expires_at": iso(request.expires_at),
            "extends": request.extends_id,
            **self._decision_hashes(),
        })
        self._commit()
        logger.info("request created", extra={"request_id": request.id, "user": actor.name, "rule": rule.name})
        return request

    def _lock_request(self, request_id) -> AccessRequest:
        if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 1:
            raise NotFound("not_found", f"request {request_id!r} not found")
        request = self.session.execute(
            sa.select(AccessRequest).where(AccessRequest.id == request_id).with_for_update()
        ).scalar_one_or_none()
        if request is None:
            raise NotFound("not_found", f"request {request_id} not found")
        return request

    def _expire_if_due(self, request: AccessRequest) -> None:
        """Store the expiry of a request whose deadline passed, audit it, and raise Conflict."""
        if effective_state(request, self.now) != "expired" or request.state == "expired":
            return
        previous = request.state
        request.state = "expired"
        request.closed_at = self.now
        self._audit("system", "request.expired", request_id=request.id, details={"from": previous})
        self._commit()
        if previous == "pending":
            raise Conflict("expired", f"request {request.id} expired at {iso(request.expires_at)} before it was approved; create a new request")
        raise Conflict("expired", f"the access window of request {request.id} ended at {iso(request.ends_at)}; create a new request")

    def _require_state(self, request: AccessRequest, wanted: str, action: str) -> None:
        self._expire_if_due(request)
        if request.state != wanted:
            raise Conflict(
                "invalid_state",
                f"request {request.id} is {request.state}; only {'an' if wanted[0] in 'aeiou' else 'a'} {wanted} request can be {action}",
            )

    def _rule_for_approver(self, actor: User, request: AccessRequest):
        if actor.id == request.requester_id:
            raise Forbidden("self_approval", f"you cannot approve or deny your own request {request.id}; ask another approver")
        rule = self.snapshot.policy.rule(request.rule)
        if rule is None:
            raise Forbidden(
                "rule_removed",
                f"rule {request.rule!r} of request {request.id} is no longer in the policy, so nobody can approve it",
            )
        if not rule.allows_approver(actor.name, actor.group_names):
            raise Forbidden(
                "not_an_approver",
                f"{actor.name!r} is not an approver under rule {rule.name!r} of request {request.id}",
            )
        return rule

    def approve(self, actor: User, request_id: int, *, comment=None) -> AccessRequest:
        """Record ``actor``'s approval; the request becomes approved when the quorum is reached."""
        return self._decide(actor, request_id, "approve", comment)

    def deny(self, actor: User, request_id: int, *, comment=None) -> AccessRequest:
        """Deny a pending request; one eligible deny is final."""
        return self._decide(actor, request_id, "deny", comment)

    def _decide(self, actor: User, request_id: int, decision: str, comment) -> AccessRequest:
        self._require_active(actor)
        comment = self._text(comment, "comment", required=False, limit=MAX_COMMENT_LENGTH)

        request = self._lock_request(request_id)
        self._rule_for_approver(actor, request)
        verb = "approved" if decision == "approve" else "denied"
        self._require_state(request, "pending", verb)

        already = self.session.execute(
            sa.select(Approval).where(Approval.request_id == request.id, Approval.approver_id == actor.id)
        ).scalar_one_or_none()
        if already is not None:
            raise Conflict(
                "already_decided",
                f"{actor.name!r} already {'approved' if already.decision == 'approve' else 'denied'} request {request.id}; "
                "each approver counts once",
            )

        self.session.add(Approval(
            request_id=request.id, approver_id=actor.id, decision=decision, comment=comment, created_at=self.now,
        ))
        self.session.flush()

        hashes = self._decision_hashes()
        if decision == "deny":
            request.state = "denied"
            request.closed_at = self.now
            self._audit(actor, "request.denied", request_id=request.id, details={"comment": comment, **hashes})
        else:
            approvals = self.session.execute(
                sa.select(sa.func.count()).select_from(Approval)
                .where(Approval.request_id == request.id, Approval.decision == "approve")
            ).scalar_one()
            self._audit(actor, "request.approval", request_id=request.id, details={
                "comment": comment, "approvals": approvals, "approvals_required": request.approvals_required, **hashes,
            })
            if approvals >= request.approvals_required:
                start = whole_seconds(self.now)
                if request.requested_start is not None and request.requested_start > start:
                    start = request.requested_start
                request.state = "approved"
                request.starts_at = start
                request.ends_at = start + timedelta(seconds=request.duration_seconds)
                self._audit("system", "request.approved", request_id=request.id, details={
                    "approvals": approvals, "starts_at": iso(request.starts_at), "ends_at": iso(request.ends_at), **hashes,
                })

        self._commit()
        message = "request denied" if decision == "deny" else "approval recorded"
        logger.info(message, extra={"request_id": request.id, "user": actor.name, "state": request.state})
        return request

    def cancel(self, actor: User, request_id: int) -> AccessRequest:
        """Cancel the actor's own pending request."""
        self._require_active(actor)
        request = self._lock_request(request_id)
        if request.requester_id != actor.id:
            raise Forbidden("not_requester", f"only the requester can cancel request {request.id}")
        self._require_state(request, "pending", "cancelled")

        request.state = "cancelled"
        request.closed_at = self.now
        self._audit(actor, "request.cancelled", request_id=request.id)
        self._commit()
        return request

    def revoke(self, actor: User, request_id: int, *, reason) -> AccessRequest:
        """End an approved request early; every serial issued under it goes into the KRL."""
        self._require_active(actor)
        reason = self._text(reason, "reason", required=True, limit=MAX_REASON_LENGTH)
        request = self._lock_request(request_id)

        rule = self.snapshot.policy.rule(request.rule)
        is_approver = rule is not None and rule.allows_approver(actor.name, actor.group_names)
        if not (actor.id == request.requester_id or is_approver or actor.is_admin):
            raise Forbidden(
                "not_allowed", f"only the requester, an approver of rule {request.rule!r} or an admin can revoke request {request.id}",
            )
        self._require_state(request, "approved", "revoked")

        serials = self._revoke_one(actor, request, reason)

        # An extension continues the grant it extends, so revoking a grant
        # also ends its extensions: pending ones are cancelled, approved ones
        # revoked. Otherwise a later approval would reopen the access.
        for extension in self._extensions_of(request):
            state = effective_state(extension, self.now)
            if state == "pending":
                extension.state = "cancelled"
                extension.closed_at = self.now
                self._audit(actor, "request.cancelled", request_id=extension.id, details={
                    "reason": f"request {request.id}, which it extends, was revoked",
                })
            elif state == "approved":
                self._revoke_one(actor, extension, f"request {request.id}, which it extends, was revoked")

        self._commit()
        logger.info("request revoked", extra={"request_id": request.id, "user": actor.name, "serials": serials})
        return request

    def _revoke_one(self, actor: User, request: AccessRequest, reason: str) -> list[int]:
        """Mark ``request`` and its certificates revoked and audit it; return the serials."""
        certificates = self.session.execute(
            sa.select(Certificate).where(Certificate.request_id == request.id).order_by(Certificate.serial)
        ).scalars().all()
        for certificate in certificates:
            if certificate.revoked_at is None:
                certificate.revoked_at = self.now
        request.state = "revoked"
        request.closed_at = self.now
        serials = [certificate.serial for certificate in certificates]
        self._audit(actor, "request.revoked", request_id=request.id, details={"reason": reason, "serials": serials})
        return serials

    def _extensions_of(self, request: AccessRequest) -> list[AccessRequest]:
        """Return every request that extends ``request``, directly or through other extensions, locked."""
        found = []
        parents = [request.id]
        while parents:
            children = self.session.execute(
                sa.select(AccessRequest).where(AccessRequest.extends_id.in_(parents))
                .order_by(AccessRequest.id).with_for_update()
            ).scalars().all()
            found.extend(children)
            parents = [child.id for child in children]
        return found

    def extend(self, actor: User, request_id: int, *, duration, reason) -> AccessRequest:
        """Create a pending request for the same hosts and login, starting when this grant ends."""
        self._require_active(actor)
        request = self.session.get(AccessRequest, request_id) if isinstance(request_id, int) else None
        if request is None:
            raise NotFound("not_found", f"request {request_id!r} not found")
        if request.requester_id != actor.id:
            raise Forbidden("not_requester", f"only the requester can extend request {request.id}")
        if effective_state(request, self.now) != "approved":
            raise Conflict(
                "invalid_state",
                f"request {request.id} is {effective_state(request, self.now)}; only an approved request within its window can be extended",
            )
        return self.create_request(
            actor, hosts=list(request.hosts), login=request.login, duration=duration, reason=reason,
            starts_at=iso(request.ends_at), extends=request,
        )

    # -- certificates --------------------------------------------------------

    def issue_certificate(self, actor: User, request_id: int, *, public_key) -> Certificate:
        """Sign ``public_key`` for the approved request and commit it with its audit event.

        Checks the user, the rule, the hosts and the logins again against the
        current policy and inventory. A failed check is audited as
        ``certificate.refused`` and raises Forbidden.
        """
        if public_key is None:
            raise InvalidInput("missing_field", "missing field 'public_key', the content of your .pub file", field="public_key")
        if not isinstance(public_key, str):
            raise InvalidInput("invalid_type", f"field 'public_key' must be a string, got {_json_type(public_key)}", field="public_key")

        request = self._lock_request(request_id)
        if request.requester_id != actor.id:
            raise Forbidden("not_requester", f"request {request.id} belongs to another user; only its requester gets a certificate")
        if request.state == "pending" and effective_state(request, self.now) == "pending":
            raise Conflict("not_approved", f"request {request.id} is not approved yet ({self._approval_count(request)} of {request.approvals_required} approvals)")
        self._require_state(request, "approved", "issued a certificate")

        snapshot = self.snapshot
        user_key = parse_user_key(
            public_key,
            min_rsa_bits=self.runtime.config.min_rsa_bits,
            ca_public_keys=snapshot.ca_public_keys,
            revoked_fingerprints=_RevokedFingerprints(self.session),
        )

        refusal = self._recheck(actor, request)
        if refusal is not None:
            code, message = refusal
            self._audit(actor, "certificate.refused", request_id=request.id, details={
                "code": code, "message": message, "key_fingerprint": user_key.fingerprint, **self._decision_hashes(),
            })
            self._commit()
            logger.warning("certificate refused", extra={"request_id": request.id, "user": actor.name, "code": code})
            raise Forbidden(code, message)

        principals = grant_principals(request.login, request.hosts)
        rule = snapshot.policy.rule(request.rule)
        skew = snapshot.policy.clock_skew
        valid_after = whole_seconds(max(request.starts_at, self.now) - skew)
        valid_before = request.ends_at

        certificate = Certificate(
            request_id=request.id, user_id=actor.id, principals=principals, hosts=list(request.hosts),
            login=request.login, public_key=user_key.line, key_fingerprint=user_key.fingerprint,
            ca_fingerprint=snapshot.signer.fingerprint, valid_after=valid_after, valid_before=valid_before,
            issued_at=self.now,
        )
        self.session.add(certificate)
        self.session.flush()  # allocates the serial

        key_id = key_id_for(actor.name, request.id, certificate.serial)
        issued = sign_certificate(
            snapshot.signer,
            CertificateSpec(
                public_key=user_key, serial=certificate.serial, key_id=key_id, principals=tuple(principals),
                valid_after=valid_after, valid_before=valid_before, extensions=rule.extensions,
                force_command=rule.force_command, source_address=rule.source_address,
            ),
            max_validity=self.runtime.config.max_certificate_lifetime + skew,
        )
        certificate.key_id = key_id
        certificate.certificate = issued.line

        self._audit(actor, "certificate.issued", request_id=request.id, serial=certificate.serial, details={
            "key_id": key_id,
            "principals": principals,
            "key_fingerprint": user_key.fingerprint,
            "ca_fingerprint": snapshot.signer.fingerprint,
            "valid_after": iso(valid_after),
            "valid_before": iso(valid_before),
            "extensions": list(rule.extensions),
            "force_command": rule.force_command,
            "source_address": list(rule.source_address),
            **self._decision_hashes(),
        })
        self._commit()
        logger.info("certificate issued", extra={
            "request_id": request.id, "user": actor.name, "serial": certificate.serial, "key_id": key_id,
            "principals": principals, "key_fingerprint": user_key.fingerprint,
            "valid_after": iso(valid_after), "valid_before": iso(valid_before),
        })
        return certificate

    def _approval_count(self, request: AccessRequest) -> int:
        return self.session.execute(
            sa.select(sa.func.count()).select_from(Approval)
            .where(Approval.request_id == request.id, Approval.decision == "approve")
        ).scalar_one()

    def _recheck(self, actor: User, request: AccessRequest) -> tuple[str, str] | None:
        """Check the request again against the current user record, policy and inventory.

        Returns (code, message) of the first failed check, or None.
        """
        if actor.disabled:
            return "user_disabled", f"user {actor.name!r} is disabled; no certificate is issued"

        rule = self.snapshot.policy.rule(request.rule)
        if rule is None:
            return "rule_removed", f"rule {request.rule!r} of request {request.id} is no longer in the policy; no certificate is issued"
        if not rule.allows_requester(actor.name, actor.group_names):
            return (
                "not_a_requester",
                f"{actor.name!r} may no longer request access under rule {rule.name!r} "
                f"(groups: {', '.join(sorted(actor.group_names)) or 'none'}); no certificate is issued",
            )

        inventory = self.snapshot.inventory
        unknown = inventory.unknown_targets(request.hosts)
        if unknown:
            return "host_removed", f"{', '.join(unknown)} is no longer in the inventory; no certificate is issued"
        if not rule.covers(request.hosts, request.login, inventory):
            return "rule_changed", f"rule {rule.name!r} no longer covers {', '.join(request.hosts)} as {request.login!r}; no certificate is issued"
        try:
            self._check_login_on_targets(request.login, list(request.hosts))
        except InvalidInput as exc:
            return "login_removed", f"{exc.message}; no certificate is issued"
        return None

    def revoke_key(self, actor: User, *, public_key, reason) -> RevokedKey:
        """Put a user public key on the revoked-key list (admins only)."""
        self._require_active(actor)
        if not actor.is_admin:
            raise Forbidden("admin_only", "only an admin can revoke a public key")
        if public_key is None:
            raise InvalidInput("missing_field", "missing field 'public_key'", field="public_key")
        if not isinstance(public_key, str):
            raise InvalidInput("invalid_type", f"field 'public_key' must be a string, got {_json_type(public_key)}", field="public_key")
        reason = self._text(reason, "reason", required=True, limit=MAX_REASON_LENGTH)
        # A CA key in the KRL would make every host refuse every certificate
        # that key signed, so CA keys are rejected here like in a certificate request.
        user_key = parse_user_key(public_key, ca_public_keys=self.snapshot.ca_public_keys)

        existing = self.session.execute(
            sa.select(RevokedKey).where(RevokedKey.fingerprint == user_key.fingerprint)
        ).scalar_one_or_none()
        if existing is not None:
            raise Conflict("already_revoked", f"key {user_key.fingerprint} is already revoked")

        revoked = RevokedKey(
            fingerprint=user_key.fingerprint, public_key=user_key.line, reason=reason,
            revoked_by=actor.name, created_at=self.now,
        )
        self.session.add(revoked)
        self._audit(actor, "key.revoked", details={"key_fingerprint": user_key.fingerprint, "reason": reason})
        self._commit()
        return revoked

    # -- queries ---------------------------------------------------------------

    def _can_see(self, actor: User, request: AccessRequest) -> bool:
        if actor.is_auditor or actor.is_admin or actor.id == request.requester_id:
            return True
        rule = self.snapshot.policy.rule(request.rule)
        if rule is not None and rule.allows_approver(actor.name, actor.group_names):
            return True
        return any(approval.approver_id == actor.id for approval in request.approvals)

    def get_request(self, actor: User, request_id: int) -> AccessRequest:
        """Return one request with its approvals and certificates, if ``actor`` is involved in it."""
        self._require_active(actor)
        request = self.session.execute(
            sa.select(AccessRequest).where(AccessRequest.id == request_id)
            .options(selectinload(AccessRequest.approvals), selectinload(AccessRequest.certificates),
                     selectinload(AccessRequest.requester))
        ).scalar_one_or_none()
        if request is None:
            raise NotFound("not_found", f"request {request_id} not found")
        if not self._can_see(actor, request):
            raise Forbidden("not_involved", f"you are not involved in request {request_id}")
        return request

    def list_requests(self, actor: User, *, state: str | None = None, limit: int = 500) -> list[AccessRequest]:
        """Return the requests ``actor`` may see, newest first.

        A user sees their own requests, an approver also those under rules
        they approve for, an auditor or admin all of them.
        """
        self._require_active(actor)
        query = sa.select(AccessRequest).options(
            selectinload(AccessRequest.approvals), selectinload(AccessRequest.certificates),
            selectinload(AccessRequest.requester),
        )

        if not (actor.is_auditor or actor.is_admin):
            rules = self.snapshot.policy.rules_approvable_by(actor.name, actor.group_names)
            visible = AccessRequest.requester_id == actor.id
            if rules:
                visible = sa.or_(visible, AccessRequest.rule.in_(rules))
            query = query.where(visible)

        if state is not None:
            query = query.where(self._state_condition(state))
        # NOTE: the list has no cursor; it returns the newest ``limit`` requests.
        query = query.order_by(AccessRequest.id.desc()).limit(limit)
        return list(self.session.execute(query).scalars().all())

    def _state_condition(self, state: str):
        now = self.now
        if state not in STATES:
            raise InvalidInput("invalid_state", f"unknown state {state!r}; use one of: {', '.join(STATES)}", field="state")
        if state == "pending":
            return sa.and_(AccessRequest.state == "pending", AccessRequest.expires_at > now)
        if state == "approved":
            return sa.and_(AccessRequest.state == "approved", AccessRequest.ends_at > now)
        if state == "expired":
            return sa.or_(
                AccessRequest.state == "expired",
                sa.and_(AccessRequest.state == "pending", AccessRequest.expires_at <= now),
                sa.and_(AccessRequest.state == "approved", AccessRequest.ends_at <= now),
            )
        return AccessRequest.state == state

    def _require_auditor(self, actor: User) -> None:
        self._require_active(actor)
        if not actor.is_auditor:
            raise Forbidden("auditor_only", "only an auditor can read the audit log and certificate list")

    def certificate_query(self, actor: User, *, user=None, host=None, request=None, since=None, until=None,
                          active=None):
        """Return a SELECT of certificates matching the filters, for auditors."""
        self._require_auditor(actor)
        query = sa.select(Certificate).options(selectinload(Certificate.user))
        if user is not None:
            query = query.join(User, Certificate.user_id == User.id).where(User.name == user)
        if host is not None:
            query = query.where(self._covers_host(Certificate.hosts, host))
        if request is not None:
            query = query.where(Certificate.request_id == request)
        if since is not None:
            query = query.where(Certificate.issued_at >= since)
        if until is not None:
            query = query.where(Certificate.issued_at < until)
        if active is True:
            # Live certificates are usually the newest, so a scan in serial
            # order from the first certificate reads nearly the whole table.
            # The valid_before index gives the lowest live serial to start at.
            # "serial + 0" keeps SQLite from computing min() by walking the
            # primary key instead.
            first = (sa.select(sa.func.min(Certificate.serial + 0)).where(Certificate.valid_before > self.now)
                     .scalar_subquery())
            query = query.where(Certificate.serial >= first, Certificate.revoked_at.is_(None),
                                Certificate.valid_before > self.now)
        elif active is False:
            query = query.where(sa.or_(Certificate.revoked_at.is_not(None), Certificate.valid_before <= self.now))
        return query

    def list_certificates(self, actor: User, *, cursor: int | None = None, limit: int = DEFAULT_PAGE_SIZE, **filters):
        """Return (certificates, next cursor or None), oldest serial first."""
        query = self.certificate_query(actor, **filters)
        if cursor is not None:
            query = query.where(Certificate.serial > cursor)
        rows = self.session.execute(query.order_by(Certificate.serial).limit(limit + 1)).scalars().all()
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].serial
        return rows, None

    def _covers_host(self, hosts_column, host: str):
        """Return a condition: the JSON list in ``hosts_column`` names ``host`` or one of its groups.

        Groups come from the current inventory. Raises InvalidName for an
        invalid host name, which also keeps LIKE wildcards out of the pattern.
        """
        validate_host(host)
        entries = [host]
        known = self.snapshot.inventory.hosts.get(host)
        if known is not None:
            entries += [f"group:{group}" for group in known.groups]
        text = sa.cast(hosts_column, sa.Text)
        return sa.or_(*[text.contains(f'"{entry}"') for entry in entries])

    def event_query(self, actor: User, *, actor_name=None, action=None, request=None, host=None, since=None,
                    until=None):
        """Return a SELECT of audit events matching the filters, for auditors.

        ``host`` selects the events of requests whose hosts name that host or
        one of its groups.
        """
        self._require_auditor(actor)
        query = sa.select(AuditEvent)
        if host is not None:
            requests_on_host = sa.select(AccessRequest.id).where(self._covers_host(AccessRequest.hosts, host))
            query = query.where(AuditEvent.request_id.in_(requests_on_host))
        if actor_name is not None:
            query = query.where(AuditEvent.actor == actor_name)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        if request is not None:
            query = query.where(AuditEvent.request_id == request)
        # Event times never decrease along the chain (see server.audit), so a
        # time bound is also an id bound. Stating the id bound lets the keyset
        # scan on id start and stop in the right place instead of filtering a
        # million events by time.
        if since is not None:
            first = (sa.select(AuditEvent.id).where(AuditEvent.time >= since)
                     .order_by(AuditEvent.time, AuditEvent.id).limit(1).scalar_subquery())
            query = query.where(AuditEvent.time >= since, AuditEvent.id >= first)
        if until is not None:
            last = (sa.select(AuditEvent.id).where(AuditEvent.time < until)
                    .order_by(AuditEvent.time.desc(), AuditEvent.id.desc()).limit(1).scalar_subquery())
            query = query.where(AuditEvent.time < until, AuditEvent.id <= last)
        return query

    def list_events(self, actor: User, *, cursor: int | None = None, limit: int = DEFAULT_PAGE_SIZE,
                    descending: bool = False, **filters):
        """Return (events, next cursor or None) in id order, using keyset paging."""
        query = self.event_query(actor, **filters)
        if descending:
            if cursor is not None:
                query = query.where(AuditEvent.id < cursor)
            query = query.order_by(AuditEvent.id.desc())
        else:
            if cursor is not None:
                query = query.where(AuditEvent.id > cursor)
            query = query.order_by(AuditEvent.id)
        rows = self.session.execute(query.limit(limit + 1)).scalars().all()
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None

    def verify_audit(self, actor: User, *, max_age: timedelta | None = None) -> audit.VerifyResult:
        """Verify the audit chain for an auditor.

        With ``max_age``, a result this process computed less than
        ``max_age`` ago is returned instead, with its ``checked_at``: a full
        verification reads every event, which takes seconds at a million.
        """
        self._require_auditor(actor)
        if max_age is not None:
            cached = self.runtime.last_verification
            if cached is not None and cached.checked_at is not None and self.now - cached.checked_at < max_age:
                return cached
        result = audit.verify_chain(self.session)
        self.runtime.last_verification = result
        return result


class _RevokedFingerprints:
    """A container view of the revoked-key table, so vetting a key costs one indexed lookup."""

    def __init__(self, session: Session):
        self.session = session

    def __contains__(self, fingerprint) -> bool:
        return self.session.execute(
            sa.select(RevokedKey.id).where(RevokedKey.fingerprint == fingerprint)
        ).first() is not None


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def iso(value: datetime | None) -> str | None:
    """Format a time as ISO 8601 UTC in whole seconds, e.g. 2026-12-04T19:30:00Z."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

