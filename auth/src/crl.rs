//! CRL loading: signature verification against the fleet CA(s) and a compact
//! set of revoked serials.
//!
//! Built for very large CRLs: the signature is verified over the raw
//! `tbsCertList` bytes and the `revokedCertificates` list is streamed with a
//! small DER reader, so loading a million entries allocates little more than
//! the DER itself and the final hash set (no per-entry objects).

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use rustc_hash::{FxBuildHasher, FxHashSet};
use time::OffsetDateTime;
use x509_parser::asn1_rs::{BitString, Oid};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::{FromDer, X509Error};
use x509_parser::time::ASN1Time;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name};

use crate::der::{self, DerError, Reader, tag};
use crate::pemdec;
use crate::serial::Serial;

/// Why a CRL (or the CA certificates used to check it) could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("cannot read CRL file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot read CA file {path} used to verify CRLs: {source}")]
    CaFileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "CA certificates for CRL verification are unusable: {reason}; [tls] ca must hold the \
         PEM `CERTIFICATE` of every CA whose CRL is published"
    )]
    BadCaCertificate { reason: String },

    #[error(
        "CRL is malformed: {reason}; regenerate it with the fleet CA (PEM `X509 CRL` blocks or DER)"
    )]
    Malformed { reason: String },

    #[error(
        "CRL issued by \"{issuer}\", which is not one of the configured CA certificates: \
         publish the CRL of the fleet CA or add its issuer to [tls] ca"
    )]
    UnknownIssuer { issuer: String },

    #[error(
        "CRL signature does not verify with its issuer's CA key: the file was altered or signed \
         by another key; regenerate it with the fleet CA"
    )]
    BadSignature,

    #[error("CRL not supported: {reason}")]
    Unsupported { reason: String },

    #[error("CRL file {path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<CrlError>,
    },
}

impl From<DerError> for CrlError {
    fn from(e: DerError) -> Self {
        CrlError::Malformed {
            reason: e.to_string(),
        }
    }
}

/// The CA certificates a CRL may be signed by.
///
/// A CRL is accepted only if its issuer name equals (byte for byte) the
/// subject of one of these certificates and its signature verifies with that
/// certificate's key.
#[derive(Clone)]
pub struct CrlVerifier {
    cas: Vec<TrustedCa>,
}

#[derive(Clone)]
struct TrustedCa {
    subject_raw: Vec<u8>,
    spki_raw: Vec<u8>,
    subject: String,
}

