//! Integration tests: the real binary over real sockets and files.

mod ingest;
mod support;
