"""Throw-away PKI for the test bed: one CA, a server certificate for the loopback names, a client
certificate (mutual TLS) and a token-signing certificate (RS256 JWTs with an ``x5c`` chain).

``make_certs(directory)`` writes PEM files and returns a :class:`CertPaths`; calling it again on a
directory that already holds a complete set reuses the files.
"""
import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "127.0.0.2")

_FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key", "token.pem", "token.key")


@dataclass(frozen=True)
class CertPaths:
    directory: str
    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    token_cert: str
    token_key: str


def _paths(directory):
    d = os.path.abspath(directory)
    p = [os.path.join(d, f) for f in _FILES]
    return CertPaths(d, *p)


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hocker testbed"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path, key):
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path, cert):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject, issuer, pubkey, days):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(pubkey)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _leaf(ca_key, ca_cert, cn, eku, sans=None, days=825):
    key = _key()
    b = _builder(_name(cn), ca_cert.subject, key.public_key(), days)
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=True, data_encipherment=False, key_agreement=False,
                                      key_cert_sign=False, crl_sign=False, encipher_only=False,
                                      decipher_only=False), critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if sans:
        names = []
        for h in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def make_certs(directory, hosts=DEFAULT_HOSTS):
    """Create (or reuse) CA, server, client and token-signing certificates in ``directory``."""
    paths = _paths(directory)
    if all(os.path.isfile(os.path.join(paths.directory, f)) for f in _FILES):
        return paths
    os.makedirs(paths.directory, exist_ok=True)
    ca_key = _key()
    ca_name = _name("hocker testbed CA")
    ca = _builder(ca_name, ca_name, ca_key.public_key(), 3650)
    ca = ca.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    ca = ca.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                        data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                        crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    ca = ca.add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
    ca_cert = ca.sign(ca_key, hashes.SHA256())

    server_key, server_cert = _leaf(ca_key, ca_cert, "hocker testbed server", [ExtendedKeyUsageOID.SERVER_AUTH],
                                    sans=list(hosts))
    client_key, client_cert = _leaf(ca_key, ca_cert, "hocker testbed client", [ExtendedKeyUsageOID.CLIENT_AUTH])
    token_key, token_cert = _leaf(ca_key, ca_cert, "hocker testbed token signer", None)

    # keys first, certificates last: the completeness check above then implies consistent files
    for path, key in ((paths.ca_key, ca_key), (paths.server_key, server_key), (paths.client_key, client_key),
                      (paths.token_key, token_key)):
        _write_key(path, key)
    for path, cert in ((paths.server_cert, server_cert), (paths.client_cert, client_cert),
                       (paths.token_cert, token_cert), (paths.ca_cert, ca_cert)):
        _write_cert(path, cert)
    return paths
