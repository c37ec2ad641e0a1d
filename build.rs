//! Code generation for `comet-proto`.
//!
//! 1. Collects every `.proto` file under `proto/` (sorted, so the output is
//!    deterministic) and compiles them with protox, a pure-Rust protobuf
//!    compiler: no `protoc` binary is needed. The well-known types
//!    (`google/protobuf/*.proto`) are built into protox.
//! 2. Writes the encoded `FileDescriptorSet` (imports and source info
//!    included) to `$OUT_DIR/comet_descriptor.bin`; `src/lib.rs` embeds it as
//!    `FILE_DESCRIPTOR_SET` for gRPC reflection and for the golden tests.
//! 3. Feeds the same descriptor set to `tonic_prost_build` (`compile_fds`),
//!    which writes one `<package>.rs` per protobuf package into `$OUT_DIR`
//!    with the prost messages plus tonic clients and servers. Client modules
//!    are gated by the `client` feature and server modules by `server`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Directory holding the `.proto` sources; also the protox include root, so a
/// file's descriptor name is its path relative to it.
const PROTO_ROOT: &str = "proto";

/// Name of the descriptor-set file written into `OUT_DIR`.
const DESCRIPTOR_FILE: &str = "comet_descriptor.bin";

fn main() {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let proto_root = manifest_dir.join(PROTO_ROOT);

    let mut protos = Vec::new();
    collect_protos(&proto_root, &mut protos).expect("proto/ must be a readable directory tree");
    protos.sort();
    assert!(
        !protos.is_empty(),
        "no .proto files found under {}",
        proto_root.display()
    );

    let mut compiler =
        protox::Compiler::new([&proto_root]).expect("proto/ is a valid protox include directory");
    compiler.include_source_info(true).include_imports(true);
    if let Err(err) = compiler.open_files(&protos) {
        // protox errors render as a diagnostic with file, line and column.
        panic!("failed to compile the .proto files:\n{err:?}");
    }

    fs::write(
        out_dir.join(DESCRIPTOR_FILE),
        compiler.encode_file_descriptor_set(),
    )
    .expect("OUT_DIR is writable");

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .client_mod_attribute(".", r#"#[cfg(feature = "client")]"#)
        .server_mod_attribute(".", r#"#[cfg(feature = "server")]"#)
        // Message bodies can be large: decode them into `bytes::Bytes` so the
        // server can slice the request buffer instead of copying it.
        .bytes(".apache.rocketmq.v2.Message.body")
        .compile_fds(compiler.file_descriptor_set())
        .expect("tonic-prost-build code generation succeeds");
}

/// Appends every `*.proto` file below `dir` (recursively) to `out`.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