impl fmt::Debug for CrlVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrlVerifier")
            .field(
                "cas",
                &self.cas.iter().map(|c| &c.subject).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CrlVerifier {
    /// From a PEM bundle holding one or more `CERTIFICATE` blocks (other
    /// blocks are ignored).
    pub fn from_ca_pem(pem_text: &str) -> Result<CrlVerifier, CrlError> {
        let (blocks, _) = pemdec::decode_blocks(pem_text.as_bytes(), |l| l == "CERTIFICATE")
            .map_err(|reason| CrlError::BadCaCertificate { reason })?;
        Self::from_ca_ders(blocks.iter().map(|b| b.der.as_slice()))
    }

    /// From a PEM bundle file; errors name the file.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<CrlVerifier, CrlError> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|source| CrlError::CaFileUnreadable {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(text).map_err(|_| CrlError::BadCaCertificate {
            reason: format!("{} is not a PEM text file", path.display()),
        })?;
        Self::from_ca_pem(&text).map_err(|e| match e {
            CrlError::BadCaCertificate { reason } => CrlError::BadCaCertificate {
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// From DER certificates.
    pub fn from_ca_ders<'a>(
        ders: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<CrlVerifier, CrlError> {
        let mut cas = Vec::new();
        for (i, der) in ders.into_iter().enumerate() {
            let (_, cert) =
                X509Certificate::from_der(der).map_err(|e| CrlError::BadCaCertificate {
                    reason: format!("certificate #{} does not parse: {e}", i + 1),
                })?;
            let tbs = &cert.tbs_certificate;
            cas.push(TrustedCa {
                subject_raw: tbs.subject().as_raw().to_vec(),
                spki_raw: tbs.public_key().raw.to_vec(),
                subject: tbs.subject().to_string(),
            });
        }
        if cas.is_empty() {
            return Err(CrlError::BadCaCertificate {
                reason: "no CERTIFICATE found".into(),
            });
        }
        Ok(CrlVerifier { cas })
    }

    /// Number of CA certificates.
    pub fn len(&self) -> usize {
        self.cas.len()
    }

    /// Always false: a verifier holds at least one CA.
    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// Checks `signature` over `tbs_raw` with a CA whose subject is `issuer_raw`.
    fn verify(
        &self,
        issuer_raw: &[u8],
        tbs_raw: &[u8],
        sig_alg_raw: &[u8],
        sig_content: &[u8],
    ) -> Result<(), CrlError> {
        let mut candidates = self
            .cas
            .iter()
            .filter(|ca| ca.subject_raw == issuer_raw)
            .peekable();
        if candidates.peek().is_none() {
            return Err(CrlError::UnknownIssuer {
                issuer: display_name(issuer_raw),
            });
        }
        let (_, alg) =
            AlgorithmIdentifier::from_der(sig_alg_raw).map_err(|_| CrlError::Malformed {
                reason: "signatureAlgorithm: invalid AlgorithmIdentifier".into(),
            })?;
        let (&unused_bits, bits) = sig_content.split_first().ok_or(CrlError::Malformed {
            reason: "signatureValue: empty BIT STRING".into(),
        })?;
        let signature = BitString::new(unused_bits, bits);
        for ca in candidates {
            let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(&ca.spki_raw) else {
                continue;
            };
            match x509_parser::verify::verify_signature(&spki, &alg, &signature, tbs_raw) {
                Ok(()) => return Ok(()),
                Err(X509Error::SignatureUnsupportedAlgorithm) => {
                    return Err(CrlError::Unsupported {
                        reason: format!(
                            "signature algorithm {} with the key of \"{}\"",
                            alg.algorithm.to_id_string(),
                            ca.subject
                        ),
                    });
                }
                Err(_) => continue,
            }
        }
        Err(CrlError::BadSignature)
    }
}

/// The revoked serials of one or more CRLs, plus the CRL metadata.
///
/// Lookups are O(1) on an `FxHashSet`. Shared read-only behind an `Arc` and
/// swapped whole on reload, so readers never lock.
#[derive(Clone)]
pub struct RevocationSet {
    serials: FxHashSet<Serial>,
    /// `cRLNumber` extension, upper-case hex, of the CRL the metadata comes from.
    pub crl_number: Option<String>,
    /// `thisUpdate`; `None` only for [`RevocationSet::empty`] / hand-built sets.
    pub this_update: Option<OffsetDateTime>,
    /// `nextUpdate`; when several CRLs were loaded, the earliest one.
    pub next_update: Option<OffsetDateTime>,
    /// Issuer, number and entries of every CRL loaded, for
    /// [`RevocationSet::rollback_from`]. Empty for hand-built sets.
    versions: Vec<CrlVersion>,
}

/// What identifies one CRL of a loaded file for the rollback check.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CrlVersion {
    issuer_raw: Vec<u8>,
    /// `cRLNumber` as upper-case hex without leading zero digits ("" = 0).
    number: Option<String>,
    /// SHA-256 of the `revokedCertificates` content octets.
    entries_digest: [u8; 32],
}

/// Why a newly loaded CRL must not replace the one in force: it may be an
/// older CRL replayed over a newer one, which would un-revoke certificates.
///
/// Rules, per issuing CA present in the set in force:
/// * a CRL whose cRLNumber is lower than the one in force is refused;
/// * the same cRLNumber is accepted only if it lists exactly the same
///   entries (a re-signature, e.g. a node rewriting the CRL after
///   `NOTIFY gatehouse_crl`); other content under that number is refused,
///   because a CA must bump the number for every change;
/// * a CRL without a cRLNumber cannot replace one with a number (no order
///   can be proven, so it is treated as a rollback);
/// * a file that no longer holds a CRL of that CA is refused too.
///
/// When the CRL in force has no cRLNumber, nothing can be ordered and any
/// valid CRL of that CA is accepted. Restarting always loads the file as it
/// is (that is how an operator deliberately goes back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlRollback {
    /// The issuing CA, as a distinguished name.
    pub issuer: String,
    /// cRLNumber of that CA's CRL in force (decimal, or hex beyond 128 bits).
    pub in_force: String,
    /// cRLNumber of that CA's CRL in the new file, if it has one.
    pub offered: Option<String>,
    pub kind: CrlRollbackKind,
}

/// See [`CrlRollback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlRollbackKind {
    /// The new CRL's number is lower than the one in force.
    LowerNumber,
    /// Same number as the CRL in force, but other revoked entries.
    SameNumberOtherEntries,
    /// The new CRL has no cRLNumber.
    NoNumber,
    /// The new file holds no CRL of this CA.
    IssuerMissing,
}

