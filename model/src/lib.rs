//! The resource model shared by every binary: APISIX-compatible types, their validation,
//! and the etcd key layout. No IO lives here, so every rule is unit-testable.
#![forbid(unsafe_code)]

pub mod calendar;
pub mod checks;
pub mod cluster;
pub mod codec;
pub mod consumer;
pub mod credential;
pub mod duration;
pub mod error;
pub mod host;
pub mod id;
pub mod key;
pub mod keyring;
pub mod path;
pub mod pem;
pub mod plugin_config;
pub mod plugin_metadata;
pub mod plugins;
pub mod route;
pub mod service;
pub mod ssl;
pub mod timeout;
pub mod upstream;
pub mod vars;

pub use codec::{decode, Resource};
pub use consumer::Consumer;
pub use credential::Credential;
pub use error::ValidationError;
pub use id::Id;
pub use key::Kind;
pub use keyring::Keyring;
pub use plugin_config::{ConsumerGroup, GlobalRule, PluginConfig};
pub use plugin_metadata::PluginMetadata;
pub use route::Route;
pub use service::Service;
pub use ssl::Ssl;
pub use upstream::Upstream;
