//! Generates the gRPC code from the proto with protox (pure Rust), so no
//! `protoc` has to be installed anywhere.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "bifrost/sidecar/v1/sidecar.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        // The platform's ingest implements the server side; the sidecar
        // binary links only the client (LTO drops the rest).
        .build_server(true)
        // No tonic `transport` in the sidecar: it brings its own client.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
