fn main() {
    // boxd's service: the union of its first SDK's (0.1.5.dev25) and its
    // latest's (0.2.19) protos, field numbers unchanged between them, so
    // one server speaks both. RPCs Paddock does not serve answer
    // UNIMPLEMENTED (default stubs).
    println!("cargo:rerun-if-changed=proto/boxd.proto");
    tonic_prost_build::configure()
        // The client: `paddock bench --only boxd` speaks the dialect.
        .build_client(true)
        .generate_default_stubs(true)
        .compile_protos(&["proto/boxd.proto"], &["proto"])
        .expect("compile boxd.proto (needs protoc: apt-get install protobuf-compiler)");
}
