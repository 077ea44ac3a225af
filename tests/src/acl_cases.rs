//! The shared admission and ACL case table, and a runner that drives any
//! Gatehouse-enforcing broker with real MQTT v5 clients over mTLS.
//!
//! The same table must give the same results against the embedded broker
//! and against Mosquitto + `libgatehouse_mosquitto.so`: point
//! [`run_all`] at either, with [`ACL_TOML`] as the `[acl]` part of the
//! gatehouse.toml both load.
//!
//! Observable meaning of each expectation:
//! * **connect** admitted = CONNACK success. Refused = a CONNACK failure code
//!   or a failed TLS handshake; with [`Refusal::AtFirstRequest`] (Mosquitto
//!   with `use_identity_as_username`, which skips CONNECT checks) also a
//!   CONNACK success followed by a refused first SUBSCRIBE and a disconnect.
//! * **subscribe** allowed = SUBACK success code.
//! * **publish** allowed = PUBACK reason < 0x80 *and* delivery to the
//!   observer when the case names one; denied = PUBACK ≥ 0x80 (or the
//!   connection closed) *and* no delivery to the observer.
//! * **receive** allowed = the subscriber gets a message that an allowed
//!   publisher sent on a topic matching its (allowed) subscription.

use std::time::Duration;

use gatehouse_acl::Action;

use crate::mqtt::{Credentials, Endpoint, V5};
use crate::pki::{BOOTSTRAP_MAC, Client, GATEWAY_CODE, Pki};

/// Gateway code of the second good operational client ([`Fixtures`]).
pub const OTHER_GATEWAY_CODE: &str = "GW0002-AABB";
/// A second MAC the shared bootstrap certificate connects as.
pub const OTHER_MAC: &str = "02:00:00:00:00:02";

/// The `[acl]` section both shapes run the table with: the defaults plus a
/// `fleet/` tree where subscribe is wider than receive, so receive is
/// decided on its own.
pub const ACL_TOML: &str = r#"[acl.operational]
publish = ["telemetry/{cn}/#", "fleet/all/{cn}", "fleet/secret/{cn}"]
subscribe = ["telemetry/{cn}/#", "fleet/#"]
receive = ["telemetry/{cn}/#", "fleet/all/+"]

[acl.bootstrap]
publish = ["tds/provision/{client_id}/#"]
subscribe = ["tds/provision/{client_id}/#"]
receive = ["tds/provision/{client_id}/#"]
"#;

/// Which test certificate a client presents, and with which client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Operational `GW0001-EEFF`, client id = CN.
    Gateway,
    /// Operational `GW0002-AABB`, client id = CN.
    OtherGateway,
    /// Bootstrap certificate, client id `aa:bb:cc:dd:ee:ff`.
    Bootstrap,
    /// Bootstrap certificate, client id [`OTHER_MAC`].
    BootstrapOtherMac,
    /// Operational `GW0001-EEFF` connecting as `GW0002-AABB`.
    GatewayWrongClientId,
    /// Bootstrap certificate with a client id that is not a MAC.
    BootstrapNotMac,
    WrongOu,
    /// Listed in the fixture CRL.
    Revoked,
    Expired,
    NotYetValid,
    WrongCa,
    /// No client certificate at all.
    NoCertificate,
}

/// Certificates for every [`Who`], from a [`Pki`].
#[derive(Debug)]
pub struct Fixtures<'a> {
    pki: &'a Pki,
    other: Client,
}

impl<'a> Fixtures<'a> {
    /// Issues the second gateway's certificate into `pki`.
    pub fn new(pki: &'a Pki) -> Fixtures<'a> {
        Fixtures {
            pki,
            other: pki.issue_operational(OTHER_GATEWAY_CODE),
        }
    }

    /// (client id, credentials) for `who`.
    pub fn of(&self, who: Who) -> (String, Option<Credentials<'_>>) {
        let p = self.pki;
        let c = |cl: &'a Client| {
            Some(Credentials {
                cert: &cl.cert_path,
                key: &cl.key_path,
            })
        };
        match who {
            Who::Gateway => (GATEWAY_CODE.into(), c(&p.operational)),
            Who::OtherGateway => (
                OTHER_GATEWAY_CODE.into(),
                Some(Credentials {
                    cert: &self.other.cert_path,
                    key: &self.other.key_path,
                }),
            ),
            Who::Bootstrap => (BOOTSTRAP_MAC.into(), c(&p.bootstrap)),
            Who::BootstrapOtherMac => (OTHER_MAC.into(), c(&p.bootstrap)),
            Who::GatewayWrongClientId => (OTHER_GATEWAY_CODE.into(), c(&p.operational)),
            Who::BootstrapNotMac => ("factory-batch-1".into(), c(&p.bootstrap)),
            Who::WrongOu => (p.wrong_ou.client_id.clone(), c(&p.wrong_ou)),
            Who::Revoked => (p.revoked.client_id.clone(), c(&p.revoked)),
            Who::Expired => (p.expired.client_id.clone(), c(&p.expired)),
            Who::NotYetValid => (p.not_yet_valid.client_id.clone(), c(&p.not_yet_valid)),
            Who::WrongCa => (p.wrong_ca.client_id.clone(), c(&p.wrong_ca)),
            Who::NoCertificate => (GATEWAY_CODE.into(), None),
        }
    }
}

