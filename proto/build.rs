//! Compiles cinta/v1/*.proto with protox (pure Rust, no protoc) into tonic
//! code, and keeps the encoded descriptor set for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["cinta/v1/agent.proto", "cinta/v1/console.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("cinta_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
