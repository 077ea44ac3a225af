//! `[ingest]`: defaults and the errors for bad values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_config::{
    AckMode, Config, ConfigError, IngestDatabase, TimeFormat, WhenFull, WhenSpoolFull,
};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", Path::new("/etc/gatehouse"))
}

fn err(text: &str) -> ConfigError {
    parse(text).expect_err("config should be refused")
}

#[test]
fn defaults() {
    let i = Config::defaults().ingest;
    assert_eq!(
        i.database,
        IngestDatabase::Sqlite {
            path: PathBuf::from("./gatehouse-data/telemetry.db")
        }
    );
    assert_eq!(i.table, "telemetry");
    assert_eq!(i.reject_table, "telemetry_rejects");
    assert_eq!(i.topic_filter, "telemetry/+/data");
    assert_eq!(i.time_field.as_deref(), Some("ts"));
    assert_eq!(i.time_format, TimeFormat::Auto);
    assert_eq!((i.batch_rows, i.batch_bytes), (5000, 4 << 20));
    assert_eq!(i.batch_age, Duration::from_millis(200));
    assert_eq!(i.writers, 2);
    assert_eq!(i.when_full, WhenFull::Block);
    assert_eq!(i.spool_dir, PathBuf::from("./gatehouse-data/spool"));
    assert_eq!(i.when_spool_full, WhenSpoolFull::DropNewest);
    assert_eq!(i.ack, AckMode::None);
    assert_eq!(i.chunk_interval, Duration::from_secs(86_400));
    assert_eq!(i.write_timeout, Duration::from_secs(30));
}

#[test]
fn postgres_url_and_relative_spool_dir() {
    let c = parse(
        "[ingest]\ndatabase_url = \"postgres://u:pw@db/fleet\"\nspool_dir = \"sp\"\nwhen_full = \"spool\"\nack = \"durable\"\ntime_field = \"\"\n",
    )
    .unwrap();
    assert_eq!(
        c.ingest.database,
        IngestDatabase::Postgres {
            url: "postgres://u:pw@db/fleet".into()
        }
    );
    assert!(!format!("{:?}", c.ingest.database).contains("pw"));
    assert_eq!(c.ingest.spool_dir, PathBuf::from("/etc/gatehouse/sp"));
    assert_eq!(c.ingest.when_full, WhenFull::Spool);
    assert_eq!(c.ingest.ack, AckMode::Durable);
    assert_eq!(c.ingest.time_field, None);
}

