"""Every default of the tool, defined once (the CLI shows them; the settings objects use them), and the
metadata keys it writes.

Nothing is imported here, so the CLI can read them without slowing its start-up.
"""

NAME_TEMPLATE = "pre-maint-{date}-{volume_id}"
CONCURRENCY = 32
TIMEOUT = 30.0
MAX_ATTEMPTS = 8
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
WAIT_TIMEOUT = 3600.0
POLL_INTERVAL = 5.0
# An uncertain create is looked up this long before it may be sent again: API Gateway cuts a backend
# off after at most 60 s (answering 504 APIG.0203), and EVS commits a create it received within
# seconds; 60 s covers both with margin while other rows go on.
SETTLE = 60.0
# Manually created legacy snapshots per disk (evs-api.md 2.8); the emulator enforces the same number.
SNAPSHOTS_PER_DISK = 7
# After the first SIGINT/SIGTERM, work in flight gets this long to finish and be recorded.
GRACE = 10.0
# create's --pre-hook and --post-hook: one run of a hook takes at most this long, then its process
# group is killed (a pre-hook's rows are not sent; a post-hook that timed out makes the exit code 1).
HOOK_TIMEOUT = 60.0
# Notifications (--ping-url, --webhook) are best effort: one request takes at most this long, and is
# tried this many times, so a dead URL costs a run at most NOTIFY_TIMEOUT * NOTIFY_ATTEMPTS (30 s).
NOTIFY_TIMEOUT = 10.0
NOTIFY_ATTEMPTS = 3
NOTIFY_PAUSE = 1.0  # ceiling of the first pause between two attempts (full jitter, doubling)
NOTIFY_BODY_MAX = 10_000  # bytes of a ping's body (the summary as text), at most
# The metadata keys (a group's tags) the tool writes: its run marker, and the hold that ``create --hold``
# and ``hold`` set (prune never deletes a held snapshot). Neither a manifest nor --metadata may set them.
RUN_MARKER_KEY = "evs_snapshot_run"
HOLD_KEY = "evs_snapshot_hold"
