#!/usr/bin/python3
"""Reads hex blobs (one per line) of `auth_session_info_transport` in NDR,
decodes each with Samba's NDR code and encodes it again; prints the result
as hex, or "ERR <message>" when Samba refuses the blob. Used by
tests/npa_vectors.rs to check opipe's encoder against Samba's decoder.
"""
import sys

from samba.dcerpc import auth
from samba.ndr import ndr_pack, ndr_unpack

for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        value = ndr_unpack(auth.session_info_transport, bytes.fromhex(line))
        print(ndr_pack(value).hex())
    except Exception as e:  # noqa: BLE001 - report every refusal
        print("ERR " + str(e).replace("\n", " "))
    sys.stdout.flush()
