//! AFL entry point for the `config` target (built by scripts/fuzz.sh).
#![forbid(unsafe_code)]

fn main() {
    afl::fuzz!(|data: &[u8]| {
        gatehouse_fuzz::config(data);
    });
}