impl fmt::Display for CrlRollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (issuer, in_force) = (&self.issuer, &self.in_force);
        let offered = self.offered.as_deref().unwrap_or("none");
        match self.kind {
            CrlRollbackKind::LowerNumber => write!(
                f,
                "CRL number {offered} of \"{issuer}\" is lower than CRL number {in_force} in \
                 force (an older CRL would un-revoke certificates); publish a CRL with a number \
                 above {in_force}"
            ),
            CrlRollbackKind::SameNumberOtherEntries => write!(
                f,
                "CRL number {offered} of \"{issuer}\" lists other revocations than CRL number \
                 {in_force} in force; a CA must bump the CRL number for every change: publish it \
                 with a number above {in_force}"
            ),
            CrlRollbackKind::NoNumber => write!(
                f,
                "CRL of \"{issuer}\" has no CRL number (none) while CRL number {in_force} is in \
                 force, so it may be older; publish a CRL with a number above {in_force}"
            ),
            CrlRollbackKind::IssuerMissing => write!(
                f,
                "the file no longer holds a CRL of \"{issuer}\" (CRL number {in_force} in force, \
                 new: none); include that CA's current CRL, or restart to drop it on purpose"
            ),
        }
    }
}

/// `integer_hex` output without leading zero digits.
fn number_key(hex: &str) -> String {
    hex.trim_start_matches('0').to_owned()
}

/// Compares two [`number_key`]s numerically.
fn cmp_numbers(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Decimal when it fits 128 bits (as provisioning logs it), else `0x` hex.
fn display_number(key: &str) -> String {
    if key.is_empty() {
        return "0".into();
    }
    match u128::from_str_radix(key, 16) {
        Ok(n) => n.to_string(),
        Err(_) => format!("0x{key}"),
    }
}

impl fmt::Debug for RevocationSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationSet")
            .field("entries", &self.serials.len())
            .field("crl_number", &self.crl_number)
            .field("this_update", &self.this_update)
            .field("next_update", &self.next_update)
            .finish()
    }
}

impl Default for RevocationSet {
    fn default() -> Self {
        Self::empty()
    }
}

impl RevocationSet {
    /// No revoked serials and no metadata (never stale).
    pub fn empty() -> RevocationSet {
        RevocationSet {
            serials: FxHashSet::default(),
            crl_number: None,
            this_update: None,
            next_update: None,
            versions: Vec::new(),
        }
    }

    /// A set from serials, without CRL metadata (tests, benches, fixed sets).
    pub fn from_serials(serials: impl IntoIterator<Item = Serial>) -> RevocationSet {
        RevocationSet {
            serials: serials.into_iter().collect(),
            ..Self::empty()
        }
    }

    /// Loads CRL bytes: PEM (one or more `X509 CRL` blocks; the result is the
    /// union of their serials) or a single DER CRL. Every CRL must be signed
    /// by a CA of `verifier`.
    ///
    /// Metadata (`crl_number`, `this_update`, `next_update`) come from the CRL
    /// that expires first (earliest `nextUpdate`), so staleness reflects the
    /// oldest CRL in the file. A CRL past its `nextUpdate` loads normally and
    /// is reported by [`RevocationSet::is_stale`].
    pub fn from_crl_bytes(bytes: &[u8], verifier: &CrlVerifier) -> Result<RevocationSet, CrlError> {
        Self::load(Cow::Borrowed(bytes), verifier)
    }

