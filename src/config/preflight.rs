//! What fails only at start, tried beforehand (`tracerd validate --bind`) and the state
//! directory check (`--state-dir`): blocking I/O, kept out of the pure validation. Every
//! probe releases what it took: a port is bound and closed, a probe file is created with
//! `O_EXCL` and removed; nothing else is written.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::{Address, Config, LogMode, Network, Problem};

/// Binds (and releases) every listener of `config`, checks every socket directory, log root
/// and the `state_dir` are writable, and that journald's socket exists for JournalMode
/// targets. Every failure is one problem with its key. Blocking.
pub fn preflight(config: &Config, state_dir: Option<&Path>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |key: String, message: String| {
        problems.push(Problem {
            key,
            line: None,
            message,
        })
    };
    let mut listeners: Vec<(String, Address)> = config
        .tracerd
        .native
        .accept_at
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("tracerd.native.acceptAt[{i}]"), a.clone()))
        .collect();
    if let Some(Network::AcceptAt(a)) = &config.network {
        listeners.push(("network.contents".to_string(), a.clone()));
    }
    for (key, ep) in [
        ("hasPrometheus", &config.has_prometheus),
        ("hasEKG", &config.has_ekg),
    ] {
        if let Some(ep) = ep {
            listeners.push((
                format!("{key}.epPort"),
                Address::Tcp {
                    host: ep.ep_host.clone(),
                    port: ep.ep_port,
                },
            ));
        }
    }
    for (key, addr) in listeners {
        if let Err(e) = try_listen(&addr) {
            problem(key, e);
        }
    }
    for (i, target) in config.logging.iter().enumerate() {
        match target.log_mode {
            LogMode::FileMode => {
                if let Err(e) = writable_dir(&target.log_root) {
                    problem(format!("logging[{i}].logRoot"), e);
                }
            }
            LogMode::JournalMode => {
                let socket = &config.tracerd.journal.socket;
                let ok = std::fs::metadata(socket).map(|m| m.file_type().is_socket());
                if !matches!(ok, Ok(true)) {
                    let why = match ok {
                        Ok(_) => "it is not a socket".to_string(),
                        Err(e) => e.to_string(),
                    };
                    problem(
                        format!("logging[{i}].logMode"),
                        format!(
                            "JournalMode needs journald's socket {} (tracerd.journal.socket): {why}",
                            socket.display()
                        ),
                    );
                }
            }
        }
    }
    if let Some(dir) = state_dir {
        if let Err(e) = writable_dir(dir) {
            problem("--state-dir".to_string(), e);
        }
    }
    problems
}

/// Binds `addr` and releases it at once. A Unix socket path is not bound (that would replace
/// a running daemon's socket): tracerd checks its directory is writable and that no process
/// answers on it.
fn try_listen(addr: &Address) -> Result<(), String> {
    match addr {
        Address::Tcp { host, port } => std::net::TcpListener::bind((host.as_str(), *port))
            .map(drop)
            .map_err(|e| format!("cannot bind {addr}: {e}")),
        Address::Unix(path) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "{} is in use: a running process accepts connections on it",
                    path.display()
                ));
            }
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dir.is_dir() {
                return Err(format!(
                    "the directory of socket {} does not exist",
                    path.display()
                ));
            }
            probe_write(&dir).map_err(|e| {
                format!(
                    "cannot create socket {} in {}: {e}",
                    path.display(),
                    dir.display()
                )
            })
        }
    }
}

/// Checks that tracerd could create `dir` (or it exists) and write in it, without creating
/// it: the nearest existing ancestor is probed.
pub fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    probe_write(existing).map_err(|e| format!("cannot write in {}: {e}", existing.display()))
}

/// Creates `dir` if missing and checks tracerd can write in it: `--state-dir` at start.
pub fn prepare_state_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    probe_write(dir).map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

/// Creates and removes a probe file in `dir` (`O_EXCL`, a name of its own).
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(format!(".tracerd-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)
}
