//! SIGHUP reloads `[identity]` and `[acl]` for open and new sessions, as
//! the Mosquitto plugin does (the shared reload case); a broken file keeps
//! the rules in force.

mod common;

use std::time::Duration;

use common::exe;
use gatehouse_tests::acl_cases::{Fixtures, Refusal, Reloader, Target, run_reload_case};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::mqtt::Endpoint;
use gatehouse_tests::pki::Pki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules_and_a_bad_file_keeps_the_old_ones() {
    let pki = Pki::generate();
    let fx = Fixtures::new(&pki);
    let b = BrokerProcess::start(exe(), &pki, "");
    let target = Target {
        endpoint: Endpoint {
            host: "127.0.0.1".into(),
            port: b.mqtt.port(),
            ca_file: pki.ca_path.clone(),
        },
        refusal: Refusal::AtConnect,
    };
    let reloader = Reloader {
        config_path: &b.config_path,
        sighup: &|| b.reload(),
        log: &|| b.log(),
    };
    run_reload_case(&target, &fx, &reloader).await;
    assert_eq!(
        b.metric("gatehouse_config_reloads_total{result=\"ok\"}"),
        2.0
    );
    assert_eq!(
        b.metric("gatehouse_config_reloads_total{result=\"failed\"}"),
        1.0
    );

    // A section a reload cannot apply is named, and the rules still reload.
    let base = std::fs::read_to_string(&b.config_path).unwrap();
    std::fs::write(
        &b.config_path,
        format!("{base}\n[mqtt]\nmax_packet_size = 4096\n"),
    )
    .unwrap();
    b.reload();
    assert!(
        b.wait_log(
            "changes to [mqtt] take effect only after a restart",
            1,
            Duration::from_secs(5)
        ),
        "{}",
        b.log()
    );
    assert_eq!(
        b.metric("gatehouse_config_reloads_total{result=\"ok\"}"),
        3.0
    );
}
