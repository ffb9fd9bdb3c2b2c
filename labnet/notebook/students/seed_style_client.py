"""The seed's stress client (``client_pool.py``), written again the way it is -- a client to measure.

    python3 seed_style_client.py {op} {volume} {clients} {pool} [--protocol sentinel|course]

``op`` is ``upload``, ``download`` or ``list``; ``volume`` like ``10MB`` names the file
``test_10mb.txt`` (the seed's own names: its table had 10MB, 50MB and 100MB; any ``<n>KB|MB|GB``
works here); ``clients`` workers of a ``ThreadPoolExecutor`` (``thread``) or
``ProcessPoolExecutor`` (``process``) each do the operation once.  Uploads read
``client_files/<file>``; downloads write ``client_downloads/<file>`` -- **every worker writes the
same file**, so nobody can tell afterwards which worker's bytes it holds (as in the seed).  Each
worker prints one line ``[OK] Time: 0.12s | Throughput: 123.45 B/s | Msg: ...``, then a summary
ending in ``Success count : N`` and ``Fail count : N``.  The count is the client's word: it says
``OK`` for whatever the server answered, whatever it stored.

Student-like on purpose: uploads are base64-encoded **block by block** (each 16 KiB block on its
own, and 16384 is not a multiple of 3, so ``=`` padding appears in the middle of the stream);
downloads are held whole in memory and decoded with ``base64.b64decode``.  It does what the seed
meant to do where the seed got it wrong by accident: ``sendall`` (not ``send``), and the end
marker is found even when it is cut across two reads, so against a correct server (labnet's,
whose decoder takes each padded group as the end of a segment) files arrive whole.

Protocols (``--protocol``, or the environment variable ``SERVER_PROTOCOL``; default ``sentinel``):

* ``sentinel`` (the seed's): ``UPLOAD <name>`` -> ``READY`` -> base64 ``__END__`` -> a message;
  ``DOWNLOAD <name>`` -> base64 ``__END__``; ``LIST`` -> names; the server closes.
* ``course``: ``UPLOAD <name> <base64>\\r\\n\\r\\n`` (streamed block by block),
  ``GET <name>\\r\\n\\r\\n``, ``LIST\\r\\n\\r\\n``; JSON replies ended by ``\\r\\n\\r\\n``.

The server's address is a constant, as in the seed; the environment variables ``SERVER_HOST`` and
``SERVER_PORT`` override it (labnet's ``matrix --client-cmd`` sets both).  Standard library only.

Run: ``SERVER_PORT=6666 python -m labnet.notebook.students.seed_style_client upload 10MB 5 thread``
"""

import base64
import concurrent.futures
import json
import os
import socket
import sys
import time

SERVER_HOST = os.environ.get("SERVER_HOST", "127.0.0.1")  # Ganti sesuai IP server (or set SERVER_HOST)
SERVER_PORT = int(os.environ.get("SERVER_PORT", "8989"))  # or set SERVER_PORT
PROTOCOL = os.environ.get("SERVER_PROTOCOL", "sentinel")
BUFFER_SIZE = 16384  # 16 KB buffer (not a multiple of 3: every block's base64 is padded)
CLIENT_DIR = "client_files"
DOWNLOAD_DIR = "client_downloads"
MARKER = b"__END__"
END = b"\r\n\r\n"


def file_for(volume):
    """``10MB`` -> ``test_10mb.txt`` (None for a volume that is not <number><KB|MB|GB>)."""
    v = volume.strip().upper()
    if len(v) > 2 and v[-2:] in ("KB", "MB", "GB") and v[:-2].isdigit():
        return f"test_{v.lower()}.txt"
    return None


def recv_until(s, end, data=b""):
    """Everything up to ``end`` (searched near the new bytes only, so a split marker is still found)."""
    data = bytearray(data)
    while (at := data.find(end)) == -1:
        part = s.recv(BUFFER_SIZE)
        if not part:
            raise ConnectionError(f"server closed before {end!r} ({len(data)} bytes received)")
        data += part
    return bytes(data[:at])


def upload_file(filename):
    try:
        filepath = os.path.join(CLIENT_DIR, filename)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.connect((SERVER_HOST, SERVER_PORT))
            if PROTOCOL == "course":
                s.sendall(f"UPLOAD {filename} ".encode())
            else:
                s.sendall(f"UPLOAD {filename}".encode())
                response = s.recv(BUFFER_SIZE)
                if response != b"READY":
                    return False, f"Server not ready: {response.decode(errors='replace')}"
            with open(filepath, "rb") as f:
                while chunk := f.read(BUFFER_SIZE):
                    s.sendall(base64.b64encode(chunk))  # block by block: '=' in the middle of the stream
            if PROTOCOL == "course":
                s.sendall(END)
                reply = json.loads(recv_until(s, END))
                return reply.get("status") == "OK", str(reply.get("data"))
            s.sendall(MARKER)
            result = s.recv(BUFFER_SIZE).decode(errors="replace")
            return True, result  # as the seed: whatever the server said
    except Exception as e:
        return False, str(e)


