//! What a hub node shares with the other nodes of a cluster, behind two traits the cluster
//! engines implement (`ferrohub-cluster`) and the embedded mode does without:
//!
//! * [`SharedSettings`]: small named values every node must agree on — the shared access
//!   policies and the development CA. The first node to start on an empty store offers its
//!   own; every later node takes what is stored (see [`share_files`]).
//! * [`Coordinator`]: how nodes tell each other what happens on one of them and concerns a
//!   connection on another — an identity connected (the older connection elsewhere closes), an
//!   identity changed in the registry (caches refresh, revoked connections close), a
//!   cloud-to-device message was queued, a desired-property patch was written, an Event Hubs
//!   owner-level receiver attached or went away — and how a
//!   direct method call reaches the node that holds the device's connection.
//!
//! The embedded hub uses [`LocalCoordinator`], which does nothing: with one process, the
//! in-process paths already cover every case.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A boxed, sendable future (the traits here are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Named values every node of a cluster shares, written once.
pub trait SharedSettings: Send + Sync + 'static {
    /// The value stored under `name`, if any.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>>;

    /// Stores `value` under `name` unless a value is there already, and returns the stored
    /// value (the given one, or the one that was there first).
    fn put_if_absent<'a>(
        &'a self,
        name: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, String>>;
}

/// Something one node tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ClusterEvent {
    /// An identity connected on `node` at `at_ms` (Unix milliseconds): every other node closes
    /// its connection of that identity, if it is older.
    #[serde(rename_all = "camelCase")]
    Connected {
        /// The node that holds the new connection.
        node: String,
        /// The device.
        device: String,
        /// The module, for a module identity.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        module: Option<String>,
        /// When it connected.
        at_ms: i64,
    },
    /// An identity's connection to `node` ended at `at_ms`.
    #[serde(rename_all = "camelCase")]
    Disconnected {
        /// The node that held the connection.
        node: String,
        /// The device.
        device: String,
        /// The module, for a module identity.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        module: Option<String>,
        /// When it ended.
        at_ms: i64,
    },
    /// A device or one of its modules changed in the registry: re-read it.
    #[serde(rename_all = "camelCase")]
    IdentityChanged {
        /// The device.
        device: String,
    },
    /// Changes may have been missed (the change feed was interrupted): re-read every identity.
    Resync,
    /// The consumer groups or their checkpoints changed: re-read them.
    GroupsChanged,
    /// A cloud-to-device message was queued for `device`.
    #[serde(rename_all = "camelCase")]
    C2dQueued {
        /// The device.
        device: String,
    },
    /// The desired properties of an identity changed: its subscribed connection gets `body`.
    #[serde(rename_all = "camelCase")]
    DesiredPatch {
        /// The device.
        device: String,
        /// The module, for a module identity.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        module: Option<String>,
        /// The new desired version.
        version: u64,
        /// The notification body (JSON text).
        body: String,
    },
    /// An Event Hubs receiver with owner level (epoch) `epoch` attached on `node` to
    /// `partition` of consumer group `group` (lowercase): every other node detaches its
    /// receivers of that partition with a lower or equal level or none, and refuses lower
    /// ones while it holds the partition.
    #[serde(rename_all = "camelCase")]
    ReceiverOwner {
        /// The node that holds the receiver.
        node: String,
        /// The consumer group (lowercase).
        group: String,
        /// The partition.
        partition: u32,
        /// The receiver's owner level.
        epoch: i64,
    },
    /// The owner-level receiver announced by a [`ClusterEvent::ReceiverOwner`] is gone.
    #[serde(rename_all = "camelCase")]
    ReceiverOwnerGone {
        /// The node that held the receiver.
        node: String,
        /// The consumer group (lowercase).
        group: String,
        /// The partition.
        partition: u32,
        /// The receiver's owner level.
        epoch: i64,
    },
}

/// A direct method call for an identity connected to another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodRequest {
    /// The device.
    pub device: String,
    /// The module, for a module identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The method's name.
    pub method_name: String,
    /// The request body as the device gets it (JSON text).
    pub payload: String,
    /// How long the node may wait for the device to subscribe, in seconds.
    pub connect_timeout_secs: u64,
    /// How long the node may wait for the device's answer, in seconds.
    pub response_timeout_secs: u64,
}

