//! The admission / ACL case table shared with the Mosquitto plugin
//! (`gatehouse_tests::acl_cases`), run against `gatehouse serve`: both
//! shapes must give the same answer to every case.

mod common;

use common::exe;
use gatehouse_tests::acl_cases::{ACL_TOML, Fixtures, Refusal, Target, run_all};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::conn::Endpoint;
use gatehouse_tests::pki::Pki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_case_table_against_gatehouse_serve() {
    let pki = Pki::generate();
    let fx = Fixtures::new(&pki);
    let broker = BrokerProcess::start(exe(), &pki, ACL_TOML);
    let target = Target {
        endpoint: Endpoint {
            host: "127.0.0.1".into(),
            port: broker.mqtt.port(),
            ca_file: pki.ca_path.clone(),
        },
        refusal: Refusal::AtConnect,
    };
    run_all(&target, &fx).await;
}
