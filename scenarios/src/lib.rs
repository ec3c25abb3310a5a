//! Scenario files shared by both worlds (planned), and the data every scenario uses: the default
//! station network in `scenarios/stations.csv` (12 stations on two metro lines), which
//! `lastmile_services::domain::Network::default_network` embeds.
//!
//! # Layout
//! Empty for now; see the README's status section.
