"""Who is asking for a certificate: the pod's service-account token, checked by the Kubernetes API
(TokenReview, audience ``istio-ca``) or, in local mode, by the signature of the node that issued it.

Local mode has no API server, so the local node plays the kubelet's part: it signs a JWT shaped like a
projected service-account token (ES256; ``sub`` ``system:serviceaccount:<ns>:<sa>``, ``aud``
``istio-ca``, an expiry) and writes it where only that pod's sidecar can read it. The controller holds
the matching public key. Both halves live here; ``python -m controller.ca.tokens issue`` is the
node's side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mizzen import logs

log = logs.get("ca.tokens")

AUDIENCE = "istio-ca"  # the audience Istio's injector asks for on the projected token
LOCAL_ISSUER = "mizzen-local"
SIGNER_FILE = "token-signer.pem"
DEFAULT_TOKEN_TTL = 24 * 3600.0
_SA_PREFIX = "system:serviceaccount:"


class AuthError(Exception):
    """The caller could not be authenticated; the message says why (it is logged and returned)."""


@dataclass(frozen=True)
class Caller:
    namespace: str
    service_account: str
    pod: str = ""


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Caller: ...


def _caller_from_username(username: str) -> Caller:
    if not username.startswith(_SA_PREFIX):
        raise AuthError(f"{username!r} is not a service account")
    parts = username[len(_SA_PREFIX) :].split(":")
    if len(parts) != 2 or not all(parts):
        raise AuthError(f"{username!r} is not system:serviceaccount:<namespace>:<name>")
    return Caller(parts[0], parts[1])


class LocalTokens:
    """Local mode's token signer and verifier (an EC key pair kept in the CA directory)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | None, public: ec.EllipticCurvePublicKey) -> None:
        self._key = key
        self._public = public

    @classmethod
    def load_or_create(cls, directory: Path) -> LocalTokens:
        path = directory / SIGNER_FILE
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
            tmp.rename(path)
            log.info("local token signer created", path=str(path))
        loaded = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path}: not an EC private key")
        return cls(loaded, loaded.public_key())

    def issue(
        self,
        namespace: str,
        service_account: str,
        *,
        pod: str = "",
        ttl: float = DEFAULT_TOKEN_TTL,
        audience: str = AUDIENCE,
        now: float | None = None,
    ) -> str:
        assert self._key is not None, "a verifier cannot issue"
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "iss": LOCAL_ISSUER,
            "sub": f"{_SA_PREFIX}{namespace}:{service_account}",
            "aud": [audience],
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(ttl),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}},
        }
        if pod:
            claims["kubernetes.io"]["pod"] = {"name": pod}
        return jwt.encode(claims, self._key, algorithm="ES256")

    async def authenticate(self, token: str) -> Caller:
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=["ES256"],
                audience=AUDIENCE,
                issuer=LOCAL_ISSUER,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"the token is not for audience {AUDIENCE!r}") from None
        except jwt.InvalidSignatureError:
            raise AuthError(
                "the token was not signed by this mesh's node (signature does not verify)"
            ) from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        caller = _caller_from_username(str(claims.get("sub", "")))
        pod = ((claims.get("kubernetes.io") or {}).get("pod") or {}).get("name", "")
        return Caller(caller.namespace, caller.service_account, str(pod))


class TokenReviewer:
    """Kubernetes mode: the API server says whose token it is (``authentication.k8s.io/v1`` TokenReview,
    audience ``istio-ca``), as istiod's CA does. ``client`` is a controller KubeClient."""

    def __init__(self, client: Any, audience: str = AUDIENCE) -> None:
        self.client = client
        self.audience = audience

    async def authenticate(self, token: str) -> Caller:
        from controller.informer.kubeclient import ApiError, TransportError

        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        try:
            answer = await self.client.request(
                "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=review
            )
        except (ApiError, TransportError) as exc:
            raise AuthError(f"token review failed: {exc}") from None
        status = (answer or {}).get("status") or {}
        if not status.get("authenticated"):
            raise AuthError(
                f"the API server did not authenticate the token: {status.get('error') or 'rejected'}"
            )
        audiences = status.get("audiences")
        if audiences is not None and self.audience not in audiences:
            raise AuthError(f"the token is not for audience {self.audience!r}")
        user = status.get("user") or {}
        caller = _caller_from_username(str(user.get("username", "")))
        extra = user.get("extra") or {}
        pod = (extra.get("authentication.kubernetes.io/pod-name") or [""])[0]
        return Caller(caller.namespace, caller.service_account, str(pod))


def main(argv: list[str] | None = None) -> int:
    """``python -m controller.ca.tokens issue``: the local node's side (a token for one pod's sidecar)."""
    p = argparse.ArgumentParser(prog="python -m controller.ca.tokens", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    issue = sub.add_parser("issue", help="sign a service-account token for a pod")
    issue.add_argument("--ca-dir", required=True, help="the controller's CA directory (holds the signer)")
    issue.add_argument("--namespace", required=True)
    issue.add_argument("--service-account", required=True)
    issue.add_argument("--pod", default="")
    issue.add_argument("--ttl", type=float, default=DEFAULT_TOKEN_TTL, help="seconds")
    issue.add_argument("--out", required=True, help="file to write (mode 0400)")
    issue.add_argument("--uid", type=int, default=None, help="owner of the file (the sidecar's UID)")
    args = p.parse_args(argv)
    token = LocalTokens.load_or_create(Path(args.ca_dir)).issue(
        args.namespace, args.service_account, pod=args.pod, ttl=args.ttl
    )
    write_token(Path(args.out), token, uid=args.uid)
    return 0


def write_token(path: Path, token: str, *, uid: int | None = None) -> None:
    """Write a token readable by its owner only (the sidecar's UID when given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    if uid is not None:
        os.chown(tmp, uid, uid)
    tmp.rename(path)


if __name__ == "__main__":
    sys.exit(main())