#[test]
fn non_postgres_url_is_refused_without_echoing_the_password() {
    let e = err("[ingest]\ndatabase_url = \"mysql://u:hunter2@db/x\"\n");
    assert_eq!(e.key(), Some("ingest.database_url"));
    assert_eq!(e.line(), Some(2));
    let msg = e.to_string();
    assert!(msg.contains("PostgreSQL URL"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn sqlite_path_with_a_database_url_is_refused() {
    let e = err("[ingest]\ndatabase_url = \"postgres://db/x\"\nsqlite_path = \"t.db\"\n");
    assert_eq!(e.key(), Some("ingest.sqlite_path"));
}

#[test]
fn bad_enums_name_the_choices() {
    for (key, expect) in [
        ("when_full", "\"block\", \"spool\" or \"drop_newest\""),
        ("when_spool_full", "\"drop_newest\" or \"drop_oldest\""),
        ("ack", "\"none\" or \"durable\""),
        ("time_format", "\"epoch_ms\""),
    ] {
        let e = err(&format!("[ingest]\n{key} = \"nope\"\n"));
        assert_eq!(e.key(), Some(format!("ingest.{key}").as_str()));
        assert!(e.to_string().contains(expect), "{e}");
    }
}

#[test]
fn every_documented_enum_value_parses() {
    let cases = [
        ("time_format = \"auto\"", TimeFormat::Auto),
        ("time_format = \"rfc3339\"", TimeFormat::Rfc3339),
        ("time_format = \"epoch_s\"", TimeFormat::EpochSeconds),
        ("time_format = \"epoch_ms\"", TimeFormat::EpochMillis),
    ];
    for (line, want) in cases {
        let c = parse(&format!("[ingest]\n{line}\n")).unwrap();
        assert_eq!(c.ingest.time_format, want, "{line}");
    }
    for (value, want) in [
        ("block", WhenFull::Block),
        ("spool", WhenFull::Spool),
        ("drop_newest", WhenFull::DropNewest),
    ] {
        let c = parse(&format!("[ingest]\nwhen_full = {value:?}\n")).unwrap();
        assert_eq!(c.ingest.when_full, want, "{value}");
    }
    for (value, want) in [
        ("drop_newest", WhenSpoolFull::DropNewest),
        ("drop_oldest", WhenSpoolFull::DropOldest),
    ] {
        let c = parse(&format!("[ingest]\nwhen_spool_full = {value:?}\n")).unwrap();
        assert_eq!(c.ingest.when_spool_full, want, "{value}");
    }
    for (value, want) in [("none", AckMode::None), ("durable", AckMode::Durable)] {
        let c = parse(&format!("ingest.ack = {value:?}\n")).unwrap();
        assert_eq!(c.ingest.ack, want, "{value}");
    }
}

#[test]
fn enum_values_are_plain_lower_case_strings() {
    // Line and key are found wherever the value is written.
    let e = err("# queue\n[ingest]\nwriters = 2\nwhen_full = \"Block\"\n");
    assert_eq!(
        e.to_string(),
        "test.toml:4: key `ingest.when_full`: expected \"block\", \"spool\" or \"drop_newest\", got \"Block\""
    );
    let e = err("ingest = { ack = \"\" }\n");
    assert_eq!(e.key(), Some("ingest.ack"));
    assert!(e.to_string().contains("got \"\""), "{e}");
    // Not a string: the type is named, as for any other key.
    let e = err("[ingest]\nack = 1\n");
    assert_eq!(e.key(), Some("ingest.ack"));
    assert!(e.to_string().contains("expected a string"), "{e}");
    // TOML's enum-as-table form is not a second spelling.
    let e = err("[ingest]\nack = { durable = {} }\n");
    assert_eq!(e.key(), Some("ingest.ack"));
    assert!(e.to_string().contains("expected a string"), "{e}");
}

#[test]
fn bad_table_names_are_refused() {
    for bad in ["", "Tele", "a;drop", "a.b.c", "1abc", "a b"] {
        let e = err(&format!("[ingest]\ntable = {bad:?}\n"));
        assert_eq!(e.key(), Some("ingest.table"), "{bad}");
    }
    assert!(parse("[ingest]\ntable = \"metrics.telemetry\"\n").is_ok());
    let e = err("[ingest]\ntable = \"x\"\nreject_table = \"x\"\n");
    assert_eq!(e.key(), Some("ingest.reject_table"));
}

#[test]
fn bad_topic_filter_is_refused() {
    let e = err("[ingest]\ntopic_filter = \"telemetry/#/x\"\n");
    assert_eq!(e.key(), Some("ingest.topic_filter"));
    let e = err("[ingest]\ntopic_filter = \"telemetry/{cn}/data\"\n");
    assert!(e.to_string().contains("placeholders"), "{e}");
}

#[test]
fn numbers_and_durations_are_checked() {
    assert_eq!(
        err("[ingest]\nbatch_rows = 0\n").key(),
        Some("ingest.batch_rows")
    );
    assert_eq!(
        err("[ingest]\nwriters = 65\n").key(),
        Some("ingest.writers")
    );
    assert_eq!(
        err("[ingest]\nbatch_age = \"soon\"\n").key(),
        Some("ingest.batch_age")
    );
    let e = err("[ingest]\nretry_min = \"10s\"\nretry_max = \"1s\"\n");
    assert_eq!(e.key(), Some("ingest.retry_max"));
    let e = err("[ingest]\nspool_max_bytes = 1000\nspool_segment_bytes = 2000\n");
    assert_eq!(e.key(), Some("ingest.spool_segment_bytes"));
    let e = err("[ingest]\nwrite_timeout = \"0s\"\n");
    assert_eq!(e.key(), Some("ingest.write_timeout"));
    assert!(e.to_string().contains("greater than zero"), "{e}");
}

#[test]
fn unknown_ingest_key_is_refused() {
    let e = err("[ingest]\nbatch_size = 3\n");
    assert!(matches!(e, ConfigError::Syntax { .. }));
    assert_eq!(e.key(), Some("ingest.batch_size"));
}
