"""Every ``SMITHERS_*`` environment variable, declared once: name, default and meaning.

The configuration classes (:class:`~smithers.shared.config.SchedulerConfig`,
``WorkerConfig``, ``GatewayConfig``, ``SandboxConfig``, ``BundleBounds``,
``TtlPolicy``) and the entry points read the environment through these declarations,
and ``smithers config --markdown`` renders them as docs/configuration.md (a test fails
when that file and this table differ). A new variable is one more
``Setting`` in a section below.
"""

from __future__ import annotations

import textwrap

from smithers.shared.setting import (
    SECTIONS,
    Setting,
    at_least,
    choice,
    count,
    duration,
    format_duration,
    non_negative,
    parse_duration,
    positive,
    section,
    switch,
    text,
    whole,
)

__all__ = ["SECTIONS", "Setting", "format_duration", "names", "parse_duration", "render_markdown"]


_deployment = section(
    "Deployment",
    "Every command finds its deployment the same way: `SMITHERS_DATABASE_URL` and"
    " `SMITHERS_REDIS_URL` together name a cluster; otherwise the data directory holds the"
    " embedded default: the SQLite file `smithers.db`, the `broker.json` that `smithers up`"
    " writes for its embedded Redis, and `deployment.json`, its record of the workflow modules"
    " (and of a store or broker that is not the embedded one), which other commands read for"
    " any variable their environment does not set. `--data-dir` on the command line wins over"
    " `SMITHERS_DATA_DIR`.",
)
DATABASE_URL = _deployment.add(
    Setting(
        "SMITHERS_DATABASE_URL",
        "",
        "The store, an SQLAlchemy URL: `postgresql+psycopg://user@host/db` or `sqlite:///path`.",
        text,
        shown="`sqlite:///<data dir>/smithers.db`",
    )
)
REDIS_URL = _deployment.add(
    Setting(
        "SMITHERS_REDIS_URL",
        "",
        "Redis (`redis://host:6379/0`): wake-ups, and step messages unless `SMITHERS_BROKER_URL`"
        " names another broker.",
        text,
        shown="the embedded broker in `<data dir>/broker.json`",
    )
)
BROKER_URL = _deployment.add(
    Setting(
        "SMITHERS_BROKER_URL",
        "",
        "The broker that carries step messages, a Celery broker URL (`redis://…`,"
        " `amqp://user:password@host:5672//`); wake-ups stay on Redis.",
        text,
        shown="`SMITHERS_REDIS_URL`",
    )
)
DATA_DIR = _deployment.add(
    Setting(
        "SMITHERS_DATA_DIR",
        "",
        "The embedded deployment's directory: `smithers.db`, `deployment.json`, `broker.json`,"
        " `gateway.key`, `logs/`, `sandbox/`.",
        text,
        shown="the nearest `.smithers/` holding a `deployment.json` (here or in a parent), else"
        " `./.smithers`",
    )
)
WORKFLOWS = _deployment.add(
    Setting(
        "SMITHERS_WORKFLOWS",
        "",
        "Comma-separated Python modules whose workflows are registered"
        " (`smithers.examples.hello,myproject.flows`).",
        text,
        shown="none",
    )
)
DEPLOYMENT_VERSION = _deployment.add(
    Setting(
        "SMITHERS_DEPLOYMENT_VERSION",
        "dev",
        "The release name recorded on every run (the image's `DEPLOYMENT_VERSION` build argument).",
        text,
    )
)

_store = section("Store", "How the processes use the store.")
PG_PREPARE = _store.add(
    Setting(
        "SMITHERS_PG_PREPARE",
        True,
        "`0` stops PostgreSQL connections from preparing the hot statements (for PgBouncer in"
        " transaction pooling mode).",
        switch,
    )
)

_logs = section(
    "Logs",
    "Every process writes its log records to stderr through one handler that redacts secrets"
    " first: gunicorn's and Celery's own records included.",
)
LOG_FORMAT = _logs.add(
    Setting(
        "SMITHERS_LOG_FORMAT",
        "auto",
        "`json`: one JSON object per line (`time`, `level`, `process`, `logger`, `message`,"
        " fields). `text`: one readable line per record. `auto`: `text` when stderr is a"
        " terminal, `json` otherwise (a file, a pipe, a container's log, the children of"
        " `smithers up`).",
        choice("auto", "text", "json"),
    )
)

