//! Test helpers: a minimal executor, store fixtures and identity builders.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use chrono::{DateTime, Utc};
use ferrohub_registry::{
    Authentication, ConnectionState, Device, DeviceStatus, ETag, MemoryStore, Module, SqliteStore,
    X509Thumbprints,
};
use ferrohub_types::{DeviceId, ModuleId};
use tempfile::TempDir;

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread, parking while it is pending.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// Polls a future once with a waker that does nothing.
pub(crate) fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// A memory store; the second value only mirrors [`sqlite`].
pub(crate) fn memory() -> (MemoryStore, Option<TempDir>) {
    (MemoryStore::new(), None)
}

/// A SQLite store in a fresh temporary directory, which must outlive the store.
pub(crate) fn sqlite() -> (SqliteStore, Option<TempDir>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("registry.db")).expect("open SQLite store");
    (store, Some(dir))
}

pub(crate) fn did(s: &str) -> DeviceId {
    DeviceId::new(s).expect("valid device id")
}

pub(crate) fn mid(s: &str) -> ModuleId {
    ModuleId::new(s).expect("valid module id")
}

pub(crate) fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
}

/// A key of `n` bytes, all `b`, in base64.
pub(crate) fn key(b: u8, n: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(vec![b; n])
}

/// A stored device document with the given version.
pub(crate) fn device(id: &str, version: u64) -> Device {
    Device {
        device_id: did(id),
        generation_id: "123456789012345678".to_owned(),
        version,
        etag: ETag::from_version(version),
        status: DeviceStatus::Enabled,
        status_reason: None,
        status_updated_time: None,
        connection_state: ConnectionState::Disconnected,
        connection_state_updated_time: None,
        last_activity_time: None,
        cloud_to_device_message_count: 0,
        authentication: Authentication::sas(key(1, 32), key(2, 32)),
        iot_edge: false,
        device_scope: None,
        parent_scopes: Vec::new(),
    }
}

/// A device document with every optional field set.
pub(crate) fn full_device(id: &str) -> Device {
    Device {
        status: DeviceStatus::Disabled,
        status_reason: Some("maintenance — überholt".to_owned()),
        status_updated_time: Some(at(1)),
        connection_state: ConnectionState::Connected,
        connection_state_updated_time: Some(at(2)),
        last_activity_time: Some(at(3)),
        cloud_to_device_message_count: 7,
        authentication: Authentication {
            kind: ferrohub_registry::AuthType::SelfSigned,
            symmetric_key: None,
            x509_thumbprint: X509Thumbprints {
                primary_thumbprint: Some("ab".repeat(20)),
                secondary_thumbprint: Some("CD".repeat(32)),
            },
        },
        iot_edge: true,
        device_scope: Some("ms-azure-iot-edge://edge-1".to_owned()),
        parent_scopes: vec!["ms-azure-iot-edge://parent-1".to_owned()],
        ..device(id, 3)
    }
}

/// A stored module document with the given version.
pub(crate) fn module(d: &str, m: &str, version: u64) -> Module {
    Module {
        device_id: did(d),
        module_id: mid(m),
        generation_id: "876543210987654321".to_owned(),
        version,
        etag: ETag::from_version(version),
        managed_by: None,
        connection_state: ConnectionState::Disconnected,
        connection_state_updated_time: None,
        last_activity_time: None,
        cloud_to_device_message_count: 0,
        authentication: Authentication::sas(key(3, 32), key(4, 32)),
    }
}
