"""Counterparts of the PyKMIP integration tests that tests/python/pykmip_integration_skip.txt skips.

Each skipped test asks cinta-keymgr for something KMIP or the key's own
bytes forbid (a key used before it is activated, a key whose bytes
contradict its length or format). Here the same operation is run the way
the specification allows, with the same known answers, and the forbidden
form is shown to be refused with a reason. Run by pytest with the
environment variable CINTA_PYKMIP_SECTION naming a client section of
~/.pykmip/pykmip.conf (PyKMIP's own suite takes it as ``--config``).
"""
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kmip.core import enums
from kmip.pie import exceptions, objects
from kmip.pie.client import ProxyKmipClient

E = enums


@pytest.fixture(scope="module")
def c():
    client = ProxyKmipClient(config=os.environ["CINTA_PYKMIP_SECTION"])
    client.open()
    yield client
    client.close()


def rsa_key(bits=2048):
    k = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pkcs1 = k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    pkcs8 = k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub1 = k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    spki = k.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    return pkcs1, pkcs8, pub1, spki


def cleanup(c, uid):
    try:
        c.revoke(E.RevocationReasonCode.KEY_COMPROMISE, uid)
    except exceptions.KmipOperationFailure:
        pass
    c.destroy(uid)
    with pytest.raises(exceptions.KmipOperationFailure):
        c.get(uid)


def test_private_key_register_get_destroy(c):
    pkcs1, pkcs8, _, _ = rsa_key(1024 * 2)
    key = objects.PrivateKey(E.CryptographicAlgorithm.RSA, 2048, pkcs1, E.KeyFormatType.PKCS_1)
    uid = c.register(key)
    got = c.get(uid)
    assert isinstance(got, objects.PrivateKey) and got == key
    cleanup(c, uid)
    # A key whose bytes contradict its Cryptographic Length is refused, named.
    small, _, _, _ = rsa_key(2048)
    bad = objects.PrivateKey(E.CryptographicAlgorithm.RSA, 4096, small, E.KeyFormatType.PKCS_1)
    with pytest.raises(exceptions.KmipOperationFailure, match="says 4096 bits but the key has 2048"):
        c.register(bad)


def test_public_key_register_get_destroy(c):
    _, _, pub1, spki = rsa_key()
    for value, fmt in ((pub1, E.KeyFormatType.PKCS_1), (spki, E.KeyFormatType.X_509)):
        key = objects.PublicKey(E.CryptographicAlgorithm.RSA, 2048, value, fmt)
        uid = c.register(key)
        assert c.get(uid) == key
        cleanup(c, uid)


def test_private_key_register_get_destroy_pkcs1(c):
    pkcs1, pkcs8, _, _ = rsa_key()
    uid = c.register(objects.PrivateKey(E.CryptographicAlgorithm.RSA, 2048, pkcs8, E.KeyFormatType.PKCS_8))
    got = c.get(uid)
    assert got.value == pkcs8 and got.key_format_type == E.KeyFormatType.PKCS_8
    cleanup(c, uid)
    # PKCS#1 bytes labelled PKCS#8 are refused, with the format named.
    with pytest.raises(exceptions.KmipOperationFailure, match="PKCS#8"):
        c.register(objects.PrivateKey(E.CryptographicAlgorithm.RSA, 2048, pkcs1, E.KeyFormatType.PKCS_8))


def derive(c, base, method, params, otype, length, alg=None):
    kw = {"cryptographic_length": length}
    if alg is not None:
        kw["cryptographic_algorithm"] = alg
    return c.derive_key(otype, [base], method, params, **kw)


def test_derive_key_using_pbkdf2(c):
    pw = c.register(objects.SecretData(b"password", E.SecretDataType.PASSWORD,
                                       masks=[E.CryptographicUsageMask.DERIVE_KEY]))
    params = {"cryptographic_parameters": {"hashing_algorithm": E.HashingAlgorithm.SHA_1},
              "salt": b"salt", "iteration_count": 4096}
    # Pre-Active: no cryptographic use yet.
    with pytest.raises(exceptions.KmipOperationFailure, match="Pre-Active"):
        derive(c, pw, E.DerivationMethod.PBKDF2, params, E.ObjectType.SECRET_DATA, 160)
    c.activate(pw)
    sid = derive(c, pw, E.DerivationMethod.PBKDF2, params, E.ObjectType.SECRET_DATA, 160)
    assert c.get(sid).value == bytes.fromhex("4b007901b765489abead49d926f721d065a429c1")  # RFC 6070
    kid = derive(c, pw, E.DerivationMethod.PBKDF2, params, E.ObjectType.SYMMETRIC_KEY, 128,
                 E.CryptographicAlgorithm.AES)
    key = c.get(kid)
    assert key.value == bytes.fromhex("4b007901b765489abead49d926f721d0")
    assert key.cryptographic_algorithm == E.CryptographicAlgorithm.AES and key.cryptographic_length == 128
    with pytest.raises(exceptions.KmipOperationFailure, match="128, 192 or 256"):
        derive(c, pw, E.DerivationMethod.PBKDF2, params, E.ObjectType.SYMMETRIC_KEY, 160,
               E.CryptographicAlgorithm.AES)
    for u in (sid, kid, pw):
        cleanup(c, u)


