-- pandora_sync schema, version 1 (PostgreSQL).
--
-- Table and column names are a public contract (DESIGN.md 3.3): hosts query these tables
-- directly. Later migrations add columns and tables; they never rename or drop these.
-- Applied by `PgStore::migrate()`; sqlx serializes concurrent runs with an advisory lock.

-- One row per (workspace, connector): credentials, status, and the resumable sync cursor.
CREATE TABLE connections (
    id              UUID        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id    UUID        NOT NULL,
    connector_name  TEXT        NOT NULL,
    auth_method     TEXT        NOT NULL,
    -- "v1:<key id>:<base64(nonce || XChaCha20-Poly1305 ciphertext)>"; never plaintext.
    credentials     TEXT,
    -- Non-secret connector settings (tracked users, boards, folders, internal domains, ...).
    config          JSONB       NOT NULL DEFAULT '{}'::jsonb,
    status          TEXT        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'syncing', 'synced', 'error', 'disabled')),
    last_sync_at    TIMESTAMPTZ,
    -- {"streams": {<stream>: {"watermark", "cursor", ...}}, "lastSyncMode", ...}
    sync_cursor     JSONB,
    error_message   TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT connections_workspace_connector_key UNIQUE (workspace_id, connector_name)
);

-- Record tables carry only their primary key and UNIQUE (workspace_id, source, source_id),
-- whose (workspace_id, ...) prefix also serves workspace-scoped scans. Every further index
-- slows the batch upserts (one on deals (workspace_id, source, account_source_id) cost about
-- 30 % of PostgreSQL upsert throughput), so add them with the feature that needs them.
CREATE TABLE accounts (
    id                 UUID        PRIMARY KEY,
    workspace_id       UUID        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    source_created_at  TIMESTAMPTZ,
    source_updated_at  TIMESTAMPTZ,
    archived_at        TIMESTAMPTZ,
    synced_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    name               TEXT,
    domain             TEXT,
    industry           TEXT,
    employee_count     BIGINT,
    annual_revenue     DOUBLE PRECISION,
    owner_id           TEXT,
    CONSTRAINT accounts_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
);

CREATE TABLE contacts (
    id                 UUID        PRIMARY KEY,
    workspace_id       UUID        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    source_created_at  TIMESTAMPTZ,
    source_updated_at  TIMESTAMPTZ,
    archived_at        TIMESTAMPTZ,
    synced_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    email              TEXT,
    first_name         TEXT,
    last_name          TEXT,
    title              TEXT,
    phone              TEXT,
    account_source_id  TEXT,
    lifecycle_stage    TEXT,
    owner_id           TEXT,
    CONSTRAINT contacts_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
);

CREATE TABLE deals (
    id                 UUID        PRIMARY KEY,
    workspace_id       UUID        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    source_created_at  TIMESTAMPTZ,
    source_updated_at  TIMESTAMPTZ,
    archived_at        TIMESTAMPTZ,
    synced_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    name               TEXT,
    amount             DOUBLE PRECISION,
    currency           TEXT,
    stage              TEXT,
    pipeline           TEXT,
    close_date         DATE,
    probability        DOUBLE PRECISION,
    owner_id           TEXT,
    account_source_id  TEXT,
    is_closed          BOOLEAN,
    is_won             BOOLEAN,
    forecast_category  TEXT,
    days_open          BIGINT,
    days_to_close      BIGINT,
    CONSTRAINT deals_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
);

-- Links between deals and contacts, by provider ids (rows may arrive before either side).
CREATE TABLE deal_contacts (
    workspace_id       UUID        NOT NULL,
    source             TEXT        NOT NULL,
    deal_source_id     TEXT        NOT NULL,
    contact_source_id  TEXT        NOT NULL,
    role               TEXT,
    synced_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, source, deal_source_id, contact_source_id)
);

