"""The EVS calls the tool makes, each described as a ``Call`` that a route sends (``routes.Route.send``).

A call is data: method, path, query, body and the kind it is counted as. Adding an API call is one
function here; how it is sent (rate slot, credentials, refusal, limiter feedback, counting) is
written once, in ``routes``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple
from urllib.parse import quote

import orjson

from orchestrator.defaults import RUN_MARKER_KEY
from orchestrator.models import SnapshotRequest

PAGE = 1000
# Every list asks for all the enterprise projects the caller may see: without it a list may show only
# the default one (evs-api.md section 9), and a lookup would miss a snapshot of a disk in another.
EVERY_ENTERPRISE_PROJECT = ("enterprise_project_id", "all_granted_eps")


class Kind(enum.StrEnum):
    """What a request was for; the summary counts requests of each kind."""

    CREATE = "creates"
    LOOKUP = "lookups"
    POLL = "polls"
    CHECK = "checks"
    LIST = "lists"
    DELETE = "deletes"
    ROLLBACK = "rollbacks"
    METADATA = "metadata"


class Call(NamedTuple):
    """One API request, before credentials are added (a named tuple: one is made a request; build it
    by keyword)."""

    kind: Kind
    method: str
    path: str
    query: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    # Called each time the request is about to leave (after its rate and in-flight slots): create
    # journals the attempt there, so the journal's time is the send's, not the queue's.
    before: Callable[[], None] | None = None
    # An API some regions lack (the v5 group list, for prune and audit): the gateway's 404 answers the
    # call (``safe.fetch_json`` raises ``ApiMissing``) instead of closing the route.
    optional: bool = False


def create_snapshot(
    project_id: str, request: SnapshotRequest, run_id: str, *, before: Callable[[], None] | None = None
) -> Call:
    """Create one snapshot; the body carries the run's marker beside the row's own metadata."""
    body = orjson.dumps(request.body(marker={RUN_MARKER_KEY: run_id}))
    # Made in C (one a row: no __new__ frame), its fields in order: kind, method, path, query, body,
    # before, optional.
    return tuple.__new__(
        Call, (Kind.CREATE, "POST", f"/v2/{project_id}/cloudsnapshots", (), body, before, False)
    )


def list_snapshots(project_id: str, query: Sequence[tuple[str, str]], *, kind: Kind = Kind.LIST) -> Call:
    query = (*query, EVERY_ENTERPRISE_PROJECT)
    return Call(kind=kind, method="GET", path=f"/v2/{project_id}/cloudsnapshots/detail", query=query)


def show_snapshot(project_id: str, snapshot_id: str, *, kind: Kind = Kind.POLL) -> Call:
    return Call(kind=kind, method="GET", path=f"/v2/{project_id}/cloudsnapshots/{snapshot_id}")


def delete_snapshot(project_id: str, snapshot_id: str) -> Call:
    return Call(kind=Kind.DELETE, method="DELETE", path=f"/v2/{project_id}/cloudsnapshots/{snapshot_id}")


def rollback_snapshot(project_id: str, snapshot_id: str, volume_id: str, *, member: bool = False) -> Call:
    """Roll a snapshot back onto its own disk; ``member``: a v5 snapshot-group member, by the v5
    rollback (there is no group rollback)."""
    body = orjson.dumps({"rollback": {"volume_id": volume_id}})
    path = f"/v5/{project_id}/snapshots" if member else f"/v2/{project_id}/cloudsnapshots"
    return Call(kind=Kind.ROLLBACK, method="POST", path=f"{path}/{snapshot_id}/rollback", body=body)


def add_snapshot_metadata(project_id: str, snapshot_id: str, metadata: Mapping[str, str]) -> Call:
    """Add (or overwrite) keys of a snapshot's metadata; the others stay (evs_04_2099)."""
    return Call(
        kind=Kind.METADATA,
        method="POST",
        path=f"/v2/{project_id}/snapshots/{snapshot_id}/metadata",
        body=orjson.dumps({"metadata": dict(metadata)}),
    )


