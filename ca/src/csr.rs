//! Certificate signing requests from devices: parsing, key policy and
//! self-signature verification.
//!
//! Key policy for device keys: RSA of 2048 to 8192 bits, or ECDSA on P-256.
//! P-384 and other curves, Ed25519 and everything else are refused with
//! [`CaError::CsrUnsupportedKey`]: the device firmware generates P-256 (or
//! RSA on legacy units), and the fleet's TLS profile is built around those.

use rcgen::{PublicKeyData, SignatureAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Error};
use x509_parser::public_key::RSAPublicKey;

use crate::ca::CaError;

/// Smallest RSA modulus accepted in a CSR.
pub const MIN_RSA_BITS: u32 = 2048;
/// Largest RSA modulus accepted (ring's verification limit).
pub const MAX_RSA_BITS: u32 = 8192;

/// What a valid CSR contains, for the provisioning API to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    /// `"ECDSA P-256"` or `"RSA <bits>"`.
    pub key_algorithm: String,
    /// Key size in bits (256 for P-256, the modulus length for RSA).
    pub bits: u32,
    /// The CN the device asked for. Informational only: signing ignores it.
    pub subject_cn: Option<String>,
}

/// A CSR whose self-signature verified and whose key passed the policy.
/// Only its public key is used for issuance; subject and requested
/// extensions are ignored.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    info: CsrInfo,
    key: CsrPublicKey,
}

#[derive(Debug, Clone)]
pub(crate) struct CsrPublicKey {
    /// The subjectPublicKey bits (EC point or PKCS#1 RSAPublicKey).
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl VerifiedCsr {
    /// Parses a PEM CSR (`CERTIFICATE REQUEST`), applies the key policy, then
    /// verifies the self-signature.
    pub fn from_pem(csr_pem: &str) -> Result<VerifiedCsr, CaError> {
        let block = pem::parse(csr_pem).map_err(|e| CaError::CsrMalformed {
            reason: format!("not PEM: {e}"),
        })?;
        if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
            return Err(CaError::CsrMalformed {
                reason: format!(
                    "PEM block is {:?}, expected \"CERTIFICATE REQUEST\"",
                    block.tag()
                ),
            });
        }
        Self::from_der(block.contents())
    }

    /// Same as [`VerifiedCsr::from_pem`] for DER input.
    pub fn from_der(der: &[u8]) -> Result<VerifiedCsr, CaError> {
        let (rest, csr) =
            X509CertificationRequest::from_der(der).map_err(|e| CaError::CsrMalformed {
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(CaError::CsrMalformed {
                reason: format!("{} unexpected bytes after the request", rest.len()),
            });
        }
        let cri = &csr.certification_request_info;
        let spki = &cri.subject_pki;
        let key_bits = spki.subject_public_key.data.as_ref();

        // Key policy first: a weak RSA key would otherwise surface as a
        // signature failure (ring refuses to verify with < 2048-bit keys).
        let (key_algorithm, bits, alg): (String, u32, &'static SignatureAlgorithm) =
            if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
                let (_, rsa) =
                    RSAPublicKey::from_der(key_bits).map_err(|_| CaError::CsrMalformed {
                        reason: "RSA public key does not parse".into(),
                    })?;
                let bits = modulus_bits(rsa.modulus);
                if bits < MIN_RSA_BITS {
                    return Err(CaError::CsrKeyTooWeak { bits });
                }
                if bits > MAX_RSA_BITS {
                    return Err(CaError::CsrUnsupportedKey {
                        algorithm: format!("RSA {bits} (more than {MAX_RSA_BITS} bits)"),
                    });
                }
                (format!("RSA {bits}"), bits, &rcgen::PKCS_RSA_SHA256)
            } else if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .ok_or_else(|| CaError::CsrMalformed {
                        reason: "EC public key without a named curve".into(),
                    })?;
                if curve == OID_EC_P256 {
                    if key_bits.len() != 65 || key_bits[0] != 0x04 {
                        return Err(CaError::CsrMalformed {
                            reason: "P-256 public key is not an uncompressed point".into(),
                        });
                    }
                    (
                        "ECDSA P-256".to_owned(),
                        256,
                        &rcgen::PKCS_ECDSA_P256_SHA256,
                    )
                } else if curve == OID_NIST_EC_P384 {
                    return Err(CaError::CsrUnsupportedKey {
                        algorithm: "ECDSA P-384".into(),
                    });
                } else {
                    return Err(CaError::CsrUnsupportedKey {
                        algorithm: format!("ECDSA on curve {}", curve.to_id_string()),
                    });
                }
            } else if spki.algorithm.algorithm == OID_SIG_ED25519 {
                return Err(CaError::CsrUnsupportedKey {
                    algorithm: "Ed25519".into(),
                });
            } else {
                return Err(CaError::CsrUnsupportedKey {
                    algorithm: format!("key type {}", spki.algorithm.algorithm.to_id_string()),
                });
            };

        match csr.verify_signature() {
            Ok(()) => {}
            Err(X509Error::SignatureUnsupportedAlgorithm) => {
                return Err(CaError::CsrUnsupportedSignature {
                    algorithm: csr.signature_algorithm.algorithm.to_id_string(),
                });
            }
            Err(_) => return Err(CaError::CsrBadSignature),
        }

        let subject_cn = cri
            .subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok(VerifiedCsr {
            info: CsrInfo {
                key_algorithm,
                bits,
                subject_cn,
            },
            key: CsrPublicKey {
                raw: key_bits.to_vec(),
                alg,
            },
        })
    }

