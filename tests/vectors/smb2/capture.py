#!/usr/bin/python3
"""Records the SMB2 traffic between real clients and a real smbd.

Starts Debian's samba-dcerpcd and smbd (4.17.x) in a temp dir with their own
smb.conf (the recipe in shared/SAMBA.md; smbd on a free 127.0.0.1 port, each
in its own process group, stopped by pid), puts a TCP proxy of ours between
each client and smbd, and writes one file per TCP connection:

    <name>_<n>.bin   records in arrival order, each one byte of direction
                     (b"C" client->server, b"S" server->client) followed by
                     one whole NetBIOS session message as it was on the wire
                     (4-byte header: type 0x00, 24-bit big-endian length).

Clients:
    smbclient_L       smbclient -L //127.0.0.1 -p P -N          (guest)
    rpcclient_srvinfo rpcclient -U% -p P 127.0.0.1 -c srvinfo   (anonymous)
    smbclient_nt1     the same smbclient -L with client min protocol = NT1
                      (it opens with the SMB1 multi-protocol negotiate)

Rerun, as root, from the repository root:

    /usr/bin/python3 tests/vectors/smb2/capture.py
"""
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

OUT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(OUT))
from samba_root import free_port, global_conf, make_root, wait_port  # noqa: E402


def frames(buf):
    """Splits whole NetBIOS session messages off the front of buf."""
    out = []
    while len(buf) >= 4:
        n = int.from_bytes(buf[1:4], "big")
        if len(buf) < 4 + n:
            break
        out.append(bytes(buf[: 4 + n]))
        del buf[: 4 + n]
    return out


class Proxy:
    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.conns = []  # one list of records per connection
        self.lock = threading.Lock()
        self.stop = False
        self.threads = []
        t = threading.Thread(target=self.accept_loop, daemon=True)
        t.start()

    def accept_loop(self):
        while not self.stop:
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            records = []
            with self.lock:
                self.conns.append(records)
            t = threading.Thread(target=self.pump, args=(c, records), daemon=True)
            t.start()
            self.threads.append(t)

    def pump(self, c, records):
        s = socket.create_connection(("127.0.0.1", self.upstream))
        bufs = {c: bytearray(), s: bytearray()}
        peer = {c: s, s: c}
        tag = {c: b"C", s: b"S"}
        open_ = {c, s}
        while open_:
            r, _, _ = select.select(list(open_), [], [], 30)
            if not r:
                break
            for sock in r:
                data = sock.recv(65536)
                if not data:
                    open_.discard(sock)
                    try:
                        peer[sock].shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                bufs[sock] += data
                for f in frames(bufs[sock]):
                    records.append(tag[sock] + f)
                peer[sock].sendall(data)
        c.close()
        s.close()

    def wait_idle(self):
        for t in self.threads:
            t.join(10)
        self.threads = []


def main():
    root = tempfile.mkdtemp(prefix="opipe-smb2-capture")
    procs = []
    try:
        p = make_root(root, ["share"])
        port = free_port()
        conf = p("smb.conf")
        with open(conf, "w") as f:
            f.write(global_conf(p, "samba.log", port) + f"""
[tmp]
path = {p('share')}
read only = yes
guest ok = yes
""")
        for argv in (
            ["/usr/libexec/samba/samba-dcerpcd", "-F", "--no-process-group",
             "--libexec-rpcds", "-s", conf],
            ["/usr/sbin/smbd", "--foreground", "--no-process-group", "-s", conf],
        ):
            procs.append(subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        deadline = time.time() + 20
        while not os.path.exists(p("ncalrpc/np/srvsvc")) and time.time() < deadline:
            time.sleep(0.05)
        if not wait_port(port, deadline):
            sys.exit("smbd did not listen on %d" % port)
        proxy = Proxy(port)
        P = str(proxy.port)
        clients = {
            "smbclient_L": ["/usr/bin/smbclient", "-L", "//127.0.0.1", "-p", P, "-N"],
            "rpcclient_srvinfo": ["/usr/bin/rpcclient", "-U%", "-p", P, "127.0.0.1",
                                  "-c", "srvinfo"],
            "smbclient_nt1": ["/usr/bin/smbclient", "-L", "//127.0.0.1", "-p", P, "-N",
                              "--option=client min protocol=NT1"],
        }
        for name, argv in clients.items():
            with proxy.lock:
                before = len(proxy.conns)
            out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                 timeout=30, check=False)
            proxy.wait_idle()
            print(f"== {name}: exit {out.returncode}\n{out.stdout.decode()}{out.stderr.decode()}")
            with proxy.lock:
                conns = proxy.conns[before:]
            for i, records in enumerate(conns):
                if not records:
                    continue
                path = os.path.join(OUT, f"{name}_{i}.bin")
                with open(path, "wb") as f:
                    for r in records:
                        f.write(r)
                print(f"   {os.path.basename(path)}: {len(records)} messages")
        proxy.stop = True
    finally:
        for proc in procs:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