CREATE TABLE conversations (
    id                 UUID        PRIMARY KEY,
    workspace_id       UUID        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    source_created_at  TIMESTAMPTZ,
    source_updated_at  TIMESTAMPTZ,
    archived_at        TIMESTAMPTZ,
    synced_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    title              TEXT,
    started_at         TIMESTAMPTZ,
    duration_seconds   BIGINT,
    url                TEXT,
    host_email         TEXT,
    -- [{"email", "name", "is_internal"}, ...]
    participants       JSONB       NOT NULL DEFAULT '[]'::jsonb,
    summary            TEXT,
    transcript         TEXT,
    is_internal        BOOLEAN,
    linked_account_id  UUID,
    linked_deal_id     UUID,
    CONSTRAINT conversations_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
);

CREATE TABLE tasks (
    id                 UUID        PRIMARY KEY,
    workspace_id       UUID        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    source_created_at  TIMESTAMPTZ,
    source_updated_at  TIMESTAMPTZ,
    archived_at        TIMESTAMPTZ,
    synced_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    board_id           TEXT,
    board_name         TEXT,
    group_name         TEXT,
    title              TEXT,
    status             TEXT,
    assignee_email     TEXT,
    due_date           DATE,
    completed_at       TIMESTAMPTZ,
    url                TEXT,
    CONSTRAINT tasks_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
);

CREATE TABLE documents (
    id                 UUID        PRIMARY KEY,
    workspace_id       UUID        NOT NULL,
    source             TEXT        NOT NULL,
    source_id          TEXT        NOT NULL,
    custom_fields      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    source_created_at  TIMESTAMPTZ,
    source_updated_at  TIMESTAMPTZ,
    archived_at        TIMESTAMPTZ,
    synced_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    title              TEXT,
    mime_type          TEXT,
    url                TEXT,
    owner_email        TEXT,
    content_text       TEXT,
    size_bytes         BIGINT,
    parent_id          TEXT,
    CONSTRAINT documents_workspace_source_source_id_key UNIQUE (workspace_id, source, source_id)
);

-- One row per sync run. connector_type NULL = every connector of the workspace;
-- sync_type NULL = mode not decided yet ("auto").
CREATE TABLE sync_log (
    id              UUID        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id    UUID        NOT NULL,
    connector_type  TEXT,
    sync_type       TEXT,
    status          TEXT        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'completed', 'completed_with_errors', 'failed')),
    records_synced  BIGINT      NOT NULL DEFAULT 0,
    -- {"total": <failed records>, "failures": [{"record_id", "message"}, ... first 100]}
    errors          JSONB,
    error_message   TEXT,
    duration_ms     BIGINT,
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at    TIMESTAMPTZ
);
CREATE INDEX sync_log_workspace_started_idx ON sync_log (workspace_id, started_at DESC);
CREATE INDEX sync_log_running_idx ON sync_log (status) WHERE status = 'running';

-- The job queue (operations arrive with the queue issue). Priority: higher runs first.
-- Lease: a claimed job is `running` with `locked_by` = the worker and `locked_until` = the
-- lease expiry, which heartbeats push forward; a running job whose lease expired is rescued.
CREATE TABLE jobs (
    id                   UUID        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id         UUID        NOT NULL,
    job_type             TEXT        NOT NULL,
    status               TEXT        NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    priority             INTEGER     NOT NULL DEFAULT 0,
    payload              JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- {"current", "total", "message"}
    progress             JSONB,
    result               JSONB,
    error                TEXT,
    attempts             INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts         INTEGER     NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    last_error           TEXT,
    -- Deduplication key: at most one pending-or-running job per (workspace_id, unique_key).
    unique_key           TEXT,
    locked_by            TEXT,
    locked_until         TIMESTAMPTZ,
    heartbeat_at         TIMESTAMPTZ,
    cancel_requested_at  TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at           TIMESTAMPTZ,
    completed_at         TIMESTAMPTZ,
    run_after            TIMESTAMPTZ NOT NULL DEFAULT now(),
    timeout_ms           BIGINT      NOT NULL DEFAULT 600000 CHECK (timeout_ms > 0)
);
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
