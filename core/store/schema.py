"""Numbered schema migrations for the SQLite store.

Each entry of MIGRATIONS moves the schema from version N-1 to N; `Store.open` applies the ones
not yet applied, each in its own transaction, and records the version. Never edit a released
migration: add a new one.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: runs, stages, steps, logs, deployments, refs, lease, events, audit.
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,
        branch TEXT NOT NULL,
        ref TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        on_main INTEGER NOT NULL,
        status TEXT NOT NULL,
        trigger TEXT NOT NULL,
        actor TEXT NOT NULL,
        author TEXT NOT NULL DEFAULT '',
        author_email TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL DEFAULT '',
        committed_at REAL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        retry_of INTEGER REFERENCES runs(id),
        pipeline_digest TEXT,
        error TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        engine TEXT
    );
    CREATE INDEX runs_repo ON runs(repo, id);
    CREATE INDEX runs_status ON runs(status, id);
    CREATE TABLE stages (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        environment TEXT,
        status TEXT NOT NULL,
        started_at REAL,
        finished_at REAL,
        error TEXT,
        UNIQUE (run_id, idx)
    );
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage_id INTEGER NOT NULL REFERENCES stages(id),
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        command TEXT NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        started_at REAL,
        finished_at REAL,
        pid INTEGER,
        token TEXT,
        error TEXT,
        UNIQUE (stage_id, idx)
    );
    CREATE INDEX steps_run ON steps(run_id, id);
    CREATE TABLE log_lines (
        step_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        line TEXT NOT NULL,
        PRIMARY KEY (step_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE artifacts (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        step_id INTEGER NOT NULL REFERENCES steps(id),
        path TEXT NOT NULL,
        stored_path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL
    );
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,
        environment TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage_id INTEGER NOT NULL REFERENCES stages(id),
        deployed_at REAL NOT NULL
    );
    CREATE INDEX deployments_env ON deployments(repo, environment, id);
    CREATE TABLE refs (
        repo TEXT NOT NULL,
        ref TEXT NOT NULL,
        sha TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (repo, ref)
    ) WITHOUT ROWID;
    CREATE TABLE lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        token TEXT NOT NULL,
        acquired_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        repo TEXT,
        run_id INTEGER,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        actor TEXT NOT NULL,
        session TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    """,
    # 2: change control: change requests pinned to what they approve, and decisions on them.
    """
    CREATE TABLE change_requests (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage_id INTEGER NOT NULL REFERENCES stages(id),
        repo TEXT NOT NULL,
        environment TEXT NOT NULL,
        base_sha TEXT,
        head_sha TEXT NOT NULL,
        pipeline_digest TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        required INTEGER NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        triggerer TEXT NOT NULL,
        commits TEXT NOT NULL,
        diffstat TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        expires_at REAL,
        decided_at REAL
    );
    CREATE INDEX change_requests_status ON change_requests(status, repo, environment);
    CREATE INDEX change_requests_run ON change_requests(run_id, stage_id);
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        change_id INTEGER NOT NULL REFERENCES change_requests(id),
        operator TEXT NOT NULL,
        verdict TEXT NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        session TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL,
        UNIQUE (change_id, operator)
    );
    CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
    CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
    """,
    # 3: everyone who wrote or committed anything in base..head, however long the range (the
    # commits column keeps the first 200 for display).
    """
    ALTER TABLE change_requests ADD COLUMN people TEXT NOT NULL DEFAULT '{}';
    """,
    # 4: drift: the latest finding per (repo, environment, target), the history of checks, and
    # acknowledgements; runs may target one environment (a reconcile deploys only there).
    """
    CREATE TABLE drift (
        repo TEXT NOT NULL,
        environment TEXT NOT NULL,
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        fingerprint TEXT NOT NULL DEFAULT '',
        commit_sha TEXT,
        since REAL NOT NULL,
        checked_at REAL NOT NULL,
        last_check INTEGER,
        PRIMARY KEY (repo, environment, target)
    );
    CREATE TABLE drift_checks (
        id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,
        environment TEXT NOT NULL,
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        fingerprint TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}',
        commit_sha TEXT,
        reason TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL
    );
    CREATE INDEX drift_checks_target ON drift_checks(repo, environment, target, id);
    CREATE TABLE drift_acks (
        id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,
        environment TEXT NOT NULL,
        target TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX drift_acks_target ON drift_acks(repo, environment, target, id);
    ALTER TABLE runs ADD COLUMN environment TEXT;
    """,
    # 5 (reliability): environment locks. One deploy per (repo, environment) at a time: a row
    # while a stage deploys; `needs_operator` when the deploy was interrupted in an environment
    # with a policy (unknown state) until an operator unlocks it.
    """
    CREATE TABLE env_locks (
        repo TEXT NOT NULL,
        environment TEXT NOT NULL,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage_id INTEGER NOT NULL REFERENCES stages(id),
        gated INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        acquired_at REAL NOT NULL,
        PRIMARY KEY (repo, environment)
    ) WITHOUT ROWID;
    """,
    # 6 (ssh): sessions and login failures (presence: who is connected to which console, on which
    # screen; failed logins by source address, so a lockout survives a restart of `ahead serve`).
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        operator TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        screen TEXT NOT NULL DEFAULT '',
        started_at REAL NOT NULL
    );
    CREATE TABLE login_failures (
        source TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        locked_until REAL
    );
    """,
    # 7 (identity): a decision counts only with a MAC (HMAC-SHA256 over its canonical fields and
    # its change's pins, keyed by .ahead/keys/decisions.key, never stored here): a row put in by
    # hand cannot approve. Decisions made before this version have none: never counted again.
    """
    ALTER TABLE decisions ADD COLUMN mac TEXT;
    """,
]
