//! Integration tests: the real binary over real sockets and files.

mod architecture;
mod cardano;
mod cli;
mod config;
mod crash;
mod faults;
mod forwarder;
mod history;
mod history_e2e;
mod hostile_http;
mod hostile_ingest;
mod hostile_logs;
mod hostile_metrics;
mod http;
mod imports;
mod ingest;
mod load;
mod metric_names;
mod reforward;
mod rotation;
mod seccomp;
mod service;
mod shutdown;
mod support;
mod timeseries;
mod tools;
