#!/usr/bin/python3
"""Regenerates the golden NPA vectors with Samba's own NDR code.

Run with Debian's python3 (python3-samba 4.17.x, level 7 layout):

    /usr/bin/python3 tests/vectors/npa/gen.py

Each vector is `samba.ndr.ndr_pack` of a `samba.dcerpc.auth
.session_info_transport` (python3-samba has no binding for the outer
`named_pipe_auth_req`). tests/npa_vectors.rs builds the same values in
Rust and checks that opipe's encoder writes these bytes and its decoder
reads them back.
"""
import os
import sys

from samba.dcerpc import auth, misc, security
from samba.ndr import ndr_pack, ndr_unpack

OUT = os.path.dirname(os.path.abspath(__file__))


def sids(*texts):
    return [security.dom_sid(t) for t in texts]


def token(sid_list, privilege_mask=0, rights_mask=0):
    t = security.token()
    t.sids = sid_list
    t.num_sids = len(sid_list)
    t.privilege_mask = privilege_mask
    t.rights_mask = rights_mask
    return t


def unix_token(uid, gid, groups):
    u = security.unix_token()
    u.uid = uid
    u.gid = gid
    u.groups = groups
    u.ngroups = len(groups)
    return u


def user_info(**kw):
    i = auth.user_info()
    for k, v in kw.items():
        setattr(i, k, v)
    return i


def unix_info(name, sanitized=None):
    u = auth.user_info_unix()
    u.unix_name = name
    if sanitized is not None:
        u.sanitized_username = sanitized
    return u


def transport(si, creds=b""):
    t = auth.session_info_transport()
    t.session_info = si
    t.exported_gssapi_credentials = creds
    return t


def session(tok=None, utok=None, info=None, uinfo=None, key=b"",
            guid="00000000-0000-0000-0000-000000000000", ticket=0):
    s = auth.session_info()
    if tok is not None:
        s.security_token = tok
    if utok is not None:
        s.unix_token = utok
    if info is not None:
        s.info = info
    if uinfo is not None:
        s.unix_info = uinfo
    s.session_key = key
    s.unique_session_token = misc.GUID(guid)
    s.ticket_type = ticket
    return s


VECTORS = {
    # NpaIdentity::anonymous(): the token SAMBA.md says 4.17 accepts.
    "anonymous": transport(session(
        token(sids("S-1-5-7", "S-1-1-0", "S-1-5-2")),
        unix_token(65534, 65534, []),
        user_info(account_name="ANONYMOUS LOGON", domain_name="NT AUTHORITY",
                  authenticated=0),
        unix_info("nobody"))),
    # NpaIdentity::guest("TESTSRV", S-1-5-21-11-22-33).
    "guest": transport(session(
        token(sids("S-1-5-21-11-22-33-501", "S-1-5-21-11-22-33-514",
                   "S-1-1-0", "S-1-5-2", "S-1-5-32-546")),
        unix_token(65534, 65534, []),
        user_info(account_name="nobody", domain_name="TESTSRV",
                  authenticated=0),
        unix_info("nobody"))),
    # Every field set, odd lengths everywhere (alignment after strings and
    # blobs), non-ASCII UTF-8.
    "user_full": transport(session(
        token(sids("S-1-5-21-1004336348-1177238915-682003330-1000",
                   "S-1-5-21-1004336348-1177238915-682003330-513",
                   "S-1-1-0", "S-1-5-2", "S-1-5-11", "S-1-5-32-545",
                   "S-1-0x123456789ABC-1-2"),
              privilege_mask=0x1FFFFF0, rights_mask=0x2F),
        unix_token(1000, 1001, [27, 100, 4294967294]),
        user_info(account_name="alice", user_principal_name="alice@example.test",
                  user_principal_constructed=1, domain_name="EXAMPLE",
                  dns_domain_name="example.test", full_name="Alice Ünïcødé",
                  logon_script="x.bat", profile_path="\\\\srv\\profiles\\alice",
                  home_directory="\\\\srv\\alice", home_drive="H:",
                  logon_server="DC1", last_logon=0x01D9000000000001,
                  last_logoff=0x7FFFFFFFFFFFFFFF, acct_expiry=0x7FFFFFFFFFFFFFFF,
                  last_password_change=133000000000000000,
                  allow_password_change=133000000000000001,
                  force_password_change=0x7FFFFFFFFFFFFFFF, logon_count=7,
                  bad_password_count=1, acct_flags=0x210, authenticated=1),
        unix_info("alice", "alice_"),
        key=bytes(range(1, 17)), guid="01234567-89ab-cdef-0123-456789abcdef",
        ticket=1), creds=b"\x01\x02\x03\x04\x05"),
    # A transport without a session, and credentials only.
    "no_session": transport(None, creds=b"gss"),
    # Pointers left out: no security token, no user info; many groups.
    "sparse": transport(session(
        None, unix_token(0, 0, list(range(1, 40))), None,
        unix_info(None, "x"), key=b"\xff", ticket=2)),
}


def main():
    for name, value in VECTORS.items():
        blob = ndr_pack(value)
        # Samba reads back what it wrote.
        again = ndr_pack(ndr_unpack(auth.session_info_transport, blob))
        if again != blob:
            sys.exit(f"{name}: Samba's round trip differs")
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(blob)
        print(f"{name}.bin: {len(blob)} bytes")


if __name__ == "__main__":
    main()
