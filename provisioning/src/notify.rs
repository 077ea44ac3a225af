//! `LISTEN gatehouse_crl`: brokers sharing a PostgreSQL registry follow
//! every CRL another node publishes. On each notification (and after a lost
//! connection, when notifications may have been missed) the node re-signs
//! the database's revocation list into its own `[tls] crl` file, which its
//! CRL watcher reloads within `tls.crl_poll_interval`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::service::Provisioning;
use crate::store::CRL_CHANNEL;

/// Runs until `shutdown` resolves. Connection problems are logged and
/// retried every second; they never stop the broker.
pub async fn follow_crl_notifications(
    service: Arc<Provisioning>,
    database_url: String,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut listener: Option<PgListener> = None;
    loop {
        let Some(l) = listener.as_mut() else {
            let connected = async {
                let mut l = PgListener::connect(&database_url).await?;
                l.listen(CRL_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            tokio::select! {
                _ = &mut shutdown => return,
                r = connected => match r {
                    Ok(l) => {
                        tracing::info!(channel = CRL_CHANNEL, "listening for CRL notifications");
                        listener = Some(l);
                        // Catch up with anything published while we were away.
                        follow(&service, None).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot LISTEN gatehouse_crl on the provisioning database; retrying in 1 s (revocations from other nodes still arrive through the CRL file if it is shared)");
                        tokio::select! {
                            _ = &mut shutdown => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                },
            }
            continue;
        };
        tokio::select! {
            _ = &mut shutdown => return,
            n = l.try_recv() => match n {
                Ok(Some(n)) => follow(&service, n.payload().parse().ok()).await,
                Ok(None) => {
                    tracing::warn!("connection for LISTEN gatehouse_crl lost; reconnecting and re-reading the CRL");
                    follow(&service, None).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN gatehouse_crl failed; reconnecting in 1 s");
                    listener = None;
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            },
        }
    }
}

async fn follow(service: &Provisioning, number: Option<u64>) {
    if let Err(e) = service.follow_crl(number).await {
        tracing::error!(error = %e, "cannot rewrite the CRL after NOTIFY gatehouse_crl; the broker keeps the previous one");
    }
}
