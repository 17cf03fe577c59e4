"""Control-plane TLS material: generated certificates, user files, settings, and a missing cryptography package."""

import ipaddress
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tfos import config
from tfos._control import tls
from tfos.errors import ConfigError


def _names(cert_pem: bytes) -> list:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


@pytest.mark.parametrize("host, expected", [
    ("10.1.2.3", x509.IPAddress(ipaddress.ip_address("10.1.2.3"))),
    ("[fd00::5]", x509.IPAddress(ipaddress.ip_address("fd00::5"))),
    ("driver.example.com", x509.DNSName("driver.example.com")),
])
def test_generated_certificate_names_the_address_nodes_call(host, expected):
    cert_pem, key_pem = tls.self_signed(host)
    assert _names(cert_pem) == [expected]
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # a matching pair
    assert b"PRIVATE KEY" not in cert_pem  # what ships to the nodes holds no key


def test_each_generated_certificate_has_its_own_key():
    assert tls.self_signed("127.0.0.1")[1] != tls.self_signed("127.0.0.1")[1]


def test_settings_choose_the_material(tmp_path):
    assert tls.server_material(config.Settings(), "127.0.0.1") is None
    cert, key = tls.server_material(config.Settings(control_tls=True), "127.0.0.1")
    assert cert.startswith(b"-----BEGIN CERTIFICATE-----") and b"PRIVATE KEY" in key
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    settings = config.from_env({"TFOS_CONTROL_TLS_CERT": str(tmp_path / "c.pem"),
                                "TFOS_CONTROL_TLS_KEY": str(tmp_path / "k.pem")})
    assert tls.server_material(settings, "ignored") == (cert, key)  # the user's files, as given


def test_bad_settings_and_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="set both TFOS_CONTROL_TLS_CERT and TFOS_CONTROL_TLS_KEY"):
        config.from_env({"TFOS_CONTROL_TLS_CERT": "/x/cert.pem"})
    with pytest.raises(ConfigError, match=r"TFOS_CONTROL_TLS='maybe' is not a valid bool"):
        config.from_env({"TFOS_CONTROL_TLS": "maybe"})
    missing = config.Settings(control_tls_cert=str(tmp_path / "nope.pem"), control_tls_key=str(tmp_path / "k"))
    with pytest.raises(ConfigError, match=r"cannot read the control-plane TLS certificate .*nope\.pem.*"
                                          r"fix TFOS_CONTROL_TLS_CERT"):
        tls.server_material(missing, "h")
    (tmp_path / "c.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "k.der").write_bytes(b"\x30\x82binary")
    not_pem = config.Settings(control_tls_cert=str(tmp_path / "c.pem"), control_tls_key=str(tmp_path / "k.der"))
    with pytest.raises(ConfigError, match=r"TLS key .*k\.der' is not PEM.*fix TFOS_CONTROL_TLS_KEY"):
        tls.server_material(not_pem, "h")


def test_missing_cryptography_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import cryptography now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'tfos\[tls\]'.*TFOS_CONTROL_TLS_CERT"):
        tls.self_signed("127.0.0.1")
