#!/usr/bin/python3
"""Captures the NPA requests a real smbd sends, as golden vectors.

Starts Debian's smbd (4.17.x) in a temp dir on a free 127.0.0.1 port with
`external_rpc_pipe:socket_dir` pointing at a listener of ours, runs real
clients against it, and saves the first request each client makes smbd
send on `np/srvsvc`:

    smbd_anonymous.bin   rpcclient -U% -c srvinfo      (null session)
    smbd_guest.bin       smbclient -L -U guest%        (mapped to guest)

Our listener answers with a level-7 success reply, then closes; the clients
fail after that, which does not matter here. Run as root:

    /usr/bin/python3 tests/vectors/npa/capture_smbd.py
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

OUT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(OUT))
from samba_root import free_port, global_conf, make_root, wait_port  # noqa: E402


PORT = free_port()


def reply_v7():
    body = b"NPAM" + struct.pack("<IIHHIQI", 7, 7, 2, 0x05FF, 0, 4096, 0)
    return struct.pack(">I", len(body)) + body


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def listen(path, captured):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    srv.settimeout(0.2)

    def loop():
        while not captured.get("stop"):
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            conn.settimeout(5)
            try:
                head = read_exact(conn, 4)
                (n,) = struct.unpack(">I", head)
                captured.setdefault("reqs", []).append(head + read_exact(conn, n))
                conn.sendall(reply_v7())
            except (EOFError, OSError):
                pass
            conn.close()
        srv.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def main():
    root = tempfile.mkdtemp(prefix="opipe-capture")
    smbd = None
    captured = {}
    try:
        p = make_root(root, ["sock/np"])
        os.chmod(p("sock/np"), 0o700)
        conf = p("smb.conf")
        with open(conf, "w") as f:
            f.write(global_conf(p, "smbd.log", PORT)
                    + f"external_rpc_pipe:socket_dir = {p('sock')}\n")
        listen(p("sock/np/srvsvc"), captured)
        smbd = subprocess.Popen(
            ["/usr/sbin/smbd", "--foreground", "--no-process-group", "-s", conf],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_port(PORT, time.time() + 20):
            sys.exit("smbd did not listen on %d" % PORT)
        clients = {
            "smbd_anonymous": ["/usr/bin/rpcclient", "-U%", "-p", str(PORT),
                               "127.0.0.1", "-c", "srvinfo"],
            "smbd_guest": ["/usr/bin/smbclient", "-L", "//127.0.0.1", "-p",
                           str(PORT), "-U", "guest%"],
        }
        for name, argv in clients.items():
            before = len(captured.get("reqs", []))
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30, check=False)
            reqs = captured.get("reqs", [])
            if len(reqs) == before:
                sys.exit(f"{name}: smbd sent no NPA request")
            with open(os.path.join(OUT, name + ".bin"), "wb") as f:
                f.write(reqs[before])
            print(f"{name}.bin: {len(reqs[before])} bytes")
    finally:
        captured["stop"] = True
        if smbd is not None:
            os.killpg(smbd.pid, signal.SIGTERM)
            try:
                smbd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(smbd.pid, signal.SIGKILL)
                smbd.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
