//! The admission / ACL case table shared with the Mosquitto plugin
//! (`gatehouse_tests::acl_cases`), run against `gatehouse serve`: both
//! shapes must give the same answer to every case, and expose the same
//! shared metrics.

mod common;

use common::exe;
use gatehouse_tests::acl_cases::{
    ACL_TOML, ANY_CLIENT_ID_TOML, Fixtures, Refusal, Target, run_all, run_client_id_cases,
    shared_series,
};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::mosquitto::{http_get, start_with_metrics};
use gatehouse_tests::mqtt::Endpoint;
use gatehouse_tests::pki::Pki;

fn target(broker: &BrokerProcess, pki: &Pki) -> Target {
    Target {
        endpoint: Endpoint {
            host: "127.0.0.1".into(),
            port: broker.mqtt.port(),
            ca_file: pki.ca_path.clone(),
        },
        refusal: Refusal::AtConnect,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_case_table_against_gatehouse_serve() {
    let pki = Pki::generate();
    let fx = Fixtures::new(&pki);
    let broker = BrokerProcess::start(exe(), &pki, ACL_TOML);
    run_all(&target(&broker, &pki), &fx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_charset_cases_against_gatehouse_serve() {
    let pki = Pki::generate();
    let broker = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID_TOML);
    run_client_id_cases(&target(&broker, &pki), &pki).await;
    assert_eq!(
        broker.metric("gatehouse_connect_refused_total{reason=\"client_id\"}"),
        4.0
    );
}

/// Both shapes register the gate's metrics: the same names, labels and
/// label values, scraped from a real `gatehouse serve` and a real
/// Mosquitto with the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_shapes_expose_the_same_shared_metrics() {
    let pki = Pki::generate();
    let broker = BrokerProcess::start(exe(), &pki, ACL_TOML);
    let (_mosq, addr) = start_with_metrics(&pki, ACL_TOML);
    let broker_page = broker.http_get("/metrics").expect("broker /metrics");
    let plugin_page = http_get(&addr, "/metrics");
    let from_broker = shared_series(&broker_page);
    let from_plugin = shared_series(&plugin_page);
    // Every shared metric with every label value (32 series), in both.
    assert_eq!(from_broker.len(), 32, "{from_broker:#?}");
    let only_broker: Vec<_> = from_broker.difference(&from_plugin).collect();
    let only_plugin: Vec<_> = from_plugin.difference(&from_broker).collect();
    assert!(
        only_broker.is_empty() && only_plugin.is_empty(),
        "only in the broker: {only_broker:#?}\nonly in the plugin: {only_plugin:#?}"
    );
    for name in gatehouse_gate::SHARED_METRICS {
        assert!(
            from_plugin
                .iter()
                .any(|s| s.split('{').next() == Some(name)),
            "{name} missing"
        );
    }
}
