//! The fleet CA: generate or load it, issue server / bootstrap / operational
//! certificates, sign device CSRs and produce CRLs.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use crate::csr::VerifiedCsr;
use crate::keys::{self, KeyAlgorithm};
use crate::secret::PrivateKeyPem;
use gatehouse_auth::{Fingerprint, Serial};

/// How far issued certificates are back-dated, to tolerate device clock skew.
const BACKDATE: Duration = Duration::minutes(5);

/// Errors of CA operations.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("key generation failed: {reason}")]
    KeyGeneration { reason: String },

    #[error("private key is not usable: {reason}")]
    InvalidKey { reason: String },

    #[error(
        "private key PEM block {label:?} is not supported: provide an unencrypted PKCS#8 \
         `PRIVATE KEY` (convert with `openssl pkcs8 -topk8 -nocrypt -in key.pem`) or a PKCS#1 \
         `RSA PRIVATE KEY`"
    )]
    UnsupportedKeyFormat { label: String },

    #[error("CA certificate is not usable: {reason}")]
    InvalidCaCertificate { reason: String },

    #[error(
        "certificate \"{subject}\" is not a CA (basicConstraints cA is not set, or keyCertSign is \
         missing); use the fleet CA certificate"
    )]
    NotACa { subject: String },

    #[error(
        "the private key does not match the CA certificate's public key; check that the \
         cert and key files belong together"
    )]
    KeyMismatch,

    #[error("CSR is malformed: {reason}; the device must send a PEM `CERTIFICATE REQUEST`")]
    CsrMalformed { reason: String },

    #[error(
        "CSR self-signature does not verify: the request was altered or not signed with the \
         key it contains; the device must generate a new CSR"
    )]
    CsrBadSignature,

    #[error(
        "CSR key is too weak: RSA {bits} bits; at least 2048-bit RSA or ECDSA P-256 is required"
    )]
    CsrKeyTooWeak { bits: u32 },

    #[error("CSR key {algorithm} is not supported: use ECDSA P-256 or RSA 2048..8192")]
    CsrUnsupportedKey { algorithm: String },

    #[error(
        "CSR signature algorithm {algorithm} is not supported: sign with SHA-256/384/512 \
         (ECDSA or RSA PKCS#1 v1.5 / PSS)"
    )]
    CsrUnsupportedSignature { algorithm: String },

    #[error("invalid certificate subject: {reason}")]
    InvalidSubject { reason: String },

    #[error(
        "invalid subject alternative name {name:?}: use ASCII DNS names (IDNA-encode) or IP addresses"
    )]
    InvalidSan { name: String },

    #[error("invalid validity: {reason}")]
    InvalidValidity { reason: String },

    #[error("signing failed: {reason}")]
    Signing { reason: String },

    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn signing(e: rcgen::Error) -> CaError {
    CaError::Signing {
        reason: e.to_string(),
    }
}

/// Options for [`Ca::generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaOptions {
    pub common_name: String,
    pub organization: Option<String>,
    pub validity_days: u32,
    pub key: KeyAlgorithm,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            common_name: "Gatehouse Fleet CA".into(),
            organization: None,
            validity_days: 3650 * 2,
            key: KeyAlgorithm::EcdsaP256,
        }
    }
}

/// Extended key usage of an issued leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// TLS client (devices: bootstrap and operational certificates).
    ClientAuth,
    /// TLS server (the broker, the provisioning endpoint).
    ServerAuth,
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum San {
    /// A DNS name (ASCII; IDNA-encode internationalised names).
    Dns(String),
    Ip(IpAddr),
}

impl San {
    /// An IP address if `text` parses as one, else a DNS name.
    pub fn parse(text: &str) -> San {
        match text.parse::<IpAddr>() {
            Ok(ip) => San::Ip(ip),
            Err(_) => San::Dns(text.to_owned()),
        }
    }
}

impl From<&str> for San {
    fn from(text: &str) -> San {
        San::parse(text)
    }
}

