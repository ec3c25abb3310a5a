//! Who is registered, as seen by services other than user-service.
//!
//! Fed by `user.registered` events, so it keeps working while user-service is down (scenario 3);
//! a user not seen yet (the event may still be on its way) is looked up at user-service.

use crate::domain::{Role, User};
use crate::events::{Event, EventBody};
use lastmile_platform::broker::worker::Outcome;
use lastmile_platform::http::{ApiError, CallError, HttpClient};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Known users by id.
#[derive(Debug)]
pub struct Directory {
    /// Users learnt from events or look-ups.
    known: Mutex<BTreeMap<String, Role>>,
    /// user-service, for users not learnt yet.
    users: HttpClient,
}

impl Directory {
    /// An empty directory that falls back to `users`.
    pub fn new(users: HttpClient) -> Arc<Directory> {
        Arc::new(Directory { known: Mutex::new(BTreeMap::new()), users })
    }

    /// Remember a user.
    pub fn learn(&self, user: &User) {
        self.known.lock().expect("directory").insert(user.user_id.clone(), user.role);
    }

    /// Check that `user_id` is a registered user with `role`.
    pub async fn check(&self, user_id: &str, role: Role) -> Result<(), ApiError> {
        let cached = self.known.lock().expect("directory").get(user_id).copied();
        let found = match cached {
            Some(r) => r,
            None => match self.users.get::<User>(&format!("/users/{user_id}")).await {
                Ok(user) => {
                    self.learn(&user);
                    user.role
                }
                Err(e) if e.status() == Some(404) => return Err(unknown(user_id, role)),
                Err(e) => {
                    return Err(ApiError::unavailable(
                        "user_service_unavailable",
                        format!("cannot verify {user_id}: {}", describe(&e)),
                    ))
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

    /// Learn from a `user.registered` event (other kinds on the queue are a binding mistake,
    /// not worth a retry).
    pub fn handle(&self, event: &Event) -> Outcome {
        if let EventBody::UserRegistered(user) = &event.body {
            self.learn(user);
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
