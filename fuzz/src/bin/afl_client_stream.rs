//! AFL entry point for the `client_stream` target (built by scripts/fuzz.sh).
#![forbid(unsafe_code)]

fn main() {
    afl::fuzz!(|data: &[u8]| {
        gatehouse_fuzz::client_stream(data);
    });
}