impl From<String> for San {
    fn from(text: String) -> San {
        San::parse(&text)
    }
}

impl From<IpAddr> for San {
    fn from(ip: IpAddr) -> San {
        San::Ip(ip)
    }
}

/// Where the leaf's key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Generated here; the private key is returned in [`IssuedCert::key_pem`].
    Generate(KeyAlgorithm),
    /// The public key of a verified device CSR (the private key never leaves
    /// the device).
    Csr(VerifiedCsr),
}

/// Everything that goes into a leaf certificate. Times are arbitrary (tests
/// build expired and not-yet-valid certificates with them).
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub organizational_unit: Option<String>,
    pub organization: Option<String>,
    /// Subject alternative names (DNS names and IP addresses).
    pub sans: Vec<San>,
    pub usage: Usage,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub key: KeySource,
}

impl LeafSpec {
    /// A client certificate valid from a few minutes ago for `validity_days`,
    /// with a generated P-256 key.
    pub fn client(common_name: impl Into<String>, validity_days: u32) -> LeafSpec {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: common_name.into(),
            organizational_unit: None,
            organization: None,
            sans: Vec::new(),
            usage: Usage::ClientAuth,
            not_before: now - BACKDATE,
            not_after: now + Duration::days(validity_days.into()),
            key: KeySource::Generate(KeyAlgorithm::EcdsaP256),
        }
    }

    /// A server certificate; like [`LeafSpec::client`] with `ServerAuth`.
    pub fn server(common_name: impl Into<String>, validity_days: u32) -> LeafSpec {
        LeafSpec {
            usage: Usage::ServerAuth,
            ..Self::client(common_name, validity_days)
        }
    }
}

/// A certificate issued by [`Ca`]. `Debug` never shows the private key.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// Present when the key was generated here.
    pub key_pem: Option<PrivateKeyPem>,
    pub serial: Serial,
    pub fingerprint: Fingerprint,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// RFC 5280 CRL reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RevocationReason {
    #[default]
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    RemoveFromCrl,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    const ALL: [RevocationReason; 10] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The CRLReason code (0..=10, 7 unused).
    pub fn code(self) -> u8 {
        self.to_rcgen() as u8
    }

    /// From a CRLReason code.
    pub fn from_code(code: u8) -> Option<RevocationReason> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The RFC 5280 name, e.g. `"keyCompromise"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::RemoveFromCrl => "removeFromCRL",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        use rcgen::RevocationReason as R;
        match self {
            RevocationReason::Unspecified => R::Unspecified,
            RevocationReason::KeyCompromise => R::KeyCompromise,
            RevocationReason::CaCompromise => R::CaCompromise,
            RevocationReason::AffiliationChanged => R::AffiliationChanged,
            RevocationReason::Superseded => R::Superseded,
            RevocationReason::CessationOfOperation => R::CessationOfOperation,
            RevocationReason::CertificateHold => R::CertificateHold,
            RevocationReason::RemoveFromCrl => R::RemoveFromCrl,
            RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
            RevocationReason::AaCompromise => R::AaCompromise,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RevocationReason {
    type Err = String;

    /// Accepts the RFC 5280 names, case-insensitively, with or without `_`/`-`.
    fn from_str(s: &str) -> Result<Self, String> {
        let norm = |t: &str| {
            t.chars()
                .filter(|c| *c != '_' && *c != '-')
                .collect::<String>()
                .to_ascii_lowercase()
        };
        let wanted = norm(s);
        Self::ALL
            .into_iter()
            .find(|r| norm(r.as_str()) == wanted)
            .ok_or_else(|| format!("unknown revocation reason {s:?}"))
    }
}

/// One revoked certificate in a [`CrlSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    pub serial: Serial,
    pub revoked_at: OffsetDateTime,
    pub reason: RevocationReason,
}

/// Contents of a CRL to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSpec {
    /// Monotonically increasing `cRLNumber`.
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub entries: Vec<RevokedEntry>,
}

