#!/usr/bin/env python3
"""TCP forwarder in front of the moto server: the published KMS endpoint.

Usage: kmsgate.py LISTEN_PORT TARGET_PORT   (both on 127.0.0.1)

`testenv kms-stop` kills this process, so the published endpoint really refuses
connections (and open connections are cut), while moto keeps running behind it
on its private port and its keys survive. `testenv kms-start` starts it again on
the same port. Standard library only.
"""
import asyncio
import socket
import sys

HOST = "127.0.0.1"


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_r, client_w, target_port: int) -> None:
    try:
        up_r, up_w = await asyncio.open_connection(HOST, target_port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))


async def main() -> None:
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, listen_port))
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, target_port), sock=sock
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