    /// Reads and loads a CRL file. PEM text is released as soon as it is
    /// decoded, which keeps peak memory low for very large CRLs.
    pub fn from_crl_file(
        path: impl AsRef<Path>,
        verifier: &CrlVerifier,
    ) -> Result<RevocationSet, CrlError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| CrlError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::load(Cow::Owned(bytes), verifier)
    }

    fn load(input: Cow<'_, [u8]>, verifier: &CrlVerifier) -> Result<RevocationSet, CrlError> {
        let mut acc = Accumulator::default();
        if pemdec::looks_like_pem(&input) {
            let (blocks, skipped) =
                pemdec::decode_blocks(&input, |l| l == "X509 CRL" || l == "CRL")
                    .map_err(|reason| CrlError::Malformed { reason })?;
            drop(input); // frees the PEM text when we own it
            if !skipped.is_empty() {
                tracing::debug!(?skipped, "ignored non-CRL PEM blocks in CRL input");
            }
            if blocks.is_empty() {
                return Err(CrlError::Malformed {
                    reason: if skipped.is_empty() {
                        "no `X509 CRL` PEM block found".into()
                    } else {
                        format!(
                            "no `X509 CRL` PEM block found (only {})",
                            skipped.join(", ")
                        )
                    },
                });
            }
            let multiple = blocks.len() > 1;
            for (i, block) in blocks.into_iter().enumerate() {
                acc.add(&block.der, verifier).map_err(|e| match e {
                    CrlError::Malformed { reason } if multiple => CrlError::Malformed {
                        reason: format!("CRL #{}: {reason}", i + 1),
                    },
                    other => other,
                })?;
                // `block` (its DER) is dropped here, before the next one.
            }
        } else if input.first() == Some(&tag::SEQUENCE) {
            acc.add(&input, verifier)?;
            drop(input);
        } else if input.is_empty() {
            return Err(CrlError::Malformed {
                reason: "input is empty".into(),
            });
        } else {
            return Err(CrlError::Malformed {
                reason: "input is neither PEM (`-----BEGIN X509 CRL-----`) nor a DER SEQUENCE"
                    .into(),
            });
        }
        Ok(acc.finish())
    }

    /// Number of revoked serials.
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }

    /// Whether `serial` is revoked.
    #[inline]
    pub fn contains(&self, serial: &Serial) -> bool {
        self.serials.contains(serial)
    }

    /// True when `now` is past `nextUpdate` (a newer CRL should exist).
    pub fn is_stale(&self, now: OffsetDateTime) -> bool {
        self.next_update.is_some_and(|next| now > next)
    }

    /// The revoked serials, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Serial> + '_ {
        self.serials.iter()
    }

    /// `Some` when this (newly loaded) set must not replace `in_force`
    /// because it may be an older CRL: see [`CrlRollback`] for the rules.
    /// Sets without CRL metadata (hand-built) never count as rollbacks.
    pub fn rollback_from(&self, in_force: &RevocationSet) -> Option<CrlRollback> {
        for old in &in_force.versions {
            let Some(old_number) = &old.number else {
                continue; // nothing to order by
            };
            let issuer = || display_name(&old.issuer_raw);
            let in_force = display_number(old_number);
            let mut same_issuer = self
                .versions
                .iter()
                .filter(|v| v.issuer_raw == old.issuer_raw)
                .peekable();
            if same_issuer.peek().is_none() {
                return Some(CrlRollback {
                    issuer: issuer(),
                    in_force,
                    offered: None,
                    kind: CrlRollbackKind::IssuerMissing,
                });
            }
            // Several CRLs of one CA in a file: the newest one decides.
            let new = same_issuer
                .max_by(|a, b| match (&a.number, &b.number) {
                    (Some(x), Some(y)) => cmp_numbers(x, y),
                    (x, y) => x.is_some().cmp(&y.is_some()),
                })
                .expect("peeked");
            let Some(new_number) = &new.number else {
                return Some(CrlRollback {
                    issuer: issuer(),
                    in_force,
                    offered: None,
                    kind: CrlRollbackKind::NoNumber,
                });
            };
            let kind = match cmp_numbers(new_number, old_number) {
                std::cmp::Ordering::Greater => continue,
                std::cmp::Ordering::Equal if new.entries_digest == old.entries_digest => continue,
                std::cmp::Ordering::Equal => CrlRollbackKind::SameNumberOtherEntries,
                std::cmp::Ordering::Less => CrlRollbackKind::LowerNumber,
            };
            return Some(CrlRollback {
                issuer: issuer(),
                in_force,
                offered: Some(display_number(new_number)),
                kind,
            });
        }
        None
    }
}

/// Collects serials of one or more CRLs. Serials are staged in a compact
/// `Vec` (21 bytes each) so each CRL's DER can be released before the hash
/// set (about twice that size) is allocated: this bounds peak memory.
#[derive(Default)]
struct Accumulator {
    serials: Vec<Serial>,
    /// (nextUpdate, thisUpdate, crlNumber) of every CRL, in input order.
    meta: Vec<(Option<OffsetDateTime>, OffsetDateTime, Option<String>)>,
    versions: Vec<CrlVersion>,
}

impl Accumulator {
    fn add(&mut self, der: &[u8], verifier: &CrlVerifier) -> Result<(), CrlError> {
        let crl = ParsedCrl::parse(der, verifier)?;
        self.serials.reserve_exact(crl.entry_count);
        crl.push_serials(&mut self.serials)?;
        self.versions.push(CrlVersion {
            issuer_raw: crl.issuer_raw.to_vec(),
            number: crl.crl_number.as_deref().map(number_key),
            entries_digest: crl.entries_digest(),
        });
        self.meta
            .push((crl.next_update, crl.this_update, crl.crl_number));
        Ok(())
    }

    fn finish(self) -> RevocationSet {
        let mut set = FxHashSet::with_capacity_and_hasher(self.serials.len(), FxBuildHasher);
        set.extend(self.serials);
        // Metadata of the CRL that expires first (the first one if none has
        // a nextUpdate).
        let (next_update, this_update, crl_number) = self
            .meta
            .into_iter()
            .enumerate()
            .min_by_key(|(i, (next, _, _))| (next.is_none(), *next, *i))
            .map(|(_, m)| m)
            .expect("at least one CRL was added");
        RevocationSet {
            serials: set,
            crl_number,
            this_update: Some(this_update),
            next_update,
            versions: self.versions,
        }
    }
}

