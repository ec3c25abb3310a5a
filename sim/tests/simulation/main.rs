//! The simulated world: LastMile under madsim, one module per kind of fault.
//!
//! Run with `cargo simtest` (the madsim build flavour). Every test prints its seed; a failure
//! says how to replay it.

#[cfg(madsim)]
mod broker;
#[cfg(madsim)]
mod chaos;
#[cfg(madsim)]
mod common;
#[cfg(madsim)]
mod crash;
#[cfg(madsim)]
mod demo;
#[cfg(madsim)]
mod explore;

/// In the normal build flavour there is nothing to simulate: fail instead of passing vacuously.
#[cfg(not(madsim))]
#[test]
fn simulation_tests_need_the_madsim_flavour() {
    panic!("the simulation tests only run in the madsim build flavour: use `cargo simtest` (see README.md)");
}
