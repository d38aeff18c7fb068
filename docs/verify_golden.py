#!/usr/bin/env python3
"""Independent check of pkg/derive/tests/golden.json (DESIGN.md §3), written from the spec, not
from the Rust code: `pip install blake3 argon2-cffi cryptography && python3 docs/verify_golden.py`."""
import base64, ipaddress, json, sys
from pathlib import Path
import blake3
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives import serialization

def sub(master, purpose):
    return blake3.blake3(master, derive_key_context="wgmesh v1 " + purpose).digest()

def check(v):
    token = v["secret"].split("wgmesh://v1/")[-1]
    master = hash_secret_raw(token.encode(), b"wgmesh/v1/argon2id", time_cost=3,
                             memory_cost=65536, parallelism=1, hash_len=32, type=Type.ID)
    assert sub(master, "network id").hex() == v["network_id"]
    assert sub(master, "exchange key").hex() == v["exchange_key"]
    assert sub(master, "preshared key").hex() == v["preshared_key"]
    x = sub(master, "ipv4 subnet")[0]
    assert f"10.{x}.0.0/16" == v["ipv4_subnet"]
    p = b"\xfd" + sub(master, "ipv6 prefix")[:7] + bytes(8)
    assert str(ipaddress.IPv6Network((p, 64))) == v["ipv6_prefix"]
    k = sub(master, "control port")
    assert 51821 + int.from_bytes(k[:2], "big") % 1000 == v["control_port"]
    k = sub(master, "lan group")
    assert f"239.192.{k[0]}.{k[1]}" == v["lan_group"]
    for e, h in v["dht_infohash"]:
        assert blake3.blake3(e.to_bytes(8, "big"), key=sub(master, "dht infohash")).digest()[:20].hex() == h
    for n in v["nodes"]:
        priv = bytearray(blake3.blake3(bytes.fromhex(n["seed"]), key=sub(master, "node key")).digest())
        priv[0] &= 248; priv[31] &= 127; priv[31] |= 64
        assert priv.hex() == n["private_key"]
        pub = X25519PrivateKey.from_private_bytes(bytes(priv)).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert base64.b64encode(pub).decode() == n["public_key"]
        for counter, want in zip([0, 1, 15], n["mesh_ipv4"]):
            h = blake3.blake3(pub + bytes([counter]), key=sub(master, "ipv4 host")).digest()
            fourth = {0: 1, 255: 254}.get(h[1], h[1])
            assert f"10.{x}.{h[0]}.{fourth}" == want, (want, h[:2])
        h = bytearray(blake3.blake3(pub, key=sub(master, "ipv6 host")).digest()[:8])
        h[0] &= 0xfd
        assert str(ipaddress.IPv6Address(p[:8] + bytes(h))) == n["mesh_ipv6"]

vectors = json.loads((Path(__file__).parent.parent / "pkg/derive/tests/golden.json").read_text())
for v in vectors:
    check(v)
print(f"{len(vectors)} golden vectors agree with an independent implementation of DESIGN.md §3")