/// One CRL, verified, with its entry list still in DER.
struct ParsedCrl<'a> {
    issuer_raw: &'a [u8],
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
    crl_number: Option<String>,
    /// Content octets of `revokedCertificates`.
    revoked: &'a [u8],
    entry_count: usize,
}

// OID content octets.
const OID_CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14];
const OID_DELTA_CRL_INDICATOR: &[u8] = &[0x55, 0x1d, 0x1b];
const OID_ISSUING_DISTRIBUTION_POINT: &[u8] = &[0x55, 0x1d, 0x1c];
const OID_AUTHORITY_KEY_IDENTIFIER: &[u8] = &[0x55, 0x1d, 0x23];

impl<'a> ParsedCrl<'a> {
    fn parse(der: &'a [u8], verifier: &CrlVerifier) -> Result<ParsedCrl<'a>, CrlError> {
        // CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }
        let mut outer = Reader::new(der);
        let cl = outer.read(tag::SEQUENCE, "CertificateList")?;
        outer.finish("CertificateList")?;
        let mut r = Reader::new(cl.content);
        let tbs = r.read(tag::SEQUENCE, "tbsCertList")?;
        let sig_alg = r.read(tag::SEQUENCE, "signatureAlgorithm")?;
        let sig = r.read(tag::BIT_STRING, "signatureValue")?;
        r.finish("CertificateList")?;

        let mut t = Reader::new(tbs.content);
        if let Some(version) = t.read_optional(tag::INTEGER, "version")? {
            if version.content != [0x01] {
                return Err(CrlError::Unsupported {
                    reason: format!(
                        "CRL version field {} (only v2 = 1, or an absent v1 field, exist)",
                        der::integer_hex(version.content)
                    ),
                });
            }
        }
        let inner_alg = t.read(tag::SEQUENCE, "tbsCertList.signature")?;
        if inner_alg.raw != sig_alg.raw {
            return Err(CrlError::Malformed {
                reason: "tbsCertList.signature differs from signatureAlgorithm".into(),
            });
        }
        let issuer = t.read(tag::SEQUENCE, "issuer")?;
        let this_update = read_time(&mut t, "thisUpdate")?;
        let next_update = match t.peek_tag() {
            Some(tag::UTC_TIME | tag::GENERALIZED_TIME) => Some(read_time(&mut t, "nextUpdate")?),
            _ => None,
        };
        let revoked = t.read_optional(tag::SEQUENCE, "revokedCertificates")?;
        let extensions = t.read_optional(tag::CONTEXT_0, "crlExtensions")?;
        t.finish("tbsCertList")?;

        // Authenticate before looking at anything else.
        verifier.verify(issuer.raw, tbs.raw, sig_alg.raw, sig.content)?;

        let crl_number = match extensions {
            Some(ext) => parse_crl_extensions(ext.content)?,
            None => None,
        };
        let revoked = revoked.map_or(&[][..], |r| r.content);
        let mut entries = Reader::new(revoked);
        let mut entry_count = 0usize;
        while !entries.is_empty() {
            entries.read(tag::SEQUENCE, "revokedCertificates entry")?;
            entry_count += 1;
        }
        Ok(ParsedCrl {
            issuer_raw: issuer.raw,
            this_update,
            next_update,
            crl_number,
            revoked,
            entry_count,
        })
    }

    fn entries_digest(&self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, self.revoked);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    fn push_serials(&self, out: &mut Vec<Serial>) -> Result<(), CrlError> {
        let mut entries = Reader::new(self.revoked);
        let mut index = 0usize;
        while !entries.is_empty() {
            index += 1;
            let entry = entries.read_any("revokedCertificates entry")?;
            let mut e = Reader::new(entry.content);
            let bad = |reason: String| CrlError::Malformed {
                reason: format!("revoked entry #{index}: {reason}"),
            };
            let serial = e
                .read(tag::INTEGER, "userCertificate")
                .map_err(|d| bad(d.to_string()))?;
            let serial = Serial::from_bytes(serial.content).map_err(|s| bad(s.to_string()))?;
            match e.peek_tag() {
                Some(tag::UTC_TIME | tag::GENERALIZED_TIME) => {}
                _ => return Err(bad("revocationDate missing or not a time".into())),
            }
            out.push(serial);
        }
        Ok(())
    }
}

fn read_time(r: &mut Reader<'_>, what: &'static str) -> Result<OffsetDateTime, CrlError> {
    let tlv = r.read_any(what)?;
    if tlv.tag != tag::UTC_TIME && tlv.tag != tag::GENERALIZED_TIME {
        return Err(CrlError::Malformed {
            reason: format!("{what}: expected UTCTime or GeneralizedTime"),
        });
    }
    let (_, time) = ASN1Time::from_der(tlv.raw).map_err(|_| CrlError::Malformed {
        reason: format!("{what}: invalid time value"),
    })?;
    Ok(time.to_datetime())
}

/// Returns the CRL number; rejects CRL kinds this loader would misread.
fn parse_crl_extensions(content: &[u8]) -> Result<Option<String>, CrlError> {
    let mut outer = Reader::new(content);
    let list = outer.read(tag::SEQUENCE, "crlExtensions")?;
    outer.finish("crlExtensions")?;
    let mut exts = Reader::new(list.content);
    let mut crl_number = None;
    while !exts.is_empty() {
        let ext = exts.read(tag::SEQUENCE, "crlExtensions entry")?;
        let mut e = Reader::new(ext.content);
        let oid = e.read(tag::OID, "extnID")?;
        let critical = match e.read_optional(tag::BOOLEAN, "critical")? {
            Some(b) => b.content.first().is_some_and(|&v| v != 0),
            None => false,
        };
        let value = e.read(tag::OCTET_STRING, "extnValue")?;
        e.finish("extension")?;
        match oid.content {
            OID_CRL_NUMBER => {
                let mut v = Reader::new(value.content);
                let n = v.read(tag::INTEGER, "cRLNumber")?;
                crl_number = Some(der::integer_hex(n.content));
            }
            OID_DELTA_CRL_INDICATOR => {
                return Err(CrlError::Unsupported {
                    reason: "delta CRLs are not supported; publish a complete CRL".into(),
                });
            }
            // Scope restrictions only narrow what the CRL covers; taking the
            // union of revoked serials is still correct.
            OID_ISSUING_DISTRIBUTION_POINT | OID_AUTHORITY_KEY_IDENTIFIER => {}
            other if critical => {
                return Err(CrlError::Unsupported {
                    reason: format!(
                        "unrecognised critical CRL extension {}",
                        Oid::new(Cow::Borrowed(other)).to_id_string()
                    ),
                });
            }
            _ => {}
        }
    }
    Ok(crl_number)
}

fn display_name(raw: &[u8]) -> String {
    X509Name::from_der(raw)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|_| "<unparseable name>".into())
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;
    use crate::testutil::*;