LOG_LEVEL = _logs.add(
    Setting(
        "SMITHERS_LOG_LEVEL",
        "INFO",
        "The log level of a worker started as `celery -A smithers.workers worker`"
        " (`smithers worker` and `smithers scheduler` take `--log-level`).",
        text,
    )
)

_scheduler = section("Scheduler", "`smithers scheduler` (two or more are safe).")
SWEEP_INTERVAL = _scheduler.add(
    Setting(
        "SMITHERS_SWEEP_INTERVAL",
        1.0,
        "Seconds between the scheduler's sweeps for due timers, leases and approvals.",
        positive,
    )
)
REDISPATCH_AFTER = _scheduler.add(
    Setting(
        "SMITHERS_REDISPATCH_AFTER",
        300.0,
        "Seconds after which a dispatched step nobody claimed is sent again, whatever the"
        " broker says (at least 1). A step whose message the broker lost (a FLUSHALL, a"
        " restart, a failed send) is sent again at the next sweep, so this only bounds"
        " other losses; a message merely waiting in a busy queue is not sent twice before it.",
        at_least(1.0),
    )
)
MAX_LOST = _scheduler.add(
    Setting(
        "SMITHERS_MAX_LOST",
        5,
        "Times a step may be lost (its worker died) before its node fails.",
        count,
    )
)

_decisions = section(
    "Decisions",
    "Every process that commits a change that can move a run (a worker's step, a launch, an"
    " approval, a cancel) decides what follows in the same transaction; the scheduler decides"
    " what time and recovery drive, and the runs a writer leaves to it.",
)
DECIDE_MAX_NODES = _decisions.add(
    Setting(
        "SMITHERS_DECIDE_MAX_NODES",
        500,
        "A writer decides a run only when its workflow can have at most this many node"
        " executions (a loop's body counts once per iteration); a wider run (a wide fan-out,"
        " a long loop) is left to the scheduler, which batches its decisions. 0: writers"
        " never decide, the scheduler decides every run.",
        whole,
    )
)
CHAIN_STEPS = _decisions.add(
    Setting(
        "SMITHERS_CHAIN_STEPS",
        100,
        "Steps a worker runs in place, one after another, for one delivered message, when each"
        " step's commit makes exactly one step ready on its queue (0: every step goes through"
        " the broker).",
        whole,
    )
)
CHAIN_SECONDS = _decisions.add(
    Setting(
        "SMITHERS_CHAIN_SECONDS",
        10.0,
        "Seconds a worker goes on running a chain in place for one delivered message; the next"
        " step after that goes through the broker, so one run cannot hold a slot.",
        positive,
    )
)

_revisions = section(
    "Revisions",
    "Schedulers and workers announce the workflow revisions they hold with a heartbeat in the"
    " store; a run whose revision no live scheduler or worker holds is marked"
    ' `revision_unavailable` (docs/operations.md, "Deploying a new revision").',
)
HOLDER_HEARTBEAT = _revisions.add(
    Setting(
        "SMITHERS_HOLDER_HEARTBEAT",
        5.0,
        "Seconds between a scheduler's or worker's announcements of the revisions it holds.",
        positive,
    )
)
HOLDER_TTL = _revisions.add(
    Setting(
        "SMITHERS_HOLDER_TTL",
        30.0,
        "Seconds after its last announcement that a process no longer counts as holding its"
        " revisions (keep it a few heartbeats long: it is also the grace a restarting process has).",
        positive,
    )
)

