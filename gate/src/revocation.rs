//! Live revocation, set up the same way in both shapes: the `[tls] crl`
//! file watched and verified against `[tls] ca`, or — with no CRL
//! configured — an empty set and one warning that says what that means.

use gatehouse_auth::{
    CrlError, CrlVerifier, CrlWatcher, RevocationHandle, RevocationSet, WatchOptions,
};
use gatehouse_config::TlsSettings;

/// Starts watching `[tls] crl`. The handle answers revocation checks; the
/// watcher (when there is a CRL) must be kept and stopped at shutdown.
pub fn start_revocation(
    tls: &TlsSettings,
) -> Result<(RevocationHandle, Option<CrlWatcher>), CrlError> {
    match &tls.crl {
        Some(path) => {
            let verifier = CrlVerifier::from_ca_file(&tls.ca)?;
            let watcher =
                CrlWatcher::start(path.clone(), verifier, WatchOptions::from_settings(tls))?;
            Ok((watcher.handle(), Some(watcher)))
        }
        None => {
            tracing::warn!(
                "[tls] crl is empty: revocation checks are DISABLED; revoked certificates are accepted. Set [tls] crl to the fleet's CRL file"
            );
            Ok((RevocationHandle::fixed(RevocationSet::empty()), None))
        }
    }
}
