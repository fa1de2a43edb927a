-- pandora_sync schema, version 1 (SQLite).
--
-- Table and column names are a public contract (DESIGN.md 3.3): hosts query these tables
-- directly. Later migrations add columns and tables; they never rename or drop these.
-- Applied by `SqliteStore::migrate()` inside one `BEGIN IMMEDIATE` transaction, so two
-- processes starting at once apply it exactly once.
--
-- Types: UUIDs are lower-case hyphenated TEXT; timestamps are UTC TEXT in one fixed-width
-- format, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds), so text comparison is time order;
-- dates are `YYYY-MM-DD`; JSON is TEXT; booleans are INTEGER 0/1. Tables are STRICT.

-- One row per (workspace, connector): credentials, status, and the resumable sync cursor.
CREATE TABLE connections (
    id              TEXT        PRIMARY KEY,
    workspace_id    TEXT        NOT NULL,
    connector_name  TEXT        NOT NULL,
    auth_method     TEXT        NOT NULL,
    -- "v1:<key id>:<base64(nonce || XChaCha20-Poly1305 ciphertext)>"; never plaintext.
    credentials     TEXT,
    -- Non-secret connector settings (tracked users, boards, folders, internal domains, ...).
    config          TEXT        NOT NULL DEFAULT '{}',
    status          TEXT        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'syncing', 'synced', 'error', 'disabled')),
    last_sync_at    TEXT,
    -- {"streams": {<stream>: {"watermark", "cursor", ...}}, "lastSyncMode", ...}
    sync_cursor     TEXT,
    error_message   TEXT,
    created_at      TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at      TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    CONSTRAINT connections_workspace_connector_key UNIQUE (workspace_id, connector_name)
) STRICT;

-- Record tables carry only their primary key and UNIQUE (workspace_id, source, source_id),
-- whose (workspace_id, ...) prefix also serves workspace-scoped scans. Every further index
-- slows the batch upserts (one on deals (workspace_id, source, account_source_id) cost about
-- 30 % of PostgreSQL upsert throughput), so add them with the feature that needs them.
CREATE TABLE accounts (
    id                 TEXT        PRIMARY KEY,
    workspace_id       TEXT        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      TEXT        NOT NULL DEFAULT '{}',
    source_created_at  TEXT,
    source_updated_at  TEXT,
    archived_at        TEXT,
    synced_at          TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    name               TEXT,
    domain             TEXT,
    industry           TEXT,
    employee_count     INTEGER,
    annual_revenue     REAL,
    owner_id           TEXT,
    CONSTRAINT accounts_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
) STRICT;

CREATE TABLE contacts (
    id                 TEXT        PRIMARY KEY,
    workspace_id       TEXT        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      TEXT        NOT NULL DEFAULT '{}',
    source_created_at  TEXT,
    source_updated_at  TEXT,
    archived_at        TEXT,
    synced_at          TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    email              TEXT,
    first_name         TEXT,
    last_name          TEXT,
    title              TEXT,
    phone              TEXT,
    account_source_id  TEXT,
    lifecycle_stage    TEXT,
    owner_id           TEXT,
    CONSTRAINT contacts_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
) STRICT;

CREATE TABLE deals (
    id                 TEXT        PRIMARY KEY,
    workspace_id       TEXT        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      TEXT        NOT NULL DEFAULT '{}',
    source_created_at  TEXT,
    source_updated_at  TEXT,
    archived_at        TEXT,
    synced_at          TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    name               TEXT,
    amount             REAL,
    currency           TEXT,
    stage              TEXT,
    pipeline           TEXT,
    close_date         TEXT,
    probability        REAL,
    owner_id           TEXT,
    account_source_id  TEXT,
    is_closed          INTEGER,
    is_won             INTEGER,
    forecast_category  TEXT,
    days_open          INTEGER,
    days_to_close      INTEGER,
    CONSTRAINT deals_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
) STRICT;

-- Links between deals and contacts, by provider ids (rows may arrive before either side).
CREATE TABLE deal_contacts (
    workspace_id       TEXT        NOT NULL,
    source             TEXT        NOT NULL,
    deal_source_id     TEXT        NOT NULL,
    contact_source_id  TEXT        NOT NULL,
    role               TEXT,
    synced_at          TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    PRIMARY KEY (workspace_id, source, deal_source_id, contact_source_id)
) STRICT;

