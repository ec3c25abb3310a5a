//! The real world: the five services on real tokio against a real RabbitMQ, driven over HTTP.
//!
//! RabbitMQ is taken from `LASTMILE_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! When nothing answers there the tests fail and say how to get one; they never skip. Each test
//! runs its own topology (a unique name prefix, queues that expire when unused), so tests run in
//! parallel and leave nothing behind.
#![cfg(not(madsim))]

mod bad_input;
mod cluster;
mod demo;
mod outage;
mod redelivery;
