//! Who is registered, as seen by services other than user-service.
//!
//! Fed by `user.registered` events, so it keeps working while user-service is down (scenario 3);
//! a user not seen yet (the event may still be on its way) is looked up at user-service.
//!
//! What a directory learnt must outlive a restart: the events that taught it were acked, so a
//! service restarted while user-service is down would otherwise refuse every user it knew (the
//! simulation found exactly that once random faults restarted trip- and location-service during
//! scenario 3). trip-service keeps its directory in a journal of its own; location-service,
//! which may run many replicas without a volume, asks trip-service about a driver it does not
//! know when user-service cannot answer: a driver with a shift there was checked when the shift
//! was set.

use crate::domain::{Role, User};
use crate::events::{Event, EventBody};
use lastmile_platform::broker::worker::Outcome;
use lastmile_platform::faults::Faults;
use lastmile_platform::http::{path_segment, ApiError, CallError, HttpClient};
use lastmile_platform::storage::Journal;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Known users by id.
#[derive(Debug)]
pub struct Directory {
    /// Users learnt from events or look-ups.
    known: Mutex<BTreeMap<String, Role>>,
    /// user-service, for users not learnt yet.
    users: HttpClient,
    /// Where learnt users are made durable before the event that taught them is acked.
    journal: Option<tokio::sync::Mutex<Journal>>,
    /// trip-service, asked about a driver when user-service cannot answer.
    shifts: Option<HttpClient>,
}

/// A journal record: one user learnt.
#[derive(serde::Serialize, serde::Deserialize)]
struct Learnt {
    user_id: String,
    role: Role,
}

impl Directory {
    /// An empty directory in memory that falls back to `users`, then, for drivers, to the
    /// shifts of trip-service (`shifts`).
    pub fn with_shifts(users: HttpClient, shifts: HttpClient) -> Arc<Directory> {
        Arc::new(Directory { known: Mutex::new(BTreeMap::new()), users, journal: None, shifts: Some(shifts) })
    }

    /// A directory kept in the journal at `path` (replayed now), falling back to `users`.
    pub async fn open(path: &Path, users: HttpClient, faults: Faults) -> anyhow::Result<Arc<Directory>> {
        let (journal, records) = Journal::open(path).await?;
        let mut known = BTreeMap::new();
        for (i, raw) in records.iter().enumerate() {
            let Learnt { user_id, role } = serde_json::from_slice(raw)
                .map_err(|e| anyhow::anyhow!("journal {}: record {i} is corrupt: {e}", path.display()))?;
            known.insert(user_id, role);
        }
        Ok(Arc::new(Directory {
            known: Mutex::new(known),
            users,
            journal: Some(tokio::sync::Mutex::new(journal.with_faults(faults))),
            shifts: None,
        }))
    }

    /// Remember a user, durably if the directory has a journal.
    pub async fn learn(&self, user: &User) -> std::io::Result<()> {
        if self.known.lock().expect("directory").get(&user.user_id) == Some(&user.role) {
            return Ok(());
        }
        if let Some(journal) = &self.journal {
            let record = serde_json::to_vec(&Learnt { user_id: user.user_id.clone(), role: user.role })
                .expect("records serialize");
            journal.lock().await.append(&record).await?;
        }
        self.known.lock().expect("directory").insert(user.user_id.clone(), user.role);
        Ok(())
    }

    /// Check that `user_id` is a registered user with `role`.
    pub async fn check(&self, user_id: &str, role: Role) -> Result<(), ApiError> {
        let cached = self.known.lock().expect("directory").get(user_id).copied();
        let found = match cached {
            Some(r) => r,
            None => match self.users.get::<User>(&format!("/users/{}", path_segment(user_id))).await {
                Ok(user) => {
                    // A look-up is only a cache fill: if it cannot be made durable, the next
                    // check asks again.
                    let _ = self.learn(&user).await;
                    user.role
                }
                Err(e) if e.status() == Some(404) => return Err(unknown(user_id, role)),
                Err(e) => {
                    if role == Role::Driver && self.has_shift(user_id).await {
                        Role::Driver
                    } else {
                        return Err(ApiError::unavailable(
                            "user_service_unavailable",
                            format!("cannot verify {user_id}: {}", describe(&e)),
                        ));
                    }
                }
            },
        };
        if found != role {
            return Err(ApiError::unprocessable(
                "wrong_role",
                format!("{user_id} is registered as a {found:?}, not a {role:?}"),
            ));
        }
        Ok(())
    }

    /// Whether trip-service has a shift for `driver_id` (set only for registered drivers).
    async fn has_shift(&self, driver_id: &str) -> bool {
        let Some(shifts) = &self.shifts else { return false };
        let path = format!("/drivers/{}", path_segment(driver_id));
        matches!(shifts.call_raw(lastmile_platform::http::Method::GET, &path, None).await, Ok((200, _)))
    }

    /// Learn from a `user.registered` event (other kinds on the queue are a binding mistake,
    /// not worth a retry). The ack waits until what was learnt is durable.
    pub async fn handle(&self, event: &Event) -> Outcome {
        if let EventBody::UserRegistered(user) = &event.body {
            if let Err(e) = self.learn(user).await {
                return Outcome::Retry(format!("cannot journal {}: {e}", user.user_id));
            }
        }
        Outcome::Done
    }
}

fn unknown(user_id: &str, role: Role) -> ApiError {
    match role {
        Role::Driver => ApiError::not_found("unknown_driver", format!("no driver {user_id} is registered")),
        Role::Rider => ApiError::not_found("unknown_rider", format!("no rider {user_id} is registered")),
    }
}

fn describe(e: &CallError) -> String {
    e.to_string()
}
