"""What the capture scripts share: a Samba living wholly in a temp dir
(the recipe in shared/SAMBA.md) on a free 127.0.0.1 port.

Imported by npa/capture_smbd.py and smb2/capture.py (which put this
directory on sys.path).
"""
import os
import socket
import time

STATE_DIRS = ["lock", "state", "cache", "private", "bind-dns", "pid", "ncalrpc"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, deadline):
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def make_root(root, extra_dirs):
    """Makes Samba's state dirs and `extra_dirs` under root; returns the
    function that names a path under it."""
    for sub in STATE_DIRS + extra_dirs:
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    return lambda sub: os.path.join(root, sub)


def global_conf(p, log_name, port):
    """The [global] section: every state path under p, loopback only, no
    printers or netbios, RPC servers not started on demand."""
    return f"""[global]
netbios name = TESTSRV
workgroup = OPIPETEST
server role = standalone server
lock directory = {p('lock')}
state directory = {p('state')}
cache directory = {p('cache')}
private dir = {p('private')}
binddns dir = {p('bind-dns')}
pid directory = {p('pid')}
ncalrpc dir = {p('ncalrpc')}
log file = {p(log_name)}
passdb backend = tdbsam:{p('private/passdb.tdb')}
interfaces = lo
bind interfaces only = yes
smb ports = {port}
disable netbios = yes
load printers = no
disable spoolss = yes
map to guest = Bad User
rpc start on demand helpers = no
"""
