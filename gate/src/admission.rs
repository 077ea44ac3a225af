//! One ordered admission for both shapes: the certificate (identity and
//! validity), then revocation, then the client id. The shapes call the
//! steps in this order; between the first two the broker registers the
//! session so a CRL change landing in between still reaches it.

use gatehouse_acl::ClientIdError;
use gatehouse_auth::{Identity, IdentityError, RevocationError, RevocationHandle};
use time::OffsetDateTime;

use crate::outcome::{ConnectRefusal, Handshake};
use crate::policy::Policy;

/// Why a client is not admitted, whichever shape asks.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Revoked(#[from] RevocationError),
    #[error(transparent)]
    ClientId(#[from] ClientIdError),
}

impl Refusal {
    /// A failed certificate check (`Err`, `gatehouse_handshakes_total`), or a
    /// CONNECT refused after a good certificate (`Ok`,
    /// `gatehouse_connect_refused_total`).
    pub fn outcome(&self) -> Result<ConnectRefusal, Handshake> {
        match self {
            Refusal::Identity(e) => Err(Handshake::of_identity(e)),
            Refusal::Revoked(e) => Err(Handshake::of_revocation(e)),
            Refusal::ClientId(_) => Ok(ConnectRefusal::ClientId),
        }
    }

    /// The `gatehouse_handshakes_total` result of a refusal at steps 1–2
    /// (`failed` for a client-id refusal, which is counted elsewhere).
    pub fn handshake(&self) -> Handshake {
        self.outcome().err().unwrap_or(Handshake::Failed)
    }
}

impl Policy {
    /// Step 1: the leaf certificate's identity (kind, CN, serial), inside
    /// its validity window at `now`.
    pub fn identify(&self, leaf_der: &[u8], now: OffsetDateTime) -> Result<Identity, Refusal> {
        let identity = self.classifier.identify(leaf_der)?;
        identity.check_validity(now)?;
        Ok(identity)
    }

    /// Step 2: not revoked (nor the CRL expired with `crl_fail_closed`).
    pub fn check_revocation(
        &self,
        revocation: &RevocationHandle,
        identity: &Identity,
    ) -> Result<(), Refusal> {
        Ok(revocation.check(&identity.serial)?)
    }

    /// Step 3, at CONNECT: the client id this certificate may use.
    pub fn check_client_id(&self, identity: &Identity, client_id: &str) -> Result<(), Refusal> {
        Ok(self
            .client_id
            .check(identity.kind, &identity.cn, client_id)?)
    }

    /// All three steps, for a shape with nothing to do in between (the
    /// plugin at CONNECT).
    pub fn admit(
        &self,
        revocation: &RevocationHandle,
        leaf_der: &[u8],
        client_id: &str,
        now: OffsetDateTime,
    ) -> Result<Identity, Refusal> {
        let identity = self.identify(leaf_der, now)?;
        self.check_revocation(revocation, &identity)?;
        self.check_client_id(&identity, client_id)?;
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_auth::{RevocationSet, Serial};
    use gatehouse_ca::{Ca, CaOptions, LeafSpec};
    use gatehouse_config::Config;
    use time::Duration;

    use super::*;

    fn leaf(ca: &Ca, cn: &str, ou: &str, from: Duration, to: Duration) -> (Vec<u8>, Serial) {
        let now = OffsetDateTime::now_utc();
        let mut spec = LeafSpec::client(cn, 1);
        spec.organizational_unit = Some(ou.into());
        spec.not_before = now + from;
        spec.not_after = now + to;
        let c = ca.issue(&spec).expect("issue");
        (c.cert_der, c.serial)
    }

    /// Every step refuses with the outcome both shapes count, in order.
    #[test]
    fn admission_steps_refuse_in_order_with_their_outcome() {
        let ca = Ca::generate(CaOptions::default()).expect("CA");
        let policy = Policy::from_config(&Config::defaults()).expect("defaults");
        let now = OffsetDateTime::now_utc();
        let day = Duration::days(1);
        let (good, good_serial) = leaf(&ca, "GW1-EEFF", "gateway", -day, day);
        let (expired, _) = leaf(&ca, "GW2-EEFF", "gateway", -day * 2, -day);
        let (early, _) = leaf(&ca, "GW3-EEFF", "gateway", day, day * 2);
        let (odd, _) = leaf(&ca, "GW4-EEFF", "marketing", -day, day);
        let (revoked, revoked_serial) = leaf(&ca, "GW5-EEFF", "gateway", -day, day);
        let crl = RevocationHandle::fixed(RevocationSet::from_serials([revoked_serial]));

        let id = policy
            .admit(&crl, &good, "GW1-EEFF", now)
            .expect("admitted");
        assert_eq!((id.cn.as_str(), id.serial), ("GW1-EEFF", good_serial));

        let outcome = |der: &[u8], client_id: &str| {
            policy
                .admit(&crl, der, client_id, now)
                .unwrap_err()
                .outcome()
        };
        assert_eq!(outcome(&expired, "GW2-EEFF"), Err(Handshake::Expired));
        assert_eq!(outcome(&early, "GW3-EEFF"), Err(Handshake::NotYetValid));
        assert_eq!(outcome(&odd, "GW4-EEFF"), Err(Handshake::UnknownKind));
        assert_eq!(outcome(b"not a certificate", "x"), Err(Handshake::BadChain));
        assert_eq!(outcome(&revoked, "GW5-EEFF"), Err(Handshake::Revoked));
        assert_eq!(outcome(&good, "GW9-0000"), Ok(ConnectRefusal::ClientId));
        // Order: a revoked certificate with a wrong client id is a revocation.
        assert_eq!(outcome(&revoked, "wrong"), Err(Handshake::Revoked));
        // And an expired one with a wrong id is expired.
        assert_eq!(outcome(&expired, "wrong"), Err(Handshake::Expired));
        let refusal = policy.admit(&crl, &good, "a+b", now).unwrap_err();
        assert_eq!(refusal.handshake(), Handshake::Failed);
        assert!(refusal.to_string().contains("a+b"), "{refusal}");
    }
}
