//! Certificate → [`Identity`]: parsing, and telling bootstrap from operational.

use std::path::Path;

use gatehouse_config::{Classification, IdentitySettings};
use rustc_hash::FxHashSet;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::identity::{Identity, IdentityError, Kind};
use crate::serial::{Fingerprint, Serial};

/// Turns the leaf certificate accepted by the TLS stack into an [`Identity`],
/// classifying it as bootstrap or operational according to `[identity]`.
///
/// Cheap to share (`Arc<Classifier>`); `identify` takes `&self` and does no I/O.
#[derive(Debug, Clone)]
pub struct Classifier {
    mode: Mode,
}

#[derive(Debug, Clone)]
enum Mode {
    SubjectOu {
        bootstrap_ou: String,
        operational_ou: String,
    },
    Issuer {
        cas: Vec<IssuerCa>,
    },
    Fingerprint {
        bootstrap: FxHashSet<[u8; 32]>,
    },
}

/// One CA certificate of issuer-mode classification, reduced to what the
/// check needs.
#[derive(Debug, Clone)]
struct IssuerCa {
    kind: Kind,
    subject_raw: Vec<u8>,
    spki_raw: Vec<u8>,
}

impl Classifier {
    /// Builds the classifier from validated settings. Issuer mode reads the two
    /// CA files now; an unreadable or invalid file is an error naming it.
    pub fn from_settings(settings: &IdentitySettings) -> Result<Classifier, IdentityError> {
        Self::from_classification(&settings.classify)
    }

    /// Same as [`Classifier::from_settings`], from the `classify` part only.
    pub fn from_classification(classify: &Classification) -> Result<Classifier, IdentityError> {
        let mode = match classify {
            Classification::SubjectOu {
                bootstrap_ou,
                operational_ou,
            } => {
                if bootstrap_ou.is_empty()
                    || operational_ou.is_empty()
                    || bootstrap_ou == operational_ou
                {
                    return Err(IdentityError::BadOuSettings {
                        bootstrap_ou: bootstrap_ou.clone(),
                        operational_ou: operational_ou.clone(),
                    });
                }
                Mode::SubjectOu {
                    bootstrap_ou: bootstrap_ou.clone(),
                    operational_ou: operational_ou.clone(),
                }
            }
            Classification::Issuer {
                bootstrap_ca,
                operational_ca,
            } => {
                let mut cas = read_ca_file(bootstrap_ca, Kind::Bootstrap)?;
                let operational = read_ca_file(operational_ca, Kind::Operational)?;
                for op in &operational {
                    if cas
                        .iter()
                        .any(|b| b.spki_raw == op.spki_raw && b.subject_raw == op.subject_raw)
                    {
                        return Err(IdentityError::SameCaForBothKinds {
                            subject: display_name(&op.subject_raw),
                        });
                    }
                }
                cas.extend(operational);
                Mode::Issuer { cas }
            }
            Classification::Fingerprint {
                bootstrap_fingerprints,
            } => Mode::Fingerprint {
                bootstrap: bootstrap_fingerprints.iter().copied().collect(),
            },
        };
        Ok(Classifier { mode })
    }

    /// Subject-OU classification without going through the config crate.
    pub fn subject_ou(
        bootstrap_ou: impl Into<String>,
        operational_ou: impl Into<String>,
    ) -> Result<Classifier, IdentityError> {
        Self::from_classification(&Classification::SubjectOu {
            bootstrap_ou: bootstrap_ou.into(),
            operational_ou: operational_ou.into(),
        })
    }