_worker = section("Worker", "`smithers worker` and `celery -A smithers.workers worker`.")
LEASE_SECONDS = _worker.add(
    Setting(
        "SMITHERS_LEASE_SECONDS",
        4.0,
        "Seconds an attempt's lease lasts: a running step's worker renews it every third of"
        " it, and a dead worker's step is given up and dispatched again when it lapses.",
        positive,
    )
)
VISIBILITY_TIMEOUT = _worker.add(
    Setting(
        "SMITHERS_VISIBILITY_TIMEOUT",
        3600.0,
        "Seconds before Redis hands an unacknowledged step message to another worker.",
        positive,
    )
)
CONCURRENCY = _worker.add(
    Setting(
        "SMITHERS_CONCURRENCY",
        None,
        "Steps a worker runs at once (`--concurrency` wins).",
        count,
        shown="the number of CPUs",
    )
)
SANDBOX_ROOT = _worker.add(
    Setting(
        "SMITHERS_SANDBOX_ROOT",
        None,
        "Where sandbox steps keep their request and result bundles.",
        text,
        shown="`<data dir>/sandbox`",
    )
)
SECRETS_DIR = _worker.add(
    Setting(
        "SMITHERS_SECRETS_DIR",
        None,
        "A directory of mounted secrets: a step's secret `NAME` is read from `<dir>/NAME`"
        " before the environment.",
        text,
        shown="unset (the environment only)",
    )
)
SECRETS_ALLOW = _worker.add(
    Setting(
        "SMITHERS_SECRETS_ALLOW",
        "",
        "Names a step may take as a secret from the worker's environment, comma-separated, besides"
        " `SMITHERS_SECRET_*`; never any other `SMITHERS_*` (files in `SMITHERS_SECRETS_DIR` are allowed).",
        text,
        shown="none",
    )
)

_sandbox = section(
    "Sandbox",
    "A sandbox worker (`smithers worker --queues sandbox`) and the bounds on the result"
    " bundle a sandbox hands back (docs/sandbox.md).",
)
SANDBOX_RUNTIME = _sandbox.add(
    Setting("SMITHERS_SANDBOX_RUNTIME", "docker", "The container runtime sandboxes run on.", text)
)
SANDBOX_VOLUMES = _sandbox.add(
    Setting(
        "SMITHERS_SANDBOX_VOLUMES",
        "",
        "Host directories a sandbox may mount, `/srv/data:ro,/srv/out:rw` (read-only unless `:rw`).",
        text,
        shown="none",
    )
)
SANDBOX_PROXY_IMAGE = _sandbox.add(
    Setting(
        "SMITHERS_SANDBOX_PROXY_IMAGE",
        "smithers-sandbox:latest",
        "The image (with `python3`, never pulled) of the egress proxy of `network='allowlist'` steps.",
        text,
    )
)
SANDBOX_WORK_MB = _sandbox.add(
    Setting("SMITHERS_SANDBOX_WORK_MB", 256, "Size of a sandbox's writable work area, in MiB.", count)
)
SANDBOX_MAX_LOG_BYTES = _sandbox.add(
    Setting("SMITHERS_SANDBOX_MAX_LOG_BYTES", 1024 * 1024, "Bytes of a container's log that are kept.", count)
)
SANDBOX_MAX_MANIFEST_BYTES = _sandbox.add(
    Setting("SMITHERS_SANDBOX_MAX_MANIFEST_BYTES", 64 * 1024, "Size of a bundle's `manifest.json`.", count)
)
SANDBOX_MAX_BUNDLE_BYTES = _sandbox.add(
    Setting(
        "SMITHERS_SANDBOX_MAX_BUNDLE_BYTES",
        16 * 1024 * 1024,
        "Total bytes of the regular files in a bundle.",
        count,
    )
)
SANDBOX_MAX_PATCHES = _sandbox.add(
    Setting("SMITHERS_SANDBOX_MAX_PATCHES", 64, "Patches in a bundle's manifest.", count)
)
SANDBOX_MAX_ARTIFACTS = _sandbox.add(
    Setting("SMITHERS_SANDBOX_MAX_ARTIFACTS", 256, "Artifacts in a bundle's manifest.", count)
)
SANDBOX_MAX_PATH_LENGTH = _sandbox.add(
    Setting("SMITHERS_SANDBOX_MAX_PATH_LENGTH", 255, "UTF-8 bytes of a bundle-relative path.", count)
)
SANDBOX_MAX_OUTPUT_DEPTH = _sandbox.add(
    Setting(
        "SMITHERS_SANDBOX_MAX_OUTPUT_DEPTH", 16, "Nesting of `outputs` (the object itself is depth 1).", count
    )
)
SANDBOX_MAX_ENTRIES = _sandbox.add(
    Setting("SMITHERS_SANDBOX_MAX_ENTRIES", 4096, "Files, directories and links in a bundle.", count)
)
SANDBOX_MAX_INLINE_BYTES = _sandbox.add(
    Setting(
        "SMITHERS_SANDBOX_MAX_INLINE_BYTES",
        1024 * 1024,
        "Bytes of patch text and patched files copied into the step's output and its sandbox record.",
        count,
    )
)

