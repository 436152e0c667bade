#!/usr/bin/python3
"""A raw SFTP client for the e2e suite: sends OPEN with the exact flags
asked for, then READ / WRITE / CLOSE on the handle, and prints one line per
step (`open ok`, `open denied: ...`, `read ok N`, `read denied: ...`, ...).

Needs Debian's python3-paramiko (run with /usr/bin/python3).

usage: sftp-raw.py PORT USER KEYFILE STEP...
  STEP: open:FLAGS:PATH   (FLAGS in hex; the handle is kept for what follows)
        read:LEN  write:TEXT  close
"""

import sys

import paramiko
from paramiko.py3compat import long
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_OPEN, CMD_READ, CMD_WRITE
from paramiko.sftp_attr import SFTPAttributes


def main():
    port, user, keyfile, *steps = sys.argv[1:]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=int(port),
        username=user,
        key_filename=keyfile,
        look_for_keys=False,
        allow_agent=False,
        timeout=30,
    )
    sftp = client.open_sftp()
    handle = None
    for step in steps:
        kind, _, arg = step.partition(":")
        if kind in ("read", "write", "close") and handle is None:
            print(f"{kind} skipped: no handle", flush=True)
            continue
        try:
            if kind == "open":
                handle = None
                flags, _, path = arg.partition(":")
                t, msg = sftp._request(CMD_OPEN, path, int(flags, 16), SFTPAttributes())
                if t != CMD_HANDLE:
                    raise IOError(f"unexpected reply {t}")
                handle = msg.get_binary()
                print("open ok", flush=True)
            elif kind == "read":
                t, msg = sftp._request(CMD_READ, handle, long(0), int(arg))
                print(f"read ok {len(msg.get_binary())}", flush=True)
            elif kind == "write":
                sftp._request(CMD_WRITE, handle, long(0), arg.encode())
                print("write ok", flush=True)
            elif kind == "close":
                sftp._request(CMD_CLOSE, handle)
                print("close ok", flush=True)
            else:
                sys.exit(f"unknown step {step!r}")
        except (IOError, EOFError) as e:
            print(f"{kind} denied: {e}", flush=True)
    sftp.close()
    client.close()


if __name__ == "__main__":
    main()
