//! Generates the gRPC test service (tests/proto/echo.proto) with protoc, which the
//! etcd-client build needs anyway.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/echo.proto")?;
    Ok(())
}