CREATE TABLE conversations (
    id                 TEXT        PRIMARY KEY,
    workspace_id       TEXT        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      TEXT        NOT NULL DEFAULT '{}',
    source_created_at  TEXT,
    source_updated_at  TEXT,
    archived_at        TEXT,
    synced_at          TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    title              TEXT,
    started_at         TEXT,
    duration_seconds   INTEGER,
    url                TEXT,
    host_email         TEXT,
    -- [{"email", "name", "is_internal"}, ...]
    participants       TEXT        NOT NULL DEFAULT '[]',
    summary            TEXT,
    transcript         TEXT,
    is_internal        INTEGER,
    linked_account_id  TEXT,
    linked_deal_id     TEXT,
    CONSTRAINT conversations_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
) STRICT;

CREATE TABLE tasks (
    id                 TEXT        PRIMARY KEY,
    workspace_id       TEXT        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      TEXT        NOT NULL DEFAULT '{}',
    source_created_at  TEXT,
    source_updated_at  TEXT,
    archived_at        TEXT,
    synced_at          TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    board_id           TEXT,
    board_name         TEXT,
    group_name         TEXT,
    title              TEXT,
    status             TEXT,
    assignee_email     TEXT,
    due_date           TEXT,
    completed_at       TEXT,
    url                TEXT,
    CONSTRAINT tasks_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
) STRICT;

CREATE TABLE documents (
    id                 TEXT        PRIMARY KEY,
    workspace_id       TEXT        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      TEXT        NOT NULL DEFAULT '{}',
    source_created_at  TEXT,
    source_updated_at  TEXT,
    archived_at        TEXT,
    synced_at          TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    title              TEXT,
    mime_type          TEXT,
    url                TEXT,
    owner_email        TEXT,
    content_text       TEXT,
    size_bytes         INTEGER,
    parent_id          TEXT,
    CONSTRAINT documents_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
) STRICT;

-- One row per sync run. connector_type NULL = every connector of the workspace;
-- sync_type NULL = mode not decided yet ("auto").
CREATE TABLE sync_log (
    id              TEXT        PRIMARY KEY,
    workspace_id    TEXT        NOT NULL,
    connector_type  TEXT,
    sync_type       TEXT,
    status          TEXT        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'completed', 'completed_with_errors', 'failed')),
    records_synced  INTEGER     NOT NULL DEFAULT 0,
    -- {"total": <failed records>, "failures": [{"record_id", "message"}, ... first 100]}
    errors          TEXT,
    error_message   TEXT,
    duration_ms     INTEGER,
    started_at      TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    completed_at    TEXT
) STRICT;
CREATE INDEX sync_log_workspace_started_idx ON sync_log (workspace_id, started_at DESC);
CREATE INDEX sync_log_running_idx ON sync_log (status) WHERE status = 'running';

-- The job queue (operations arrive with the queue issue). Priority: higher runs first.
-- Lease: a claimed job is `running` with `locked_by` = the worker and `locked_until` = the
-- lease expiry, which heartbeats push forward; a running job whose lease expired is rescued.
CREATE TABLE jobs (
    id                   TEXT        PRIMARY KEY,
    workspace_id         TEXT        NOT NULL,
    job_type             TEXT        NOT NULL,
    status               TEXT        NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    priority             INTEGER     NOT NULL DEFAULT 0,
    payload              TEXT        NOT NULL DEFAULT '{}',
    -- {"current", "total", "message"}
    progress             TEXT,
    result               TEXT,
    error                TEXT,
    attempts             INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts         INTEGER     NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    last_error           TEXT,
    -- Deduplication key: at most one pending-or-running job per (workspace_id, unique_key).
    unique_key           TEXT,
    locked_by            TEXT,
    locked_until         TEXT,
    heartbeat_at         TEXT,
    cancel_requested_at  TEXT,
    created_at           TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    started_at           TEXT,
    completed_at         TEXT,
    run_after            TEXT        NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    timeout_ms           INTEGER      NOT NULL DEFAULT 600000 CHECK (timeout_ms > 0)
) STRICT;
CREATE INDEX jobs_poll_idx ON jobs (status, priority DESC, run_after, created_at)
    WHERE status = 'pending';
CREATE UNIQUE INDEX jobs_active_unique_key_idx ON jobs (workspace_id, unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('pending', 'running');
CREATE UNIQUE INDEX jobs_running_workspace_type_idx ON jobs (workspace_id, job_type)
    WHERE status = 'running';
CREATE INDEX jobs_lease_idx ON jobs (locked_until) WHERE status = 'running';
CREATE INDEX jobs_workspace_created_idx ON jobs (workspace_id, created_at DESC);
CREATE INDEX jobs_finished_idx ON jobs (completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- Per-workspace sync lock (a lease): see `LockStore`. Postgres uses advisory locks instead.
CREATE TABLE sync_locks (
    workspace_id  TEXT NOT NULL PRIMARY KEY,
    holder        TEXT NOT NULL,
    acquired_at   TEXT NOT NULL,
    expires_at    TEXT NOT NULL
) STRICT;
