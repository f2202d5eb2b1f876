//! Persistent MQTT sessions: the subscriptions of every identity that connected with
//! CleanSession=0, kept across reconnects and restarts (Microsoft's Python SDK never
//! subscribes again after a reconnect; azure-contract §4.5).
//!
//! SQLite in `<data_dir>/sessions.db`; writes are rare (a device subscribes once), so one
//! connection behind a mutex, used from blocking tasks, is enough. The client ids that have a
//! session are also kept in memory, so the common CONNECT (no stored session) needs no database
//! access at all.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use ferrohub_mqtt::{QoS, TopicFilter};
use rusqlite::{Connection, OptionalExtension, params};

/// Why the session store failed.
#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub(crate) struct SessionStoreError(String);

impl From<rusqlite::Error> for SessionStoreError {
    fn from(e: rusqlite::Error) -> Self {
        SessionStoreError(e.to_string())
    }
}

/// The stored sessions.
pub(crate) struct SessionStore {
    conn: Mutex<Connection>,
    /// The client ids that have a stored session; changed only while `conn` is held.
    known: Mutex<BTreeSet<String>>,
}

/// The key of an identity's session: its MQTT client id.
pub(crate) fn client_id(device: &str, module: Option<&str>) -> String {
    match module {
        Some(m) => format!("{device}/{m}"),
        None => device.to_owned(),
    }
}

impl SessionStore {
    /// Opens or creates the store.
    pub(crate) fn open(path: &Path) -> Result<SessionStore, SessionStoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sessions (
                client_id TEXT PRIMARY KEY,
                subscriptions TEXT NOT NULL
            )",
        )?;
        let known = conn
            .prepare("SELECT client_id FROM sessions")?
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<BTreeSet<_>, _>>()?;
        Ok(SessionStore {
            conn: Mutex::new(conn),
            known: Mutex::new(known),
        })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // The set is consistent after every statement that changes it.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `client_id` has a stored session (without touching the database).
    pub(crate) fn has(&self, client_id: &str) -> bool {
        self.known().contains(client_id)
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, SessionStoreError> {
        self.conn
            .lock()
            .map_err(|_| SessionStoreError("poisoned".into()))
    }

    /// The stored subscriptions of `client_id`, or `None` when it has no session.
    pub(crate) fn load(
        &self,
        client_id: &str,
    ) -> Result<Option<Vec<(TopicFilter, QoS)>>, SessionStoreError> {
        let text: Option<String> = self
            .conn()?
            .query_row(
                "SELECT subscriptions FROM sessions WHERE client_id = ?1",
                params![client_id],
                |row| row.get(0),
            )
            .optional()?;
        let Some(text) = text else {
            return Ok(None);
        };
        let raw: Vec<(String, u8)> = serde_json::from_str(&text)
            .map_err(|e| SessionStoreError(format!("damaged session of {client_id}: {e}")))?;
        let subs = raw
            .into_iter()
            .filter_map(|(f, q)| Some((TopicFilter::new(f).ok()?, QoS::from_u8(q)?)))
            .collect();
        Ok(Some(subs))
    }

    /// Stores (replaces) the session of `client_id`.
    pub(crate) fn save(
        &self,
        client_id: &str,
        subscriptions: &[(TopicFilter, QoS)],
    ) -> Result<(), SessionStoreError> {
        let raw: Vec<(&str, u8)> = subscriptions
            .iter()
            .map(|(f, q)| (f.as_str(), *q as u8))
            .collect();
        let text = serde_json::to_string(&raw).map_err(|e| SessionStoreError(e.to_string()))?;
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO sessions (client_id, subscriptions) VALUES (?1, ?2)
             ON CONFLICT(client_id) DO UPDATE SET subscriptions = excluded.subscriptions",
            params![client_id, text],
        )?;
        self.known().insert(client_id.to_owned());
        Ok(())
    }

    /// Forgets the session of `client_id`.
    pub(crate) fn delete(&self, client_id: &str) -> Result<(), SessionStoreError> {
        let conn = self.conn()?;
        conn.execute(
            "DELETE FROM sessions WHERE client_id = ?1",
            params![client_id],
        )?;
        self.known().remove(client_id);
        Ok(())
    }

    /// Forgets the sessions of `device` and of all its modules.
    pub(crate) fn delete_device(&self, device: &str) -> Result<(), SessionStoreError> {
        let prefix = format!("{device}/");
        let conn = self.conn()?;
        conn.execute(
            "DELETE FROM sessions WHERE client_id = ?1 OR substr(client_id, 1, length(?2)) = ?2",
            params![device, prefix],
        )?;
        let mut known = self.known();
        known.remove(device);
        let modules: Vec<String> = known
            .range(prefix.clone()..)
            .take_while(|cid| cid.starts_with(&prefix))
            .cloned()
            .collect();
        for cid in modules {
            known.remove(&cid);
        }
        Ok(())
    }
}

/// A stored session: its subscriptions as (topic filter, QoS) pairs.
pub type StoredSubscriptions = Vec<(String, u8)>;