/// Admitted or refused at CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    Refuse,
}

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Allow,
    Deny,
}

/// One CONNECT case.
#[derive(Debug, Clone, Copy)]
pub struct ConnectCase {
    pub name: &'static str,
    pub who: Who,
    pub expect: Admission,
}

/// The other party of an ACL case.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// Publish: nobody watches (only the PUBACK tells).
    None,
    /// Publish: the publishing connection itself subscribes to this filter
    /// first and must get its own message back iff allowed.
    SelfVia(&'static str),
    /// Publish: this client subscribes to the filter first and must get the
    /// message iff allowed. Receive: this client publishes the topic, and
    /// the case's client subscribes to the filter first.
    Other(Who, &'static str),
}

/// One ACL case.
#[derive(Debug, Clone, Copy)]
pub struct AclCase {
    pub name: &'static str,
    pub who: Who,
    pub action: Action,
    /// Topic name (publish, receive) or filter (subscribe).
    pub topic: &'static str,
    pub expect: Expect,
    pub peer: Peer,
}

/// CONNECT cases.
pub const CONNECT_CASES: &[ConnectCase] = &[
    ConnectCase {
        name: "operational, client id = CN",
        who: Who::Gateway,
        expect: Admission::Admit,
    },
    ConnectCase {
        name: "bootstrap, client id = MAC",
        who: Who::Bootstrap,
        expect: Admission::Admit,
    },
    ConnectCase {
        name: "operational, client id != CN",
        who: Who::GatewayWrongClientId,
        expect: Admission::Refuse,
    },
    ConnectCase {
        name: "bootstrap, client id not a MAC",
        who: Who::BootstrapNotMac,
        expect: Admission::Refuse,
    },
    ConnectCase {
        name: "wrong OU",
        who: Who::WrongOu,
        expect: Admission::Refuse,
    },
    ConnectCase {
        name: "revoked before connect",
        who: Who::Revoked,
        expect: Admission::Refuse,
    },
    ConnectCase {
        name: "expired",
        who: Who::Expired,
        expect: Admission::Refuse,
    },
    ConnectCase {
        name: "not yet valid",
        who: Who::NotYetValid,
        expect: Admission::Refuse,
    },
    ConnectCase {
        name: "signed by another CA",
        who: Who::WrongCa,
        expect: Admission::Refuse,
    },
    ConnectCase {
        name: "no client certificate",
        who: Who::NoCertificate,
        expect: Admission::Refuse,
    },
];

use Action::{Publish, Receive, Subscribe};
use Expect::{Allow, Deny};

/// ACL cases (default rules plus [`ACL_TOML`]'s `fleet/` tree).
pub const ACL_CASES: &[AclCase] = &[
    AclCase {
        name: "gateway publishes its own telemetry",
        who: Who::Gateway,
        action: Publish,
        topic: "telemetry/GW0001-EEFF/data",
        expect: Allow,
        peer: Peer::SelfVia("telemetry/GW0001-EEFF/#"),
    },
    AclCase {
        name: "gateway subscribes to its own tree",
        who: Who::Gateway,
        action: Subscribe,
        topic: "telemetry/GW0001-EEFF/#",
        expect: Allow,
        peer: Peer::None,
    },
    AclCase {
        name: "gateway publishes on another gateway's topic",
        who: Who::Gateway,
        action: Publish,
        topic: "telemetry/GW0002-AABB/data",
        expect: Deny,
        peer: Peer::Other(Who::OtherGateway, "telemetry/GW0002-AABB/#"),
    },
    AclCase {
        name: "gateway subscribes to another gateway's tree",
        who: Who::Gateway,
        action: Subscribe,
        topic: "telemetry/GW0002-AABB/#",
        expect: Deny,
        peer: Peer::None,
    },
    AclCase {
        name: "gateway subscribes to #",
        who: Who::Gateway,
        action: Subscribe,
        topic: "#",
        expect: Deny,
        peer: Peer::None,
    },
    AclCase {
        name: "gateway subscribes to telemetry/#",
        who: Who::Gateway,
        action: Subscribe,
        topic: "telemetry/#",
        expect: Deny,
        peer: Peer::None,
    },
    AclCase {
        name: "gateway subscribes to telemetry/+/data",
        who: Who::Gateway,
        action: Subscribe,
        topic: "telemetry/+/data",
        expect: Deny,
        peer: Peer::None,
    },
    AclCase {
        name: "gateway subscribes to $SYS/#",
        who: Who::Gateway,
        action: Subscribe,
        topic: "$SYS/#",
        expect: Deny,
        peer: Peer::None,
    },
    AclCase {
        name: "gateway publishes to $SYS",
        who: Who::Gateway,
        action: Publish,
        topic: "$SYS/broker/x",
        expect: Deny,
        peer: Peer::None,
    },
    AclCase {
        name: "gateway publishes on a provisioning topic",
        who: Who::Gateway,
        action: Publish,
        topic: "tds/provision/aa:bb:cc:dd:ee:ff/register",
        expect: Deny,
        peer: Peer::Other(Who::Bootstrap, "tds/provision/aa:bb:cc:dd:ee:ff/#"),
    },
    AclCase {
        name: "bootstrap publishes under its MAC",
        who: Who::Bootstrap,
        action: Publish,
        topic: "tds/provision/aa:bb:cc:dd:ee:ff/register",
        expect: Allow,
        peer: Peer::SelfVia("tds/provision/aa:bb:cc:dd:ee:ff/#"),
    },
    AclCase {
        name: "bootstrap subscribes under its MAC",
        who: Who::Bootstrap,
        action: Subscribe,
        topic: "tds/provision/aa:bb:cc:dd:ee:ff/#",
        expect: Allow,
        peer: Peer::None,
    },
    AclCase {
        name: "bootstrap publishes under another MAC",
        who: Who::Bootstrap,
        action: Publish,
        topic: "tds/provision/02:00:00:00:00:02/register",
        expect: Deny,
        peer: Peer::Other(Who::BootstrapOtherMac, "tds/provision/02:00:00:00:00:02/#"),
    },
    AclCase {
        name: "bootstrap subscribes under another MAC",
        who: Who::Bootstrap,
        action: Subscribe,
        topic: "tds/provision/02:00:00:00:00:02/#",
        expect: Deny,
        peer: Peer::None,
    },
    AclCase {
        name: "bootstrap subscribes to tds/provision/#",
        who: Who::Bootstrap,
        action: Subscribe,
        topic: "tds/provision/#",
        expect: Deny,
        peer: Peer::None,
    },
    AclCase {
        name: "bootstrap publishes telemetry",
        who: Who::Bootstrap,
        action: Publish,
        topic: "telemetry/GW0001-EEFF/data",
        expect: Deny,
        peer: Peer::Other(Who::Gateway, "telemetry/GW0001-EEFF/#"),
    },
    AclCase {
        name: "bootstrap subscribes to #",
        who: Who::Bootstrap,
        action: Subscribe,
        topic: "#",
        expect: Deny,
        peer: Peer::None,
    },
    AclCase {
        name: "gateway receives a fleet/all message",
        who: Who::Gateway,
        action: Receive,
        topic: "fleet/all/GW0002-AABB",
        expect: Allow,
        peer: Peer::Other(Who::OtherGateway, "fleet/#"),
    },
    AclCase {
        name: "gateway does not receive a fleet/secret message",
        who: Who::Gateway,
        action: Receive,
        topic: "fleet/secret/GW0002-AABB",
        expect: Deny,
        peer: Peer::Other(Who::OtherGateway, "fleet/#"),
    },
];

/// When the target refuses a bad identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// CONNACK "not authorized" (embedded broker; Mosquitto + plugin in the
    /// recommended listener configuration).
    AtConnect,
    /// CONNACK success, then every request refused and the client
    /// disconnected (Mosquitto with `use_identity_as_username true`).
    AtFirstRequest,
}

