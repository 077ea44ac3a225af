//! AFL entry point for the `crl` target (built by scripts/fuzz.sh).
#![forbid(unsafe_code)]

fn main() {
    afl::fuzz!(|data: &[u8]| {
        gatehouse_fuzz::crl(data);
    });
}