/// Where the sessions of a cluster live (`ferrohub-cluster` keeps them in PostgreSQL), so a
/// device that reconnects to another node finds its subscriptions there. A session is the
/// list of its subscriptions as (topic filter, QoS) pairs.
pub trait SessionBackend: Send + Sync + 'static {
    /// The stored subscriptions of `client_id`, or `None` when it has no session.
    fn load<'a>(
        &'a self,
        client_id: &'a str,
    ) -> crate::cluster::BoxFuture<'a, Result<Option<StoredSubscriptions>, String>>;

    /// Stores (replaces) the session of `client_id`.
    fn save<'a>(
        &'a self,
        client_id: &'a str,
        subscriptions: StoredSubscriptions,
    ) -> crate::cluster::BoxFuture<'a, Result<(), String>>;

    /// Forgets the session of `client_id`.
    fn delete<'a>(
        &'a self,
        client_id: &'a str,
    ) -> crate::cluster::BoxFuture<'a, Result<(), String>>;

    /// Forgets the sessions of `device` and of all its modules.
    fn delete_device<'a>(
        &'a self,
        device: &'a str,
    ) -> crate::cluster::BoxFuture<'a, Result<(), String>>;
}

/// The hub's sessions: in the data directory ([`SessionStore`]), or shared by a cluster's
/// nodes.
#[derive(Clone)]
pub(crate) enum Sessions {
    /// SQLite in the data directory.
    Embedded(Arc<SessionStore>),
    /// A cluster's shared store.
    Shared(Arc<dyn SessionBackend>),
}

fn decode(subs: Vec<(String, u8)>) -> Vec<(TopicFilter, QoS)> {
    subs.into_iter()
        .filter_map(|(f, q)| Some((TopicFilter::new(f).ok()?, QoS::from_u8(q)?)))
        .collect()
}

impl Sessions {
    /// Whether `client_id` may have a stored session: `false` only when it certainly has none
    /// (the embedded store knows without reading the database).
    pub(crate) fn may_have(&self, client_id: &str) -> bool {
        match self {
            Sessions::Embedded(s) => s.has(client_id),
            Sessions::Shared(_) => true,
        }
    }

    /// The stored subscriptions of `client_id`, or `None` when it has no session.
    pub(crate) async fn load(
        &self,
        client_id: &str,
    ) -> Result<Option<Vec<(TopicFilter, QoS)>>, SessionStoreError> {
        match self {
            Sessions::Embedded(s) => {
                let store = s.clone();
                let cid = client_id.to_owned();
                tokio::task::spawn_blocking(move || store.load(&cid))
                    .await
                    .map_err(|e| SessionStoreError(e.to_string()))?
            }
            Sessions::Shared(b) => Ok(b
                .load(client_id)
                .await
                .map_err(SessionStoreError)?
                .map(decode)),
        }
    }

    /// Stores (replaces) the session of `client_id`.
    pub(crate) async fn save(
        &self,
        client_id: &str,
        subscriptions: Vec<(TopicFilter, QoS)>,
    ) -> Result<(), SessionStoreError> {
        match self {
            Sessions::Embedded(s) => {
                let store = s.clone();
                let cid = client_id.to_owned();
                tokio::task::spawn_blocking(move || store.save(&cid, &subscriptions))
                    .await
                    .map_err(|e| SessionStoreError(e.to_string()))?
            }
            Sessions::Shared(b) => {
                let raw = subscriptions
                    .iter()
                    .map(|(f, q)| (f.as_str().to_owned(), *q as u8))
                    .collect();
                b.save(client_id, raw).await.map_err(SessionStoreError)
            }
        }
    }

    /// Forgets the session of `client_id`.
    pub(crate) async fn delete(&self, client_id: &str) -> Result<(), SessionStoreError> {
        match self {
            Sessions::Embedded(s) => {
                let store = s.clone();
                let cid = client_id.to_owned();
                tokio::task::spawn_blocking(move || store.delete(&cid))
                    .await
                    .map_err(|e| SessionStoreError(e.to_string()))?
            }
            Sessions::Shared(b) => b.delete(client_id).await.map_err(SessionStoreError),
        }
    }

    /// Forgets the sessions of `device` and of all its modules.
    pub(crate) async fn delete_device(&self, device: &str) -> Result<(), SessionStoreError> {
        match self {
            Sessions::Embedded(s) => {
                let store = s.clone();
                let device = device.to_owned();
                tokio::task::spawn_blocking(move || store.delete_device(&device))
                    .await
                    .map_err(|e| SessionStoreError(e.to_string()))?
            }
            Sessions::Shared(b) => b.delete_device(device).await.map_err(SessionStoreError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_persist_and_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let store = SessionStore::open(&path).expect("open");
        assert_eq!(store.load("d1").expect("load"), None);
        assert!(!store.has("d1"));
        let subs = vec![(
            TopicFilter::new("devices/d1/messages/devicebound/#").expect("filter"),
            QoS::AtLeastOnce,
        )];
        store.save("d1", &subs).expect("save");
        store.save("d1/m1", &[]).expect("save");
        store.save("d10", &[]).expect("save");
        drop(store);
        let store = SessionStore::open(&path).expect("reopen");
        assert!(store.has("d1") && store.has("d1/m1") && store.has("d10"));
        assert_eq!(store.load("d1").expect("load"), Some(subs));
        store.delete_device("d1").expect("delete");
        assert_eq!(store.load("d1").expect("load"), None);
        assert_eq!(store.load("d1/m1").expect("load"), None);
        assert!(!store.has("d1") && !store.has("d1/m1"));
        assert_eq!(
            store.load("d10").expect("load"),
            Some(vec![]),
            "other device kept"
        );
        assert!(store.has("d10"));
        store.delete("d10").expect("delete");
        assert!(!store.has("d10"));
        let store = SessionStore::open(&path).expect("reopen");
        assert!(!store.has("d10") && !store.has("d1"));
    }
}
