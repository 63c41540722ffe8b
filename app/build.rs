//! Hands `autopost replay` the protobuf descriptor set that temporalio-protos compiled, so proto3
//! JSON histories are decoded by the descriptors rather than by hand.
fn main() {
    let path = std::env::var("DEP_TEMPORALIO_PROTOS_DESCRIPTOR_PATH")
        .expect("temporalio-protos publishes its descriptor set (the vendored-protox feature is on)");
    println!("cargo:rerun-if-changed={path}");
    println!("cargo:rustc-env=TEMPORAL_DESCRIPTORS={path}");
}
