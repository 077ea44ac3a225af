//! `gatehouse-ingest` (work in progress).
#![forbid(unsafe_code)]
