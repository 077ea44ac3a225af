//! Fixtures shared by the unit tests: everything is generated at run time.

use time::{Duration, OffsetDateTime};

use crate::ca::{Ca, CaOptions, CrlSpec, RevocationReason, RevokedEntry};
use crate::serial::Serial;

pub(crate) fn ca(name: &str) -> Ca {
    Ca::generate(CaOptions {
        common_name: name.to_owned(),
        organization: Some("Gatehouse Test".to_owned()),
        validity_days: 30,
        ..CaOptions::default()
    })
    .unwrap()
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub(crate) fn crl_spec(number: u64, serials: &[Serial]) -> CrlSpec {
    let now = now();
    CrlSpec {
        number,
        this_update: now - Duration::hours(1),
        next_update: now + Duration::days(7),
        entries: serials
            .iter()
            .map(|s| RevokedEntry {
                serial: *s,
                revoked_at: now - Duration::minutes(30),
                reason: RevocationReason::KeyCompromise,
            })
            .collect(),
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
pub(crate) fn crl_without_number(ca: &Ca, spec: &CrlSpec) -> String {
    use crate::der::{Reader, tag};
    use rcgen::SigningKey;

    let der = ca.crl_der(spec).unwrap();
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
    let key = rcgen::KeyPair::from_pem(ca.key_pem().expose()).unwrap();
    let signature = key.sign(&new_tbs).unwrap();
    let mut bits = vec![0u8];
    bits.extend(signature);
    let mut list = new_tbs;
    list.extend_from_slice(sig_alg.raw);
    list.extend(tlv(tag::BIT_STRING, &bits));
    pem::encode(&pem::Pem::new("X509 CRL", tlv(tag::SEQUENCE, &list)))
}
