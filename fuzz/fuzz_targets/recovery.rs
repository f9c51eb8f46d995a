//! Fuzz target: crash recovery over arbitrary checkpoint and log-file contents never panics,
//! only ever cuts a file back (never grows or rewrites it), never claims more objects past
//! the checkpoint than there are complete lines on disk, and never touches a file outside the
//! node directory, even through a planted symlink (issue 12, points 2 and 4).
#![no_main]

use std::fs;

use libfuzzer_sys::fuzz_target;
use tracerd::logs::recovery::{recover, TargetDir, STATE_FILE};

const FILE: &str = "node-2026-07-22T10-06-52.json";
const PLANTED: &str = "node-2099-01-01T00-00-00.json";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (checkpoint, log) = match rest.iter().position(|b| *b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("root").join("node");
    fs::create_dir_all(&dir).unwrap();
    let victim = tmp.path().join("victim.json");
    let victim_bytes = b"{\"outside\":1}\n{\"outside\":2}\n{\"outside\":3}\n".to_vec();
    fs::write(&victim, &victim_bytes).unwrap();
    if flags & 1 != 0 {
        std::os::unix::fs::symlink(&victim, dir.join(PLANTED)).unwrap();
    }
    if flags & 2 != 0 {
        std::os::unix::fs::symlink(&victim, dir.join(STATE_FILE)).unwrap();
    } else {
        // A checkpoint shaped like the real one, with fuzzed numbers, or raw bytes.
        let text = if flags & 4 != 0 {
            let n = u64::from_le_bytes(checkpoint.iter().copied().chain([0; 8]).take(8).collect::<Vec<_>>().try_into().unwrap());
            format!("{{\"seq\":{},\"files\":[[\"{FILE}\",{}]]}}", n >> 8, n & 0xff)
                .into_bytes()
        } else {
            checkpoint.to_vec()
        };
        fs::write(dir.join(STATE_FILE), text).unwrap();
    }
    fs::write(dir.join(FILE), log).unwrap();

    let r = recover(&[TargetDir { dir: dir.clone(), ext: "json" }]);

    assert_eq!(fs::read(&victim).unwrap(), victim_bytes, "recovery touched a file outside the root");
    // A file cut back to nothing may be removed (no empty log files).
    let after = match fs::read(dir.join(FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{e}"),
    };
    assert!(log.starts_with(&after), "recovery rewrote or grew the log file");
    assert_eq!(r.cut_bytes, (log.len() - after.len()) as u64);
    if let Some(persisted) = r.persisted {
        // Parse the checkpoint the way a reader would; recovery may claim at most its seq
        // plus the complete lines past its recorded position.
        let cp: serde_json::Value = serde_json::from_slice(
            fs::read(dir.join(STATE_FILE)).unwrap().trim_ascii_end(),
        )
        .unwrap_or(serde_json::Value::Null);
        let seq = cp["seq"].as_u64().expect("a claim comes from a readable checkpoint");
        let pos = cp["files"][0][1].as_u64().unwrap_or(0) as usize;
        let lines = log.get(pos..).map_or(0, |t| t.iter().filter(|b| **b == b'\n').count());
        assert!(persisted >= seq && persisted - seq <= lines as u64, "claimed {persisted}, checkpoint {seq}, {lines} lines");
    }
});
