//! Integration tests: the real binary over real sockets and files.

mod forwarder;
mod ingest;
mod load;
mod support;
