//! The Kubernetes Gateway API (gateway.networking.k8s.io): GatewayClasses whose
//! `controllerName` is ours, their Gateways, the HTTPRoutes and GRPCRoutes attached to
//! them, and the ReferenceGrants that allow cross-namespace references. Read with
//! `--gateway-api`.
//!
//! `types` parses the objects, `hostnames` and `conditions` are the spec's small rules,
//! `translate` (pure) turns the objects into routes and the status each object should
//! show, and `status` writes the status that differs.
mod conditions;
mod emit;
mod grpc;
mod hostnames;
mod rule;
pub mod status;
mod translate;
mod types;

pub use translate::{translate, Context, StatusUpdate};
pub use types::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
