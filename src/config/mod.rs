//! Configuration: the file format (cardano-tracer's keys plus a `tracerd` section), its
//! defaults, validation that reports every problem at once, and the running config.
//!
//! * `schema`: the types the file deserialises into ([`Config`] and its parts);
//! * `defaults`: the `DEFAULT_*` constants and `Default` impls (the embedded default config);
//! * [`Address`]: cardano-tracer's socket address syntax, re-exported from `tracerd_wire`;
//! * `probe`: the I/O validation needs (groups, `metricsHelp` files), gathered in one step
//!   into a [`Probe`];
//! * `validate`: pure validation of a parsed config against a [`Probe`] ([`Problem`]);
//! * `load`: read, parse, probe, validate ([`load`], [`parse`], [`Loaded`], [`LoadError`]);
//! * [`plan`]: the pure half of a reload: diff key by key, apply or report "needs restart".
//!
//! The running config (a `watch` channel) and the reload shell are `crate::running`.

mod defaults;
mod load;
pub mod plan;
mod probe;
mod schema;
mod validate;

pub use defaults::*;
pub use load::{load, parse, parse_probed, to_json, to_yaml, LoadError, Loaded, OBSOLETE_KEYS};
pub use probe::{probe, resolve_group, Probe};
pub use schema::*;
pub use tracerd_wire::Address;
pub use validate::Problem;

#[cfg(test)]
mod tests;
