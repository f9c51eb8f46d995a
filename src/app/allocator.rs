//! glibc's two allocator thresholds, set by the process itself before any thread starts.
//!
//! Why: glibc starts with a 128 KiB trim threshold that it adjusts as large blocks come and
//! go, and trims every thread arena whose free top grows past it. tracerd frees a frame's
//! read buffer, its decoded objects and a Cardano reply's reassembly buffer every few
//! hundred microseconds, each up to a few hundred KiB; glibc handed those pages back to the
//! kernel (`madvise(MADV_DONTNEED)`) and the next frame faulted them in again, zeroed: 20,000
//! to 40,000 page faults per million objects, ~12 % of the Cardano path's CPU on the sixth
//! session's host (BENCHMARKS.md, "The allocator's trimming"). Fixed thresholds (which also
//! end glibc's adjustment) keep up to [`TRIM_THRESHOLD`] of free top per arena and serve
//! blocks below [`MMAP_THRESHOLD`] from the arenas: the faults fall to 250–330 per million at
//! half load and 840–2,200 on the Cardano path (seventh session), and an idle fleet's RSS does
//! not move (a few arenas × 8 MiB of address space, resident only as far as
//! it was used).
//!
//! The operator's own setting wins: with `glibc.malloc.trim_threshold` or
//! `glibc.malloc.mmap_threshold` in `GLIBC_TUNABLES`, or `MALLOC_TRIM_THRESHOLD_` /
//! `MALLOC_MMAP_THRESHOLD_` in the environment, nothing is changed ([`Choice::Operator`]).
//!
//! This is the workspace's one `unsafe` block (`unsafe_code` is denied everywhere else, and
//! `tests/it/architecture.rs` fails on a second `allow`): `mallopt(3)` is an FFI call with two
//! integers, no pointers, and glibc takes its own lock; it is made once, from `main`, before
//! the runtime's threads exist.

/// Free top an arena keeps before glibc hands it back to the kernel.
pub const TRIM_THRESHOLD: i32 = 8 << 20;
/// Blocks at least this large get a mapping of their own (and give it back when freed).
pub const MMAP_THRESHOLD: i32 = 1 << 20;

/// What [`tune`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Both thresholds set to this module's values.
    Set,
    /// The environment names a threshold: the operator's values stand.
    Operator,
    /// glibc refused a value, or this is not a glibc target: the allocator's defaults stand.
    Unavailable,
}

/// Whether the environment sets either threshold itself (`tunables`: `GLIBC_TUNABLES`;
/// `var`: any other variable by name).
pub fn operator_sets(tunables: Option<&str>, var: impl Fn(&str) -> bool) -> bool {
    let named = tunables.is_some_and(|t| {
        t.split(':').any(|item| {
            let name = item.split('=').next().unwrap_or("").trim();
            name == "glibc.malloc.trim_threshold" || name == "glibc.malloc.mmap_threshold"
        })
    });
    named || var("MALLOC_TRIM_THRESHOLD_") || var("MALLOC_MMAP_THRESHOLD_")
}

/// Sets the thresholds unless the environment does ([`operator_sets`]). Call it first thing
/// in `main`, before any thread is started.
pub fn tune() -> Choice {
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    if operator_sets(tunables.as_deref(), |v| std::env::var_os(v).is_some()) {
        return Choice::Operator;
    }
    set()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set() -> Choice {
    #[allow(unsafe_code)]
    // SAFETY: mallopt takes two integers and changes only the allocator's parameters, under
    // glibc's own arena lock; it returns 0 for a value it refuses, which is reported.
    let ok = unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    };
    if ok {
        Choice::Set
    } else {
        Choice::Unavailable
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set() -> Choice {
    Choice::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_setting_wins_whichever_way_it_is_given() {
        let none = |_: &str| false;
        assert!(!operator_sets(None, none));
        assert!(!operator_sets(Some(""), none));
        assert!(!operator_sets(Some("glibc.malloc.arena_max=2"), none));
        assert!(!operator_sets(
            Some("glibc.malloc.trim_threshold_x=1"),
            none
        ));
        assert!(operator_sets(Some("glibc.malloc.trim_threshold=1"), none));
        assert!(operator_sets(
            Some("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=65536"),
            none
        ));
        assert!(operator_sets(None, |v| v == "MALLOC_TRIM_THRESHOLD_"));
        assert!(operator_sets(None, |v| v == "MALLOC_MMAP_THRESHOLD_"));
        assert!(!operator_sets(None, |v| v == "MALLOC_ARENA_MAX"));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_both_values() {
        assert_eq!(set(), Choice::Set);
    }
}
