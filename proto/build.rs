fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc ships inside protoc-bin-vendored: builds need nothing but crates.io.
    // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure().bytes(".draco.v1").compile_protos(&["draco.proto"], &["."])?;
    println!("cargo:rerun-if-changed=draco.proto");
    Ok(())
}
