"""Optional TLS for the control plane: a certificate per cluster, or the user's own.

With ``TFOS_CONTROL_TLS=1`` the driver makes a self-signed certificate (an EC P-256 key that never leaves the
driver) for the address it gives the nodes, and ships the certificate, which is public, to them in the launch
spec; they trust exactly that certificate. With ``TFOS_CONTROL_TLS_CERT`` and ``TFOS_CONTROL_TLS_KEY`` the driver
serves the user's certificate instead (it must name the driver's address, ``TFOS_CONTROL_HOST`` or
``spark.driver.host``), and the nodes trust that certificate (or the CA chain in that file). The cluster
secret is still required on every call; TLS adds privacy of the control messages and proof of the driver's
identity.
"""

from __future__ import annotations

import datetime
import ipaddress

from ..errors import ConfigError

# A generated certificate is valid from a little before now (clock skew between hosts) for this many days.
VALID_DAYS = 30


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``host`` (an IP address or a DNS name) and its private key, both PEM.

    Raises:
        ConfigError: the ``cryptography`` package is not installed.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise ConfigError(
            "TFOS_CONTROL_TLS=1 makes a certificate with the 'cryptography' package, which is not installed here "
            "(on the driver; under Spark Connect, on node 0's executor, which serves the control plane). Install it (pip install 'tfos[tls]' or pip install cryptography), or give your own "
            "certificate with TFOS_CONTROL_TLS_CERT and TFOS_CONTROL_TLS_KEY."
        ) from None
    host = host.strip("[]")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tfos control server")])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _read(path: str, what: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the control-plane TLS {what} {path!r} ({exc.strerror}); fix {setting}") \
            from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"the control-plane TLS {what} {path!r} is not PEM (no '-----BEGIN' line); fix {setting}")
    return data


def server_material(settings, host: str) -> tuple[bytes, bytes] | None:
    """``(certificate, private key)`` PEM for the control server per ``settings``, or None without TLS.

    Args:
        settings: the cluster's :class:`tfos.config.Settings`.
        host: the address the nodes are given (a generated certificate names it).

    Raises:
        ConfigError: a file cannot be read or is not PEM, or ``cryptography`` is missing.
    """
    if settings.control_tls_cert:
        return (_read(settings.control_tls_cert, "certificate", "TFOS_CONTROL_TLS_CERT"),
                _read(settings.control_tls_key, "key", "TFOS_CONTROL_TLS_KEY"))
    if settings.control_tls:
        return self_signed(host)
    return None