    /// Parses and classifies a DER leaf certificate.
    ///
    /// Does not check the validity window (see [`Identity::check_validity`]),
    /// the chain (the TLS stack's job) or revocation (see `RevocationHandle`).
    pub fn identify(&self, leaf_der: &[u8]) -> Result<Identity, IdentityError> {
        let (rest, cert) =
            X509Certificate::from_der(leaf_der).map_err(|e| IdentityError::Malformed {
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(IdentityError::Malformed {
                reason: format!("{} unexpected bytes after the certificate", rest.len()),
            });
        }
        let tbs = &cert.tbs_certificate;

        let cn = common_name(&cert)?;
        let fingerprint = Fingerprint::of(leaf_der);
        let kind = match &self.mode {
            Mode::SubjectOu {
                bootstrap_ou,
                operational_ou,
            } => classify_by_ou(&cert, bootstrap_ou, operational_ou)?,
            Mode::Issuer { cas } => classify_by_issuer(&cert, cas)?,
            Mode::Fingerprint { bootstrap } if bootstrap.contains(fingerprint.as_bytes()) => {
                Kind::Bootstrap
            }
            Mode::Fingerprint { .. } => Kind::Operational,
        };

        let serial = Serial::from_bytes(tbs.raw_serial())?;
        let validity = tbs.validity();
        Ok(Identity {
            kind,
            cn,
            serial,
            fingerprint,
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            issuer: tbs.issuer().to_string(),
            subject: tbs.subject().to_string(),
        })
    }
}

fn common_name(cert: &X509Certificate<'_>) -> Result<String, IdentityError> {
    let mut cns = cert.tbs_certificate.subject().iter_common_name();
    let first = cns.next().ok_or_else(|| IdentityError::MissingCommonName {
        detail: String::new(),
    })?;
    if cns.next().is_some() {
        return Err(IdentityError::MissingCommonName {
            detail: " (the subject has several CNs, which is ambiguous)".into(),
        });
    }
    let cn = first
        .as_str()
        .map_err(|_| IdentityError::MissingCommonName {
            detail: " (the CN is not a decodable string)".into(),
        })?;
    if cn.trim().is_empty() {
        return Err(IdentityError::MissingCommonName {
            detail: " (the CN is empty)".into(),
        });
    }
    Ok(cn.to_owned())
}

fn classify_by_ou(
    cert: &X509Certificate<'_>,
    bootstrap_ou: &str,
    operational_ou: &str,
) -> Result<Kind, IdentityError> {
    let ous = cert
        .tbs_certificate
        .subject()
        .iter_organizational_unit()
        .map(|attr| attr.as_str().ok());
    match kind_from_ous(ous, bootstrap_ou, operational_ou) {
        Some(Ok(kind)) => Ok(kind),
        Some(Err(())) => Err(IdentityError::AmbiguousKind {
            ou: collect_ous(cert, 2),
        }),
        None => Err(IdentityError::UnknownKind {
            ou: collect_ous(cert, 1),
        }),
    }
}

/// `Some(Ok(kind))` when the OUs name exactly one kind (other OUs are
/// ignored), `Some(Err(()))` when they name both, `None` when neither.
fn kind_from_ous<'a>(
    ous: impl Iterator<Item = Option<&'a str>>,
    bootstrap_ou: &str,
    operational_ou: &str,
) -> Option<Result<Kind, ()>> {
    let (mut bootstrap, mut operational) = (false, false);
    for ou in ous.flatten() {
        bootstrap |= ou == bootstrap_ou;
        operational |= ou == operational_ou;
    }
    match (bootstrap, operational) {
        (true, false) => Some(Ok(Kind::Bootstrap)),
        (false, true) => Some(Ok(Kind::Operational)),
        (true, true) => Some(Err(())),
        (false, false) => None,
    }
}

/// Only called on the error path, so the allocations do not slow admission.
fn collect_ous(cert: &X509Certificate<'_>, capacity: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(capacity);
    for attr in cert.tbs_certificate.subject().iter_organizational_unit() {
        out.push(match attr.as_str() {
            Ok(s) => s.to_owned(),
            Err(_) => "<undecodable>".to_owned(),
        });
    }
    out
}

