//! The running config: the effective config every task reads, with what is derived from it
//! (the log settings), in a `tokio::sync::watch` channel ([`Running`]). Sessions read the
//! current value when they start; a node's writer checks `has_changed` (one atomic load)
//! before each batch and picks up a new rotation policy; the janitor and the resource
//! reporter read it every pass. [`reload`] replaces it on SIGHUP.
//!
//! It sits above both `config` and `logs` (it holds a `LogSettings`), which is why it is not
//! part of `config`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use crate::config::{self, Config};
use crate::logs::LogSettings;

pub mod reload;

/// The running configuration and what is derived from it.
#[derive(Debug)]
pub struct Effective {
    /// The effective config (restart-only keys at their start-up values).
    pub config: Config,
    /// Log targets and rotation derived from `config`.
    pub logs: Arc<LogSettings>,
}

impl Effective {
    /// Derives the settings from a validated config.
    pub fn new(config: Config) -> Effective {
        let logs = Arc::new(LogSettings::from_config(&config));
        Effective { config, logs }
    }
}

/// The shared, replaceable effective config, and the facts of how tracerd was started that
/// every task may need (the state directory).
#[derive(Debug, Clone)]
pub struct Running {
    tx: Arc<watch::Sender<Arc<Effective>>>,
    state_dir: Arc<OnceLock<PathBuf>>,
}

impl Running {
    /// Starts with `config`.
    pub fn new(config: Config) -> Running {
        let (tx, _) = watch::channel(Arc::new(Effective::new(config)));
        Running {
            tx: Arc::new(tx),
            state_dir: Arc::default(),
        }
    }

    /// Records `--state-dir` (created and probed writable by `main`); set once at start,
    /// before any task runs. A second call is ignored and returns false.
    pub fn set_state_dir(&self, dir: PathBuf) -> bool {
        self.state_dir.set(dir).is_ok()
    }

    /// tracerd's own state directory (`--state-dir`), when one was given: where a feature
    /// keeps what belongs to no log directory.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.get().map(PathBuf::as_path)
    }

    /// The current effective config.
    pub fn current(&self) -> Arc<Effective> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every later replacement (`has_changed` is cheap).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Effective>> {
        self.tx.subscribe()
    }

    /// Replaces the effective config.
    pub fn publish(&self, config: Config) {
        self.tx.send_replace(Arc::new(Effective::new(config)));
    }
}

/// Emits the config event: the full effective config as JSON in the `config` field, at start
/// (`reason = "start"`) and after each applied reload (`reason = "reload"`). The payload,
/// saved to a file, is a valid config that reproduces the running behaviour.
pub fn emit_config_event(config: &Config, reason: &'static str) {
    tracing::info!(target: "tracerd::config", reason, config = %config::to_json(config),
        "effective config");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_publications() {
        let running = Running::new(Config::default());
        let mut rx = running.subscribe();
        assert!(!rx.has_changed().unwrap());
        running.publish(Config {
            verbosity: config::Verbosity::Minimum,
            ..Config::default()
        });
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            rx.borrow_and_update().config.verbosity,
            config::Verbosity::Minimum
        );
        assert_eq!(
            running.current().config.verbosity,
            config::Verbosity::Minimum
        );
    }
}
