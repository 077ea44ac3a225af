//! `gatehouse-bench mqtt-load`: QoS 0 throughput (N publishers -> 1
//! subscriber) and mTLS connection rate, against `gatehouse serve` and, as a
//! baseline in the same run, a local Mosquitto 2.0 with
//! `require_certificate true`. Both brokers get the same certificates and
//! the same client code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_tests::broker::{BrokerProcess, free_port};
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to measure.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub gatehouse: PathBuf,
    pub mosquitto: PathBuf,
    pub publishers: usize,
    pub payload: usize,
    pub seconds: u64,
    pub connectors: usize,
}

struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mosquitto(exe: &Path, pki: &Pki, nodelay: bool) -> Result<Mosquitto, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    let mut text = format!(
        "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
         allow_anonymous true\nlog_dest none\nmax_queued_messages 0\npersistence false\n",
        pki.ca_path.display(),
        pki.server.cert_path.display(),
        pki.server.key_path.display(),
    );
    if nodelay {
        text.push_str("set_tcp_nodelay true\n");
    }
    if is_root() {
        text.push_str("user root\n");
    }
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {} ({e}); apt-get install mosquitto",
                exe.display()
            )
        })?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().map_err(|_| "addr")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err("mosquitto did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Mosquitto {
        child,
        addr,
        _dir: dir,
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

pub(crate) fn run(opts: &Options) -> Result<(), String> {
    let pki = Arc::new(Pki::generate());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let gatehouse = BrokerProcess::start(
        &opts.gatehouse,
        &pki,
        // Broker against broker: Mosquitto ingests nothing, so neither does
        // gatehouse here (its ingest throughput is `gatehouse-bench ingest`).
        "[identity]\noperational_client_id = \"any\"\n[mqtt]\nmax_keepalive = \"60s\"\n\
         [ingest]\ntopic_filter = \"bench/not-ingested\"\n",
    );
    let mosquitto = start_mosquitto(&opts.mosquitto, &pki, false)?;
    let mosquitto_nodelay = start_mosquitto(&opts.mosquitto, &pki, true)?;
    println!(
        "mqtt-load: {} publishers -> 1 subscriber, QoS 0, {}-byte payloads, {} s per run; \
         connection rate with {} concurrent connectors (full TLS handshakes, no resumption)",
        opts.publishers, opts.payload, opts.seconds, opts.connectors
    );
    for (name, addr) in [
        ("gatehouse", gatehouse.mqtt),
        ("mosquitto", mosquitto.addr),
        ("mosquitto+nodelay", mosquitto_nodelay.addr),
    ] {
        let rate = runtime.block_on(throughput(addr, &pki, opts))?;
        println!("{name:>17}: QoS 0 delivered {rate:>10.0} msg/s");
        if name == "gatehouse" {
            println!(
                "{:>17}  (broker counters for the whole run: {} PUBLISH in, {} out)",
                "",
                gatehouse.metric("gatehouse_messages_received_total"),
                gatehouse.metric("gatehouse_messages_sent_total")
            );
        }
        let conns = runtime.block_on(connection_rate(addr, &pki, opts))?;
        println!("{name:>17}: mTLS connect+CONNACK+DISCONNECT {conns:>8.0} connections/s");
    }
    Ok(())
}

/// The subscriber on its own OS thread and runtime, so the publishers'
/// tasks in this process cannot starve it: it counts what it receives while
/// `counting` is set.
fn spawn_subscriber(
    addr: SocketAddr,
    pki: Arc<Pki>,
    topic: String,
    counting: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let handle = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
        };
        rt.block_on(async move {
            let id = format!("{GATEWAY_CODE}-sub");
            let mut sub = match gatehouse_tests::mqtt::connect_v4(
                addr,
                &pki,
                Some(&pki.operational),
                &id,
                |o| {
                    o.set_max_packet_size(1 << 20, 1 << 20);
                },
            )
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("subscriber: {e}")));
                    return;
                }
            };
            let subscribed = sub
                .client
                .subscribe(&topic, rumqttc::QoS::AtMostOnce)
                .await
                .is_ok()
                && matches!(
                    sub.wait_for(Duration::from_secs(10), |p| matches!(
                        p,
                        rumqttc::Packet::SubAck(_)
                    )
                    .then_some(()))
                        .await,
                    Ok(Some(()))
                );
            let _ = ready_tx.send(if subscribed {
                Ok(())
            } else {
                Err("subscribe failed".into())
            });
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), sub.events.recv()).await {
                    Ok(Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))))) => {
                        if counting.load(Ordering::Relaxed) {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(Ok(_))) | Err(_) => {}
                    Ok(Some(Err(_))) | Ok(None) => return,
                }
            }
        });
    });
    ready_rx.recv().map_err(|e| e.to_string())??;
    Ok(handle)
}

async fn throughput(addr: SocketAddr, pki: &Arc<Pki>, opts: &Options) -> Result<f64, String> {
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let subscriber = spawn_subscriber(
        addr,
        pki.clone(),
        topic.clone(),
        counting.clone(),
        count.clone(),
        stop.clone(),
    )?;
    let mut publishers = Vec::new();
    for i in 0..opts.publishers {
        let p = gatehouse_tests::mqtt::connect_v4(
            addr,
            pki,
            Some(&pki.operational),
            &format!("{GATEWAY_CODE}-p{i}"),
            |o| {
                o.set_inflight(100);
            },
        )
        .await
        .map_err(|e| format!("publisher {i}: {e}"))?;
        let stop = stop.clone();
        let topic = topic.clone();
        let payload = vec![b'x'; opts.payload];
        publishers.push(tokio::spawn(async move {
            let mut events = p.events;
            // Drain the publisher's own events so its event loop never stalls.
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            while !stop.load(Ordering::Relaxed) {
                if p.client
                    .publish(&topic, rumqttc::QoS::AtMostOnce, false, payload.clone())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    // Warm up, then count what the subscriber receives in the window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(opts.seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    let _ = subscriber.join();
    Ok(count.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

fn client_config(pki: &Pki) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca_path).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let chain = CertificateDer::pem_file_iter(&pki.operational.cert_path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(&pki.operational.key_path).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

async fn connection_rate(addr: SocketAddr, pki: &Arc<Pki>, opts: &Options) -> Result<f64, String> {
    let config = client_config(pki)?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let mut workers = Vec::new();
    for w in 0..opts.connectors {
        let (config, done) = (config.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = format!("{GATEWAY_CODE}-c{w}-{n}");
                n += 1;
                match one_connection(addr, config.clone(), &id).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return Err(format!("connection {id}: {e}")),
                }
            }
            Ok(())
        }));
    }
    let started = Instant::now();
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn one_connection(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    id: &str,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            ServerName::try_from("localhost").map_err(|e| e.to_string())?,
            tcp,
        )
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(&gatehouse_tests::mqtt::connect_packet_v4(id, 30))
        .await
        .map_err(|e| e.to_string())?;
    let mut ack = [0u8; 4];
    tls.read_exact(&mut ack).await.map_err(|e| e.to_string())?;
    if ack != [0x20, 0x02, 0x00, 0x00] {
        return Err(format!("CONNACK {ack:02x?}"));
    }
    tls.write_all(&[0xE0, 0x00])
        .await
        .map_err(|e| e.to_string())?;
    let _ = tls.shutdown().await;
    Ok(())
}
