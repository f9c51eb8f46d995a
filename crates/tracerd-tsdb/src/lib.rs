//! tracerd-tsdb: an embedded time-series store for tracerd's metric history.
//!
//! Pure core: no clock and no I/O. Appends carry the sample time; retention runs when the
//! caller calls [`Store::prune`] with the current time. Series live in sharded `RwLock`s
//! (a lock covers one shard and is held for one series' append or read); each series keeps
//! sealed, immutable Gorilla chunks ([`chunk`]) and one open head chunk, sealed every
//! [`Config::chunk_samples`] samples. An inverted index ([`index`]) maps label pairs to series
//! for the four matchers. [`Store`] implements [`tracerd_promql::Queryable`].

pub mod bits;
pub mod chunk;
pub mod index;
pub mod store;

pub use store::{AppendError, Config, SeriesRef, Stats, Store};