/// What the node that holds the connection answers to a [`MethodRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MethodReply {
    /// The device answered.
    #[serde(rename_all = "camelCase")]
    Answer {
        /// The device's status.
        status: i32,
        /// The device's payload (JSON text).
        payload: String,
    },
    /// The call failed with an Azure error.
    #[serde(rename_all = "camelCase")]
    Error {
        /// Azure's error code number.
        code: u32,
        /// The message.
        message: String,
    },
}

/// What a node does with what other nodes tell it; the hub implements it.
pub trait ClusterHandler: Send + Sync + 'static {
    /// Another node told `event` (or the change feed reported it).
    fn on_event(&self, event: ClusterEvent) -> BoxFuture<'_, ()>;

    /// A method call for an identity, from another node: `None` when no connection of the
    /// identity is on this node (another node answers).
    fn on_method(&self, request: MethodRequest) -> BoxFuture<'_, Option<MethodReply>>;
}

/// How nodes reach each other. See the module documentation.
pub trait Coordinator: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> &str;

    /// Whether other nodes may exist (false for the embedded hub: nothing to tell or ask).
    fn is_clustered(&self) -> bool;

    /// Starts handing what other nodes tell to `handler`. Called once, when the hub is built.
    fn attach(&self, handler: Arc<dyn ClusterHandler>);

    /// Tells every other node `event`, in the order of the calls; never waits.
    fn publish(&self, event: ClusterEvent);

    /// Asks the node that holds the identity's connection to run `request`; `None` when no
    /// node answered within the request's timeouts.
    fn call_method(&self, request: MethodRequest) -> BoxFuture<'_, Option<MethodReply>>;

    /// Whether the coordinator can reach the other nodes now: `Err` says what is failing.
    fn health(&self) -> Result<(), String>;

    /// Which engines the node reaches now, each on its own (the fence of a cluster node
    /// watches them, see [`crate::fence`]).
    fn engines(&self) -> crate::fence::EngineHealth {
        let ok = self.health().is_ok();
        crate::fence::EngineHealth {
            nats: ok,
            postgres: ok,
        }
    }
}

/// The embedded hub's coordinator: one node, nothing to coordinate.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalCoordinator;

impl Coordinator for LocalCoordinator {
    fn node(&self) -> &str {
        "local"
    }

    fn is_clustered(&self) -> bool {
        false
    }

    fn attach(&self, _handler: Arc<dyn ClusterHandler>) {}

    fn publish(&self, _event: ClusterEvent) {}

    fn call_method(&self, _request: MethodRequest) -> BoxFuture<'_, Option<MethodReply>> {
        Box::pin(async { None })
    }

    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The files in the data directory that every node shares, by their name in
/// [`SharedSettings`]: the shared access policies always, the development CA unless the
/// configuration names its own certificate.
fn shared_files(own_certificate: bool) -> Vec<(&'static str, &'static str)> {
    let mut files = vec![("policies.json", "policies.json")];
    if !own_certificate {
        files.push(("tls/ca.pem", "tls/ca.pem"));
        files.push(("tls/ca.key", "tls/ca.key"));
    }
    files
}