fn classify_by_issuer(cert: &X509Certificate<'_>, cas: &[IssuerCa]) -> Result<Kind, IdentityError> {
    let issuer_raw = cert.tbs_certificate.issuer().as_raw();
    let mut found: Option<Kind> = None;
    for ca in cas.iter().filter(|ca| ca.subject_raw == issuer_raw) {
        let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(&ca.spki_raw) else {
            continue;
        };
        if cert.verify_signature(Some(&spki)).is_ok() {
            match found {
                Some(k) if k != ca.kind => {
                    return Err(IdentityError::AmbiguousKind {
                        ou: collect_ous(cert, 1),
                    });
                }
                _ => found = Some(ca.kind),
            }
        }
    }
    found.ok_or_else(|| IdentityError::UnknownKind {
        ou: collect_ous(cert, 1),
    })
}

fn read_ca_file(path: &Path, kind: Kind) -> Result<Vec<IssuerCa>, IdentityError> {
    let text = std::fs::read(path).map_err(|source| IdentityError::CaFileUnreadable {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| IdentityError::BadCaFile {
        path: path.to_owned(),
        reason,
    };
    let blocks = pem::parse_many(&text).map_err(|e| bad(format!("invalid PEM: {e}")))?;
    let mut cas = Vec::new();
    for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
        let (_, cert) = X509Certificate::from_der(block.contents()).map_err(|e| {
            bad(format!(
                "certificate #{} does not parse: {e}",
                cas.len() + 1
            ))
        })?;
        cas.push(IssuerCa {
            kind,
            subject_raw: cert.tbs_certificate.subject().as_raw().to_vec(),
            spki_raw: cert.tbs_certificate.public_key().raw.to_vec(),
        });
    }
    if cas.is_empty() {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    tracing::debug!(path = %path.display(), kind = kind.as_str(), count = cas.len(), "loaded classification CA(s)");
    Ok(cas)
}

fn display_name(raw: &[u8]) -> String {
    x509_parser::x509::X509Name::from_der(raw)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|_| "<unparseable name>".into())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
    use time::Duration;

    use super::*;
    use crate::testutil::*;

    const BOOT: &str = "bootstrap";
    const OPER: &str = "operational";

    fn ou_classifier() -> Classifier {
        Classifier::subject_ou(BOOT, OPER).unwrap()
    }

    /// A self-signed certificate with an arbitrary subject (OU mode does
    /// not look at the issuer).
    fn self_signed(cn: Option<&str>, ous: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for ou in ous {
            dn.push(DnType::OrganizationalUnitName, *ou);
        }
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn subject_ou_bootstrap_and_operational() {
        let ca = ca("Fleet CA");
        let c = ou_classifier();

        let boot = ca.client("factory-batch-7", Some(BOOT), 30);
        let id = c.identify(&boot.cert_der).unwrap();
        assert_eq!(id.kind, Kind::Bootstrap);
        assert_eq!(id.cn, "factory-batch-7");
        assert_eq!(id.gateway_code(), None);
        assert_eq!(id.serial, boot.serial);
        assert_eq!(id.fingerprint, boot.fingerprint);
        assert_eq!(id.fingerprint, Fingerprint::of(&boot.cert_der));
        assert_eq!(id.not_before, boot.not_before);
        assert_eq!(id.not_after, boot.not_after);
        assert!(id.issuer.contains("CN=Fleet CA"), "{}", id.issuer);
        assert!(id.subject.contains("CN=factory-batch-7"), "{}", id.subject);
        assert!(id.subject.contains("OU=bootstrap"), "{}", id.subject);
        id.check_validity(now()).unwrap();

        let op = ca.client("GW-0001-ABCD", Some(OPER), 30);
        let id = c.identify(&op.cert_der).unwrap();
        assert_eq!(id.kind, Kind::Operational);
        assert_eq!(id.gateway_code(), Some("GW-0001-ABCD"));
        assert_eq!(id.serial, op.serial);
    }

    #[test]
    fn subject_ou_wrong_missing_and_ambiguous() {
        let ca = ca("Fleet CA");
        let c = ou_classifier();

        let wrong = ca.client("x", Some("factory"), 30);
        match c.identify(&wrong.cert_der) {
            Err(IdentityError::UnknownKind { ou }) => assert_eq!(ou, vec!["factory".to_string()]),
            other => panic!("expected UnknownKind, got {other:?}"),
        }

        let missing = ca.client("GW-1", None, 30);
        match c.identify(&missing.cert_der) {
            Err(IdentityError::UnknownKind { ou }) => assert!(ou.is_empty()),
            other => panic!("expected UnknownKind, got {other:?}"),
        }

        // rcgen cannot put two OUs in one subject; the rule itself:
        let both = [Some(BOOT), Some("x"), Some(OPER)];
        assert_eq!(kind_from_ous(both.into_iter(), BOOT, OPER), Some(Err(())));
        let one = [Some("x"), None, Some(OPER)];
        assert_eq!(
            kind_from_ous(one.into_iter(), BOOT, OPER),
            Some(Ok(Kind::Operational))
        );
        assert_eq!(kind_from_ous([Some("x")].into_iter(), BOOT, OPER), None);
        // OU matching is exact (no case folding).
        assert_eq!(
            kind_from_ous([Some("Bootstrap")].into_iter(), BOOT, OPER),
            None
        );
    }

    #[test]
    fn missing_or_empty_cn_is_its_own_error() {
        let c = ou_classifier();
        let no_cn = self_signed(None, &[OPER]);
        assert!(matches!(
            c.identify(&no_cn),
            Err(IdentityError::MissingCommonName { .. })
        ));
        let empty_cn = self_signed(Some(""), &[OPER]);
        assert!(matches!(
            c.identify(&empty_cn),
            Err(IdentityError::MissingCommonName { .. })
        ));
        // Sanity: the same construction with a CN is accepted.
        let ok = self_signed(Some("GW-9"), &[OPER]);
        assert_eq!(c.identify(&ok).unwrap().cn, "GW-9");
    }

    #[test]
    fn malformed_der_is_rejected() {
        let c = ou_classifier();
        let good = self_signed(Some("GW-9"), &[OPER]);
        for bad in [
            Vec::new(),
            b"not a certificate".to_vec(),
            good[..good.len() / 2].to_vec(),
            [good.clone(), vec![0]].concat(),
        ] {
            match c.identify(&bad) {
                Err(IdentityError::Malformed { reason }) => assert!(!reason.is_empty()),
                other => panic!("expected Malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn validity_of_expired_and_future_certificates() {
        let ca = ca("Fleet CA");
        let c = ou_classifier();
        let old = ca.leaf(
            "GW-OLD",
            Some(OPER),
            now() - Duration::days(30),
            now() - Duration::days(1),
        );
        let old = c.identify(&old.cert_der).unwrap();
        assert!(matches!(
            old.check_validity(now()),
            Err(IdentityError::Expired { .. })
        ));
        let future = ca.leaf(
            "GW-OLD",
            Some(OPER),
            now() + Duration::days(1),
            now() + Duration::days(30),
        );
        let future = c.identify(&future.cert_der).unwrap();
        assert!(matches!(
            future.check_validity(now()),
            Err(IdentityError::NotYetValid { .. })
        ));
    }

    fn issuer_classifier(dir: &Path, boot: &TestCa, oper: &TestCa) -> Classifier {
        let b = dir.join("bootstrap-ca.pem");
        let o = dir.join("operational-ca.pem");
        std::fs::write(&b, boot.cert_pem()).unwrap();
        std::fs::write(&o, oper.cert_pem()).unwrap();
        Classifier::from_classification(&Classification::Issuer {
            bootstrap_ca: b,
            operational_ca: o,
        })
        .unwrap()
    }

    #[test]
    fn issuer_mode_classifies_by_signing_ca() {
        let dir = tempfile::tempdir().unwrap();
        let boot_ca = ca("Bootstrap CA");
        let oper_ca = ca("Device CA");
        let c = issuer_classifier(dir.path(), &boot_ca, &oper_ca);

        // The OU is irrelevant in issuer mode.
        let b = boot_ca.client("batch", Some("whatever"), 30);
        assert_eq!(c.identify(&b.cert_der).unwrap().kind, Kind::Bootstrap);
        let o = oper_ca.client("GW-2", None, 30);
        let id = c.identify(&o.cert_der).unwrap();
        assert_eq!(id.kind, Kind::Operational);
        assert_eq!(id.cn, "GW-2");

        // A third CA: unknown.
        let third = ca("Somebody Else CA");
        let x = third.client("GW-3", None, 30);
        assert!(matches!(
            c.identify(&x.cert_der),
            Err(IdentityError::UnknownKind { .. })
        ));

        // Same issuer name as the device CA but another key: the signature
        // check rejects it.
        let impostor = ca("Device CA");
        let y = impostor.client("GW-4", None, 30);
        let parsed = X509Certificate::from_der(&y.cert_der).unwrap().1;
        let oper_parsed = X509Certificate::from_der(oper_ca.cert_der()).unwrap().1;
        assert_eq!(
            parsed.tbs_certificate.issuer().as_raw(),
            oper_parsed.tbs_certificate.subject().as_raw()
        );
        assert!(matches!(
            c.identify(&y.cert_der),
            Err(IdentityError::UnknownKind { .. })
        ));
    }

    #[test]
    fn issuer_mode_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.pem");
        std::fs::write(&good, ca("A").cert_pem()).unwrap();
        let missing = dir.path().join("missing.pem");
        let err = Classifier::from_classification(&Classification::Issuer {
            bootstrap_ca: missing.clone(),
            operational_ca: good.clone(),
        })
        .unwrap_err();
        assert!(
            matches!(err, IdentityError::CaFileUnreadable { ref path, .. } if *path == missing)
        );
        assert!(err.to_string().contains("missing.pem"));

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello").unwrap();
        let err = Classifier::from_classification(&Classification::Issuer {
            bootstrap_ca: good.clone(),
            operational_ca: garbage.clone(),
        })
        .unwrap_err();
        assert!(matches!(err, IdentityError::BadCaFile { ref path, .. } if *path == garbage));
        assert!(err.to_string().contains("garbage.pem"));

        let err = Classifier::from_classification(&Classification::Issuer {
            bootstrap_ca: good.clone(),
            operational_ca: good.clone(),
        })
        .unwrap_err();
        assert!(matches!(err, IdentityError::SameCaForBothKinds { .. }));
    }

    #[test]
    fn fingerprint_mode() {
        let ca = ca("Fleet CA");
        let listed = ca.client("batch", Some("any"), 30);
        let other = ca.client("GW-5", None, 30);
        let c = Classifier::from_classification(&Classification::Fingerprint {
            bootstrap_fingerprints: vec![[7u8; 32], listed.fingerprint.0],
        })
        .unwrap();
        assert_eq!(c.identify(&listed.cert_der).unwrap().kind, Kind::Bootstrap);
        assert_eq!(c.identify(&other.cert_der).unwrap().kind, Kind::Operational);
    }

    #[test]
    fn from_settings_and_bad_ou_settings() {
        let settings = IdentitySettings {
            classify: Classification::SubjectOu {
                bootstrap_ou: BOOT.into(),
                operational_ou: OPER.into(),
            },
            operational_client_id: gatehouse_config::OperationalClientId::MustEqualCn,
            bootstrap_client_id: gatehouse_config::BootstrapClientId::MustBeMac,
        };
        let c = Classifier::from_settings(&settings).unwrap();
        let cert = self_signed(Some("GW-6"), &[BOOT]);
        assert_eq!(c.identify(&cert).unwrap().kind, Kind::Bootstrap);
        assert!(matches!(
            Classifier::subject_ou("same", "same"),
            Err(IdentityError::BadOuSettings { .. })
        ));
        assert!(matches!(
            Classifier::subject_ou("", "x"),
            Err(IdentityError::BadOuSettings { .. })
        ));
    }
}