_gateway = section(
    "Gateway",
    '`smithers gateway`, `gunicorn "smithers.gateway:create_app()"` and'
    " `flask --app smithers.gateway run`. The token signing key comes from"
    " `SMITHERS_JWT_SECRET`, else the file `SMITHERS_JWT_SECRET_FILE`, else (single node"
    " only) `<data dir>/gateway.key`, created on first use with mode 0600.",
)
JWT_SECRET = _gateway.add(
    Setting("SMITHERS_JWT_SECRET", "", "The HS256 token signing key (at least 32 characters).", text)
)
JWT_SECRET_FILE = _gateway.add(
    Setting("SMITHERS_JWT_SECRET_FILE", "", "A file holding the signing key (a mounted secret).", text)
)
JWT_ALGORITHM = _gateway.add(
    Setting(
        "SMITHERS_JWT_ALGORITHM",
        "HS256",
        "How the gateway's own tokens are signed: `HS256` (the shared secret above, for a single"
        " node) or `RS256`, `ES256`, `EdDSA` (a key pair: whoever holds only the public key"
        " verifies tokens but cannot mint one). With a key pair, `SMITHERS_JWT_SECRET` (or"
        " `<data dir>/gateway.key`) signs console sessions only; without one sessions are off.",
        choice("HS256", "RS256", "ES256", "EdDSA"),
    )
)
GRANT_CACHE = _gateway.add(
    Setting(
        "SMITHERS_GRANT_CACHE",
        1.0,
        "Seconds a gateway worker reuses a grant row it read to check a token (0: read it on"
        " every request). A revocation through this worker applies at once; one made elsewhere"
        " (`smithers token revoke`, another worker or gateway) within this many seconds.",
        non_negative,
    )
)
JWT_PRIVATE_KEY_FILE = _gateway.add(
    Setting(
        "SMITHERS_JWT_PRIVATE_KEY_FILE",
        "",
        "PEM private key (RSA of 2048 bits or more, EC P-256, or Ed25519, matching"
        " `SMITHERS_JWT_ALGORITHM`): where tokens are issued (`smithers token issue`,"
        " `POST /v1/grants`). Leave it off the gateways that only verify.",
        text,
    )
)
JWT_PUBLIC_KEY_FILE = _gateway.add(
    Setting(
        "SMITHERS_JWT_PUBLIC_KEY_FILE",
        "",
        "PEM public key the gateway verifies its own tokens with (derived from the private key"
        " when only that is given).",
        text,
    )
)
GATEWAY_WORKER_CLASS = _gateway.add(
    Setting(
        "SMITHERS_GATEWAY_WORKER_CLASS",
        "gevent",
        "gunicorn's worker class, `gevent` or `gthread` (`--worker-class` wins).",
        text,
    )
)
GATEWAY_MAX_BODY = _gateway.add(
    Setting("SMITHERS_GATEWAY_MAX_BODY", 1 << 20, "Largest request body, in bytes.", count)
)
GATEWAY_PAGE_MAX = _gateway.add(
    Setting("SMITHERS_GATEWAY_PAGE_MAX", 200, "Largest page a list endpoint returns.", count)
)
GATEWAY_AUTH_FAILURES = _gateway.add(
    Setting(
        "SMITHERS_GATEWAY_AUTH_FAILURES",
        30,
        "Failed authentications one source (client address) may make per"
        " `SMITHERS_GATEWAY_AUTH_WINDOW` before it gets 429 (counted per gateway worker).",
        count,
    )
)
GATEWAY_AUTH_WINDOW = _gateway.add(
    Setting(
        "SMITHERS_GATEWAY_AUTH_WINDOW",
        60.0,
        "Seconds over which failed authentications are counted; also the interval per"
        " which denied requests of one source and reason make one audit row with a count.",
        positive,
    )
)
CORS_ORIGINS = _gateway.add(
    Setting(
        "SMITHERS_CORS_ORIGINS",
        "",
        "Origins whose pages may call the API (`https://console.example.com`, comma-separated;"
        " exact origins, never `*`).",
        text,
        shown="none (no CORS headers)",
    )
)
SESSION_TTL = _gateway.add(
    Setting(
        "SMITHERS_SESSION_TTL",
        3600,
        "Lifetime of a console session (`POST /v1/session`), never past its token's expiry.",
        duration,
    )
)
SESSION_SECURE_COOKIE = _gateway.add(
    Setting(
        "SMITHERS_SESSION_SECURE_COOKIE",
        "auto",
        "`Secure` on the session cookie: `auto` (when the request came over https), `true`"
        " (behind a TLS proxy that speaks plain HTTP to the gateway) or `false`.",
        choice("auto", "true", "false"),
    )
)
SSE_POLL_SECONDS = _gateway.add(
    Setting(
        "SMITHERS_SSE_POLL_SECONDS", 0.025, "Seconds between polls of the store for new events.", positive
    )
)
SSE_KEEPALIVE_SECONDS = _gateway.add(
    Setting(
        "SMITHERS_SSE_KEEPALIVE_SECONDS",
        15.0,
        "Seconds of silence after which an event stream sends a keep-alive comment.",
        positive,
    )
)
SSE_MAX_SECONDS = _gateway.add(
    Setting(
        "SMITHERS_SSE_MAX_SECONDS",
        3600.0,
        "Seconds an event stream stays open before the client is asked to resume.",
        positive,
    )
)

