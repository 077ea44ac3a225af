-- Provisioning registry (PostgreSQL). Same shape as the SQLite schema;
-- timestamps are UTC RFC 3339 text so both stores share one query set.

CREATE TABLE gateways (
    id               BIGSERIAL PRIMARY KEY,
    device_id        TEXT   NOT NULL UNIQUE,
    serial_number    TEXT,
    mac              TEXT   NOT NULL,
    gateway_code     TEXT   NOT NULL UNIQUE,
    model            TEXT,
    hardware_version TEXT,
    firmware_version TEXT,
    name             TEXT,
    tenant           TEXT   NOT NULL,
    is_online        BIGINT NOT NULL DEFAULT 0,
    last_seen        TEXT,
    created_at       TEXT   NOT NULL
);

CREATE TABLE bootstrap_certificates (
    id              BIGSERIAL PRIMARY KEY,
    label           TEXT   NOT NULL,
    certificate_pem TEXT   NOT NULL,
    private_key_pem TEXT,
    serial          TEXT   NOT NULL UNIQUE,
    fingerprint     TEXT   NOT NULL UNIQUE,
    not_after       TEXT   NOT NULL,
    is_active       BIGINT NOT NULL,
    downloaded_at   TEXT,
    revoked_at      TEXT,
    revoke_reason   TEXT,
    revoke_notes    TEXT,
    created_at      TEXT   NOT NULL
);
CREATE UNIQUE INDEX bootstrap_one_active ON bootstrap_certificates (is_active) WHERE is_active = 1;

CREATE TABLE certificates (
    id                BIGSERIAL PRIMARY KEY,
    gateway_id        BIGINT NOT NULL REFERENCES gateways (id),
    kind              TEXT   NOT NULL,
    serial            TEXT   NOT NULL UNIQUE,
    fingerprint       TEXT   NOT NULL,
    certificate_pem   TEXT   NOT NULL,
    csr_pem           TEXT,
    not_after         TEXT   NOT NULL,
    revoked_at        TEXT,
    revoke_reason     TEXT,
    revoke_notes      TEXT,
    renewal_scheduled BIGINT NOT NULL DEFAULT 0,
    renewal_date      TEXT,
    created_at        TEXT   NOT NULL
);
CREATE INDEX certificates_gateway ON certificates (gateway_id);

CREATE TABLE registrations (
    id                    BIGSERIAL PRIMARY KEY,
    mac                   TEXT   NOT NULL,
    serial                TEXT,
    model                 TEXT,
    fw_version            TEXT,
    source_ip             TEXT,
    bootstrap_id          BIGINT REFERENCES bootstrap_certificates (id),
    bootstrap_fingerprint TEXT,
    csr_pem               TEXT,
    status                TEXT   NOT NULL,
    gateway_id            BIGINT REFERENCES gateways (id),
    certificate_id        BIGINT REFERENCES certificates (id),
    processed_by          TEXT,
    processed_at          TEXT,
    notes                 TEXT,
    created_at            TEXT   NOT NULL
);
CREATE UNIQUE INDEX registrations_open_mac ON registrations (mac) WHERE status <> 'REJEITADO';
CREATE INDEX registrations_status ON registrations (status);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE FUNCTION gatehouse_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION gatehouse_audit_log_append_only();

CREATE TABLE crl_state (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    number      BIGINT NOT NULL,
    this_update TEXT
);
INSERT INTO crl_state (id, number, this_update) VALUES (1, 0, NULL);
