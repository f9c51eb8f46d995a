//! Compiles `proto/tracerd/v1/tracerd.proto` (at the workspace root, `../../proto`) with protox
//! (pure Rust, no `protoc` needed) and generates the prost types into `OUT_DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../proto";
    let proto = "../../proto/tracerd/v1/tracerd.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], [root])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