/// Why the shared settings could not be agreed on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShareError {
    /// The shared store failed.
    #[error("the cluster's shared settings: {0}")]
    Store(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Step one of agreeing on the shared files: writes every stored value into `data_dir`
/// (replacing what a node made for itself), so that preparing the policies and TLS afterwards
/// loads them instead of generating new ones. A new CA makes the node issue itself a new
/// server certificate.
pub(crate) async fn fetch_shared(
    data_dir: &Path,
    settings: &dyn SharedSettings,
    own_certificate: bool,
) -> Result<(), ShareError> {
    for (name, file) in shared_files(own_certificate) {
        if let Some(value) = settings.get(name).await.map_err(ShareError::Store)? {
            write_shared(data_dir, file, &value)?;
        }
    }
    Ok(())
}

/// Step two, after the node prepared its policies and TLS: offers its files for the values
/// the store does not have yet (the first node of a cluster), and takes the stored ones where
/// another node was first. Returns whether a local file changed (then the node prepares
/// again).
pub(crate) async fn offer_shared(
    data_dir: &Path,
    settings: &dyn SharedSettings,
    own_certificate: bool,
) -> Result<bool, ShareError> {
    let mut changed = false;
    for (name, file) in shared_files(own_certificate) {
        let path = data_dir.join(file);
        let local = std::fs::read(&path).map_err(|source| ShareError::Io {
            path: path.clone(),
            source,
        })?;
        let stored = settings
            .put_if_absent(name, local.clone())
            .await
            .map_err(ShareError::Store)?;
        if stored != local {
            changed |= write_shared(data_dir, file, &stored)?;
        }
    }
    Ok(changed)
}

/// Writes a shared value to its file unless it holds it already; returns whether it wrote.
fn write_shared(data_dir: &Path, file: &str, value: &[u8]) -> Result<bool, ShareError> {
    let path = data_dir.join(file);
    if std::fs::read(&path).is_ok_and(|old| old == value) {
        return Ok(false);
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ShareError::Io { path, source }
    };
    if let Some(dir) = path.parent() {
        crate::fsutil::create_dir_durably(dir).map_err(io(dir))?;
    }
    let private = file.ends_with(".key") || file == "policies.json";
    crate::fsutil::write_durably(&path, value, private).map_err(io(&path))?;
    if file.starts_with("tls/ca.") {
        // The server certificate was issued by another CA: issue a new one.
        let _ = std::fs::remove_file(data_dir.join("tls/server.names"));
    }
    tracing::info!(file = %path.display(), "took the cluster's shared value");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct MemorySettings(Mutex<HashMap<String, Vec<u8>>>);

    impl SharedSettings for MemorySettings {
        fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
            let v = self.0.lock().ok().and_then(|m| m.get(name).cloned());
            Box::pin(async move { Ok(v) })
        }

        fn put_if_absent<'a>(
            &'a self,
            name: &'a str,
            value: Vec<u8>,
        ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
            let v = self
                .0
                .lock()
                .map(|mut m| m.entry(name.to_owned()).or_insert(value).clone())
                .map_err(|e| e.to_string());
            Box::pin(async move { v })
        }
    }

    #[tokio::test]
    async fn the_first_node_offers_and_the_next_takes() {
        let settings = MemorySettings::default();
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        for dir in [a.path(), b.path()] {
            std::fs::create_dir_all(dir.join("tls")).expect("mkdir");
        }
        std::fs::write(a.path().join("policies.json"), b"A").expect("write");
        std::fs::write(a.path().join("tls/ca.pem"), b"ca A").expect("write");
        std::fs::write(a.path().join("tls/ca.key"), b"key A").expect("write");
        fetch_shared(a.path(), &settings, false)
            .await
            .expect("nothing stored yet");
        assert!(
            !offer_shared(a.path(), &settings, false)
                .await
                .expect("offered")
        );

        // The second node made its own files before it saw the stored ones.
        std::fs::write(b.path().join("policies.json"), b"B").expect("write");
        std::fs::write(b.path().join("tls/ca.pem"), b"ca B").expect("write");
        std::fs::write(b.path().join("tls/ca.key"), b"key B").expect("write");
        std::fs::write(b.path().join("tls/server.names"), b"x").expect("write");
        assert!(
            offer_shared(b.path(), &settings, false)
                .await
                .expect("taken")
        );
        assert_eq!(
            std::fs::read(b.path().join("policies.json")).expect("read"),
            b"A"
        );
        assert_eq!(
            std::fs::read(b.path().join("tls/ca.key")).expect("read"),
            b"key A"
        );
        assert!(
            !b.path().join("tls/server.names").exists(),
            "a new CA: a new server certificate"
        );

        // With its own certificate, a node shares the policies only.
        let c = tempfile::tempdir().expect("tempdir");
        fetch_shared(c.path(), &settings, true)
            .await
            .expect("fetched");
        assert!(c.path().join("policies.json").exists());
        assert!(!c.path().join("tls/ca.pem").exists());
    }
}
