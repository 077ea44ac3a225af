//! Key generation and loading for the CA (ring for ECDSA and signing, the
//! `rsa` crate only to *generate* RSA keys, which ring cannot do).

use rcgen::{KeyPair, SignatureAlgorithm};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use rsa::rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::ca::CaError;
use crate::secret::PrivateKeyPem;

/// Key types the CA can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (default; what the devices use).
    #[default]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048, PKCS#1 v1.5 with SHA-256 (legacy firmware).
    Rsa2048,
}

impl KeyAlgorithm {
    /// Short description for logs ("ECDSA P-256", "RSA 2048").
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA P-256",
            KeyAlgorithm::EcdsaP384 => "ECDSA P-384",
            KeyAlgorithm::Rsa2048 => "RSA 2048",
        }
    }

    pub(crate) fn is_rsa(self) -> bool {
        matches!(self, KeyAlgorithm::Rsa2048)
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `rand_core` adapter over ring's system RNG, for the `rsa` crate.
pub(crate) struct SystemRng(ring::rand::SystemRandom);

impl SystemRng {
    pub(crate) fn new() -> Self {
        SystemRng(ring::rand::SystemRandom::new())
    }
}

impl RngCore for SystemRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        use ring::rand::SecureRandom;
        self.0
            .fill(dest)
            .expect("the operating system's random number generator failed");
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for SystemRng {}

/// Generates a key pair; also returns it as PKCS#8 PEM.
pub(crate) fn generate(alg: KeyAlgorithm) -> Result<(KeyPair, PrivateKeyPem), CaError> {
    let key = match alg {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyAlgorithm::Rsa2048 => return generate_rsa(2048, &rcgen::PKCS_RSA_SHA256),
    }
    .map_err(|e| CaError::KeyGeneration {
        reason: e.to_string(),
    })?;
    let pem = PrivateKeyPem::new(key.serialize_pem());
    Ok((key, pem))
}

fn generate_rsa(
    bits: usize,
    alg: &'static SignatureAlgorithm,
) -> Result<(KeyPair, PrivateKeyPem), CaError> {
    let fail = |reason: String| CaError::KeyGeneration { reason };
    let private = rsa::RsaPrivateKey::new(&mut SystemRng::new(), bits)
        .map_err(|e| fail(format!("RSA {bits}: {e}")))?;
    let pkcs8 = private
        .to_pkcs8_der()
        .map_err(|e| fail(format!("RSA {bits} PKCS#8 encoding: {e}")))?;
    let der = Zeroizing::new(pkcs8.as_bytes().to_vec());
    let key = KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), alg)
        .map_err(|e| fail(format!("RSA {bits} key rejected by ring: {e}")))?;
    let pem = PrivateKeyPem::new(key.serialize_pem());
    Ok((key, pem))
}

/// Loads a private key from PEM: PKCS#8 (`PRIVATE KEY`: ECDSA P-256/P-384,
/// RSA, Ed25519) or PKCS#1 (`RSA PRIVATE KEY`).
pub(crate) fn load_pem(key_pem: &str) -> Result<KeyPair, CaError> {
    let block = pem::parse(key_pem).map_err(|e| CaError::InvalidKey {
        reason: format!("not a PEM private key: {e}"),
    })?;
    let label = block.tag().to_owned();
    let der = Zeroizing::new(block.into_contents());
    match label.as_str() {
        "PRIVATE KEY" => KeyPair::try_from(der.as_slice()).map_err(|e| CaError::InvalidKey {
            reason: format!(
                "PKCS#8 key not usable (ECDSA P-256/P-384, RSA or Ed25519 expected): {e}"
            ),
        }),
        "RSA PRIVATE KEY" => {
            let private =
                rsa::RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| CaError::InvalidKey {
                    reason: format!("PKCS#1 RSA key: {e}"),
                })?;
            let pkcs8 = private.to_pkcs8_der().map_err(|e| CaError::InvalidKey {
                reason: format!("PKCS#1 RSA key: {e}"),
            })?;
            KeyPair::try_from(pkcs8.as_bytes()).map_err(|e| CaError::InvalidKey {
                reason: format!("RSA key rejected by ring (2048..8192 bits supported): {e}"),
            })
        }
        other => Err(CaError::UnsupportedKeyFormat {
            label: other.to_owned(),
        }),
    }
}

/// Test helpers shared by the modules' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::OnceLock;

    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::traits::PublicKeyParts;

    use super::*;

    /// One RSA 2048 key per test run (generation is slow).
    pub(crate) fn rsa2048_pkcs8_pem() -> &'static str {
        static KEY: OnceLock<String> = OnceLock::new();
        KEY.get_or_init(|| {
            let (_, pem) = generate(KeyAlgorithm::Rsa2048).unwrap();
            pem.expose().to_owned()
        })
    }

    /// An RSA signer that also accepts keys ring refuses (e.g. 1024 bits),
    /// to build weak CSRs.
    pub(crate) struct WeakRsaSigner {
        key: rsa::RsaPrivateKey,
        public_der: Vec<u8>,
    }

    impl WeakRsaSigner {
        pub(crate) fn generate(bits: usize) -> Self {
            let key = rsa::RsaPrivateKey::new(&mut SystemRng::new(), bits).unwrap();
            let public_der = key
                .to_public_key()
                .to_pkcs1_der()
                .unwrap()
                .as_bytes()
                .to_vec();
            assert_eq!(key.size() * 8, bits);
            WeakRsaSigner { key, public_der }
        }
    }

    impl rcgen::PublicKeyData for WeakRsaSigner {
        fn der_bytes(&self) -> &[u8] {
            &self.public_der
        }
        fn algorithm(&self) -> &'static SignatureAlgorithm {
            &rcgen::PKCS_RSA_SHA256
        }
    }

    impl rcgen::SigningKey for WeakRsaSigner {
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
            // DigestInfo prefix for SHA-256 (RFC 8017, section 9.2, note 1).
            const PREFIX: [u8; 19] = [
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ];
            let digest = ring::digest::digest(&ring::digest::SHA256, msg);
            let scheme = rsa::Pkcs1v15Sign {
                hash_len: Some(32),
                prefix: PREFIX.to_vec().into_boxed_slice(),
            };
            self.key
                .sign(scheme, digest.as_ref())
                .map_err(|_| rcgen::Error::RingUnspecified)
        }
    }
}
