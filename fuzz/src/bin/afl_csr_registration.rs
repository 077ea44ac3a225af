//! AFL entry point for the `csr_registration` target (built by scripts/fuzz.sh).
#![forbid(unsafe_code)]

fn main() {
    afl::fuzz!(|data: &[u8]| {
        gatehouse_fuzz::csr_registration(data);
    });
}