def test_derive_key_using_encryption(c):
    kid = c.register(objects.SymmetricKey(E.CryptographicAlgorithm.BLOWFISH, 128,
                                          bytes.fromhex("0123456789ABCDEFF0E1D2C3B4A59687"),
                                          masks=[E.CryptographicUsageMask.DERIVE_KEY]))
    c.activate(kid)
    sid = derive(c, kid, E.DerivationMethod.ENCRYPT, {
        "cryptographic_parameters": {"block_cipher_mode": E.BlockCipherMode.CBC,
                                     "padding_method": E.PaddingMethod.PKCS5,
                                     "cryptographic_algorithm": E.CryptographicAlgorithm.BLOWFISH},
        "initialization_vector": bytes.fromhex("FEDCBA9876543210"),
        "derivation_data": bytes.fromhex("37363534333231204E6F77206973207468652074696D6520666F722000"),
    }, E.ObjectType.SECRET_DATA, 256)
    assert c.get(sid).value == bytes.fromhex(
        "6B77B4D63006DEE605B156E27403979358DEB9E7154616D9749DECBEC05D264B")
    for u in (sid, kid):
        cleanup(c, u)


def test_derive_key_using_nist_800_108c(c):
    base = c.register(objects.SymmetricKey(E.CryptographicAlgorithm.HMAC_SHA512, 512, bytes.fromhex(
        "dd5dbd45593ee2ac139748e7645b450f223d2ff297b73fd71cbcebe71d41653c"
        "950b88500de5322d99ef18dfdd30428294c4b3094f4c954334e593bd982ec614"),
        masks=[E.CryptographicUsageMask.DERIVE_KEY]))
    c.activate(base)
    kid = derive(c, base, E.DerivationMethod.NIST800_108_C, {
        "cryptographic_parameters": {"hashing_algorithm": E.HashingAlgorithm.SHA_512},
        "derivation_data": bytes.fromhex(
            "b50b0c963c6b3034b8cf19cd3f5c4ebe4f4985af0c03e575db62e6fdf1ecfe4f"
            "28b95d7ce16df85843246e1557ce95bb26cc9a21974bbd2eb69e8355"),
    }, E.ObjectType.SYMMETRIC_KEY, 128, E.CryptographicAlgorithm.AES)
    assert c.get(kid).value == bytes.fromhex("e5993bf9bd2aa1c45746042e12598155")
    names = c.get_attribute_list(kid)
    assert "Cryptographic Algorithm" in names and "Cryptographic Length" in names
    # A 512-bit "AES" key is refused, the lengths AES has named.
    with pytest.raises(exceptions.KmipOperationFailure, match="128, 192 or 256"):
        c.register(objects.SymmetricKey(E.CryptographicAlgorithm.AES, 512, b"\x01" * 64))
    for u in (kid, base):
        cleanup(c, u)


def test_derive_key_using_hmac(c):
    seed = c.register(objects.SecretData(b"\x0c" * 22, E.SecretDataType.SEED,
                                         masks=[E.CryptographicUsageMask.DERIVE_KEY]))
    c.activate(seed)
    sid = derive(c, seed, E.DerivationMethod.HMAC, {
        "cryptographic_parameters": {"hashing_algorithm": E.HashingAlgorithm.SHA_1},
        "derivation_data": b"", "salt": b""}, E.ObjectType.SECRET_DATA, 336)
    assert c.get(sid).value == bytes.fromhex(
        "2c91117204d745f3500d636a62f64f0ab3bae548aa53d423b0d1f27ebba6f5e5673a081d70cce7acfc48")
    for u in (sid, seed):
        cleanup(c, u)


def test_mac_and_wrapped_get_unwrap_to_the_key(c):
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
    mk = c.create(E.CryptographicAlgorithm.HMAC_SHA256, 256,
                  cryptographic_usage_mask=[E.CryptographicUsageMask.MAC_GENERATE,
                                            E.CryptographicUsageMask.MAC_VERIFY])
    c.activate(mk)
    uid, mac = c.mac(b"tape 000123", uid=mk, algorithm=E.CryptographicAlgorithm.HMAC_SHA256)
    h = hmac.HMAC(c.get(mk).value, hashes.SHA256())
    h.update(b"tape 000123")
    assert uid == mk and mac == h.finalize()
    # A key wrapped under another (RFC 3394) unwraps to the key Get serves in the clear.
    key = c.create(E.CryptographicAlgorithm.AES, 256)
    kek = c.create(E.CryptographicAlgorithm.AES, 256,
                   cryptographic_usage_mask=[E.CryptographicUsageMask.WRAP_KEY])
    spec = {"wrapping_method": E.WrappingMethod.ENCRYPT,
            "encryption_key_information": {"unique_identifier": kek, "cryptographic_parameters": {
                "block_cipher_mode": E.BlockCipherMode.NIST_KEY_WRAP}},
            "encoding_option": E.EncodingOption.NO_ENCODING}
    with pytest.raises(exceptions.KmipOperationFailure, match="Pre-Active"):
        c.get(key, key_wrapping_specification=spec)
    c.activate(kek)
    wrapped = c.get(key, key_wrapping_specification=spec)
    assert aes_key_unwrap(c.get(kek).value, wrapped.value) == c.get(key).value
    for u in (mk, key, kek):
        cleanup(c, u)
