pub mod cli;
pub mod fake_kube;
