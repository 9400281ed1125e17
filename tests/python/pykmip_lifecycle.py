#!/usr/bin/env python3
"""Drives cinta-keymgr with PyKMIP's ProxyKmipClient (an independent KMIP client).

usage: pykmip_lifecycle.py --port P --cert C --key K --ca CA --version 1.0|1.1|1.2|1.4|2.0
Runs create, get, locate, get_attributes, get_attribute_list, activate,
revoke (cessation and key compromise), destroy, and register of a symmetric
key and a secret; prints one line per step and exits 1 at the first failure.
"""
import argparse
import sys
import time
import warnings

warnings.filterwarnings("ignore")

from kmip.core import enums  # noqa: E402
from kmip.core.factories.attributes import AttributeFactory  # noqa: E402
from kmip.pie import objects  # noqa: E402
from kmip.pie.client import ProxyKmipClient  # noqa: E402

VERSIONS = {
    "1.0": enums.KMIPVersion.KMIP_1_0,
    "1.1": enums.KMIPVersion.KMIP_1_1,
    "1.2": enums.KMIPVersion.KMIP_1_2,
    "1.4": enums.KMIPVersion.KMIP_1_4,
    "2.0": enums.KMIPVersion.KMIP_2_0,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    for a in ("--cert", "--key", "--ca"):
        ap.add_argument(a, required=True)
    ap.add_argument("--version", required=True, choices=sorted(VERSIONS))
    a = ap.parse_args()
    v = a.version
    c = ProxyKmipClient(hostname=a.host, port=a.port, cert=a.cert, key=a.key, ca=a.ca,
                        config_file="/dev/null", kmip_version=VERSIONS[v])
    name = "pykmip-%s-%d" % (v, time.time_ns())
    s = {}

    def step(what, fn):
        try:
            detail = fn()
        except Exception as e:  # the step's failure, named
            print("FAIL %s %s: %s: %s" % (v, what, type(e).__name__, e), flush=True)
            sys.exit(1)
        print("ok   %s %-20s %s" % (v, what, detail or ""), flush=True)

    def attrs(uid, names=None):
        got_uid, at = c.get_attributes(uid, names)
        assert got_uid == uid, got_uid
        return {x.attribute_name.value: x.attribute_value for x in at}

    def create():
        s["uid"] = c.create(enums.CryptographicAlgorithm.AES, 256, name=name,
                            cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                                      enums.CryptographicUsageMask.DECRYPT])
        return s["uid"]

    def get():
        k = c.get(s["uid"])
        assert isinstance(k, objects.SymmetricKey), type(k)
        assert k.cryptographic_algorithm == enums.CryptographicAlgorithm.AES
        assert k.cryptographic_length == 256 and len(k.value) == 32
        s["key"] = k.value
        return "AES-256"

    def locate():
        f = AttributeFactory().create_attribute(enums.AttributeType.NAME, name)
        uids = c.locate(attributes=[f])
        assert uids == [s["uid"]], uids
        assert c.locate(maximum_items=1) == [s["uid"]], "newest first, one item"
        return "by name"

    def get_attributes():
        d = attrs(s["uid"])
        for n in ("Name", "State", "Cryptographic Algorithm", "Cryptographic Length", "Object Type",
                  "Unique Identifier", "Initial Date"):
            assert n in d, (n, sorted(d))
        assert d["Name"].name_value.value == name
        assert d["State"].value == enums.State.PRE_ACTIVE, d["State"]
        assert d["Cryptographic Length"].value == 256
        d2 = attrs(s["uid"], ["State", "Name"])
        assert set(d2) == {"State", "Name"}, sorted(d2)
        return "%d attributes" % len(d)

    def get_attribute_list():
        names = c.get_attribute_list(s["uid"])
        for n in ("Name", "State", "Cryptographic Length"):
            assert n in names, (n, names)
        return "%d names" % len(names)

    def activate():
        c.activate(s["uid"])
        assert attrs(s["uid"], ["State"])["State"].value == enums.State.ACTIVE
        return "Active"

    def revoke():
        c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, s["uid"], revocation_message="done")
        st = attrs(s["uid"], ["State"])["State"].value
        assert st == enums.State.DEACTIVATED, st
        return "Deactivated"

    def destroy():
        c.destroy(s["uid"])
        try:
            c.get(s["uid"])
        except Exception as e:
            assert "destroyed" in str(e), e
            return "key material gone"
        raise AssertionError("get after destroy succeeded")

    def compromise():
        uid = c.create(enums.CryptographicAlgorithm.AES, 128, name=name + "-leaked")
        c.activate(uid)
        c.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, uid, compromise_occurrence_date=1700000000)
        assert attrs(uid, ["State"])["State"].value == enums.State.COMPROMISED
        c.destroy(uid)
        return "Compromised, then destroyed"

    def register():
        key = objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, bytes(range(16)),
                                   name=name + "-registered")
        uid = c.register(key)
        got = c.get(uid)
        assert got.value == bytes(range(16)), got.value
        secret = objects.SecretData(b"tape library password", enums.SecretDataType.PASSWORD,
                                    name=name + "-secret")
        sid = c.register(secret)
        got = c.get(sid)
        assert isinstance(got, objects.SecretData) and got.value == b"tape library password", got
        return "symmetric key and secret data"

    c.open()
    for what, fn in (("create", create), ("get", get), ("locate", locate),
                     ("get_attributes", get_attributes), ("get_attribute_list", get_attribute_list),
                     ("activate", activate), ("revoke", revoke), ("destroy", destroy),
                     ("revoke(compromise)", compromise), ("register", register)):
        step(what, fn)
    c.close()
    print("PASS %s" % v, flush=True)


if __name__ == "__main__":
    main()
