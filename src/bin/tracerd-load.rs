//! `tracerd-load`, the node simulator (see `tracerd_sim::load`). The logic lives in the
//! `tracerd-sim` crate; this thin binary stays in the root package so that `cargo build
//! --bins` puts it beside `tracerd` (where `bench/` finds it) and the integration tests find
//! it as `CARGO_BIN_EXE_tracerd-load`.

fn main() -> anyhow::Result<()> {
    // The daemon's allocator setting: the generator frees its batches' buffers as often.
    tracerd::app::allocator::tune();
    tracerd_sim::load::main()
}
