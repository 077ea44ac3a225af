-- Provisioning registry (SQLite). Timestamps are UTC RFC 3339 text
-- ("2026-11-22T18:43:18Z"), which sorts chronologically.

CREATE TABLE gateways (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id        TEXT    NOT NULL UNIQUE,
    serial_number    TEXT,
    mac              TEXT    NOT NULL,
    gateway_code     TEXT    NOT NULL UNIQUE,
    model            TEXT,
    hardware_version TEXT,
    firmware_version TEXT,
    name             TEXT,
    tenant           TEXT    NOT NULL,
    is_online        INTEGER NOT NULL DEFAULT 0,
    last_seen        TEXT,
    created_at       TEXT    NOT NULL
);

CREATE TABLE bootstrap_certificates (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    label           TEXT    NOT NULL,
    certificate_pem TEXT    NOT NULL,
    -- Held until its one download, then erased (NULL).
    private_key_pem TEXT,
    serial          TEXT    NOT NULL UNIQUE,
    fingerprint     TEXT    NOT NULL UNIQUE,
    not_after       TEXT    NOT NULL,
    is_active       INTEGER NOT NULL,
    downloaded_at   TEXT,
    revoked_at      TEXT,
    revoke_reason   TEXT,
    revoke_notes    TEXT,
    created_at      TEXT    NOT NULL
);
CREATE UNIQUE INDEX bootstrap_one_active ON bootstrap_certificates (is_active) WHERE is_active = 1;

CREATE TABLE certificates (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway_id        INTEGER NOT NULL REFERENCES gateways (id),
    -- 'csr' (signed from the device's CSR) or 'legacy' (server-generated key).
    kind              TEXT    NOT NULL,
    serial            TEXT    NOT NULL UNIQUE,
    fingerprint       TEXT    NOT NULL,
    certificate_pem   TEXT    NOT NULL,
    csr_pem           TEXT,
    not_after         TEXT    NOT NULL,
    revoked_at        TEXT,
    revoke_reason     TEXT,
    revoke_notes      TEXT,
    renewal_scheduled INTEGER NOT NULL DEFAULT 0,
    renewal_date      TEXT,
    created_at        TEXT    NOT NULL
);
CREATE INDEX certificates_gateway ON certificates (gateway_id);

CREATE TABLE registrations (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    mac                   TEXT    NOT NULL,
    serial                TEXT,
    model                 TEXT,
    fw_version            TEXT,
    source_ip             TEXT,
    bootstrap_id          INTEGER REFERENCES bootstrap_certificates (id),
    bootstrap_fingerprint TEXT,
    csr_pem               TEXT,
    -- PENDENTE | PROVISIONADO | REJEITADO
    status                TEXT    NOT NULL,
    gateway_id            INTEGER REFERENCES gateways (id),
    certificate_id        INTEGER REFERENCES certificates (id),
    processed_by          TEXT,
    processed_at          TEXT,
    notes                 TEXT,
    created_at            TEXT    NOT NULL
);
-- One open (not rejected) registration per MAC: makes POSTs idempotent even when racing.
CREATE UNIQUE INDEX registrations_open_mac ON registrations (mac) WHERE status <> 'REJEITADO';
CREATE INDEX registrations_status ON registrations (status);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TABLE crl_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    number      INTEGER NOT NULL,
    this_update TEXT
);
INSERT INTO crl_state (id, number, this_update) VALUES (1, 0, NULL);
