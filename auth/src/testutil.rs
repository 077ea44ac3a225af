//! Fixtures shared by the unit tests: everything is generated at run time.
//!
//! This crate only checks certificates; the real issuer (`gatehouse-ca`)
//! depends on it and cannot be used here. [`TestCa`] is a minimal signer
//! over rcgen (a dev-dependency) with just what the tests need: a CA, client
//! leaves with a CN and an optional OU, and CRLs with a cRLNumber.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::serial::{Fingerprint, Serial};

/// A throwaway CA: P-256 key, self-signed, path length 0.
pub(crate) struct TestCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf issued by [`TestCa`].
pub(crate) struct TestCert {
    pub(crate) cert_pem: String,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) serial: Serial,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

/// Contents of a test CRL; every entry is revoked at `revoked_at` for
/// keyCompromise.
#[derive(Debug, Clone)]
pub(crate) struct TestCrl {
    pub(crate) number: u64,
    pub(crate) this_update: OffsetDateTime,
    pub(crate) next_update: OffsetDateTime,
    pub(crate) revoked: Vec<Serial>,
    pub(crate) revoked_at: OffsetDateTime,
}

pub(crate) fn ca(name: &str) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Gatehouse Test");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now() - Duration::hours(1);
    params.not_after = now() + Duration::days(30);
    params.serial_number = Some(SerialNumber::from_slice(Serial::random_128().as_bytes()));
    let cert = params.self_signed(&key).unwrap();
    let key_pem = key.serialize_pem();
    let cert_der = cert.der().to_vec();
    TestCa {
        cert_pem: cert.pem(),
        issuer: Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key).unwrap(),
        cert_der,
        key_pem,
    }
}

impl TestCa {
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub(crate) fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A clientAuth leaf with CN `cn`, OU `ou` if given, a fresh P-256 key.
    pub(crate) fn leaf(
        &self,
        cn: &str,
        ou: Option<&str>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> TestCert {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(ou) = ou {
            dn.push(DnType::OrganizationalUnitName, ou);
        }
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let serial = Serial::random_128();
        params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
        params.not_before = not_before;
        params.not_after = not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&KeyPair::generate().unwrap(), &self.issuer)
            .unwrap();
        let cert_der = cert.der().to_vec();
        TestCert {
            cert_pem: cert.pem(),
            fingerprint: Fingerprint::of(&cert_der),
            cert_der,
            serial,
            // Certificate times have whole seconds.
            not_before: not_before.replace_nanosecond(0).unwrap(),
            not_after: not_after.replace_nanosecond(0).unwrap(),
        }
    }

    /// A leaf valid from five minutes ago for `days` days.
    pub(crate) fn client(&self, cn: &str, ou: Option<&str>, days: i64) -> TestCert {
        self.leaf(
            cn,
            ou,
            now() - Duration::minutes(5),
            now() + Duration::days(days),
        )
    }

    /// Signs a CRL, PEM.
    pub(crate) fn crl(&self, spec: &TestCrl) -> String {
        pem::encode(&pem::Pem::new("X509 CRL", self.crl_der(spec)))
    }

    /// Signs a CRL, DER.
    pub(crate) fn crl_der(&self, spec: &TestCrl) -> Vec<u8> {
        CertificateRevocationListParams {
            this_update: spec.this_update,
            next_update: spec.next_update,
            crl_number: SerialNumber::from(spec.number),
            issuing_distribution_point: None,
            revoked_certs: spec
                .revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s.as_bytes()),
                    revocation_time: spec.revoked_at,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .der()
        .to_vec()
    }
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub(crate) fn crl_spec(number: u64, serials: &[Serial]) -> TestCrl {
    let now = now();
    TestCrl {
        number,
        this_update: now - Duration::hours(1),
        next_update: now + Duration::days(7),
        revoked: serials.to_vec(),
        revoked_at: now - Duration::minutes(30),
    }
}

/// Serial `i` of a synthetic population: 16 octets, top bit set on odd
/// numbers so DER sign padding is exercised.
pub(crate) fn synthetic_serial(i: u64) -> Serial {
    let mut b = [0u8; 16];
    b[0] = if i % 2 == 1 { 0x80 } else { 0x40 };
    b[8..].copy_from_slice(&i.to_be_bytes());
    Serial::from_bytes(&b).unwrap()
}

/// DER TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A CRL like `ca.crl(spec)` but without any `crlExtensions` (so without a
/// cRLNumber), validly signed by `ca`. PEM.
pub(crate) fn crl_without_number(ca: &TestCa, spec: &TestCrl) -> String {
    use crate::der::{Reader, tag};
    use rcgen::SigningKey;

    let der = ca.crl_der(spec);
    let mut outer = Reader::new(&der);
    let cl = outer.read(tag::SEQUENCE, "CertificateList").unwrap();
    let mut r = Reader::new(cl.content);
    let tbs = r.read(tag::SEQUENCE, "tbsCertList").unwrap();
    let sig_alg = r.read(tag::SEQUENCE, "signatureAlgorithm").unwrap();
    let mut t = Reader::new(tbs.content);
    let mut tbs_content = Vec::new();
    while !t.is_empty() {
        let field = t.read_any("tbsCertList field").unwrap();
        if field.tag != tag::CONTEXT_0 {
            tbs_content.extend_from_slice(field.raw);
        }
    }
    let new_tbs = tlv(tag::SEQUENCE, &tbs_content);
    let key = KeyPair::from_pem(&ca.key_pem).unwrap();
    let signature = key.sign(&new_tbs).unwrap();
    let mut bits = vec![0u8];
    bits.extend(signature);
    let mut list = new_tbs;
    list.extend_from_slice(sig_alg.raw);
    list.extend(tlv(tag::BIT_STRING, &bits));
    pem::encode(&pem::Pem::new("X509 CRL", tlv(tag::SEQUENCE, &list)))
}
