fn main() {
    // flash-sandbox's service, as its 0.1.1 wheel embeds it (the descriptor
    // recompiles byte-identical from this text).
    println!("cargo:rerun-if-changed=proto/sandbox.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .compile_protos(&["proto/sandbox.proto"], &["proto"])
        .expect("compile sandbox.proto (needs protoc: apt-get install protobuf-compiler)");
}
