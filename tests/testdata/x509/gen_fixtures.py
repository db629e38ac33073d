#!/usr/bin/env python3
"""Writes the X.509 fixtures of tests/crypto/x509_test.cpp with an independent implementation
(pyca/cryptography). Run from this directory: python3 gen_fixtures.py. Output is committed."""

import datetime
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


def csr(key, cn, digest=hashes.SHA256()):
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    return builder.sign(key, digest)


def pem(obj):
    return obj.public_bytes(serialization.Encoding.PEM)


def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def seq(body):
    return b"\x30" + der_len(len(body)) + body


p256 = ec.generate_private_key(ec.SECP256R1())
write("p256.csr.pem", pem(csr(p256, "device-p256")))
write("ed25519.csr.pem", pem(csr(ed25519.Ed25519PrivateKey.generate(), "device-ed25519", None)))
rsa2048 = rsa.generate_private_key(65537, 2048)
write("rsa2048.csr.pem", pem(csr(rsa2048, "device-rsa")))
write("rsa2048.key.pem", rsa2048.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
write("rsa2048.spki.der", rsa2048.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
# P-256 with explicit curve parameters instead of the named-curve OID (pyca cannot write these).
subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-param_enc", "explicit", "-genkey",
                "-noout", "-out", "explicit.key.tmp"], check=True)
subprocess.run(["openssl", "req", "-new", "-key", "explicit.key.tmp", "-subj", "/CN=device-explicit",
                "-out", "p256_explicit.csr.pem"], check=True)
__import__("os").remove("explicit.key.tmp")

# Valid UTF-8 common names that are not device IDs.
write("unicode_cn.csr.pem", pem(csr(p256, "d\u00e9vice")))
write("control_cn.csr.pem", pem(csr(p256, "dev\nice")))
write("p384.csr.pem", pem(csr(ec.generate_private_key(ec.SECP384R1()), "device-p384")))

# A correctly self-signed CSR whose CN (a UTF8String) holds the invalid UTF-8 byte 0xff.
tbs = csr(p256, "devXice").tbs_certrequest_bytes.replace(b"devXice", b"dev\xffice")
sig = p256.sign(tbs, ec.ECDSA(hashes.SHA256()))
ecdsa_sha256 = bytes.fromhex("300a06082a8648ce3d040302")
bitstring = b"\x03" + der_len(len(sig) + 1) + b"\x00" + sig
der = seq(tbs + ecdsa_sha256 + bitstring)
b64 = __import__("base64").encodebytes(der).decode().replace("\n", "")
lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
write("bad_utf8_cn.csr.pem", ("-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(lines) +
                              "\n-----END CERTIFICATE REQUEST-----\n").encode())

# A device CA and a client certificate it issued, valid 2026-01-01 to 2036-01-01.
start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
end = datetime.datetime(2036, 1, 1, tzinfo=datetime.timezone.utc)
ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyca device CA")])
ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
      .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
      .not_valid_before(start).not_valid_after(end)
      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
      .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                     critical=True)
      .add_extension(ca_ski, critical=False)
      .sign(ca_key, hashes.SHA256()))
write("pyca_ca.pem", pem(ca))


def client_cert(cn, uris, eku=True, extra=None):
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(ca_name).public_key(p256.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                      False), critical=True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                        critical=False))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    if uris:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    if extra:
        b = b.add_extension(extra, critical=True)
    return b.sign(ca_key, hashes.SHA256())


client = client_cert("device-py", ["urn:upkeep:device:device-py"])
# Certificates from the right CA that must still be refused.
write("pyca_uri_cn_mismatch.pem",
      pem(client_cert("device-a", ["urn:upkeep:device:device-b"])))
write("pyca_two_device_uris.pem",
      pem(client_cert("device-a", ["urn:upkeep:device:device-a", "urn:upkeep:device:device-b"])))
write("pyca_bad_uri_id.pem", pem(client_cert("device-a", ["urn:upkeep:device:device a/.."])))
write("pyca_no_eku.pem", pem(client_cert("device-py", ["urn:upkeep:device:device-py"], eku=False)))
write("pyca_unknown_critical.pem",
      pem(client_cert("device-py", ["urn:upkeep:device:device-py"],
                      extra=x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"),
                                                       b"\x05\x00"))))
write("pyca_client.pem", pem(client))
write("pyca_client.der", client.public_bytes(serialization.Encoding.DER))
