//! Secret material wrappers: private keys never reach logs, `Debug` output or
//! error messages.

use std::fmt;

use zeroize::Zeroizing;

/// A PEM-encoded private key (PKCS#8 `PRIVATE KEY` block).
///
/// The text is wiped from memory when the value is dropped, and `Debug`
/// prints `PrivateKeyPem(<redacted>)`. There is deliberately no `Display`:
/// call [`PrivateKeyPem::expose`] at the single place that must write the key
/// out (a file with mode 0600, an HTTP response handed to a device once).
#[derive(Clone)]
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// Wraps PEM text. The `String` is moved in, so no unwiped copy remains
    /// in the caller.
    pub fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    /// The PEM text. Keep the borrow short and never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

impl From<String> for PrivateKeyPem {
    fn from(pem: String) -> Self {
        Self::new(pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_expose_returns_text() {
        let key = PrivateKeyPem::new(
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n".to_owned(),
        );
        let dbg = format!("{key:?}");
        assert_eq!(dbg, "PrivateKeyPem(<redacted>)");
        assert!(!dbg.contains("PRIVATE KEY"));
        assert!(key.expose().contains("c2VjcmV0"));
        let dbg_opt = format!("{:?}", Some(key.clone()));
        assert!(!dbg_opt.contains("c2VjcmV0"));
    }
}