    /// What the CSR contains.
    pub fn info(&self) -> &CsrInfo {
        &self.info
    }

    pub(crate) fn public_key(&self) -> &CsrPublicKey {
        &self.key
    }

    pub(crate) fn is_rsa(&self) -> bool {
        self.key.alg == &rcgen::PKCS_RSA_SHA256
    }
}

/// Validates a PEM CSR on arrival (parse, key policy, self-signature) and
/// describes it. Signing later repeats the checks.
pub fn validate_csr(csr_pem: &str) -> Result<CsrInfo, CaError> {
    VerifiedCsr::from_pem(csr_pem).map(|csr| csr.info)
}

fn modulus_bits(modulus: &[u8]) -> u32 {
    match modulus.iter().position(|&b| b != 0) {
        Some(i) => ((modulus.len() - i) * 8) as u32 - modulus[i].leading_zeros(),
        None => 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SigningKey};

    use super::*;
    use crate::keys::test_support::{WeakRsaSigner, rsa2048_pkcs8_pem};

    /// A CSR asking for CN "evil", a SAN and the serverAuth EKU.
    pub(crate) fn csr_pem(key: &impl SigningKey) -> String {
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "evil");
        dn.push(DnType::OrganizationalUnitName, "bootstrap");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn p256_and_rsa2048_are_accepted() {
        let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let info = validate_csr(&csr_pem(&p256)).unwrap();
        assert_eq!(
            info,
            CsrInfo {
                key_algorithm: "ECDSA P-256".into(),
                bits: 256,
                subject_cn: Some("evil".into()),
            }
        );
        let rsa = KeyPair::from_pem(rsa2048_pkcs8_pem()).unwrap();
        let info = validate_csr(&csr_pem(&rsa)).unwrap();
        assert_eq!(info.key_algorithm, "RSA 2048");
        assert_eq!(info.bits, 2048);
    }

    #[test]
    fn weak_rsa_is_too_weak() {
        let weak = WeakRsaSigner::generate(1024);
        match validate_csr(&csr_pem(&weak)) {
            Err(CaError::CsrKeyTooWeak { bits }) => assert_eq!(bits, 1024),
            other => panic!("expected CsrKeyTooWeak, got {other:?}"),
        }
    }

    #[test]
    fn p384_and_ed25519_are_unsupported() {
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        match validate_csr(&csr_pem(&p384)) {
            Err(CaError::CsrUnsupportedKey { algorithm }) => assert_eq!(algorithm, "ECDSA P-384"),
            other => panic!("expected CsrUnsupportedKey, got {other:?}"),
        }
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(matches!(
            validate_csr(&csr_pem(&ed)),
            Err(CaError::CsrUnsupportedKey { .. })
        ));
    }

    #[test]
    fn tampered_csr_has_a_bad_signature() {
        let key = KeyPair::generate().unwrap();
        let block = pem::parse(csr_pem(&key)).unwrap();
        let mut der = block.contents().to_vec();
        let pos = der.windows(4).position(|w| w == b"evil").unwrap();
        der[pos] = b'E';
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(matches!(
            validate_csr(&tampered),
            Err(CaError::CsrBadSignature)
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        let key = KeyPair::generate().unwrap();
        let der = pem::parse(csr_pem(&key)).unwrap().into_contents();
        for bad in [
            "".to_string(),
            "hello".to_string(),
            pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", b"junk".to_vec())),
            pem::encode(&pem::Pem::new(
                "CERTIFICATE REQUEST",
                der[..der.len() - 3].to_vec(),
            )),
            pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())),
        ] {
            assert!(
                matches!(validate_csr(&bad), Err(CaError::CsrMalformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn modulus_bit_length() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x01, 0x00]), 9);
        assert_eq!(modulus_bits(&[0x00]), 0);
    }
}