/// A broker to run the table against.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: Endpoint,
    pub refusal: Refusal,
}

/// How long a denied message is waited for before concluding it was not
/// delivered.
const NOT_DELIVERED_WAIT: Duration = Duration::from_millis(400);
const DELIVERED_WAIT: Duration = Duration::from_secs(3);

async fn connect(
    target: &Target,
    fx: &Fixtures<'_>,
    who: Who,
) -> Result<V5, rumqttc::v5::ConnectionError> {
    let (id, creds) = fx.of(who);
    V5::connect(&target.endpoint, &id, creds).await
}

async fn must_connect(target: &Target, fx: &Fixtures<'_>, who: Who) -> V5 {
    connect(target, fx, who)
        .await
        .unwrap_or_else(|e| panic!("{who:?} must be able to connect: {e:?}"))
}

/// Runs one CONNECT case; the observed admission.
pub async fn run_connect(target: &Target, fx: &Fixtures<'_>, case: &ConnectCase) -> Admission {
    let mut conn = match connect(target, fx, case.who).await {
        Err(_) => return Admission::Refuse,
        Ok(c) => c,
    };
    match target.refusal {
        Refusal::AtConnect => Admission::Admit,
        Refusal::AtFirstRequest => {
            // Admission shows in whether the first request is honoured.
            let (id, _) = fx.of(case.who);
            let own = if id.contains(':') || case.who == Who::BootstrapNotMac {
                format!("tds/provision/{id}/#")
            } else {
                format!("telemetry/{id}/#")
            };
            if conn.subscribe(&own).await {
                Admission::Admit
            } else {
                assert!(
                    conn.closed(Duration::from_secs(2)).await.is_some(),
                    "{}: a client refused at its first request must be disconnected",
                    case.name
                );
                Admission::Refuse
            }
        }
    }
}