    fn verifier(cas: &[&TestCa]) -> CrlVerifier {
        let bundle: String = cas.iter().map(|c| c.cert_pem()).collect();
        CrlVerifier::from_ca_pem(&bundle).unwrap()
    }

    #[test]
    fn loads_pem_and_der_with_metadata() {
        let ca = ca("Fleet CA");
        let serials = [
            synthetic_serial(1),
            synthetic_serial(2),
            Serial::random_128(),
        ];
        let spec = crl_spec(42, &serials);
        let v = verifier(&[&ca]);
        for bytes in [ca.crl(&spec).into_bytes(), ca.crl_der(&spec)] {
            let set = RevocationSet::from_crl_bytes(&bytes, &v).unwrap();
            assert_eq!(set.len(), 3);
            for s in &serials {
                assert!(set.contains(s), "{s}");
            }
            assert!(!set.contains(&synthetic_serial(3)));
            assert_eq!(set.crl_number.as_deref(), Some("2A"));
            assert_eq!(
                set.this_update.unwrap().unix_timestamp(),
                spec.this_update.unix_timestamp()
            );
            assert_eq!(
                set.next_update.unwrap().unix_timestamp(),
                spec.next_update.unix_timestamp()
            );
            assert!(!set.is_stale(now()));
            let mut listed: Vec<Serial> = set.iter().copied().collect();
            listed.sort();
            let mut expected = serials.to_vec();
            expected.sort();
            assert_eq!(listed, expected);
        }
    }

    #[test]
    fn serial_with_sign_padding_matches_certificate_serial() {
        // synthetic_serial(1) starts with 0x80, so the DER INTEGER in the
        // CRL carries a 0x00 pad; the certificate path must agree.
        let s = synthetic_serial(1);
        assert_eq!(s.as_bytes()[0], 0x80);
        let ca = ca("Fleet CA");
        let set = RevocationSet::from_crl_bytes(&ca.crl_der(&crl_spec(1, &[s])), &verifier(&[&ca]))
            .unwrap();
        assert!(set.contains(&Serial::from_bytes(&[&[0u8][..], s.as_bytes()].concat()).unwrap()));
    }

