//! The command line: validate, print-config, version, help.

use std::process::Command;

fn tracerd(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_lists_every_problem_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "networkMagic: 1\nrotaton: {}\nlogging: []\ntracerd:\n  limits: { queueBatches: 0 }\n",
    )
    .unwrap();
    let (code, _, err) = tracerd(&["validate", "-c", "bad.yaml"], dir.path());
    assert_eq!(code, 78, "{err}");
    for needle in [
        "bad.yaml:2: rotaton: unknown key; did you mean `rotation`?",
        "bad.yaml:3: logging: at least one log target",
        "bad.yaml:5: tracerd.limits.queueBatches: `queueBatches` must be an integer from 1 to 65536",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    std::fs::write(
        dir.path().join("good.yaml"),
        "networkMagic: 2\nnetwork: null\nlogging: [{ logRoot: l, logMode: FileMode, logFormat: ForHuman }]\n",
    )
    .unwrap();
    let (code, out, err) = tracerd(&["validate", "--config", "good.yaml"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("good.yaml: valid"));
    let (code, _, err) = tracerd(&["-c", "missing.yaml", "validate"], dir.path());
    assert_eq!(code, 78);
    assert!(
        err.contains("cannot read config file missing.yaml"),
        "{err}"
    );
}

#[test]
fn print_config_round_trips_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let compat =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cardano-tracer-compat.yaml");
    for args in [
        vec!["print-config"],
        vec!["print-config", "-c", compat.to_str().unwrap()],
    ] {
        let (code, printed, err) = tracerd(&args, dir.path());
        assert_eq!(code, 0, "{err}");
        assert!(printed.contains("networkMagic: 764824073"), "{printed}");
        std::fs::write(dir.path().join("printed.yaml"), &printed).unwrap();
        let (code, _, err) = tracerd(&["validate", "-c", "printed.yaml"], dir.path());
        assert_eq!(code, 0, "{err}");
        let (_, again, _) = tracerd(&["print-config", "-c", "printed.yaml"], dir.path());
        assert_eq!(again, printed);
    }
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = tracerd(&["--version"], dir.path());
    assert_eq!(
        (code, out.trim()),
        (0, concat!("tracerd ", env!("CARGO_PKG_VERSION")))
    );
    let (code, out, _) = tracerd(&["--help"], dir.path());
    assert_eq!(code, 0);
    for needle in ["--config", "--min-log-severity", "validate", "print-config"] {
        assert!(out.contains(needle), "{out}");
    }
}