def download_file(filename):
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.connect((SERVER_HOST, SERVER_PORT))
            if PROTOCOL == "course":
                s.sendall(f"GET {filename}\r\n\r\n".encode())
                reply = json.loads(recv_until(s, END))
                if reply.get("status") != "OK":
                    return False, str(reply.get("data"))
                decoded = base64.b64decode(reply["data_file"])
            else:
                s.sendall(f"DOWNLOAD {filename}".encode())
                decoded = base64.b64decode(recv_until(s, MARKER))
        with open(os.path.join(DOWNLOAD_DIR, filename), "wb") as f:  # every worker: the same file
            f.write(decoded)
        return True, "Download success"
    except Exception as e:
        return False, str(e)


def list_files():
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.connect((SERVER_HOST, SERVER_PORT))
            if PROTOCOL == "course":
                s.sendall(b"LIST\r\n\r\n")
                reply = json.loads(recv_until(s, END))
                return reply.get("status") == "OK", ", ".join(reply.get("data") or [])
            s.sendall(b"LIST")
            data = b""
            while part := s.recv(BUFFER_SIZE):
                data += part
            return True, data.decode(errors="replace").replace("\n", " ")
    except Exception as e:
        return False, str(e)


def worker_task(operation, filename):
    start = time.time()
    if operation == "upload":
        success, msg = upload_file(filename)
    elif operation == "download":
        success, msg = download_file(filename)
    else:
        success, msg = list_files()
    time_used = time.time() - start
    path = os.path.join(CLIENT_DIR if operation == "upload" else DOWNLOAD_DIR, filename)
    size = os.path.getsize(path) if success and operation != "list" and os.path.exists(path) else 0
    throughput = size / time_used if time_used > 0 else 0
    return success, time_used, throughput, msg


def main():
    global PROTOCOL
    args = sys.argv[1:]
    if "--protocol" in args:
        at = args.index("--protocol")
        PROTOCOL = args[at + 1] if at + 1 < len(args) else ""
        del args[at:at + 2]
    if len(args) != 4 or PROTOCOL not in ("sentinel", "course"):
        print("Usage: python3 seed_style_client.py [upload/download/list] [10MB|50MB|100MB] [num_workers] "
              "[thread|process] [--protocol sentinel|course]")
        return 2
    operation, volume, mode = args[0].lower(), args[1], args[3].lower()
    num_workers = int(args[2])
    filename = file_for(volume)
    if filename is None or operation not in ("upload", "download", "list"):
        print(f"Volume {volume} / operasi {operation} tidak dikenali")
        return 2
    if mode == "thread":
        executor_class = concurrent.futures.ThreadPoolExecutor
    elif mode == "process":
        executor_class = concurrent.futures.ProcessPoolExecutor
    else:
        print("Mode harus 'thread' atau 'process'")
        return 2
    os.makedirs(DOWNLOAD_DIR, exist_ok=True)
    print(f"Starting stress test: {operation} {filename} | Workers: {num_workers} | Mode: {mode} | {PROTOCOL}")
    success_count = fail_count = 0
    total_time = total_throughput = 0.0
    with executor_class(max_workers=num_workers) as executor:
        futures = [executor.submit(worker_task, operation, filename) for _ in range(num_workers)]
        for future in concurrent.futures.as_completed(futures):
            success, time_used, throughput, msg = future.result()
            if success:
                success_count += 1
                total_time += time_used
                total_throughput += throughput
            else:
                fail_count += 1
            print(f"[{'OK' if success else 'FAIL'}] Time: {time_used:.2f}s | Throughput: {throughput:.2f} B/s "
                  f"| Msg: {msg}", flush=True)
    print("--- Summary ---")
    print(f"Operation         : {operation.upper()}")
    print(f"File              : {filename}")
    print(f"Workers           : {num_workers}")
    print(f"Mode              : {mode}")
    print(f"Average time      : {total_time / success_count if success_count else 0:.2f} s")
    print(f"Average throughput: {total_throughput / success_count if success_count else 0:.2f} B/s")
    print(f"Success count     : {success_count}")
    print(f"Fail count        : {fail_count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