    #[test]
    fn multiple_pem_blocks_are_united() {
        let a = ca("Device CA");
        let b = ca("Bootstrap CA");
        let mut spec_a = crl_spec(7, &[synthetic_serial(10), synthetic_serial(11)]);
        spec_a.next_update = now() + Duration::days(7);
        let mut spec_b = crl_spec(3, &[synthetic_serial(11), synthetic_serial(20)]);
        spec_b.next_update = now() + Duration::days(2);
        let text = format!("{}\n{}", a.crl(&spec_a), b.crl(&spec_b));
        let set = RevocationSet::from_crl_bytes(text.as_bytes(), &verifier(&[&a, &b])).unwrap();
        assert_eq!(set.len(), 3);
        for i in [10, 11, 20] {
            assert!(set.contains(&synthetic_serial(i)));
        }
        // Metadata of the CRL that expires first.
        assert_eq!(set.crl_number.as_deref(), Some("03"));
        assert_eq!(
            set.next_update.unwrap().unix_timestamp(),
            spec_b.next_update.unix_timestamp()
        );
        // Only one of the two CAs trusted: the other CRL is refused.
        assert!(matches!(
            RevocationSet::from_crl_bytes(text.as_bytes(), &verifier(&[&a])),
            Err(CrlError::UnknownIssuer { .. })
        ));
    }

    #[test]
    fn rollback_is_judged_per_issuing_ca() {
        let a = ca("Device CA");
        let b = ca("Bootstrap CA");
        let v = verifier(&[&a, &b]);
        let load = |parts: &[(&TestCa, u64)]| {
            let text: String = parts
                .iter()
                .map(|(ca, n)| ca.crl(&crl_spec(*n, &[])))
                .collect();
            RevocationSet::from_crl_bytes(text.as_bytes(), &v).unwrap()
        };
        let in_force = load(&[(&a, 7), (&b, 3)]);
        // Both newer, or one newer and the other re-signed unchanged.
        assert_eq!(load(&[(&a, 8), (&b, 4)]).rollback_from(&in_force), None);
        // Empty entry lists are equal content.
        assert_eq!(load(&[(&b, 3), (&a, 8)]).rollback_from(&in_force), None);

        let rb = load(&[(&a, 8), (&b, 2)]).rollback_from(&in_force).unwrap();
        assert_eq!(rb.kind, CrlRollbackKind::LowerNumber);
        assert_eq!(
            (rb.in_force.as_str(), rb.offered.as_deref()),
            ("3", Some("2"))
        );
        assert!(rb.issuer.contains("Bootstrap CA"), "{rb}");

        let rb = load(&[(&a, 8)]).rollback_from(&in_force).unwrap();
        assert_eq!(rb.kind, CrlRollbackKind::IssuerMissing);
        assert!(rb.to_string().contains("Bootstrap CA"), "{rb}");

        // A new CA's CRL may be added; a set without CRLs in force orders nothing.
        assert_eq!(
            load(&[(&a, 7), (&b, 1)]).rollback_from(&load(&[(&a, 7)])),
            None
        );
        assert_eq!(
            load(&[(&a, 1)]).rollback_from(&RevocationSet::empty()),
            None
        );
        // A set without CRLs cannot replace CRLs in force.
        assert_eq!(
            RevocationSet::from_serials([synthetic_serial(1)]).rollback_from(&in_force),
            Some(CrlRollback {
                issuer: display_name(&in_force.versions[0].issuer_raw),
                in_force: "7".into(),
                offered: None,
                kind: CrlRollbackKind::IssuerMissing,
            })
        );
    }

    #[test]
    fn crl_numbers_compare_as_numbers() {
        use std::cmp::Ordering::*;
        let n = |x: u128| number_key(&format!("{x:02X}"));
        assert_eq!(cmp_numbers(&n(0x100), &n(0xFF)), Greater);
        assert_eq!(cmp_numbers(&n(0), &n(1)), Less);
        assert_eq!(cmp_numbers(&n(9), &n(9)), Equal);
        assert_eq!(cmp_numbers(&number_key("00FF"), &number_key("FF")), Equal);
        assert_eq!(display_number(&n(255)), "255");
        assert_eq!(display_number(&n(0)), "0");
        let big = "1".repeat(40);
        assert_eq!(display_number(&big), format!("0x{big}"));
    }

    #[test]
    fn crl_of_another_ca_is_refused() {
        let fleet = ca("Fleet CA");
        let other = ca("Other CA");
        let crl = other.crl(&crl_spec(1, &[synthetic_serial(1)]));
        match RevocationSet::from_crl_bytes(crl.as_bytes(), &verifier(&[&fleet])) {
            Err(CrlError::UnknownIssuer { issuer }) => assert!(issuer.contains("Other CA")),
            other => panic!("expected UnknownIssuer, got {other:?}"),
        }
        // Same name, different key.
        let impostor = ca("Fleet CA");
        let crl = impostor.crl(&crl_spec(1, &[synthetic_serial(1)]));
        assert!(matches!(
            RevocationSet::from_crl_bytes(crl.as_bytes(), &verifier(&[&fleet])),
            Err(CrlError::BadSignature)
        ));
    }

