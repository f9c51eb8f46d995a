//! Integration tests: the real binary over real sockets and files.

mod http;
mod ingest;
mod support;
