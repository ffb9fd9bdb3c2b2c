"""Stress clients with ONE deliberate fault each, in the seed's shape -- what labnet's client matrix must catch.

    python3 faulty_client.py MODE {op} {volume} {clients} {pool} [--protocol sentinel|course]

The arguments after ``MODE`` are the seed's (``seed_style_client``), and so are the files
(``client_files/test_10mb.txt``, ``client_downloads/test_10mb.txt``), the address (``SERVER_HOST``,
``SERVER_PORT``), the per-worker lines and the ``Success count`` line.  ``MODE``:

* ``truncating`` -- BUG (deliberate): an upload sends only its **first 16 KiB block**, then the end
  marker (``sentinel``) or the blank line (``course``); a download reads four times 16 KiB at most
  (a loop written for small test files: anything above 48 KiB is cut) and "fixes" the padding of
  what it has (``+ "=" * (-len % 4)``, the usual answer to *Incorrect padding*) before
  ``base64.b64decode``.  Either way it prints ``[OK]`` and
  counts a success: the server stored, or the client wrote, a file cut short.
* ``crashing`` -- BUG (deliberate): reads its server's address from a misspelt environment
  variable and dies with a traceback (status 1) before any connection.
* ``usage`` -- expects one more argument than it is given: prints its usage line and exits 2.
* ``hanging`` -- BUG (deliberate): each worker connects and then waits forever for a reply it never
  asked for (``process`` pool: in child processes, so killing it means killing a tree).

Standard library only, like every module of ``labnet.notebook.students``.

Run: ``SERVER_PORT=6666 python -m labnet.notebook.students.faulty_client truncating upload 10MB 5 thread``
"""

import base64
import concurrent.futures
import json
import os
import socket
import sys
import time

SERVER_HOST = os.environ.get("SERVER_HOST", "127.0.0.1")
SERVER_PORT = int(os.environ.get("SERVER_PORT", "8989"))
PROTOCOL = os.environ.get("SERVER_PROTOCOL", "sentinel")
BUFFER_SIZE = 16384
CLIENT_DIR = "client_files"
DOWNLOAD_DIR = "client_downloads"
MODES = ("truncating", "crashing", "usage", "hanging")


def truncated_upload(filename):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.connect((SERVER_HOST, SERVER_PORT))
        with open(os.path.join(CLIENT_DIR, filename), "rb") as f:
            first = f.read(BUFFER_SIZE)  # BUG (deliberate): the first block only
        if PROTOCOL == "course":
            s.sendall(f"UPLOAD {filename} ".encode() + base64.b64encode(first) + b"\r\n\r\n")
            reply = b""
            while b"\r\n\r\n" not in reply and (part := s.recv(BUFFER_SIZE)):
                reply += part
            return json.loads(reply.split(b"\r\n\r\n")[0]).get("status") == "OK", reply[:60].decode()
        s.sendall(f"UPLOAD {filename}".encode())
        if s.recv(BUFFER_SIZE) != b"READY":
            return False, "Server not ready"
        s.sendall(base64.b64encode(first) + b"__END__")
        return True, s.recv(BUFFER_SIZE).decode(errors="replace")


def truncated_download(filename):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.connect((SERVER_HOST, SERVER_PORT))
        s.sendall(f"GET {filename}\r\n\r\n".encode() if PROTOCOL == "course" else f"DOWNLOAD {filename}".encode())
        data = b""
        for _ in range(4):  # BUG (deliberate): a loop written for the small test files: 4 reads at most
            data += s.recv(BUFFER_SIZE)
    if PROTOCOL == "course":
        data = data.split(b'"data_file": "', 1)[-1].split(b'"')[0]
    data = data.replace(b"__END__", b"")
    decoded = base64.b64decode(data + b"=" * (-len(data) % 4))  # "fixes" Incorrect padding
    with open(os.path.join(DOWNLOAD_DIR, filename), "wb") as f:
        f.write(decoded)
    return True, "Download success"


def hang(filename):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.connect((SERVER_HOST, SERVER_PORT))
        s.recv(BUFFER_SIZE)  # BUG (deliberate): waits for a reply to a request it never sent
        while True:
            time.sleep(60)


def worker_task(mode, operation, filename):
    start = time.time()
    try:
        if mode == "hanging":
            hang(filename)
        success, msg = (truncated_upload if operation == "upload" else truncated_download)(filename)
    except Exception as e:
        success, msg = False, str(e)
    time_used = time.time() - start
    size = os.path.getsize(os.path.join(CLIENT_DIR, filename)) if operation == "upload" and success else 0
    if operation == "download" and success:
        size = os.path.getsize(os.path.join(DOWNLOAD_DIR, filename))
    return success, time_used, size / time_used if time_used > 0 else 0, msg


def main():
    global PROTOCOL
    args = sys.argv[1:]
    if "--protocol" in args:
        at = args.index("--protocol")
        PROTOCOL = args[at + 1] if at + 1 < len(args) else ""
        del args[at:at + 2]
    mode = args[0] if args else ""
    if mode not in MODES or len(args) != 5 or mode == "usage":
        # usage mode: written for six arguments (a host too), given five
        print("Usage: python3 faulty_client.py MODE [upload/download] [10MB|50MB|100MB] [num_workers] "
              "[thread|process] [server_ip]", file=sys.stderr)
        return 2
    if mode == "crashing":
        global SERVER_HOST
        SERVER_HOST = os.environ["SERVER_ADRESS"]  # BUG (deliberate): misspelt, never set: KeyError
    operation, volume, workers, pool = args[1].lower(), args[2], int(args[3]), args[4].lower()
    filename = f"test_{volume.lower()}.txt"
    os.makedirs(DOWNLOAD_DIR, exist_ok=True)
    executor_class = concurrent.futures.ProcessPoolExecutor if pool == "process" else concurrent.futures.ThreadPoolExecutor
    print(f"Starting stress test: {operation} {filename} | Workers: {workers} | Mode: {pool} | {mode}", flush=True)
    success_count = fail_count = 0
    with executor_class(max_workers=workers) as executor:
        futures = [executor.submit(worker_task, mode, operation, filename) for _ in range(workers)]
        for future in concurrent.futures.as_completed(futures):
            success, time_used, throughput, msg = future.result()
            success_count += success
            fail_count += not success
            print(f"[{'OK' if success else 'FAIL'}] Time: {time_used:.2f}s | Throughput: {throughput:.2f} B/s "
                  f"| Msg: {msg}", flush=True)
    print("--- Summary ---")
    print(f"Success count     : {success_count}")
    print(f"Fail count        : {fail_count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
