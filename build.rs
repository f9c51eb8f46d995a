//! Compiles `proto/tracerd/v1/tracerd.proto` with protox (pure Rust, no `protoc` needed) and
//! generates the prost types into `OUT_DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/tracerd/v1/tracerd.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
