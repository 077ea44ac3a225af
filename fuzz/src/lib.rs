//! Coverage-guided fuzz targets for the parsers that read untrusted input.
//!
//! One function per target, `pub fn <target>(data: &[u8])`. None of them may
//! panic on any input: a panic is a bug in the code being fuzzed (or a broken
//! invariant asserted here), and the AFL entry binaries (`src/bin/afl_*.rs`,
//! feature `afl`) turn it into a crash. `tests/replay.rs` runs every target
//! over [`seeds`] and over the files in `regressions/<target>/` and
//! `corpus/<target>/`, so a crash found once stays fixed.
//!
//! Fuzzing runs on the stable toolchain through cargo-afl (cargo-fuzz needs
//! nightly); see `scripts/fuzz.sh`.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::LazyLock;

use gatehouse_auth::{CrlVerifier, Fingerprint, RevocationSet};
use gatehouse_ca::{Ca, CaOptions, validate_csr};
use gatehouse_config::Config;
use gatehouse_provisioning::mac::Mac;
use rcgen::{KeyPair, SigningKey};
use serde_json::Value;

pub mod der;
mod seeds;

pub use seeds::{mqtt_frames, seeds};

/// The fuzz targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    CsrRegistration,
    Crl,
    Config,
    /// The embedded broker's front door from raw client bytes: fixed header
    /// and frame validation, rumqttd's v3.1.1/v5 decoders on what passes,
    /// and rumqttd's topic matcher on accepted topics.
    ClientStream,
    // once gatehouse_broker::validate::fuzzing::client_stream exists.
}

impl Target {
    /// Every target, in the order scripts/fuzz.sh runs them.
    pub const ALL: &'static [Target] = &[
        Target::CsrRegistration,
        Target::Crl,
        Target::Config,
        Target::ClientStream,
    ];

    /// The name used for directories, binaries (`afl_<name>`) and `--target`.
    pub fn name(self) -> &'static str {
        match self {
            Target::CsrRegistration => "csr_registration",
            Target::Crl => "crl",
            Target::Config => "config",
            Target::ClientStream => "client_stream",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.iter().copied().find(|t| t.name() == name)
    }

    /// Runs the target on one input.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::CsrRegistration => csr_registration(data),
            Target::Crl => crl(data),
            Target::Config => config(data),
            Target::ClientStream => client_stream(data),
        }
    }
}

// ---------------------------------------------------------------------------
// csr_registration

/// Longest optional text field, as in provisioning/src/http/device.rs.
const MAX_FIELD: usize = 64;
/// Longest CSR PEM, as in provisioning/src/http/device.rs.
const MAX_CSR: usize = 16 * 1024;

/// The registration body of `POST /api/provision/register/`, parsed and
/// validated the way the device API does it before touching the store.
///
/// Inputs starting with a DER SEQUENCE (`0x30`) are taken as a CSR in DER:
/// it is PEM-armoured and posted in an otherwise valid body, so mutations
/// reach the CSR parser without having to survive base64 and JSON.
pub fn csr_registration(data: &[u8]) {
    if data.first() == Some(&0x30) {
        let csr_pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", data.to_vec()));
        let body = serde_json::json!({ "mac": "aa:bb:cc:dd:ee:ff", "csr_pem": csr_pem });
        let _ = registration_body(body.to_string().as_bytes());
    } else {
        let _ = registration_body(data);
    }
}

/// What the handler extracts from the body (the store lookup of the
/// bootstrap fingerprint and the insert are not fuzzed).
#[derive(Debug)]
pub struct RegistrationBody {
    pub mac: Mac,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub fw_version: Option<String>,
    pub bootstrap_fingerprint: Option<Fingerprint>,
    pub csr_pem: Option<String>,
}

/// Mirrors the body checks of `parse` in provisioning/src/http/device.rs,
/// calling the same functions (serde_json, `Mac::parse`, `Fingerprint`'s
/// `FromStr`, `gatehouse_ca::validate_csr`); only the private `text_field`
/// helper is restated. Keep the two in step.
pub fn registration_body(body: &[u8]) -> Result<RegistrationBody, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("Body is not valid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("Body must be a JSON object.".into());
    };
    let mac = match obj.get("mac") {
        None | Some(Value::Null) => return Err("`mac` is required".into()),
        Some(Value::String(s)) => Mac::parse(s).ok_or("`mac` must be a MAC address")?,
        Some(_) => return Err("`mac` must be a string".into()),
    };
    // Everything the handler derives from the MAC must work on what parsed.
    let _ = gatehouse_provisioning::mac::gateway_code("dev", &mac);
    let serial = text_field(&obj, "serial", MAX_FIELD)?;
    let model = text_field(&obj, "modelo", MAX_FIELD)?;
    let fw_version = text_field(&obj, "fw_version", MAX_FIELD)?;
    let bootstrap_fingerprint = text_field(&obj, "bootstrap_fingerprint", 128)?
        .map(|t| {
            t.parse::<Fingerprint>()
                .map_err(|_| "`bootstrap_fingerprint` must be a SHA-256 fingerprint".to_string())
        })
        .transpose()?;
    if let Some(fp) = &bootstrap_fingerprint {
        let round_trip: Fingerprint = fp.to_string().parse().expect("Display output parses");
        assert_eq!(&round_trip, fp, "fingerprint Display/FromStr round trip");
    }
    let csr_pem = text_field(&obj, "csr_pem", MAX_CSR)?;
    if let Some(csr) = &csr_pem {
        validate_csr(csr).map_err(|e| format!("`csr_pem` refused: {e}"))?;
    }
    Ok(RegistrationBody {
        mac,
        serial,
        model,
        fw_version,
        bootstrap_fingerprint,
        csr_pem,
    })
}

