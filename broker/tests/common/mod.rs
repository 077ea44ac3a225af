//! Shared bits of the end-to-end tests: the built `gatehouse` binary.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::time::Duration;

pub const SHORT: Duration = Duration::from_millis(700);
pub const LONG: Duration = Duration::from_secs(10);

/// The `gatehouse` binary cargo built for these tests.
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_gatehouse"))
}

/// Config that lets several connections of one gateway certificate use
/// different client ids (the default requires client id = CN).
pub const ANY_CLIENT_ID: &str = "[identity]\noperational_client_id = \"any\"\n";
