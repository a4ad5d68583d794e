fn main() {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["proto/agent.proto"], &["proto"])
        .expect("compile agent.proto (needs protoc: apt-get install protobuf-compiler)");
}
