//! The five services by name: one list for every crate (the scenario format, the services, the
//! harness and the targets), with the name each goes by and its default port.

/// The five services, and the port each listens on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceName {
    /// Driver and rider profiles.
    User,
    /// Driver positions and station proximity.
    Location,
    /// Rides and trips: the system of record.
    Trip,
    /// Stateless matching workers.
    Matching,
    /// Notifications per user.
    Notification,
}

impl ServiceName {
    /// Every service, in start order (dependencies first).
    pub const ALL: [ServiceName; 5] =
        [ServiceName::User, ServiceName::Location, ServiceName::Trip, ServiceName::Matching, ServiceName::Notification];

    /// The Kubernetes-style name (`trip-service`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceName::User => "user-service",
            ServiceName::Location => "location-service",
            ServiceName::Trip => "trip-service",
            ServiceName::Matching => "matching-service",
            ServiceName::Notification => "notification-service",
        }
    }

    /// The default local port.
    pub fn default_port(self) -> u16 {
        match self {
            ServiceName::User => 8081,
            ServiceName::Location => 8082,
            ServiceName::Trip => 8083,
            ServiceName::Matching => 8084,
            ServiceName::Notification => 8085,
        }
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is none of the five services (with or without the `-service` suffix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown service {name:?}; expected one of user, location, trip, matching, notification")]
pub struct UnknownService {
    /// The name as given.
    pub name: String,
}

impl std::str::FromStr for ServiceName {
    type Err = UnknownService;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = s.strip_suffix("-service").unwrap_or(s);
        ServiceName::ALL
            .into_iter()
            .find(|n| n.as_str().strip_suffix("-service") == Some(short))
            .ok_or_else(|| UnknownService { name: s.to_string() })
    }
}

impl ServiceName {
    /// The services that keep their records in one journal on one volume: they run 0 or 1
    /// replicas (two processes appending to one journal would corrupt it).
    pub const SINGLE_REPLICA: [ServiceName; 3] = [ServiceName::User, ServiceName::Trip, ServiceName::Notification];

    /// Whether it keeps its records in one journal (see [`ServiceName::SINGLE_REPLICA`]).
    pub fn single_replica(self) -> bool {
        ServiceName::SINGLE_REPLICA.contains(&self)
    }

    /// Every service's name, in [`ServiceName::ALL`]'s order.
    pub const NAMES: [&'static str; 5] = [
        ServiceName::ALL[0].as_str(),
        ServiceName::ALL[1].as_str(),
        ServiceName::ALL[2].as_str(),
        ServiceName::ALL[3].as_str(),
        ServiceName::ALL[4].as_str(),
    ];

    /// Every service's name, for messages (`user-service, location-service, ...`).
    pub fn all_names() -> String {
        ServiceName::NAMES.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::{ServiceName, UnknownService};

    #[test]
    fn names_parse_back_with_or_without_the_suffix_and_nothing_else_does() {
        for s in ServiceName::ALL {
            assert_eq!(s.as_str().parse::<ServiceName>(), Ok(s));
            assert_eq!(s.as_str().trim_end_matches("-service").parse::<ServiceName>(), Ok(s));
        }
        let e = "matchng-service".parse::<ServiceName>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown service \"matchng-service\"; expected one of user, location, trip, matching, notification"
        );
        assert_eq!("".parse::<ServiceName>(), Err(UnknownService { name: String::new() }));
        assert_eq!(ServiceName::all_names().matches("-service").count(), 5);
    }
}