/// The fleet CA: certificate, private key and signer.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: PrivateKeyPem,
    issuer: Issuer<'static, KeyPair>,
    subject: String,
    subject_raw: Vec<u8>,
    key_id: Option<Vec<u8>>,
    not_after: OffsetDateTime,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .field("key_pem", &self.key_pem)
            .finish_non_exhaustive()
    }
}

fn days(validity_days: u32) -> Result<Duration, CaError> {
    if validity_days == 0 {
        return Err(CaError::InvalidValidity {
            reason: "validity_days must be at least 1".into(),
        });
    }
    Ok(Duration::days(validity_days.into()))
}

impl Ca {
    /// Generates a new self-signed CA (path length 0: it signs leaves only).
    ///
    /// Takes `CaOptions` or `&CaOptions`.
    pub fn generate(options: impl std::borrow::Borrow<CaOptions>) -> Result<Ca, CaError> {
        let options = options.borrow();
        if options.common_name.trim().is_empty() {
            return Err(CaError::InvalidSubject {
                reason: "the CA common name is empty".into(),
            });
        }
        let validity = days(options.validity_days)?;
        let (key, key_pem) = keys::generate(options.key)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(org) = &options.organization {
            dn.push(DnType::OrganizationName, org.as_str());
        }
        dn.push(DnType::CommonName, options.common_name.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + validity;
        params.serial_number = Some(SerialNumber::from_slice(Serial::random_128().as_bytes()));
        let cert = params.self_signed(&key).map_err(signing)?;
        let ca = Self::assemble(cert.der().to_vec(), key, key_pem)?;
        tracing::info!(subject = %ca.subject, key = %options.key, "generated fleet CA");
        Ok(ca)
    }

    /// Loads a CA from its PEM certificate (the first `CERTIFICATE` block)
    /// and PEM private key, checking that they belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        let blocks = pem::parse_many(cert_pem).map_err(|e| CaError::InvalidCaCertificate {
            reason: format!("not PEM: {e}"),
        })?;
        let cert_der = blocks
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or_else(|| CaError::InvalidCaCertificate {
                reason: "no CERTIFICATE block found".into(),
            })?
            .into_contents();
        let key = keys::load_pem(key_pem)?;
        let key_pem = PrivateKeyPem::new(key.serialize_pem());
        Self::assemble(cert_der, key, key_pem)
    }

    /// Reads the CA certificate and key files.
    pub fn from_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Ca, CaError> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CaError::Io {
                path: path.to_owned(),
                source,
            })
        };
        let cert = read(cert_path)?;
        let key = zeroize::Zeroizing::new(read(key_path)?);
        Self::from_pem(&cert, &key)
    }

    fn assemble(cert_der: Vec<u8>, key: KeyPair, key_pem: PrivateKeyPem) -> Result<Ca, CaError> {
        let (rest, cert) =
            X509Certificate::from_der(&cert_der).map_err(|e| CaError::InvalidCaCertificate {
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(CaError::InvalidCaCertificate {
                reason: "trailing data after the certificate".into(),
            });
        }
        let tbs = &cert.tbs_certificate;
        let subject = tbs.subject().to_string();
        let can_sign = tbs
            .key_usage()
            .ok()
            .flatten()
            .is_none_or(|ku| ku.value.key_cert_sign());
        if !tbs.is_ca() || !can_sign {
            return Err(CaError::NotACa { subject });
        }
        if tbs.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(CaError::KeyMismatch);
        }
        let key_id = tbs
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        let not_after = tbs.validity().not_after.to_datetime();
        let subject_raw = tbs.subject().as_raw().to_vec();
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key).map_err(|e| {
            CaError::InvalidCaCertificate {
                reason: format!("cannot use it as an issuer: {e}"),
            }
        })?;
        let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", cert_der.clone()));
        let ca = Ca {
            cert_pem,
            cert_der,
            key_pem,
            issuer,
            subject,
            subject_raw,
            key_id,
            not_after,
        };
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key (PKCS#8 PEM).
    pub fn key_pem(&self) -> &PrivateKeyPem {
        &self.key_pem
    }

    /// The CA subject DN, RFC 4514-style.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// End of the CA certificate's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Writes the certificate (mode 0644) and the key (mode 0600, also
    /// enforced on an existing file) to disk.
    pub fn write_files(
        &self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<(), CaError> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io { path, source }
        };
        if let Some(dir) = cert_path.parent() {
            gatehouse_config::secure_fs::ensure_private_dir(dir).map_err(io(cert_path))?;
        }
        std::fs::write(cert_path, self.cert_pem.as_bytes()).map_err(io(cert_path))?;
        gatehouse_config::secure_fs::write(key_path, self.key_pem.expose().as_bytes())
            .map_err(io(key_path))?;
        Ok(())
    }

    /// Issues a leaf certificate as described by `spec`.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert, CaError> {
        if spec.common_name.trim().is_empty() {
            return Err(CaError::InvalidSubject {
                reason: "the common name is empty".into(),
            });
        }
        if spec.not_after <= spec.not_before {
            return Err(CaError::InvalidValidity {
                reason: format!(
                    "not_after ({}) must be later than not_before ({})",
                    spec.not_after, spec.not_before
                ),
            });
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(o) = &spec.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        if let Some(ou) = &spec.organizational_unit {
            dn.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        dn.push(DnType::CommonName, spec.common_name.as_str());
        params.distinguished_name = dn;
        for san in &spec.sans {
            params.subject_alt_names.push(match san {
                San::Dns(name) => {
                    let ia5 = name
                        .as_str()
                        .try_into()
                        .map_err(|_| CaError::InvalidSan { name: name.clone() })?;
                    SanType::DnsName(ia5)
                }
                San::Ip(ip) => SanType::IpAddress(*ip),
            });
        }
        let serial = Serial::random_128();
        params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![match spec.usage {
            Usage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
            Usage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        let rsa = match &spec.key {
            KeySource::Generate(alg) => alg.is_rsa(),
            KeySource::Csr(csr) => csr.is_rsa(),
        };
        params.key_usages = if rsa {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };

        let (cert, key_pem) = match &spec.key {
            KeySource::Generate(alg) => {
                let (key, key_pem) = keys::generate(*alg)?;
                (params.signed_by(&key, &self.issuer), Some(key_pem))
            }
            KeySource::Csr(csr) => (params.signed_by(csr.public_key(), &self.issuer), None),
        };
        let cert = cert.map_err(signing)?;
        let cert_der = cert.der().to_vec();
        let (_, parsed) = X509Certificate::from_der(&cert_der).map_err(|e| CaError::Signing {
            reason: format!("issued certificate does not parse back: {e}"),
        })?;
        if parsed.tbs_certificate.issuer().as_raw() != self.subject_raw.as_slice() {
            // rcgen re-encodes the issuer name; a CA subject it cannot
            // reproduce byte for byte would yield unverifiable chains.
            return Err(CaError::InvalidCaCertificate {
                reason: "its subject name cannot be reproduced exactly in issued certificates \
                         (multi-valued RDN or repeated attribute?)"
                    .into(),
            });
        }
        let validity = parsed.tbs_certificate.validity();
        let issued = IssuedCert {
            cert_pem: cert.pem(),
            fingerprint: Fingerprint::of(&cert_der),
            serial,
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            cert_der,
            key_pem,
        };
        tracing::info!(
            cn = %spec.common_name,
            ou = spec.organizational_unit.as_deref().unwrap_or(""),
            serial = %issued.serial,
            usage = ?spec.usage,
            not_after = %issued.not_after,
            "issued certificate"
        );
        Ok(issued)
    }

    /// Server certificate for `sans` (IP addresses and DNS names are told
    /// apart automatically; the first SAN is also the CN), P-256 key.
    pub fn issue_server(&self, sans: &[String], validity_days: u32) -> Result<IssuedCert, CaError> {
        let first = sans.first().ok_or_else(|| CaError::InvalidSan {
            name: String::new(),
        })?;
        let mut spec = LeafSpec::server(first.clone(), validity_days);
        days(validity_days)?;
        spec.sans = sans.iter().map(|s| San::parse(s)).collect();
        self.issue(&spec)
    }

    /// Bootstrap (factory batch) client certificate with subject OU `ou`;
    /// the generated P-256 key is returned.
    pub fn issue_bootstrap(
        &self,
        common_name: &str,
        ou: &str,
        validity_days: u32,
    ) -> Result<IssuedCert, CaError> {
        days(validity_days)?;
        let mut spec = LeafSpec::client(common_name, validity_days);
        spec.organizational_unit = Some(ou.to_owned());
        self.issue(&spec)
    }

    /// Signs a device CSR as an operational certificate.
    ///
    /// The CSR's self-signature and key are checked (see [`VerifiedCsr`]);
    /// its subject and requested extensions are ignored: the certificate
    /// gets CN = `gateway_code`, OU = `ou` and the clientAuth EKU only.
    pub fn sign_operational_csr(
        &self,
        csr_pem: &str,
        gateway_code: &str,
        ou: &str,
        validity_days: u32,
    ) -> Result<IssuedCert, CaError> {
        let csr = VerifiedCsr::from_pem(csr_pem)?;
        if let Some(asked) = &csr.info().subject_cn {
            if asked != gateway_code {
                tracing::debug!(asked = %asked, gateway_code, "CSR subject CN ignored");
            }
        }
        self.issue(&operational_spec(
            gateway_code,
            ou,
            validity_days,
            KeySource::Csr(csr),
        )?)
    }

    /// Operational certificate with a server-generated RSA 2048 key, for
    /// legacy firmware that cannot make a CSR. The key is in `key_pem`.
    pub fn issue_operational_legacy(
        &self,
        gateway_code: &str,
        ou: &str,
        validity_days: u32,
    ) -> Result<IssuedCert, CaError> {
        self.issue(&operational_spec(
            gateway_code,
            ou,
            validity_days,
            KeySource::Generate(KeyAlgorithm::Rsa2048),
        )?)
    }

    /// See [`crate::validate_csr`].
    pub fn validate_csr(csr_pem: &str) -> Result<crate::CsrInfo, CaError> {
        crate::csr::validate_csr(csr_pem)
    }

    /// Signs a CRL, PEM (`X509 CRL`).
    pub fn crl(&self, spec: &CrlSpec) -> Result<String, CaError> {
        let der = self.crl_der(spec)?;
        Ok(pem::encode(&pem::Pem::new("X509 CRL", der)))
    }

    /// Signs a CRL, DER.
    pub fn crl_der(&self, spec: &CrlSpec) -> Result<Vec<u8>, CaError> {
        if spec.next_update <= spec.this_update {
            return Err(CaError::InvalidValidity {
                reason: "CRL next_update must be later than this_update".into(),
            });
        }
        let params = CertificateRevocationListParams {
            this_update: spec.this_update,
            next_update: spec.next_update,
            crl_number: SerialNumber::from(spec.number),
            issuing_distribution_point: None,
            revoked_certs: spec
                .entries
                .iter()
                .map(|e| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(e.serial.as_bytes()),
                    revocation_time: e.revoked_at,
                    reason_code: Some(e.reason.to_rcgen()),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: match &self.key_id {
                Some(id) => KeyIdMethod::PreSpecified(id.clone()),
                None => KeyIdMethod::Sha256,
            },
        };
        let crl = params.signed_by(&self.issuer).map_err(signing)?;
        Ok(crl.der().to_vec())
    }
}

fn operational_spec(
    gateway_code: &str,
    ou: &str,
    validity_days: u32,
    key: KeySource,
) -> Result<LeafSpec, CaError> {
    if gateway_code.trim().is_empty() {
        return Err(CaError::InvalidSubject {
            reason: "the gateway code (CN) is empty".into(),
        });
    }
    days(validity_days)?;
    let mut spec = LeafSpec::client(gateway_code, validity_days);
    spec.organizational_unit = Some(ou.to_owned());
    spec.key = key;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use rcgen::KeyPair;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::public_key::PublicKey;

    use super::*;
    use crate::csr::tests::csr_pem;
    use crate::keys::test_support::rsa2048_pkcs8_pem;

    fn ca(name: &str) -> Ca {
        Ca::generate(CaOptions {
            common_name: name.to_owned(),
            organization: Some("Gatehouse Test".to_owned()),
            validity_days: 30,
            ..CaOptions::default()
        })
        .unwrap()
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        let (rest, cert) = X509Certificate::from_der(der).unwrap();
        assert!(rest.is_empty());
        cert
    }

    fn assert_signed_by(leaf_der: &[u8], ca: &Ca) {
        let ca_cert = parse(ca.cert_der());
        parse(leaf_der)
            .verify_signature(Some(ca_cert.public_key()))
            .expect("leaf signature verifies with the CA key");
    }

    fn only(values: Vec<String>) -> String {
        assert_eq!(values.len(), 1, "{values:?}");
        values.into_iter().next().unwrap()
    }

    fn cns(cert: &X509Certificate<'_>) -> Vec<String> {
        cert.subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    }

    fn ous(cert: &X509Certificate<'_>) -> Vec<String> {
        cert.subject()
            .iter_organizational_unit()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    }

    fn check_operational(issued: &IssuedCert, ca: &Ca, gateway_code: &str, device_spki: &[u8]) {
        assert_signed_by(&issued.cert_der, ca);
        let cert = parse(&issued.cert_der);
        assert_eq!(
            only(cns(&cert)),
            gateway_code,
            "CN forced to the gateway code"
        );
        assert_eq!(only(ous(&cert)), "operational");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth);
        assert!(!eku.server_auth, "requested serverAuth must be ignored");
        assert!(
            cert.subject_alternative_name().unwrap().is_none(),
            "requested SAN ignored"
        );
        assert!(!cert.is_ca());
        assert_eq!(
            cert.public_key().raw,
            device_spki,
            "certifies the CSR's key"
        );
        assert_eq!(issued.serial.as_bytes().len(), 16, "128-bit serial");
        assert_eq!(issued.serial.as_bytes(), cert.raw_serial());
        assert_eq!(issued.serial.as_bytes()[0] & 0x80, 0, "positive serial");
        assert_eq!(issued.fingerprint, Fingerprint::of(&issued.cert_der));
        let days = (issued.not_after - issued.not_before).whole_days();
        assert!((3650..=3651).contains(&days), "{days}");
        assert!(cert.iter_extensions().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )));
        assert!(issued.key_pem.is_none(), "the device keeps its key");
        assert_eq!(
            pem::parse(&issued.cert_pem).unwrap().contents(),
            &issued.cert_der[..]
        );
    }

    #[test]
    fn generated_ca_is_a_ca() {
        let ca = ca("Fleet CA");
        let cert = parse(ca.cert_der());
        assert!(cert.is_ca());
        cert.verify_signature(None).unwrap();
        assert!(ca.subject().contains("CN=Fleet CA"));
        assert!(ca.subject().contains("O=Gatehouse Test"));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(ca.key_pem().expose().contains("BEGIN PRIVATE KEY"));
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));

        let p384 = Ca::generate(CaOptions {
            key: KeyAlgorithm::EcdsaP384,
            ..CaOptions::default()
        })
        .unwrap();
        let leaf = p384.issue_bootstrap("b", "bootstrap", 1).unwrap();
        assert_signed_by(&leaf.cert_der, &p384);
        assert!(matches!(
            Ca::generate(CaOptions {
                validity_days: 0,
                ..CaOptions::default()
            }),
            Err(CaError::InvalidValidity { .. })
        ));
    }

    #[test]
    fn from_pem_round_trip_and_checks() {
        let ca1 = ca("Fleet CA");
        let loaded = Ca::from_pem(ca1.cert_pem(), ca1.key_pem().expose()).unwrap();
        assert_eq!(loaded.cert_der(), ca1.cert_der());
        let leaf = loaded.issue_bootstrap("b", "bootstrap", 1).unwrap();
        assert_signed_by(&leaf.cert_der, &ca1);

        let ca2 = ca("Other CA");
        assert!(matches!(
            Ca::from_pem(ca1.cert_pem(), ca2.key_pem().expose()),
            Err(CaError::KeyMismatch)
        ));
        let leaf_key = leaf.key_pem.as_ref().unwrap();
        assert!(matches!(
            Ca::from_pem(&leaf.cert_pem, leaf_key.expose()),
            Err(CaError::NotACa { .. })
        ));
        assert!(matches!(
            Ca::from_pem(
                ca1.cert_pem(),
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
            ),
            Err(CaError::UnsupportedKeyFormat { .. })
        ));
        assert!(matches!(
            Ca::from_pem("nope", ca1.key_pem().expose()),
            Err(CaError::InvalidCaCertificate { .. })
        ));
    }

    #[test]
    fn write_files_protects_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ca = ca("Fleet CA");
        ca.write_files(&cert, &key).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Ca::from_files(&cert, &key).unwrap();
        assert_eq!(loaded.cert_der(), ca.cert_der());
        let err = Ca::from_files(dir.path().join("missing.pem"), &key).unwrap_err();
        assert!(err.to_string().contains("missing.pem"));
    }

    #[test]
    fn sign_operational_csr_p256() {
        let ca = ca("Fleet CA");
        let device = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issued = ca
            .sign_operational_csr(&csr_pem(&device), "GW-0001-ABCD", "operational", 3650)
            .unwrap();
        check_operational(
            &issued,
            &ca,
            "GW-0001-ABCD",
            &device.subject_public_key_info(),
        );
        let cert = parse(&issued.cert_der);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_encipherment());
    }

    #[test]
    fn sign_operational_csr_rsa2048() {
        let ca = ca("Fleet CA");
        let device = KeyPair::from_pem(rsa2048_pkcs8_pem()).unwrap();
        let issued = ca
            .sign_operational_csr(&csr_pem(&device), "GW-0002-BEEF", "operational", 3650)
            .unwrap();
        check_operational(
            &issued,
            &ca,
            "GW-0002-BEEF",
            &device.subject_public_key_info(),
        );
        let cert = parse(&issued.cert_der);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment());
    }

    #[test]
    fn sign_operational_csr_rejects_bad_requests() {
        let ca = ca("Fleet CA");
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(matches!(
            ca.sign_operational_csr(&csr_pem(&p384), "GW", "operational", 3650),
            Err(CaError::CsrUnsupportedKey { .. })
        ));
        assert!(matches!(
            ca.sign_operational_csr("garbage", "GW", "operational", 3650),
            Err(CaError::CsrMalformed { .. })
        ));
        let p256 = KeyPair::generate().unwrap();
        assert!(matches!(
            ca.sign_operational_csr(&csr_pem(&p256), " ", "operational", 3650),
            Err(CaError::InvalidSubject { .. })
        ));
    }

    #[test]
    fn legacy_operational_returns_matching_rsa_key() {
        let ca = ca("Fleet CA");
        let issued = ca
            .issue_operational_legacy("GW-0003-CAFE", "operational", 3650)
            .unwrap();
        assert_signed_by(&issued.cert_der, &ca);
        let key_pem = issued
            .key_pem
            .as_ref()
            .expect("server-generated key returned");
        assert!(key_pem.expose().contains("BEGIN PRIVATE KEY"));
        let key = KeyPair::from_pem(key_pem.expose()).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_RSA_SHA256);
        let cert = parse(&issued.cert_der);
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        match cert.public_key().parsed().unwrap() {
            PublicKey::RSA(rsa) => {
                let n = rsa.modulus.iter().skip_while(|b| **b == 0).count();
                assert_eq!(n * 8, 2048);
            }
            other => panic!("expected RSA, got {other:?}"),
        }
        assert_eq!(only(cns(&cert)), "GW-0003-CAFE");
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );

        let dbg = format!("{issued:?}");
        assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
        assert!(dbg.contains("PrivateKeyPem(<redacted>)"));
        let body_line = key_pem.expose().lines().nth(1).unwrap();
        assert!(!dbg.contains(body_line));
    }

    #[test]
    fn server_and_bootstrap_certificates() {
        let ca = ca("Fleet CA");
        let server = ca
            .issue_server(
                &["broker.local".into(), "127.0.0.1".into(), "::1".into()],
                30,
            )
            .unwrap();
        assert_signed_by(&server.cert_der, &ca);
        let cert = parse(&server.cert_der);
        assert_eq!(only(cns(&cert)), "broker.local");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(ip) => format!("ip:{}", ip.len()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, vec!["dns:broker.local", "ip:4", "ip:16"]);
        assert!(server.key_pem.is_some());
        assert!(ca.issue_server(&[], 30).is_err());
        assert!(matches!(
            ca.issue_server(&["bad name é".into()], 30),
            Err(CaError::InvalidSan { .. })
        ));

        let boot = ca
            .issue_bootstrap("batch-2024-01", "bootstrap", 365)
            .unwrap();
        let cert = parse(&boot.cert_der);
        assert_eq!(only(ous(&cert)), "bootstrap");
        assert_eq!(only(cns(&cert)), "batch-2024-01");
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );
        assert!(!format!("{boot:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn issue_rejects_inverted_validity() {
        let ca = ca("Fleet CA");
        let mut spec = LeafSpec::client("x", 1);
        spec.not_after = spec.not_before;
        assert!(matches!(
            ca.issue(&spec),
            Err(CaError::InvalidValidity { .. })
        ));
        let spec = LeafSpec::client("", 1);
        assert!(matches!(
            ca.issue(&spec),
            Err(CaError::InvalidSubject { .. })
        ));
    }

    #[test]
    fn crl_generation_carries_reasons_and_number() {
        let ca = ca("Fleet CA");
        // Top bit set: the DER INTEGER needs a 0x00 sign pad.
        let serial =
            Serial::from_bytes(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap();
        let now = OffsetDateTime::now_utc();
        let spec = CrlSpec {
            number: 258,
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(7),
            entries: vec![RevokedEntry {
                serial,
                revoked_at: now - Duration::minutes(30),
                reason: RevocationReason::Superseded,
            }],
        };
        let der = ca.crl_der(&spec).unwrap();
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
        let ca_cert = parse(ca.cert_der());
        crl.verify_signature(ca_cert.public_key()).unwrap();
        assert_eq!(crl.crl_number().unwrap().to_string(), "258");
        let entry = crl.iter_revoked_certificates().next().unwrap();
        assert_eq!(
            entry.raw_serial(),
            &[&[0u8][..], serial.as_bytes()].concat()[..]
        );
        assert_eq!(entry.reason_code().unwrap().1.0, 4);
        let pem_text = ca.crl(&spec).unwrap();
        assert!(pem_text.starts_with("-----BEGIN X509 CRL-----"));
        let mut bad = spec.clone();
        bad.next_update = bad.this_update;
        assert!(matches!(
            ca.crl_der(&bad),
            Err(CaError::InvalidValidity { .. })
        ));
    }

    #[test]
    fn revocation_reason_codes_and_names() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::from_code(r.code()), Some(r));
            assert_eq!(r.as_str().parse::<RevocationReason>().unwrap(), r);
        }
        assert_eq!(RevocationReason::KeyCompromise.code(), 1);
        assert_eq!(RevocationReason::RemoveFromCrl.code(), 8);
        assert_eq!(RevocationReason::from_code(7), None);
        assert_eq!(
            "key_compromise".parse::<RevocationReason>().unwrap(),
            RevocationReason::KeyCompromise
        );
        assert!("nope".parse::<RevocationReason>().is_err());
    }
}
