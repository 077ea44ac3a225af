//! AFL entry point for the `crl` target (built by scripts/fuzz.sh).
#![forbid(unsafe_code)]

fn main() {
    // Generate the CA before the persistent loop, so its one-time setup is
    // not part of the first input's coverage (keeps AFL's stability high).
    gatehouse_fuzz::fuzz_ca();
    afl::fuzz!(|data: &[u8]| {
        gatehouse_fuzz::crl(data);
    });
}