/// `text_field` of provisioning/src/http/device.rs.
fn text_field(
    body: &serde_json::Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<Option<String>, String> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.len() > max {
                return Err(format!("`{name}` is longer than {max} characters"));
            }
            if s.chars().any(char::is_control) && name != "csr_pem" {
                return Err(format!("`{name}` contains control characters"));
            }
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

// ---------------------------------------------------------------------------
// crl

/// The CA the `crl` target verifies against, generated once per process.
pub struct FuzzCa {
    pub ca: Ca,
    key: KeyPair,
    pub verifier: CrlVerifier,
}

impl std::fmt::Debug for FuzzCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuzzCa")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl FuzzCa {
    /// Signs `tbs` (a `tbsCertList`) with the CA key and wraps it into a
    /// `CertificateList` with the CA's signature algorithm.
    pub fn sign_tbs(&self, tbs: &[u8]) -> Vec<u8> {
        let sig = self.key.sign(tbs).expect("ECDSA signing does not fail");
        let mut bits = Vec::with_capacity(sig.len() + 1);
        bits.push(0);
        bits.extend_from_slice(&sig);
        let mut content = tbs.to_vec();
        content.extend_from_slice(ECDSA_WITH_SHA256);
        content.extend_from_slice(&der::tlv(0x03, &bits));
        der::tlv(0x30, &content)
    }
}

/// AlgorithmIdentifier ecdsa-with-SHA256 (what rcgen writes for P-256).
pub const ECDSA_WITH_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// Common name of the fuzzing CA; seeds and target agree on it.
pub const FUZZ_CA_NAME: &str = "Gatehouse Fuzz CA";

static FUZZ_CA: LazyLock<FuzzCa> = LazyLock::new(|| {
    let ca = Ca::generate(CaOptions {
        common_name: FUZZ_CA_NAME.into(),
        organization: Some("Gatehouse Fuzz".into()),
        validity_days: 30,
        ..CaOptions::default()
    })
    .expect("generate the fuzzing CA");
    let key = KeyPair::from_pem(ca.key_pem().expose()).expect("CA key parses");
    let verifier = CrlVerifier::from_ca_pem(ca.cert_pem()).expect("CA certificate parses");
    FuzzCa { ca, key, verifier }
});

/// The per-process fuzzing CA.
pub fn fuzz_ca() -> &'static FuzzCa {
    &FUZZ_CA
}

/// Mode byte: the rest of the input is a `tbsCertList` to sign with the
/// fuzzing CA before loading, so mutations reach the code behind the
/// signature check (extensions, revoked entries, metadata).
pub const CRL_RESIGN: u8 = 0x00;

/// CRL loading (`RevocationSet::from_crl_bytes`: PEM or DER) verified
/// against [`fuzz_ca`], plus the CA bundle parser.
///
/// * first byte [`CRL_RESIGN`]: the rest is signed as a `tbsCertList`, then
///   loaded from DER and from PEM;
/// * otherwise the input is loaded as is; a DER input is also loaded as PEM,
///   and both answers must agree.
pub fn crl(data: &[u8]) {
    let ca = fuzz_ca();
    if let Some((&CRL_RESIGN, tbs)) = data.split_first() {
        let der = ca.sign_tbs(tbs);
        load_der_and_pem(&der, &ca.verifier);
        return;
    }
    if data.first() == Some(&0x30) {
        load_der_and_pem(data, &ca.verifier);
    } else {
        exercise(RevocationSet::from_crl_bytes(data, &ca.verifier));
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = CrlVerifier::from_ca_pem(text);
        }
    }
}

fn load_der_and_pem(der: &[u8], verifier: &CrlVerifier) {
    let from_der = RevocationSet::from_crl_bytes(der, verifier);
    let pem_text = pem::encode(&pem::Pem::new("X509 CRL", der.to_vec()));
    let from_pem = RevocationSet::from_crl_bytes(pem_text.as_bytes(), verifier);
    assert_eq!(
        format!("{from_der:?}"),
        format!("{from_pem:?}"),
        "the same CRL loads differently from DER and from PEM"
    );
    exercise(from_der);
}

fn exercise(set: Result<RevocationSet, gatehouse_auth::CrlError>) {
    match set {
        Ok(set) => {
            let _ = set.is_stale(time::OffsetDateTime::now_utc());
            let n = set.iter().filter(|s| set.contains(s)).count();
            assert_eq!(n, set.len(), "every listed serial is contained");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------
// config

/// gatehouse.toml parsing and validation (`Config::parse`), as
/// `Config::load` does after reading the file. Non-UTF-8 input is refused
/// by `read_to_string` before parsing, so it is skipped here.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml", Path::new("/etc/gatehouse")) {
        Ok(cfg) => {
            let _ = format!("{cfg:?}");
        }
        Err(e) => {
            let _ = (e.to_string(), e.line(), e.key());
        }
    }
}

/// `client_stream`: a client's byte stream through the front door (see
/// `gatehouse_broker::validate::fuzzing::client_stream`: the first byte picks
/// MQTT 3.1.1 or 5 and whether CONNECT is already done).
pub fn client_stream(data: &[u8]) {
    gatehouse_broker::validate::fuzzing::client_stream(data);
}