_tokens = section(
    "Tokens",
    "Lifetimes of the gateway's bearer tokens, as durations (`90s`, `15m`, `12h`, `30d`,"
    " `2w`): a default, and a ceiling a request may not pass.",
)
TOKEN_TTL_PERSON_DEFAULT = _tokens.add(
    Setting("SMITHERS_TOKEN_TTL_PERSON_DEFAULT", 15 * 60, "A person's token.", duration)
)
TOKEN_TTL_PERSON_MAX = _tokens.add(
    Setting("SMITHERS_TOKEN_TTL_PERSON_MAX", 12 * 3600, "A person's token, at most.", duration)
)
TOKEN_TTL_AUTOMATION_DEFAULT = _tokens.add(
    Setting("SMITHERS_TOKEN_TTL_AUTOMATION_DEFAULT", 86400, "An automation token.", duration)
)
TOKEN_TTL_AUTOMATION_MAX = _tokens.add(
    Setting(
        "SMITHERS_TOKEN_TTL_AUTOMATION_MAX",
        30 * 86400,
        "An automation token, at most.",
        duration,
    )
)
TOKEN_AUTOMATION_PRIVILEGED = _tokens.add(
    Setting(
        "SMITHERS_TOKEN_AUTOMATION_PRIVILEGED_SCOPES",
        "",
        "Which of `admin` and `approval:submit` an automation grant may carry (comma-separated),"
        " from `smithers token issue`, `POST /v1/grants` or an identity provider whose `kind` is"
        " `automation`; a person's grant may carry any scope.",
        text,
        shown="neither",
    )
)

_idp = section(
    "Identity providers",
    "JWTs from outside issuers (an OIDC provider, a CI system's workload identity), trusted as"
    " `SMITHERS_IDP_ISSUERS_FILE` describes: issuer, audience, JWKS, which claim maps to which"
    " scopes, and the kind of grant the issuer's tokens become (docs/operations.md, *Tokens from"
    " an identity provider*). Every accepted token is recorded once as a grant row naming its"
    " issuer, so it is listed, audited and revocable like the gateway's own.",
)
IDP_ISSUERS_FILE = _idp.add(
    Setting(
        "SMITHERS_IDP_ISSUERS_FILE",
        "",
        'A JSON file: `{"issuers": [...]}`, one object per trusted issuer.',
        text,
        shown="none (only the gateway's own tokens)",
    )
)
IDP_LEEWAY = _idp.add(
    Setting(
        "SMITHERS_IDP_LEEWAY",
        60,
        "Clock skew allowed on an outside token's `exp`, `nbf` and `iat` (at most 5m).",
        duration,
    )
)
IDP_JWKS_TIMEOUT = _idp.add(
    Setting(
        "SMITHERS_IDP_JWKS_TIMEOUT",
        5.0,
        "Seconds a JWKS fetch may take (connect and read) before the token is refused.",
        positive,
    )
)
IDP_JWKS_CACHE = _idp.add(
    Setting(
        "SMITHERS_IDP_JWKS_CACHE",
        600,
        "How long a fetched JWKS (URL or file) is used before it is read again.",
        duration,
    )
)
IDP_JWKS_REFRESH_MIN = _idp.add(
    Setting(
        "SMITHERS_IDP_JWKS_REFRESH_MIN",
        30,
        "An unknown `kid` reads the JWKS again (a rotated key), at most once per this interval.",
        duration,
    )
)