/// Runs one ACL case; the observed result.
pub async fn run_acl(target: &Target, fx: &Fixtures<'_>, case: &AclCase) -> Expect {
    let payload = format!("case: {}", case.name).into_bytes();
    let verdict = |ok: bool| if ok { Allow } else { Deny };
    match case.action {
        Subscribe => {
            let mut c = must_connect(target, fx, case.who).await;
            verdict(c.subscribe(case.topic).await)
        }
        Publish => {
            let mut c = must_connect(target, fx, case.who).await;
            let mut observer = match case.peer {
                Peer::None => None,
                Peer::SelfVia(filter) => {
                    assert!(
                        c.subscribe(filter).await,
                        "{}: self subscription {filter:?} must be allowed",
                        case.name
                    );
                    None
                }
                Peer::Other(who, filter) => {
                    let mut o = must_connect(target, fx, who).await;
                    assert!(
                        o.subscribe(filter).await,
                        "{}: observer subscription {filter:?} must be allowed",
                        case.name
                    );
                    Some(o)
                }
            };
            let acked = c.publish(case.topic, &payload).await;
            let wait = if acked {
                DELIVERED_WAIT
            } else {
                NOT_DELIVERED_WAIT
            };
            let delivered = match (&case.peer, observer.as_mut()) {
                (Peer::SelfVia(_), _) => Some(c.received(case.topic, &payload, wait).await),
                (_, Some(o)) => Some(o.received(case.topic, &payload, wait).await),
                _ => None,
            };
            match delivered {
                None => verdict(acked),
                Some(d) if d == acked => verdict(acked),
                Some(d) => panic!(
                    "{}: inconsistent broker: PUBACK said {} but the message was {}delivered",
                    case.name,
                    if acked { "accepted" } else { "refused" },
                    if d { "" } else { "not " }
                ),
            }
        }
        Receive => {
            let Peer::Other(publisher, filter) = case.peer else {
                panic!(
                    "{}: a receive case needs Peer::Other(publisher, filter)",
                    case.name
                );
            };
            let mut rx = must_connect(target, fx, case.who).await;
            assert!(
                rx.subscribe(filter).await,
                "{}: subscription {filter:?} must be allowed",
                case.name
            );
            let mut tx = must_connect(target, fx, publisher).await;
            assert!(
                tx.publish(case.topic, &payload).await,
                "{}: publishing {:?} must be allowed",
                case.name,
                case.topic
            );
            let wait = match case.expect {
                Allow => DELIVERED_WAIT,
                Deny => NOT_DELIVERED_WAIT * 2,
            };
            verdict(rx.received(case.topic, &payload, wait).await)
        }
    }
}