    #[test]
    fn tampered_crl_fails_signature() {
        let ca = ca("Fleet CA");
        let s = synthetic_serial(0x1234);
        let mut der = ca.crl_der(&crl_spec(1, &[s]));
        let pos = der
            .windows(s.as_bytes().len())
            .position(|w| w == s.as_bytes())
            .unwrap();
        der[pos + s.as_bytes().len() - 1] ^= 0x01; // revoke a different serial
        assert!(matches!(
            RevocationSet::from_crl_bytes(&der, &verifier(&[&ca])),
            Err(CrlError::BadSignature)
        ));
    }

    #[test]
    fn garbage_and_truncation_are_malformed() {
        let ca = ca("Fleet CA");
        let v = verifier(&[&ca]);
        let der = ca.crl_der(&crl_spec(1, &[synthetic_serial(1)]));
        let wrong_label = pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()));
        let bad_base64 = "-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n";
        let mut trailing = der.clone();
        trailing.push(0);
        for bad in [
            b"garbage".to_vec(),
            Vec::new(),
            der[..der.len() - 1].to_vec(),
            der[..20].to_vec(),
            trailing,
            vec![0x30, 0x03, 0x02, 0x01, 0x00],
            wrong_label.into_bytes(),
            bad_base64.as_bytes().to_vec(),
        ] {
            match RevocationSet::from_crl_bytes(&bad, &v) {
                Err(CrlError::Malformed { reason }) => assert!(!reason.is_empty()),
                other => panic!(
                    "expected Malformed for {:?}, got {other:?}",
                    &bad[..bad.len().min(20)]
                ),
            }
        }
    }

    #[test]
    fn empty_crl_has_no_revoked_certificates_field() {
        let ca = ca("Fleet CA");
        let der = ca.crl_der(&crl_spec(5, &[]));
        // rcgen omits the field when empty (RFC 5280 5.1.2.6): check the
        // structure, then that it loads.
        let mut r = Reader::new(&der);
        let cl = r.read(tag::SEQUENCE, "cl").unwrap();
        let tbs = Reader::new(cl.content).read(tag::SEQUENCE, "tbs").unwrap();
        let mut t = Reader::new(tbs.content);
        let mut tags = Vec::new();
        while !t.is_empty() {
            tags.push(t.read_any("field").unwrap().tag);
        }
        assert_eq!(
            tags,
            vec![
                tag::INTEGER,
                tag::SEQUENCE,
                tag::SEQUENCE,
                tag::UTC_TIME,
                tag::UTC_TIME,
                tag::CONTEXT_0
            ]
        );
        let set = RevocationSet::from_crl_bytes(&der, &verifier(&[&ca])).unwrap();
        assert!(set.is_empty());
        assert_eq!(set.crl_number.as_deref(), Some("05"));
    }

    #[test]
    fn stale_crl_loads_and_is_flagged() {
        let ca = ca("Fleet CA");
        let spec = TestCrl {
            this_update: now() - Duration::days(2),
            next_update: now() - Duration::days(1),
            ..crl_spec(9, &[synthetic_serial(1)])
        };
        let set = RevocationSet::from_crl_bytes(&ca.crl_der(&spec), &verifier(&[&ca])).unwrap();
        assert!(set.contains(&synthetic_serial(1)));
        assert!(set.is_stale(now()));
        assert!(!set.is_stale(now() - Duration::days(3)));
        assert!(!RevocationSet::empty().is_stale(now()));
    }

    #[test]
    fn file_loading_and_verifier_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("Fleet CA");
        let crl_path = dir.path().join("fleet.crl");
        std::fs::write(&crl_path, ca.crl(&crl_spec(1, &[synthetic_serial(1)]))).unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        let v = CrlVerifier::from_ca_file(&ca_path).unwrap();
        assert_eq!(v.len(), 1);
        let set = RevocationSet::from_crl_file(&crl_path, &v).unwrap();
        assert!(set.contains(&synthetic_serial(1)));

        let missing = dir.path().join("nope.crl");
        let err = RevocationSet::from_crl_file(&missing, &v).unwrap_err();
        assert!(err.to_string().contains("nope.crl"), "{err}");
        assert!(matches!(
            CrlVerifier::from_ca_file(&missing),
            Err(CrlError::CaFileUnreadable { .. })
        ));
        assert!(matches!(
            CrlVerifier::from_ca_pem("no certificates here"),
            Err(CrlError::BadCaCertificate { .. })
        ));
        // A leaf certificate is accepted as a (useless) trust anchor only if it parses.
        let leaf = ca.client("x", None, 1);
        assert!(CrlVerifier::from_ca_pem(&leaf.cert_pem).is_ok());
    }
}