_webhooks = section(
    "Control-plane webhooks",
    "`POST /v1/control/idp` (identity-provider assertions) and `POST /v1/control/billing`"
    " (billing events) take no bearer token: each delivery is signed as Standard Webhooks"
    " signs it (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256"
    " of id.timestamp.body>`). An endpoint without a secret answers 404. Secrets are"
    " `whsec_<base64 of 24 to 64 bytes>`, the form identity and billing providers hand out;"
    " several, separated by spaces or commas, are all accepted (a rotation).",
)
WEBHOOK_IDP_SECRETS = _webhooks.add(
    Setting("SMITHERS_WEBHOOK_IDP_SECRETS", "", "The secrets of `POST /v1/control/idp`.", text)
)
WEBHOOK_BILLING_SECRETS = _webhooks.add(
    Setting("SMITHERS_WEBHOOK_BILLING_SECRETS", "", "The secrets of `POST /v1/control/billing`.", text)
)
WEBHOOK_TOLERANCE = _webhooks.add(
    Setting(
        "SMITHERS_WEBHOOK_TOLERANCE",
        300,
        "How far a delivery's `webhook-timestamp` may be from the gateway's clock; a replay"
        " of a remembered `webhook-id` is refused within it, a stale delivery after it.",
        duration,
    )
)
WEBHOOK_MAX_BODY = _webhooks.add(
    Setting(
        "SMITHERS_WEBHOOK_MAX_BODY",
        64 * 1024,
        "Largest delivery body, in bytes (over it: 413, never read).",
        count,
    )
)
WEBHOOK_IDP_SCOPES = _webhooks.add(
    Setting(
        "SMITHERS_WEBHOOK_IDP_SCOPES",
        "run:read,run:write,approval:read,approval:submit",
        "The scopes an identity-provider assertion may grant (others: 403); add `admin` only"
        " if the provider is to hand it out.",
        text,
    )
)
WEBHOOK_BILLING_SCOPES = _webhooks.add(
    Setting(
        "SMITHERS_WEBHOOK_BILLING_SCOPES",
        "run:read,run:write,approval:read",
        "The scopes a billing event may grant (others: 403).",
        text,
    )
)

_flower = section(
    "Flower", "`smithers flower` always serves behind HTTP basic auth and refuses to start without it."
)
FLOWER_USER = _flower.add(Setting("SMITHERS_FLOWER_USER", "", "The basic-auth user.", text))
FLOWER_PASSWORD = _flower.add(
    Setting("SMITHERS_FLOWER_PASSWORD", "", "The basic-auth password (at least 12 characters).", text)
)
FLOWER_PASSWORD_FILE = _flower.add(
    Setting("SMITHERS_FLOWER_PASSWORD_FILE", "", "A file holding the password (a mounted secret).", text)
)

