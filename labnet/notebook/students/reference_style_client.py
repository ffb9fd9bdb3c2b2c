"""The course's reference client (``file_client_cli.py``), written again the way it is -- a client to measure.

Dialect ``course`` as the reference client speaks it: ``LIST`` or ``GET <name>`` with **no terminator
at all** (the server must end the request at a silence), then the reply read 16 bytes at a time until
``\\r\\n\\r\\n`` is somewhere in everything read so far (the whole buffer is searched again after
every read: quadratic in the reply's size, as in the original), ``json.loads``, and the file's base64
decoded with ``base64.b64decode`` and written under the name the server sent (``data_namafile``),
in the current folder.  The socket is never closed explicitly: it closes when the process ends.

Like a student's copy, the server's address is a constant at the top; here it can also be set by
the environment variables ``SERVER_HOST`` and ``SERVER_PORT`` (labnet's ``matrix --client-cmd``
sets both), so the file need not be edited to point it at another server.

Run: ``SERVER_PORT=6666 python -m labnet.notebook.students.reference_style_client get test_10mb.txt``
(``list`` or no argument: list the server's files).  Exit status 0 when the server said ``OK``, else 1.
Standard library only, like every module of ``labnet.notebook.students``.
"""

import base64
import json
import logging
import os
import socket
import sys

SERVER_HOST = os.environ.get("SERVER_HOST", "127.0.0.1")  # edit, or set SERVER_HOST
SERVER_PORT = int(os.environ.get("SERVER_PORT", "6666"))  # edit, or set SERVER_PORT
server_address = (SERVER_HOST, SERVER_PORT)


def send_command(command_str=""):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect(server_address)
    logging.warning(f"connecting to {server_address}")
    try:
        sock.sendall(command_str.encode())  # no terminator: the server must notice the silence
        data_received = ""
        while True:
            data = sock.recv(16)
            if data:
                data_received += data.decode()
                if "\r\n\r\n" in data_received:  # the whole buffer, every time (as the original)
                    break
            else:
                break
        return json.loads(data_received)
    except Exception:
        logging.warning("error during data receiving")
        return False


def remote_list():
    hasil = send_command("LIST")
    if hasil and hasil["status"] == "OK":
        print("daftar file : ")
        for nmfile in hasil["data"]:
            print(f"- {nmfile}")
        return True
    print("Gagal")
    return False


def remote_get(filename=""):
    hasil = send_command(f"GET {filename}")
    if hasil and hasil["status"] == "OK":
        namafile = hasil["data_namafile"]
        isifile = base64.b64decode(hasil["data_file"])
        fp = open(namafile, "wb+")
        fp.write(isifile)
        fp.close()
        print(f"berhasil: {namafile} ({len(isifile)} bytes)")
        return True
    print("Gagal")
    return False


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["get"] and len(args) == 2:
        ok = remote_get(args[1])
    else:
        ok = remote_list()
    sys.exit(0 if ok else 1)
