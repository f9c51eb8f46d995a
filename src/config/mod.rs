//! Configuration: the file format (cardano-tracer's keys plus a `tracerd` section), its
//! defaults, validation that reports every problem at once, and the running config.
//!
//! * `schema`: the types the file deserialises into ([`Config`] and its parts);
//! * `defaults`: the `DEFAULT_*` constants and `Default` impls (the embedded default config);
//! * [`Address`]: cardano-tracer's socket address syntax, re-exported from `tracerd_wire`;
//! * `probe`: the I/O validation needs (groups, `metricsHelp` files), gathered in one step
//!   into a [`Probe`];
//! * `shape`: the declared shape of every key (types, ranges, what `null` means) and the
//!   walker that reports every problem at once, with did-you-mean hints;
//! * `validate`: pure validation of a parsed config against a [`Probe`] ([`Problem`]);
//! * `preflight`: what fails only at start, tried beforehand (`validate --bind`), and the
//!   `--state-dir` check (blocking I/O);
//! * `load`: read, parse, probe, validate ([`load`], [`parse`], [`Loaded`], [`LoadError`]);
//! * [`forwarding`]: `hasForwarding` (re-forwarding) in upstream's syntax, parsed;
//! * [`plan`]: the pure half of a reload: diff key by key, apply or report "needs restart".
//!
//! The running config (a `watch` channel) and the reload shell are `crate::running`.

mod capture;
mod defaults;
pub mod durations;
pub mod forwarding;
mod load;
mod native_forward;
pub mod plan;
mod preflight;
mod probe;
mod schema;
mod shape;
mod ship;
mod validate;

pub use capture::*;
pub use defaults::*;
#[cfg(test)]
pub(crate) use load::parse_fragment;
pub use load::{
    add_lines, format_problems, load, parse, parse_probed, to_json, to_yaml, LoadError, Loaded,
};
pub use native_forward::*;
pub use preflight::{preflight, prepare_state_dir, writable_dir};
pub use probe::{probe, resolve_group, Probe};
pub use schema::*;
pub use shape::{numeric_keys, NumericKey, MAX_AGE_HOURS, MAX_TIMEOUT_SECS, OBSOLETE_KEYS};
pub use ship::*;
pub use tracerd_wire::Address;
pub use validate::Problem;

#[cfg(test)]
mod tests;
