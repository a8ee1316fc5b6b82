"""A TCP proxy on loopback for fault tests: what a client sees when its network path freezes.

Usage: tcp_proxy.py PORT_FILE TARGET_PORT

Listens on a free port on 127.0.0.1 (written to PORT_FILE) and relays every connection to
127.0.0.1:TARGET_PORT. The test freezes the path by stopping this process (SIGSTOP): bytes sit
in socket buffers and nothing answers, as when a network stalls, while other clients of the same
server carry on. SIGCONT lets everything through again.
"""
import socket
import sys
import threading


def relay(source, destination):
    try:
        while True:
            chunk = source.recv(65536)
            if not chunk:
                break
            destination.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, destination):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    port_file, target_port = sys.argv[1], int(sys.argv[2])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    with open(port_file + ".tmp", "w") as handle:
        handle.write(str(listener.getsockname()[1]))
    import os
    os.rename(port_file + ".tmp", port_file)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port))
        except OSError:
            client.close()
            continue
        for source, destination in ((client, upstream), (upstream, client)):
            threading.Thread(target=relay, args=(source, destination), daemon=True).start()


if __name__ == "__main__":
    main()