def delete_snapshot_metadata(project_id: str, snapshot_id: str, key: str) -> Call:
    """Remove one key of a snapshot's metadata (evs_04_2104)."""
    return Call(
        kind=Kind.METADATA,
        method="DELETE",
        path=f"/v2/{project_id}/snapshots/{snapshot_id}/metadata/{quote(key, safe='')}",
    )


def show_volume(project_id: str, volume_id: str, *, kind: Kind = Kind.CHECK) -> Call:
    return Call(kind=kind, method="GET", path=f"/v2/{project_id}/cloudvolumes/{volume_id}")


def list_volumes(project_id: str, query: Sequence[tuple[str, str]]) -> Call:
    query = (*query, EVERY_ENTERPRISE_PROJECT)
    return Call(kind=Kind.LIST, method="GET", path=f"/v2/{project_id}/cloudvolumes/detail", query=query)


def volumes_by_tags(project_id: str, tags: Mapping[str, Sequence[str]], *, offset: int) -> Call:
    body = {
        "action": "filter",
        "tags": [{"key": key, "values": list(values)} for key, values in tags.items()],
        "limit": PAGE,  # integers, as the official SDK's ListVolumesByTagsRequestBody sends them
        "offset": offset,
    }
    return Call(
        kind=Kind.LIST,
        method="POST",
        path=f"/v2/{project_id}/cloudvolumes/resource_instances/action",
        body=orjson.dumps(body),
    )


def quota(project_id: str) -> Call:
    return Call(
        kind=Kind.CHECK,
        method="GET",
        path=f"/v2/{project_id}/os-quota-sets/{project_id}",
        query=(("usage", "True"),),
    )


# --- v5 snapshot groups (evs-api.md 8.7, 10; the SDK's paths) ------------------------------------
def create_snapshot_group(
    project_id: str,
    *,
    server_id: str,
    volume_ids: Sequence[str],
    name: str,
    description: str | None,
    tags: Mapping[str, str],
    before: Callable[[], None] | None = None,
) -> Call:
    """Create one crash-consistent group of a server's disks; the run's marker is a group tag."""
    spec: dict[str, object] = {
        "server_id": server_id,
        "volume_ids": list(volume_ids),
        "instant_access": False,
        "name": name,
        "tags": dict(tags),
    }
    if description:
        spec["description"] = description
    return Call(
        kind=Kind.CREATE,
        method="POST",
        path=f"/v5/{project_id}/snapshot-groups",
        body=orjson.dumps({"snapshot_group": spec}),
        before=before,
    )


def list_snapshot_groups(
    project_id: str, query: Sequence[tuple[str, str]], *, kind: Kind = Kind.LIST, optional: bool = False
) -> Call:
    """The group list (``server_id``, ``tags`` = JSON ``[{"key", "value"}]``, ``limit``, ``offset``)."""
    path = f"/v5/{project_id}/snapshot-groups/detail"
    return Call(kind=kind, method="GET", path=path, query=query, optional=optional)


def show_snapshot_group(project_id: str, group_id: str, *, kind: Kind = Kind.POLL) -> Call:
    return Call(kind=kind, method="GET", path=f"/v5/{project_id}/snapshot-groups/{group_id}")


def delete_snapshot_group(project_id: str, group_id: str) -> Call:
    return Call(kind=Kind.DELETE, method="DELETE", path=f"/v5/{project_id}/snapshot-groups/{group_id}")


def list_group_members(project_id: str, query: Sequence[tuple[str, str]], *, kind: Kind = Kind.LIST) -> Call:
    """The v5 snapshot list (``snapshot_group_id`` picks one group's members)."""
    return Call(kind=kind, method="GET", path=f"/v5/{project_id}/snapshots/detail", query=query)


def show_job(project_id: str, job_id: str) -> Call:
    """A job's status: ``/v1/`` as the SDK's ``show_job`` (Terraform polls ``/v2/``)."""
    return Call(kind=Kind.POLL, method="GET", path=f"/v1/{project_id}/jobs/{job_id}")