_remote = section(
    "Remote command line",
    "With `SMITHERS_GATEWAY_URL` (or `SMITHERS_PROFILE`) set, every client command of `smithers`"
    " goes through the gateway's REST API with a bearer token instead of opening the store:"
    " the actor is the token's subject, scopes apply, and `--as` is refused. `smithers login URL`"
    " keeps named profiles (URL and token) in `$XDG_CONFIG_HOME/smithers/profiles.json`"
    " (default `~/.config`), created 0600.",
)
GATEWAY_URL = _remote.add(
    Setting(
        "SMITHERS_GATEWAY_URL",
        "",
        "The gateway to talk to (`https://smithers.example:8080`); set, the command line is remote.",
        text,
    )
)
TOKEN = _remote.add(
    Setting(
        "SMITHERS_TOKEN",
        "",
        "The bearer token of the remote command line (else the profile's, from `smithers login`).",
        text,
    )
)
PROFILE = _remote.add(
    Setting(
        "SMITHERS_PROFILE",
        "",
        "A profile saved by `smithers login --profile NAME`: its URL and token (set, the command"
        " line is remote).",
        text,
    )
)

_lifecycle = section(
    "Data lifecycle",
    "How much the store and the logs keep: retention of finished runs, the largest run"
    " input, step output and event payload, and the size of the logs of `smithers up`"
    " (under `<data dir>/logs`, rotated by size).",
)
RETENTION_DAYS = _lifecycle.add(
    Setting(
        "SMITHERS_RETENTION_DAYS",
        30,
        "Days a finished run (succeeded, failed, cancelled) is kept; the scheduler deletes older"
        " ones with everything they own, in small batches. `0` keeps every run.",
        whole,
    )
)
MAX_INPUT_BYTES = _lifecycle.add(
    Setting(
        "SMITHERS_MAX_INPUT_BYTES",
        1 << 20,
        "Largest run input (its JSON), in bytes: a launch over it gets 413.",
        count,
    )
)
MAX_OUTPUT_BYTES = _lifecycle.add(
    Setting(
        "SMITHERS_MAX_OUTPUT_BYTES",
        1 << 20,
        "Largest step output (its JSON), in bytes: a step over it fails with `output_too_large`.",
        count,
    )
)
MAX_EVENT_BYTES = _lifecycle.add(
    Setting(
        "SMITHERS_MAX_EVENT_BYTES",
        1 << 20,
        "Largest event payload (its JSON), in bytes: an event over it is refused (`payload_too_large`).",
        count,
    )
)
LOG_MAX_BYTES = _lifecycle.add(
    Setting(
        "SMITHERS_LOG_MAX_BYTES",
        10 << 20,
        "Size at which a log of `smithers up` is rotated (`<name>.log` becomes `<name>.log.1`).",
        count,
    )
)
LOG_BACKUPS = _lifecycle.add(
    Setting("SMITHERS_LOG_BACKUPS", 3, "Rotated logs kept per process of `smithers up`.", whole)
)
PARENT_FD = _lifecycle.add(
    Setting(
        "SMITHERS_PARENT_FD",
        "",
        "Set by `smithers up` for its children: the pipe whose end tells them it is gone (they"
        " stop with it). Never set it yourself.",
        text,
        shown="unset",
    )
)

_examples = section("Examples", "Read by the example workflows in `smithers/examples/` only.")
EXAMPLE_SANDBOX_IMAGE = _examples.add(
    Setting(
        "SMITHERS_EXAMPLE_SANDBOX_IMAGE",
        "smithers-sandbox:latest",
        "The image `sandbox-review` runs its step in.",
        text,
    )
)


def names() -> list[str]:
    """Every declared variable, in reference order."""
    return [s.name for sec in SECTIONS for s in sec.settings]


def _cell(value: str) -> str:
    return value.replace("|", "\\|")


def render_markdown() -> str:
    """docs/configuration.md: every section and variable as Markdown tables."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `smithers config --markdown > docs/configuration.md` from the",
        "     declarations in smithers/shared/settings.py: edit those, not this file. -->",
        "",
        "Every `SMITHERS_*` environment variable a Smithers process reads. An unset or empty",
        "variable takes its default; a bad value stops the process with a message naming the",
        "variable. Command-line options (`--data-dir`, `--concurrency`, `--worker-class`) win",
        "over the environment.",
    ]
    for sec in SECTIONS:
        lines += ["", f"## {sec.title}", "", textwrap.fill(sec.about, 88), ""]
        lines += ["| variable | default | meaning |", "|---|---|---|"]
        lines += [f"| `{s.name}` | {_cell(s.default_text())} | {_cell(s.help)} |" for s in sec.settings]
    return "\n".join(lines) + "\n"