/// Runs the whole table; panics listing every case whose observed result
/// differs from the expected one.
pub async fn run_all(target: &Target, fx: &Fixtures<'_>) {
    let mut wrong = Vec::new();
    for case in CONNECT_CASES {
        let got = run_connect(target, fx, case).await;
        if got != case.expect {
            wrong.push(format!(
                "connect: {}: expected {:?}, got {got:?}",
                case.name, case.expect
            ));
        }
    }
    for case in ACL_CASES {
        let got = run_acl(target, fx, case).await;
        if got != case.expect {
            wrong.push(format!(
                "{} {:?}: {}: expected {:?}, got {got:?}",
                case.action, case.topic, case.name, case.expect
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n  {}",
        wrong.len(),
        CONNECT_CASES.len() + ACL_CASES.len(),
        wrong.join("\n  ")
    );
}

/// gatehouse.toml text for [`CLIENT_ID_CASES`]: any client id is allowed for
/// an operational certificate, so only the one charset rule decides.
pub const ANY_CLIENT_ID_TOML: &str = "[identity]\noperational_client_id = \"any\"\n";

/// Client ids the gateway's operational certificate connects with under
/// [`ANY_CLIENT_ID_TOML`]. Whatever `[identity]` allows, an id that would
/// change the meaning of a topic rule (empty, `/`, `+`, `#`, `$`, NUL) is
/// refused — in both shapes (`gatehouse_acl::topic_safe`).
pub const CLIENT_ID_CASES: &[(&str, Admission)] = &[
    ("tool-7", Admission::Admit),
    (GATEWAY_CODE, Admission::Admit),
    ("a+b", Admission::Refuse),
    ("a#b", Admission::Refuse),
    ("GW/1", Admission::Refuse),
    ("$GW1", Admission::Refuse),
];

/// Runs [`CLIENT_ID_CASES`] against a target started with
/// [`ANY_CLIENT_ID_TOML`] (refusing at CONNECT).
pub async fn run_client_id_cases(target: &Target, pki: &Pki) {
    assert_eq!(target.refusal, Refusal::AtConnect);
    let mut wrong = Vec::new();
    for (id, expect) in CLIENT_ID_CASES {
        let creds = Credentials {
            cert: &pki.operational.cert_path,
            key: &pki.operational.key_path,
        };
        let got = match V5::connect(&target.endpoint, id, Some(creds)).await {
            Ok(_) => Admission::Admit,
            Err(_) => Admission::Refuse,
        };
        if got != *expect {
            wrong.push(format!(
                "client id {id:?}: expected {expect:?}, got {got:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The series (`name{labels}`, without values) of the metrics both shapes
/// share ([`gatehouse_gate::SHARED_METRICS`]) on a `/metrics` page.
pub fn shared_series(page: &str) -> std::collections::BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
        .filter(|series| {
            let name = series.split('{').next().unwrap_or_default();
            gatehouse_gate::SHARED_METRICS.contains(&name)
        })
        .map(str::to_string)
        .collect()
}

/// How a reload case drives its target: the target's gatehouse.toml, how
/// to send it SIGHUP, and its log.
pub struct Reloader<'a> {
    pub config_path: &'a std::path::Path,
    pub sighup: &'a dyn Fn(),
    pub log: &'a dyn Fn() -> String,
}

impl std::fmt::Debug for Reloader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

/// Waits (up to 5 s) for `needle` to appear `times` times in the log.
fn wait_log(r: &Reloader<'_>, needle: &str, times: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while (r.log)().matches(needle).count() < times {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} not logged {times} time(s):\n{}",
            (r.log)()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGHUP reload, the same in both shapes: a widened rule applies to an open
/// session, a broken file is refused (naming the key) and the rules in
/// force stay, a narrowed rule applies to the open session too.
pub async fn run_reload_case(target: &Target, fx: &Fixtures<'_>, r: &Reloader<'_>) {
    const RELOADED: &str = "new [identity] and [acl] rules in force";
    const REFUSED: &str = "reload refused, keeping the previous rules";
    let mut gw = must_connect(target, fx, Who::Gateway).await;
    assert!(!gw.subscribe("news/#").await, "not allowed by the defaults");
    let own = format!("telemetry/{GATEWAY_CODE}/x");
    assert!(gw.publish(&own, b"1").await, "own telemetry allowed");

    let base = std::fs::read_to_string(r.config_path).expect("read gatehouse.toml");
    let write = |extra: &str| {
        std::fs::write(r.config_path, format!("{base}\n{extra}")).expect("write gatehouse.toml")
    };
    write("[acl.operational]\nsubscribe = [\"telemetry/{cn}/#\", \"news/#\"]\n");
    (r.sighup)();
    wait_log(r, RELOADED, 1);
    assert!(
        gw.subscribe("news/#").await,
        "widened rule in force for an open session"
    );

    write("[acl]\nbogus = 1\n");
    (r.sighup)();
    wait_log(r, REFUSED, 1);
    assert!((r.log)().contains("key `acl.bogus`"), "{}", (r.log)());
    assert!(gw.subscribe("news/#").await, "previous rules kept");

    write("[acl.operational]\npublish = [\"other/{cn}\"]\n");
    (r.sighup)();
    wait_log(r, RELOADED, 2);
    assert!(
        !gw.publish(&own, b"2").await,
        "narrowed rule in force for an open session"
    );
}
