"""The other ways to do scenario 1's job, each run as its own process: ``python -m benchmarks.contenders NAME``.

- ``bare``: a hand-written aiohttp loop, ``--concurrency`` workers, AK/SK signing, no report.
- ``sdk-sync``: the official SDK's ``EvsClient`` in a ``ThreadPoolExecutor`` of ``--concurrency``.
- ``sdk-async``: the official SDK's ``EvsAsyncClient`` (its own executor), every request submitted at once.

Each prints one JSON line: rows sent, rows accepted, and the seconds of the work itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson

from benchmarks.common import PROJECT
from orchestrator.api import signing
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK


def volumes(rows: int, offset: int) -> list[str]:
    return [str(uuid.UUID(int=offset + index + 1, version=4)) for index in range(rows)]


async def bare(url: str, ids: list[str], concurrency: int) -> int:
    import aiohttp
    from yarl import URL

    target = URL(f"{url}/v2/{PROJECT}/cloudsnapshots")
    host = f"{target.host}:{target.port}"
    queue: asyncio.Queue[str] = asyncio.Queue()
    for volume_id in ids:
        queue.put_nowait(volume_id)
    accepted = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while not queue.empty():
            volume_id = queue.get_nowait()
            body = orjson.dumps(
                {"snapshot": {"volume_id": volume_id, "force": False, "name": f"bare-{volume_id}"}}
            )
            headers = {
                "Content-Type": "application/json;charset=utf-8",
                "X-Project-Id": PROJECT,
                "X-Sdk-Date": datetime.now(UTC).strftime(signing.DATE_FORMAT),
                "Host": host,
            }
            headers["Authorization"] = signing.authorization(
                ak=DEFAULT_AK,
                sk=DEFAULT_SK,
                method="POST",
                path=target.path,
                query=[],
                headers=headers,
                body=body,
            )
            async with session.post(target, data=body, headers=headers) as response:
                await response.read()
                accepted += response.status == 202

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return accepted


def sdk_client(url: str, concurrency: int, *, asynchronous: bool) -> Any:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkevs.v2 import EvsAsyncClient, EvsClient

    config = HttpConfig.get_default_config()
    config.pool_connections = concurrency
    config.pool_maxsize = concurrency
    builder = (EvsAsyncClient if asynchronous else EvsClient).new_builder()
    return (
        builder.with_http_config(config)
        .with_credentials(BasicCredentials(DEFAULT_AK, DEFAULT_SK, PROJECT))
        .with_endpoints([url])
        .build()
    )


def sdk_request(volume_id: str) -> Any:
    from huaweicloudsdkevs.v2 import CreateSnapshotOption, CreateSnapshotRequest, CreateSnapshotRequestBody

    option = CreateSnapshotOption(volume_id=volume_id, force=False, name=f"sdk-{volume_id}")
    return CreateSnapshotRequest(body=CreateSnapshotRequestBody(snapshot=option))


def sdk_sync(url: str, ids: list[str], concurrency: int) -> int:
    client = sdk_client(url, concurrency, asynchronous=False)

    def create(volume_id: str) -> bool:
        return bool(client.create_snapshot(sdk_request(volume_id)).snapshot.status == "creating")

    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(create, ids))


def sdk_async(url: str, ids: list[str], concurrency: int) -> int:
    client = sdk_client(url, concurrency, asynchronous=True)
    futures = [client.create_snapshot_async(sdk_request(volume_id)) for volume_id in ids]
    return sum(future.result().snapshot.status == "creating" for future in futures)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=["bare", "sdk-sync", "sdk-async"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    ids = volumes(args.rows, args.offset)
    started = time.perf_counter()
    if args.name == "bare":
        accepted = asyncio.run(bare(args.url, ids, args.concurrency))
    elif args.name == "sdk-sync":
        accepted = sdk_sync(args.url, ids, args.concurrency)
    else:
        accepted = sdk_async(args.url, ids, args.concurrency)
    print(
        orjson.dumps(
            {"rows": args.rows, "accepted": accepted, "seconds": time.perf_counter() - started}
        ).decode()
    )


if __name__ == "__main__":
    main(sys.argv[1:])
